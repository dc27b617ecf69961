"""Exercise 8.3, hidden: prune_globally against a sort of (|w|, position) pairs."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.exercise_8_3


def reference(weights, masks, rate, names):
    magnitudes = np.concatenate([np.abs(weights[n]).ravel() for n in names]).tolist()
    joint = np.concatenate([masks[n].ravel() for n in names])
    survivors = [i for i in range(len(joint)) if joint[i] != 0]
    n_prune = int(Fraction(str(rate)) * len(survivors))
    for i in sorted(survivors, key=lambda i: (magnitudes[i], i))[:n_prune]:
        joint[i] = 0
    out, start = {name: mask.copy() for name, mask in masks.items()}, 0
    for layer in names:
        out[layer] = joint[start:start + masks[layer].size].reshape(masks[layer].shape)
        start += masks[layer].size
    return out


@settings(max_examples=40, deadline=None, database=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=4), rate=st.sampled_from([0.1, 0.2, 0.5, 0.8]),
       seed=st.integers(0, 2**32 - 1))
def test_against_a_sorted_ranking(student, sizes, rate, seed):
    rng = np.random.default_rng(seed)
    names = [f"layer{i}.W" for i in range(len(sizes))]
    weights = {n: rng.choice([0.0, 0.1, -0.1, 0.3, 1.0], size).astype(np.float32) for n, size in zip(names, sizes)}
    masks = {n: (rng.random(size) < 0.7).astype(np.float32) for n, size in zip(names, sizes)}
    for layer in names:
        masks[layer][rng.integers(len(masks[layer]))] = 1.0                 # a layer needs a survivor
    order = [str(n) for n in rng.permutation(names)]
    expected = reference(weights, masks, rate, order)
    got = student("8.3").prune_globally(weights, masks, rate, order)
    for layer in names:
        assert np.array_equal(got[layer], expected[layer]), \
            f"{layer}: mask {np.asarray(got[layer]).tolist()}, expected {expected[layer].tolist()} (names {order}, rate {rate})"
