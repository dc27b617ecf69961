"""Exercise 8.1, hidden: batch_statistics against NumPy's mean and variance in float64."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ..oracles import assert_close

pytestmark = pytest.mark.exercise_8_1


@settings(max_examples=25, deadline=None, database=None)
@given(n=st.integers(1, 3), c=st.integers(1, 4), h=st.integers(1, 4), w=st.integers(1, 4),
       loc=st.sampled_from([0.0, 3.0, -100.0]), seed=st.integers(0, 2**32 - 1))
def test_against_numpy(student, n, c, h, w, loc, seed):
    x = (loc + np.random.default_rng(seed).standard_normal((n, c, h, w))).astype(np.float32)
    mean, var = np.empty(c), np.empty(c)
    student("8.1").batch_statistics(x, mean, var)
    x64 = x.astype(np.float64)
    assert_close("mean", mean, x64.mean(axis=(0, 2, 3)), 1e-10, f"x {x.shape}, loc {loc}")
    assert_close("var", var, x64.var(axis=(0, 2, 3)), 1e-8, f"x {x.shape}, loc {loc}")
