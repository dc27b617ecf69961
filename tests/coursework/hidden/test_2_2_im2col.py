"""Exercise 2.2, hidden: im2col entry by entry against its index formula."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ..oracles import assert_equal

pytestmark = pytest.mark.exercise_2_2


def reference(x, k, stride, padding):
    n, c, h, w = x.shape
    oh_n, ow_n = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    cols = np.empty((c * k * k, n * oh_n * ow_n), x.dtype)
    for ci, i, j, ni, oh, ow in np.ndindex(c, k, k, n, oh_n, ow_n):
        cols[ci * k * k + i * k + j, ni * oh_n * ow_n + oh * ow_n + ow] = \
            xp[ni, ci, oh * stride + i, ow * stride + j]
    return cols


@settings(max_examples=25, deadline=None, database=None)
@given(k=st.integers(1, 3), padding=st.integers(0, 2), stride=st.integers(1, 3),
       n=st.integers(1, 2), c=st.integers(1, 3), extra=st.tuples(st.integers(0, 3), st.integers(0, 3)),
       seed=st.integers(0, 2**32 - 1))
def test_against_the_index_formula(student, k, padding, stride, n, c, extra, seed):
    low = max(1, k - 2 * padding)
    x = np.random.default_rng(seed).standard_normal((n, c, low + extra[0], low + extra[1]))
    assert_equal("cols", student("2.2").im2col(x, k, stride, padding), reference(x, k, stride, padding),
                 f"x {x.shape}, k {k}, stride {stride}, padding {padding}")
