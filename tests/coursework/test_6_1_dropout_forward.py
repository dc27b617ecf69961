"""Exercise 6.1: dropout_forward(x, u, p) (minilottery/layers.py), inverted dropout.

Given the uniform draws u, an entry is kept when u >= p and scaled by 1 / (1 - p):
checked by hand (including u == p, which keeps), for p = 0 (the identity), for the
dtype, and by the mean: with u uniform, E[y] = x."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .oracles import assert_close

pytestmark = pytest.mark.exercise_6_1


def call(dropout_forward, x, u, p):
    result = dropout_forward(x, u, p)
    assert isinstance(result, tuple) and len(result) == 2, \
        f"dropout_forward should return (y, scaled_keep), got {type(result).__name__}"
    return tuple(np.asarray(a) for a in result)


def test_by_hand(student):
    x = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    u = np.array([[0.1, 0.5, 0.75, 0.25]], np.float32)
    y, scaled_keep = call(student("6.1").dropout_forward, x, u, 0.5)
    # p = 0.5: u = 0.1 and 0.25 drop, u = 0.5 (= p) and 0.75 keep; kept entries double.
    assert_close("scaled_keep", scaled_keep, [[0.0, 2.0, 2.0, 0.0]], 1e-7, "p 0.5, u (0.1, 0.5, 0.75, 0.25)")
    assert_close("y", y, [[0.0, 4.0, 6.0, 0.0]], 1e-7, "p 0.5, u (0.1, 0.5, 0.75, 0.25)")


def test_p_zero_is_the_identity(student):
    rng = np.random.default_rng(0)
    x, u = rng.standard_normal((3, 5)).astype(np.float32), rng.random((3, 5), dtype=np.float32)
    y, scaled_keep = call(student("6.1").dropout_forward, x, u, 0.0)
    assert np.array_equal(y, x), "p = 0 drops nothing and scales by 1: y should equal x"
    assert np.array_equal(scaled_keep, np.ones_like(x)), "p = 0: scaled_keep should be all ones"


@settings(max_examples=20, deadline=None, database=None)
@given(p=st.sampled_from([0.1, 0.25, 0.5, 0.8]), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**32 - 1))
def test_the_mean_is_kept(student, p, dtype, seed):
    rng = np.random.default_rng(seed)
    x = np.full((200, 50), 3.0, dtype)
    u = rng.random(x.shape, dtype=dtype)
    y, scaled_keep = call(student("6.1").dropout_forward, x, u, p)
    setting = f"p {p}, {np.dtype(dtype).name}"
    assert y.dtype == dtype and scaled_keep.dtype == dtype, \
        f"y and scaled_keep have dtypes {y.dtype}, {scaled_keep.dtype}, should be {np.dtype(dtype).name} ({setting})"
    kept = u >= p
    assert np.array_equal(scaled_keep != 0, kept), f"an entry is kept exactly where u >= p ({setting})"
    assert_close("scaled_keep where kept", scaled_keep[kept], np.full(kept.sum(), 1 / (1 - p)), 1e-6, setting)
    assert_close("y", y, x * scaled_keep, 1e-6, setting + "; y = x * scaled_keep")
