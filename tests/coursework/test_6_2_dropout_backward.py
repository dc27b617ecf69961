"""Exercise 6.2: dropout_backward(dout, scaled_keep) (minilottery/layers.py).

Checked by hand and against central differences of y = x * scaled_keep (the
forward pass of exercise 6.1 with its draws fixed): L = sum(dout * y) is linear in
x, so the differences are exact up to round-off."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .oracles import assert_close, numerical_gradient

pytestmark = pytest.mark.exercise_6_2


def test_by_hand(student):
    # p = 0.5: scaled_keep is 0 (dropped) or 2 (kept).
    scaled_keep = np.array([[0.0, 2.0, 2.0, 0.0]], np.float32)
    dout = np.array([[1.0, 2.0, -3.0, 4.0]], np.float32)
    dx = student("6.2").dropout_backward(dout, scaled_keep)
    assert_close("dx", dx, [[0.0, 4.0, -6.0, 0.0]], 1e-7, "a dropped entry gets no gradient")


@settings(max_examples=20, deadline=None, database=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple),
       p=st.sampled_from([0.2, 0.5, 0.9]), seed=st.integers(0, 2**32 - 1))
def test_against_finite_differences(student, shape, p, seed):
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal(shape), rng.standard_normal(shape)
    scaled_keep = (rng.random(shape) >= p) / (1 - p)
    dx = student("6.2").dropout_backward(dout.copy(), scaled_keep.copy())
    numeric = numerical_gradient(lambda: float(np.sum(dout * x * scaled_keep)), x)
    assert_close("dx", dx, numeric, 1e-6, f"shape {shape}, p {p}")


def test_float32_stays_float32(student):
    dx = np.asarray(student("6.2").dropout_backward(np.ones((2, 3), np.float32),
                                                    np.full((2, 3), 2.0, np.float32)))
    assert dx.dtype == np.float32, f"dx has dtype {dx.dtype} for float32 inputs, should be float32"
