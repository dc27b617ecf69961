"""Independent reference helpers shared by the exercise tests (never the student's code)."""

import numpy as np


def rel_error(got, expected):
    """max |got - expected| / max(1e-8, max(|got| + |expected|)), as minilottery.gradcheck."""
    return float(np.max(np.abs(got - expected)) /
                 max(1e-8, float(np.max(np.abs(got) + np.abs(expected)))))


def numerical_gradient(loss, array, h=1e-3):
    """Central differences of the scalar ``loss()`` with respect to ``array``, entry by entry."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        saved = array[index]
        array[index] = saved + h
        plus = loss()
        array[index] = saved - h
        minus = loss()
        array[index] = saved
        grad[index] = (plus - minus) / (2 * h)
    return grad


def assert_backward_matches(function_name, result, loss, inputs, setting, tolerance):
    """Check a student's ``(dx, dW, db)`` against central differences of ``loss``.

    ``inputs`` are the arrays (x, W, b) that ``loss()`` reads; every message
    says expected vs got, e.g. "dW relative error 3.1e-02, should be below 1e-06".
    """
    assert isinstance(result, tuple) and len(result) == 3, \
        f"{function_name} should return the tuple (dx, dW, db), got {type(result).__name__}"
    for name, got, wrt in zip(("dx", "dW", "db"), result, inputs):
        got = np.asarray(got)
        assert got.shape == wrt.shape, \
            f"{name} has shape {got.shape}, should be {wrt.shape} ({setting})"
        error = rel_error(got, numerical_gradient(loss, wrt))
        assert error < tolerance, \
            f"{name} relative error {error:.1e}, should be below {tolerance:.0e} ({setting})"
