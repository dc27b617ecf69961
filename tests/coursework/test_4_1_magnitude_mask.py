"""Exercise 4.1: _smallest_survivors (minilottery/pruning.py), the core of
prune_by_magnitude for one layer: the flat indices of the n_prune surviving
weights of smallest |w|, ties to the lower flat index.

The answer is checked against its definition, not against a second implementation:
n_prune distinct indices, all survivors; no survivor left out is smaller than one
taken; and at the threshold value, the lower indices are the ones taken.
Magnitudes are drawn from a few values so that ties are common. (The teacher's
hidden tests compare with a ranking.)"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.exercise_4_1


def check(smallest_survivors, magnitudes, mask, n_prune):
    got = [int(i) for i in np.asarray(smallest_survivors(magnitudes, mask, n_prune)).ravel()]
    flat, kept = magnitudes.ravel(), mask.ravel() != 0
    survivors = np.flatnonzero(kept)
    setting = f"pruning {n_prune} of {survivors.size} survivors, shape {magnitudes.shape}"
    assert len(got) == n_prune and len(set(got)) == n_prune, \
        f"{setting}: returned {len(got)} indices ({len(set(got))} distinct), should be {n_prune}"
    outside = [i for i in got if not 0 <= i < flat.size or not kept[i]]
    assert not outside, f"{setting}: index {outside[0]} is not a survivor (outside, or mask 0)"
    if n_prune == 0 or n_prune == survivors.size:
        return
    left = np.setdiff1d(survivors, got)
    largest_taken, smallest_left = flat[got].max(), flat[left].min()
    assert largest_taken <= smallest_left, \
        (f"{setting}: took |w| = {largest_taken} but left |w| = {smallest_left} "
         f"(the smallest survivors are pruned)")
    tied_taken = [i for i in got if flat[i] == largest_taken]
    tied_left = [i for i in left if flat[i] == largest_taken]
    assert not tied_left or max(tied_taken) < min(tied_left), \
        (f"{setting}: at the tie |w| = {largest_taken}, took index {max(tied_taken)} but left "
         f"{min(tied_left)} (ties go to the lower flat index)")


def test_a_small_layer_by_hand(student):
    # Survivors are flat indices 0, 1, 2, 4, 5 (index 3 is pruned) with |w| 0.5, 0.1,
    # 0.3, 0.9, 0.2: the two smallest are index 1 (0.1) and index 5 (0.2). Index 3 also
    # has |w| 0.1 but is pruned already.
    magnitudes = np.array([[0.5, 0.1, 0.3], [0.1, 0.9, 0.2]], np.float32)
    mask = np.array([[1, 1, 1], [0, 1, 1]], np.float32)
    got = np.asarray(student("4.1")._smallest_survivors(magnitudes, mask, 2)).ravel()
    assert sorted(int(i) for i in got) == [1, 5], f"expected flat indices [1, 5], got {got}"


def test_ties_go_to_the_lower_index(student):
    # All |w| equal: pruning 3 of the survivors 1, 2, 4, 6, 7 takes 1, 2 and 4.
    magnitudes = np.full(8, 0.25, np.float32)
    mask = np.array([0, 1, 1, 0, 1, 0, 1, 1], np.float32)
    got = np.asarray(student("4.1")._smallest_survivors(magnitudes, mask, 3)).ravel()
    assert sorted(int(i) for i in got) == [1, 2, 4], f"expected flat indices [1, 2, 4], got {got}"


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
