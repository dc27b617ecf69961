"""Exercise 2.1, hidden: conv2d_forward against sliding windows + einsum."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from ..oracles import assert_close, conv_geometries

pytestmark = pytest.mark.exercise_2_1


def reference(x, W, b, stride, padding):
    k = W.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", windows, W) + b[None, :, None, None]


@settings(max_examples=25, deadline=None, database=None)
@given(case=conv_geometries(), o=st.integers(1, 3))
def test_against_an_independent_convolution(student, case, o):
    shape, k, stride, padding, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    W, b = rng.standard_normal((o, shape[1], k, k)), rng.standard_normal(o)
    got = student("2.1").conv2d_forward(x, W, b, stride, padding)
    assert_close("out", got, reference(x, W, b, stride, padding), 1e-9,
                 f"x {x.shape}, W {W.shape}, stride {stride}, padding {padding}")
