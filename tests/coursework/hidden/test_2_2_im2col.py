"""Exercise 2.2, hidden: im2col entry by entry against its index formula."""

import numpy as np
import pytest
from hypothesis import given, settings

from ..oracles import assert_equal, conv_geometries

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
@given(case=conv_geometries())
def test_against_the_index_formula(student, case):
    shape, k, stride, padding, seed = case
    x = np.random.default_rng(seed).standard_normal(shape)
    assert_equal("cols", student("2.2").im2col(x, k, stride, padding), reference(x, k, stride, padding),
                 f"x {x.shape}, k {k}, stride {stride}, padding {padding}")
