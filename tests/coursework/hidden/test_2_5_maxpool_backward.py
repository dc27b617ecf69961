"""Exercise 2.5, hidden: maxpool2d_backward against finite differences and an
independent first-argmax scatter (with ties)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from ..oracles import assert_close, numerical_gradient

pytestmark = pytest.mark.exercise_2_5


def pool(x, k, s):
    return sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s].max(axis=(4, 5))


def scatter(dout, x, k, s):
    dx = np.zeros(x.shape, x.dtype)
    for n, c, oh, ow in np.ndindex(dout.shape):
        window = x[n, c, oh * s:oh * s + k, ow * s:ow * s + k]
        i, j = np.unravel_index(int(np.argmax(window)), window.shape)
        dx[n, c, oh * s + i, ow * s + j] += dout[n, c, oh, ow]
    return dx


@settings(max_examples=20, deadline=None, database=None)
@given(k=st.integers(1, 3), stride=st.sampled_from([None, 1, 2]), c=st.integers(1, 2),
       extra=st.tuples(st.integers(0, 3), st.integers(0, 3)), seed=st.integers(0, 2**32 - 1))
def test_against_finite_differences(student, k, stride, c, extra, seed):
    rng = np.random.default_rng(seed)
    s = k if stride is None else stride
    shape = (2, c, k + extra[0], k + extra[1])
    x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float64)   # gaps of 1: h stays inside
    dout = rng.standard_normal(pool(x, k, s).shape)
    got = student("2.5").maxpool2d_backward(dout, x.copy(), k, stride)
    numeric = numerical_gradient(lambda: float(np.sum(dout * pool(x, k, s))), x, h=1e-3)
    assert_close("dx", got, numeric, 1e-6, f"x {shape}, k {k}, stride {stride}")


@settings(max_examples=20, deadline=None, database=None)
@given(k=st.integers(1, 3), stride=st.sampled_from([None, 1, 2]),
       extra=st.tuples(st.integers(0, 3), st.integers(0, 3)), seed=st.integers(0, 2**32 - 1))
def test_ties_against_a_first_argmax_scatter(student, k, stride, extra, seed):
    rng = np.random.default_rng(seed)
    s = k if stride is None else stride
    x = rng.integers(0, 3, size=(1, 2, k + extra[0], k + extra[1])).astype(np.float64)
    dout = rng.standard_normal(pool(x, k, s).shape)
    assert_close("dx", student("2.5").maxpool2d_backward(dout, x, k, stride), scatter(dout, x, k, s),
                 1e-12, f"x {x.shape} with many ties, k {k}, stride {stride}")
