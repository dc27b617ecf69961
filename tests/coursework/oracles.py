"""Independent reference helpers shared by the exercise tests (never the student's code)."""

import numpy as np
from hypothesis import strategies as st

# The max-pooling exercises' worked example: distinct values, so each window's maximum is clear.
POOL_IMAGE = np.array([[1.0, 5.0, 2.0, 0.0],
                       [3.0, 4.0, 8.0, 6.0],
                       [0.0, 9.0, 1.0, 1.0],
                       [7.0, 2.0, 3.0, 2.0]]).reshape(1, 1, 4, 4)


@st.composite
def conv_geometries(draw):
    """(x's shape, k, stride, padding, seed) of a valid convolution or im2col: k in 1..3,
    padding in 0..2, stride in 1..3, N in 1..2, C in 1..3, and H, W at least k - 2 padding."""
    k, padding, stride = draw(st.integers(1, 3)), draw(st.integers(0, 2)), draw(st.integers(1, 3))
    low = max(1, k - 2 * padding)
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(low, low + 4)),
             draw(st.integers(low, low + 4)))
    return shape, k, stride, padding, draw(st.integers(0, 2**32 - 1))


@st.composite
def pool_geometries(draw, strides=(None, 1, 2, 3), extra=4):
    """(x's shape, k, stride, seed) of a valid max-pool: k in 1..3, stride one of ``strides``
    (None: the kernel size), N in 1..2, C in 1..3, H and W in k..k + extra."""
    k = draw(st.integers(1, 3))
    stride = draw(st.sampled_from(list(strides)))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(k, k + extra)),
             draw(st.integers(k, k + extra)))
    return shape, k, stride, draw(st.integers(0, 2**32 - 1))


def rel_error(got, expected, floor=1e-8):
    """max |got - expected| / max(floor, max(|got| + |expected|)), as minilottery.gradcheck."""
    return float(np.max(np.abs(got - expected)) /
                 max(floor, float(np.max(np.abs(got) + np.abs(expected)))))


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


def assert_close(name, got, expected, tolerance, setting, floor=1e-8):
    """``got`` has ``expected``'s shape and a relative error below ``tolerance`` (errors
    measured against the largest magnitude, or ``floor`` if that is smaller); the
    message names the first entry that is off, with expected vs got."""
    got = np.asarray(got)
    assert got.shape == np.shape(expected), \
        f"{name} has shape {got.shape}, should be {np.shape(expected)} ({setting})"
    error = rel_error(got.astype(np.float64), np.asarray(expected, np.float64), floor)
    if not error < tolerance:
        scale = max(floor, float(np.max(np.abs(expected))))
        bad = np.argwhere(~(np.abs(got - expected) <= tolerance * scale))
        where = tuple(int(i) for i in bad[0]) if len(bad) else ()
        detail = (f"; first at {name}{list(where)}: expected {np.asarray(expected)[where]:.6g}, "
                  f"got {got[where]:.6g}") if len(bad) else ""
        raise AssertionError(f"{name} relative error {error:.1e}, should be below "
                             f"{tolerance:.0e} ({setting}){detail}")


def assert_equal(name, got, expected, setting):
    """``got`` equals ``expected`` exactly (shape and every entry); NaN equals NaN."""
    got = np.asarray(got)
    assert got.shape == np.shape(expected), \
        f"{name} has shape {got.shape}, should be {np.shape(expected)} ({setting})"
    wrong = np.argwhere(~((got == expected) | (np.isnan(got) & np.isnan(expected))))
    if len(wrong):
        where = tuple(int(i) for i in wrong[0])
        raise AssertionError(f"{name}{list(where)} is {got[where]:.6g}, should be "
                             f"{np.asarray(expected)[where]:.6g} ({setting}; {len(wrong)} of "
                             f"{got.size} entries wrong)")
