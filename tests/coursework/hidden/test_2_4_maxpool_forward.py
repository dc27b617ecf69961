"""Exercise 2.4, hidden: maxpool2d_forward against sliding-window maxima."""

import numpy as np
import pytest
from hypothesis import given, settings
from numpy.lib.stride_tricks import sliding_window_view

from ..oracles import assert_equal, pool_geometries

pytestmark = pytest.mark.exercise_2_4


@settings(max_examples=30, deadline=None, database=None)
@given(case=pool_geometries())
def test_against_sliding_window_maxima(student, case):
    shape, k, stride, seed = case
    x = np.random.default_rng(seed).standard_normal(shape)
    s = k if stride is None else stride
    expected = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s].max(axis=(4, 5))
    assert_equal("out", student("2.4").maxpool2d_forward(x, k, stride), expected,
                 f"x {x.shape}, k {k}, stride {stride}")
