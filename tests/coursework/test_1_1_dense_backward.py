"""Exercise 1.1: dense_backward(x, W, dout) in tutorials/01-layers-by-hand.ipynb.

Checked against finite differences of the forward pass y = x W + b in float64:
the loss L = sum(dout * y) is linear in each of x, W and b, so central differences
are exact up to round-off and a correct backward pass has a relative error of
about 1e-10. (b does not enter dense_backward: db depends on dout only.)"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .oracles import assert_backward_matches

pytestmark = pytest.mark.exercise_1_1

TOLERANCE = 1e-6


def check_gradients(dense_backward, n, d_in, d_out, seed):
    rng = np.random.default_rng(seed)
    x, W, b = rng.standard_normal((n, d_in)), rng.standard_normal((d_in, d_out)), rng.standard_normal(d_out)
    dout = rng.standard_normal((n, d_out))
    result = dense_backward(x.copy(), W.copy(), dout.copy())
    def loss():
        return float(np.sum(dout * (x @ W + b)))

    setting = f"x {x.shape}, W {W.shape}"
    assert_backward_matches("dense_backward", result, loss, (x, W, b), setting, TOLERANCE)


def test_one_example(student):
    check_gradients(student("1.1").dense_backward, 1, 3, 2, seed=0)


def test_a_batch(student):
    check_gradients(student("1.1").dense_backward, 5, 4, 3, seed=1)


@settings(max_examples=25, deadline=None, database=None)
@given(n=st.integers(1, 6), d_in=st.integers(1, 6), d_out=st.integers(1, 6),
       seed=st.integers(0, 2**32 - 1))
def test_random_shapes(student, n, d_in, d_out, seed):
    check_gradients(student("1.1").dense_backward, n, d_in, d_out, seed)


def test_float32_stays_float32(student):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    W = rng.standard_normal((3, 2)).astype(np.float32)
    dout = rng.standard_normal((4, 2)).astype(np.float32)
    for name, grad in zip(("dx", "dW", "db"), student("1.1").dense_backward(x, W, dout)):
        assert np.asarray(grad).dtype == np.float32, \
            f"{name} has dtype {np.asarray(grad).dtype} for float32 inputs, should be float32"
