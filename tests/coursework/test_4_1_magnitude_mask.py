"""Exercise 4.1: _smallest_survivors (minilottery/pruning.py), the core of
prune_by_magnitude for one layer: the flat indices of the n_prune surviving
weights of smallest |w|, ties to the lower flat index.

The oracle is a plain Python sort of (|w|, index) pairs over the survivors.
Magnitudes are drawn from a few values so that ties are common."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.exercise_4_1


def expected_indices(magnitudes, mask, n_prune):
    flat_magnitudes, flat_mask = magnitudes.ravel().tolist(), mask.ravel().tolist()
    survivors = [i for i, kept in enumerate(flat_mask) if kept != 0]
    return sorted(sorted(survivors, key=lambda i: (flat_magnitudes[i], i))[:n_prune])


def check(smallest_survivors, magnitudes, mask, n_prune):
    result = smallest_survivors(magnitudes, mask, n_prune)
    got = sorted(int(i) for i in np.asarray(result).ravel())
    already = [i for i in got if mask.ravel()[i] == 0]
    assert not already, (f"returned flat index {already[0]}, which is already pruned "
                         f"(mask 0); only survivors can be pruned")
    expected = expected_indices(magnitudes, mask, n_prune)
    assert got == expected, (f"pruning {n_prune} of {int(np.count_nonzero(mask))} survivors "
                             f"(shape {magnitudes.shape}): expected flat indices {expected}, "
                             f"got {got} (smallest |w| first; ties: lower index first)")


def test_a_small_layer_by_hand(student):
    # Survivors are flat indices 0, 1, 2, 4, 5 (index 3 is pruned) with |w| 0.5, 0.1,
    # 0.3, 0.9, 0.2: the two smallest are index 1 (0.1) and index 5 (0.2). Index 3 also
    # has |w| 0.1 but is pruned already.
    magnitudes = np.array([[0.5, 0.1, 0.3], [0.1, 0.9, 0.2]], np.float32)
    mask = np.array([[1, 1, 1], [0, 1, 1]], np.float32)
    check(student("4.1")._smallest_survivors, magnitudes, mask, 2)


def test_ties_go_to_the_lower_index(student):
    # All |w| equal: pruning 3 of the survivors 1, 2, 4, 6, 7 takes 1, 2 and 4.
    magnitudes = np.full(8, 0.25, np.float32)
    mask = np.array([0, 1, 1, 0, 1, 0, 1, 1], np.float32)
    check(student("4.1")._smallest_survivors, magnitudes, mask, 3)


@st.composite
def layers(draw):
    shape = draw(st.sampled_from([(7,), (3, 4), (2, 3, 2, 2)]))
    size = int(np.prod(shape))
    magnitudes = np.array(draw(st.lists(st.sampled_from([0.0, 0.1, 0.5, 0.5, 1.0, 2.0]),
                                        min_size=size, max_size=size)), np.float32)
    mask = np.array(draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=size, max_size=size)),
                    np.float32)
    mask[draw(st.integers(0, size - 1))] = 1.0          # at least one survivor
    n_prune = draw(st.integers(0, int(mask.sum())))
    return magnitudes.reshape(shape), mask.reshape(shape), n_prune


@settings(max_examples=60, deadline=None, database=None)
@given(layer=layers())
def test_random_layers(student, layer):
    check(student("4.1")._smallest_survivors, *layer)
