"""Exercise 8.3: prune_globally (minilottery/pruning.py), global magnitude pruning:
the survivors of all the named layers are ranked together by |w| and the smallest
floor(rate * total survivors) are pruned; ties go to the lower index in the layers
concatenated in the order of ``names``.

Checked by hand, then on random layers by what the rule implies: the count, that
masks only lose ones, that every pruned survivor is no larger than every kept one,
that among equal magnitudes at the threshold the earlier ones go first, that layers
outside ``names`` keep their masks, and that the given masks are not changed."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.exercise_8_3


def by_hand_layers():
    weights = {"a": np.array([[0.1, -0.9], [0.5, 0.3]], np.float32),
               "b": np.array([0.2, -0.8, 0.05, 0.6], np.float32)}
    return weights, {name: np.ones_like(w) for name, w in weights.items()}


def test_by_hand(student):
    # 8 survivors, rate 0.5: prune the 4 smallest |w| of both layers together,
    # 0.05 (b[2]), 0.1 (a[0, 0]), 0.2 (b[0]) and 0.3 (a[1, 1]).
    weights, masks = by_hand_layers()
    new = student("8.3").prune_globally(weights, masks, 0.5)
    assert np.array_equal(new["a"], [[0, 1], [1, 0]]), f"mask of a is {new['a'].tolist()}, expected [[0, 1], [1, 0]]"
    assert np.array_equal(new["b"], [0, 1, 0, 1]), f"mask of b is {new['b'].tolist()}, expected [0, 1, 0, 1]"


def test_ties_follow_the_order_of_names(student):
    weights = {"a": np.full(3, 0.5, np.float32), "b": np.full(3, 0.5, np.float32)}
    masks = {name: np.ones(3, np.float32) for name in weights}
    # 6 equal survivors, rate 0.5: the first 3 of the concatenation go.
    new = student("8.3").prune_globally(weights, masks, 0.5, ["b", "a"])
    assert np.array_equal(new["b"], [0, 0, 0]) and np.array_equal(new["a"], [1, 1, 1]), \
        (f"names ['b', 'a'] with all |w| equal: b's three weights come first and are pruned; "
         f"got a {new['a'].tolist()}, b {new['b'].tolist()}")


def test_pruned_weights_and_other_layers_stay(student):
    weights, masks = by_hand_layers()
    masks["a"][0, 1] = 0             # a[0, 1] (|w| 0.9) is pruned already: it stays pruned
    weights["c"], masks["c"] = np.array([0.01, 0.02], np.float32), np.array([1, 0], np.float32)
    # names a, b: 7 survivors, rate 0.5 prunes floor(3.5) = 3: 0.05, 0.1 and 0.2; c untouched.
    new = student("8.3").prune_globally(weights, masks, 0.5, ["a", "b"])
    assert np.array_equal(new["a"], [[0, 0], [1, 1]]), f"mask of a is {new['a'].tolist()}, expected [[0, 0], [1, 1]]"
    assert np.array_equal(new["b"], [0, 1, 0, 1]), f"mask of b is {new['b'].tolist()}, expected [0, 1, 0, 1]"
    assert np.array_equal(new["c"], [1, 0]), "layer c is not in names: its mask must stay [1, 0]"


@st.composite
def cases(draw):
    weights, masks = {}, {}
    for name in ("conv1.W", "conv2.W", "fc1.W", "out.W"):
        shape = draw(st.sampled_from([(6,), (2, 3), (2, 1, 2, 2)]))
        size = int(np.prod(shape))
        weights[name] = np.array(draw(st.lists(st.sampled_from([0.0, -0.1, 0.1, 0.5, -0.5, 2.0]),
                                               min_size=size, max_size=size)), np.float32).reshape(shape)
        masks[name] = np.array(draw(st.lists(st.sampled_from([0.0, 1.0, 1.0]), min_size=size,
                                             max_size=size)), np.float32).reshape(shape)
        masks[name].ravel()[draw(st.integers(0, size - 1))] = 1.0     # a layer needs a survivor
    names = draw(st.permutations(list(weights)).flatmap(lambda p: st.integers(1, 4).map(lambda k: p[:k])))
    rate = draw(st.sampled_from([0.0, 0.2, 0.5, 0.75, 0.9]))
    return weights, masks, list(names), rate


@settings(max_examples=60, deadline=None, database=None)
@given(case=cases())
def test_random_layers(student, case):
    weights, masks, names, rate = case
    before = {name: mask.copy() for name, mask in masks.items()}
    new = student("8.3").prune_globally(weights, masks, rate, names)
    setting = f"names {names}, rate {rate}"
    for name in masks:
        assert np.array_equal(masks[name], before[name]), f"the given mask of {name} was changed in place"
        assert np.array_equal(new[name] != 0, (new[name] != 0) & (before[name] != 0)), \
            f"{name}: a pruned weight came back ({setting})"
        if name not in names:
            assert np.array_equal(new[name], before[name]), f"{name} is not in names: its mask must stay ({setting})"
    magnitudes = np.concatenate([np.abs(weights[layer]).ravel() for layer in names])
    old = np.concatenate([before[n].ravel() for n in names]) != 0
    kept = np.concatenate([np.asarray(new[n]).ravel() for n in names]) != 0
    pruned = old & ~kept
    rate_exact = Fraction(str(rate))
    expected = int(rate_exact * int(old.sum()))        # floor: a Fraction truncates toward 0
    assert pruned.sum() == expected, \
        f"pruned {int(pruned.sum())} of {int(old.sum())} survivors, should be floor({rate} * {int(old.sum())}) = {expected} ({setting})"
    if pruned.any() and kept.any():
        assert magnitudes[pruned].max() <= magnitudes[kept].min(), \
            (f"pruned a weight of |w| {magnitudes[pruned].max():g} but kept one of {magnitudes[kept].min():g}: "
             f"the smallest go first ({setting})")
        threshold = magnitudes[pruned].max()
        at = np.flatnonzero(old & (magnitudes == threshold))
        order = pruned[at]
        assert np.all(order[:order.sum()]), \
            (f"among the survivors of |w| {threshold:g} (positions {at.tolist()} of the layers "
             f"concatenated in the order of names) the earlier ones are pruned first ({setting})")
