"""Exercise 2.4, hidden: maxpool2d_forward against sliding-window maxima."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from ..oracles import assert_equal

pytestmark = pytest.mark.exercise_2_4


@settings(max_examples=30, deadline=None, database=None)
@given(k=st.integers(1, 3), stride=st.sampled_from([None, 1, 2, 3]), n=st.integers(1, 2),
       c=st.integers(1, 3), extra=st.tuples(st.integers(0, 4), st.integers(0, 4)),
       seed=st.integers(0, 2**32 - 1))
def test_against_sliding_window_maxima(student, k, stride, n, c, extra, seed):
    x = np.random.default_rng(seed).standard_normal((n, c, k + extra[0], k + extra[1]))
    s = k if stride is None else stride
    expected = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s].max(axis=(4, 5))
    assert_equal("out", student("2.4").maxpool2d_forward(x, k, stride), expected,
                 f"x {x.shape}, k {k}, stride {stride}")
