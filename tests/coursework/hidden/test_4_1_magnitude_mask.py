"""Exercise 4.1, hidden: _smallest_survivors against a sort of (|w|, index) pairs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.exercise_4_1


@settings(max_examples=40, deadline=None, database=None)
@given(size=st.integers(1, 30), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_against_a_sorted_ranking(student, size, seed, data):
    rng = np.random.default_rng(seed)
    magnitudes = rng.choice([0.0, 0.1, 0.5, 2.0], size).astype(np.float32)
    mask = (rng.random(size) < 0.7).astype(np.float32)
    mask[rng.integers(size)] = 1.0
    survivors = [i for i in range(size) if mask[i] != 0]
    n_prune = data.draw(st.integers(0, len(survivors)))
    expected = sorted(sorted(survivors, key=lambda i: (float(magnitudes[i]), i))[:n_prune])
    got = sorted(int(i) for i in np.asarray(student("4.1")._smallest_survivors(magnitudes, mask, n_prune)).ravel())
    assert got == expected, f"pruning {n_prune} of {len(survivors)}: expected flat indices {expected}, got {got}"
