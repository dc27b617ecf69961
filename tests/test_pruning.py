"""Tests for minilottery.pruning: exact round-by-round counts (and LeNet's Pm values,
docs/paper.md §7), the smallest-magnitude rule with its tie rule, global, random
and one-shot masks, reset / rewind, rate maps, reports and validation.

reset_to and layerwise_rates are tested on a small STAND-IN model implementing
only the part of the model protocol (minilottery.models) they use: model.layers;
each layer has .name and params / grads / masks dicts (masks for prunable weights
only). So these tests pin down what pruning needs from a model, and no more.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from minilottery.pruning import (kept_after_rounds, layerwise_rates, one_shot_masks,
                                 prune_by_magnitude, prune_globally, random_masks_like,
                                 reset_to, sparsity_report)


# ---------------------------------------------------------------- stand-in model

class StandInLayer:
    """Stand-in for an engine layer with a prunable weight W and a bias b."""

    def __init__(self, name, w_shape, n_out):
        self.name = name
        self.params = {"W": np.zeros(w_shape, np.float32), "b": np.zeros(n_out, np.float32)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.masks = {"W": np.ones(w_shape, np.float32)}


class StandInReLU:
    name = "relu"
    params, grads, masks = {}, {}, {}


class StandInModel:
    """Stand-in for Sequential: .layers plus named_params() / named_masks()."""

    def __init__(self, layers):
        self.layers = layers

    def named_params(self):
        return {f"{l.name}.{k}": v for l in self.layers for k, v in l.params.items()}

    def named_masks(self):
        return {f"{l.name}.{k}": v for l in self.layers for k, v in l.masks.items()}


def small_convnet():
    return StandInModel([StandInLayer("conv1", (4, 3, 3, 3), 4), StandInReLU(),
                         StandInLayer("fc1", (36, 8), 8), StandInLayer("out", (8, 10), 10)])


LENET = {"fc1.W": (784, 300), "fc2.W": (300, 100), "out.W": (100, 10)}


# ---------------------------------------------------------------- independent oracles

def floor_count_loop(n, permille, rounds):
    """Round-by-round survivors at rate permille/1000, in pure integer arithmetic."""
    counts = [n]
    for _ in range(rounds):
        n = n - (permille * n) // 1000
        counts.append(n)
    return counts


def expected_mask_after_one_round(w, mask, n_prune):
    """Prune the n_prune survivors that come first in the order (|w|, flat index)."""
    flat_w, flat_m = w.ravel().astype(np.float64), mask.ravel()
    survivors = sorted((abs(flat_w[i]), i) for i in range(flat_w.size) if flat_m[i] == 1)
    out = flat_m.copy()
    for _, i in survivors[:n_prune]:
        out[i] = 0
    return out.reshape(mask.shape)


# ---------------------------------------------------------------- strategies

# Few distinct magnitudes and both signs, so that ties are common.
weight_values = st.sampled_from([0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 2.0, 0.25, -3.0, 7.5])


@st.composite
def weights_and_mask(draw, min_side=1, max_side=6):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=min_side, max_side=max_side))
    ties = draw(st.booleans())
    elements = weight_values if ties else st.floats(-10, 10, width=32)
    w = draw(hnp.arrays(np.float32, shape, elements=elements))
    mask = draw(hnp.arrays(np.float32, shape, elements=st.sampled_from([0.0, 1.0])))
    if not mask.any():
        mask.ravel()[draw(st.integers(0, mask.size - 1))] = 1.0
    return w, mask


# ---------------------------------------------------------------- counts

@settings(deadline=None, max_examples=200)
@given(n=st.integers(1, 10**6), permille=st.integers(0, 999), rounds=st.integers(0, 30))
def test_kept_after_rounds_matches_integer_loop(n, permille, rounds):
    rate = permille / 1000
    assert kept_after_rounds(n, rate, rounds) == floor_count_loop(n, permille, rounds)[-1]


def test_exact_floor_where_binary_floats_are_wrong():
    assert math.floor(0.7 * 90) == 62          # the binary-float trap ...
    assert kept_after_rounds(90, 0.7, 1) == 27  # ... avoided: floor(0.7 * 90) = 63 pruned
    w = np.arange(1, 91, dtype=np.float32)
    new = prune_by_magnitude({"a.W": w}, {"a.W": np.ones(90, np.float32)}, {"a.W": 0.7})
    np.testing.assert_array_equal(new["a.W"], (w > 63).astype(np.float32))


def test_layers_keep_a_survivor_forever():
    assert kept_after_rounds(4, 0.2, 100) == 4    # floor(0.8) = 0: a tiny layer stops shrinking
    assert kept_after_rounds(1, 0.9, 50) == 1


def lenet_pm(rounds):
    kept = (kept_after_rounds(235_200, 0.2, rounds) + kept_after_rounds(30_000, 0.2, rounds)
            + kept_after_rounds(1_000, 0.1, rounds))
    return 100 * kept / 266_200


@pytest.mark.parametrize("rounds, paper_pm", [(3, 51.3), (7, 21.1), (9, 13.5), (15, 3.6), (16, 2.9)])
def test_lenet_pm_matches_paper(rounds, paper_pm):
    """docs/paper.md §7 (the paper's §2): LeNet at fc 20%, output 10% per round."""
    assert round(lenet_pm(rounds), 1) == paper_pm


def test_iterative_magnitude_pruning_of_lenet_counts_and_pm():
    """16 real rounds of prune_by_magnitude on LeNet-shaped weights: every layer keeps
    exactly the integer loop's count after every round, and the totals hit the
    paper's Pm at rounds 3/7/9/15/16. The weights change between rounds (as after
    training) so that the rounds are not trivially nested."""
    rng = np.random.default_rng(0)
    masks = {n: np.ones(s, np.float32) for n, s in LENET.items()}
    rates = layerwise_rates(masks, 0.2)
    assert rates == {"fc1.W": 0.2, "fc2.W": 0.2, "out.W": 0.1}
    permille = {"fc1.W": 200, "fc2.W": 200, "out.W": 100}
    expected = {n: floor_count_loop(int(np.prod(s)), permille[n], 16) for n, s in LENET.items()}
    paper = {3: 51.3, 7: 21.1, 9: 13.5, 15: 3.6, 16: 2.9}
    for k in range(1, 17):
        weights = {n: rng.standard_normal(s).astype(np.float32) for n, s in LENET.items()}
        new = prune_by_magnitude(weights, masks, rates)
        for n in LENET:
            assert np.all(new[n] <= masks[n])                     # pruned stay pruned
            assert int(new[n].sum()) == expected[n][k]
        masks = new
        if k in paper:
            assert round(sparsity_report(masks).percent_remaining, 1) == paper[k]


# ---------------------------------------------------------------- the magnitude rule

@settings(deadline=None, max_examples=150)
@given(data=weights_and_mask(), permille=st.integers(0, 999))
def test_prunes_exactly_the_smallest_survivors(data, permille):
    w, mask = data
    w_before, mask_before = w.copy(), mask.copy()
    n_prune = (permille * int(mask.sum())) // 1000
    new = prune_by_magnitude({"l.W": w, "l.b": np.zeros(3, np.float32)},
                             {"l.W": mask}, {"l.W": permille / 1000})
    np.testing.assert_array_equal(new["l.W"], expected_mask_after_one_round(w, mask, n_prune))
    assert new["l.W"].dtype == np.float32
    # inputs untouched
    np.testing.assert_array_equal(w, w_before)
    np.testing.assert_array_equal(mask, mask_before)
    assert new["l.W"] is not mask


def test_ties_prune_lower_flat_index_first():
    w = np.array([[1.0, -1.0], [1.0, 2.0]], np.float32)
    new = prune_by_magnitude({"a.W": w}, {"a.W": np.ones_like(w)}, {"a.W": 0.5})
    np.testing.assert_array_equal(new["a.W"], [[0, 0], [1, 1]])


def test_layers_not_in_rates_are_untouched():
    rng = np.random.default_rng(1)
    w = {"a.W": rng.standard_normal((5, 5)).astype(np.float32),
         "b.W": rng.standard_normal((5, 5)).astype(np.float32)}
    m = {"a.W": np.ones((5, 5), np.float32), "b.W": (rng.random((5, 5)) < 0.5).astype(np.float32)}
    new = prune_by_magnitude(w, m, {"a.W": 0.2})
    assert new["a.W"].sum() == 20
    np.testing.assert_array_equal(new["b.W"], m["b.W"])
    assert new["b.W"] is not m["b.W"]


# ---------------------------------------------------------------- global pruning

def test_global_pruning_ranks_across_layers():
    small = np.full((4, 5), 0.1, np.float32)
    big = np.full((10, 2), 5.0, np.float32)
    weights = {"small.W": small, "big.W": big}
    masks = {n: np.ones_like(w) for n, w in weights.items()}
    new = prune_globally(weights, masks, 0.5, ["small.W", "big.W"])
    assert new["small.W"].sum() == 0          # all 20 pruned: the 20 smallest of 40
    assert new["big.W"].sum() == 20
    # layer-wise pruning at the same rate would have taken half of each
    lw = prune_by_magnitude(weights, masks, {"small.W": 0.5, "big.W": 0.5})
    assert lw["small.W"].sum() == 10 and lw["big.W"].sum() == 10


@settings(deadline=None, max_examples=100)
@given(a=weights_and_mask(), b=weights_and_mask(), permille=st.integers(0, 999))
def test_global_pruning_matches_sorted_concatenation(a, b, permille):
    (wa, ma), (wb, mb) = a, b
    weights = {"a.W": wa, "b.W": wb, "c.W": np.ones(3, np.float32)}
    masks = {"a.W": ma, "b.W": mb, "c.W": np.ones(3, np.float32)}
    new = prune_globally(weights, masks, permille / 1000, ["a.W", "b.W"])
    w_all = np.concatenate([wa.ravel(), wb.ravel()])
    m_all = np.concatenate([ma.ravel(), mb.ravel()])
    n_prune = (permille * int(m_all.sum())) // 1000
    expected = expected_mask_after_one_round(w_all, m_all, n_prune)
    np.testing.assert_array_equal(new["a.W"].ravel(), expected[:wa.size])
    np.testing.assert_array_equal(new["b.W"].ravel(), expected[wa.size:])
    np.testing.assert_array_equal(new["c.W"], 1.0)     # not named: untouched


# ---------------------------------------------------------------- random and one-shot masks

def test_random_masks_keep_counts_differ_across_seeds_and_reproduce():
    rng = np.random.default_rng(3)
    masks = {n: (rng.random(s) < 0.3).astype(np.float32) for n, s in LENET.items()}
    r0 = random_masks_like(masks, 0)
    r0_again = random_masks_like(masks, np.random.default_rng(0))
    r1 = random_masks_like(masks, 1)
    for n in LENET:
        assert r0[n].shape == masks[n].shape and r0[n].dtype == np.float32
        assert set(np.unique(r0[n])) <= {0.0, 1.0}
        assert r0[n].sum() == masks[n].sum() == r1[n].sum()
        np.testing.assert_array_equal(r0[n], r0_again[n])
        assert not np.array_equal(r0[n], r1[n])
        assert not np.array_equal(r0[n], masks[n])


def test_random_masks_are_roughly_uniform():
    mask = {"a.W": np.concatenate([np.ones(50), np.zeros(50)]).astype(np.float32)}
    hits = sum(random_masks_like(mask, seed)["a.W"] for seed in range(400))
    # each position kept with probability 1/2: 400 draws, mean 200, sd 10
    assert hits.min() > 140 and hits.max() < 260


@settings(deadline=None, max_examples=60)
@given(data=weights_and_mask(min_side=2), permille=st.integers(0, 999), rounds=st.integers(0, 8))
def test_one_shot_equals_iterative_counts(data, permille, rounds):
    w, mask = data
    rate = permille / 1000
    one = one_shot_masks({"l.W": w}, {"l.W": mask}, {"l.W": rate}, rounds)
    iterative = {"l.W": mask}
    for _ in range(rounds):
        iterative = prune_by_magnitude({"l.W": w}, iterative, {"l.W": rate})
    assert one["l.W"].sum() == floor_count_loop(int(mask.sum()), permille, rounds)[-1]
    # with the weights held fixed, iterating the rule prunes the same weights
    np.testing.assert_array_equal(one["l.W"], iterative["l.W"])


# ---------------------------------------------------------------- reset / rewind

def test_reset_to_theta_bit_for_bit():
    rng = np.random.default_rng(5)
    model = small_convnet()
    for p in model.named_params().values():
        p[...] = rng.standard_normal(p.shape).astype(np.float32)
    theta0 = {n: p.copy() for n, p in model.named_params().items()}
    # "train": change every param, put garbage in some masked-out weights
    for p in model.named_params().values():
        p += rng.standard_normal(p.shape).astype(np.float32)
    weights = {n: p for n, p in model.named_params().items() if n in model.named_masks()}
    masks = prune_by_magnitude(weights, model.named_masks(), layerwise_rates(model, 0.5))
    reset_to(model, theta0, masks)
    for name, p in model.named_params().items():
        if name in masks:
            kept = masks[name] == 1
            assert np.array_equal(p[kept].view(np.uint32), theta0[name][kept].view(np.uint32))
            assert np.all(p[~kept].view(np.uint32) == 0)       # +0.0 exactly, not -0.0
            np.testing.assert_array_equal(model.named_masks()[name], masks[name])
        else:
            assert np.array_equal(p.view(np.uint32), theta0[name].view(np.uint32))   # biases


def test_reset_to_validates_before_writing():
    model = small_convnet()
    theta = {n: np.ones_like(p) for n, p in model.named_params().items()}
    before = {n: p.copy() for n, p in model.named_params().items()}
    good_masks = {n: np.zeros_like(m) for n, m in model.named_masks().items()}
    bad_cases = [
        ({**theta, "fc1.W": np.ones((3, 3), np.float32)}, good_masks, "fc1.W"),
        ({k: v for k, v in theta.items() if k != "out.b"}, good_masks, "out.b"),
        ({**theta, "ghost.W": np.ones(2, np.float32)}, good_masks, "ghost.W"),
        (theta, {**good_masks, "out.W": np.full((8, 10), 0.5, np.float32)}, "out.W"),
        (theta, {**good_masks, "out.W": np.ones((8, 9), np.float32)}, "out.W"),
        (theta, {**good_masks, "fc1.b": np.ones(8, np.float32)}, "fc1.b"),
    ]
    for bad_theta, bad_masks, culprit in bad_cases:
        with pytest.raises(ValueError, match=culprit.replace(".", r"\.")):
            reset_to(model, bad_theta, bad_masks)
        for n, p in model.named_params().items():
            np.testing.assert_array_equal(p, before[n])
        for m in model.named_masks().values():
            np.testing.assert_array_equal(m, 1.0)


# ---------------------------------------------------------------- rate maps

def test_layerwise_rates_reads_layer_types_from_shapes():
    model = small_convnet()
    assert layerwise_rates(model, 0.2, conv_rate=0.1) == {"conv1.W": 0.1, "fc1.W": 0.2, "out.W": 0.1}
    assert layerwise_rates(model, 0.2) == {"conv1.W": 0.2, "fc1.W": 0.2, "out.W": 0.1}
    assert layerwise_rates(model.named_masks(), 0.2, conv_rate=0.15, output_rate=0.0) == \
        {"conv1.W": 0.15, "fc1.W": 0.2, "out.W": 0.0}
    assert layerwise_rates(["fc1.W", "fc2.W", "out.W"], 0.2) == \
        {"fc1.W": 0.2, "fc2.W": 0.2, "out.W": 0.1}


@pytest.mark.parametrize("call, culprit", [
    (lambda m: layerwise_rates(m, 1.0), "rate"),
    (lambda m: layerwise_rates(m, 0.2, conv_rate=-0.1), "conv_rate"),
    (lambda m: layerwise_rates(m, 0.2, output_rate=1.5), "output_rate"),
    (lambda m: layerwise_rates({"x.W": np.ones((2, 2, 2))}, 0.2), "x.W"),
    (lambda m: layerwise_rates(["fc1.W"], 0.2, conv_rate=0.1), "conv_rate"),
])
def test_layerwise_rates_validation(call, culprit):
    with pytest.raises(ValueError, match=culprit):
        call(small_convnet())


# ---------------------------------------------------------------- reports

def test_sparsity_report_counts_and_table():
    masks = {"fc1.W": np.ones((10, 10), np.float32), "out.W": np.zeros((5, 2), np.float32)}
    masks["out.W"][0, 0] = 1
    report = sparsity_report(masks)
    assert report.layers == {"fc1.W": (100, 100), "out.W": (1, 10)}
    assert (report.kept, report.total) == (101, 110)
    assert report.fraction_remaining == pytest.approx(101 / 110)
    assert report.percent_remaining == pytest.approx(100 * 101 / 110)
    table = str(report)
    lines = table.splitlines()
    assert lines[0].split() == ["layer", "kept", "total", "remaining"]
    assert lines[1].split() == ["fc1.W", "100", "100", "100.00%"]
    assert lines[2].split() == ["out.W", "1", "10", "10.00%"]
    assert lines[-1].split() == ["total", "101", "110", "91.82%"]


# ---------------------------------------------------------------- validation

def _lenet_like():
    rng = np.random.default_rng(0)
    w = {"fc1.W": rng.standard_normal((6, 4)).astype(np.float32),
         "out.W": rng.standard_normal((4, 2)).astype(np.float32)}
    return w, {n: np.ones_like(a) for n, a in w.items()}


@pytest.mark.parametrize("mutate, pattern", [
    (lambda w, m, r: r.update({"fc1.W": 1.0}), r"fc1\.W.*1\.0"),
    (lambda w, m, r: r.update({"fc1.W": -0.1}), r"fc1\.W.*-0\.1"),
    (lambda w, m, r: r.update({"fc1.W": float("nan")}), r"fc1\.W.*nan"),
    (lambda w, m, r: r.update({"fc1.W": True}), r"fc1\.W.*True"),
    (lambda w, m, r: r.update({"fc9.W": 0.2}), r"fc9\.W"),
    (lambda w, m, r: m.update({"fc1.W": np.ones((4, 6), np.float32)}), r"fc1\.W.*\(4, 6\).*\(6, 4\)"),
    (lambda w, m, r: m["out.W"].__setitem__((0, 0), 0.5), r"out\.W.*0\.5"),
    (lambda w, m, r: m["out.W"].fill(0.0), r"out\.W.*0 surviving"),
    (lambda w, m, r: w["out.W"].__setitem__((1, 1), np.inf), r"out\.W.*non-finite"),
    (lambda w, m, r: w.pop("out.W"), r"out\.W"),
])
def test_bad_input_raises_naming_layer_and_value(mutate, pattern):
    w, m = _lenet_like()
    rates = {"fc1.W": 0.2, "out.W": 0.1}
    mutate(w, m, rates)
    for call in (lambda: prune_by_magnitude(w, m, rates),
                 lambda: one_shot_masks(w, m, rates, 3)):
        with pytest.raises(ValueError, match=pattern):
            call()


def test_bad_global_and_count_arguments():
    w, m = _lenet_like()
    with pytest.raises(ValueError, match="rate.*1.5"):
        prune_globally(w, m, 1.5)
    with pytest.raises(ValueError, match="conv9"):
        prune_globally(w, m, 0.2, ["fc1.W", "conv9.W"])
    with pytest.raises(ValueError, match="repeat"):
        prune_globally(w, m, 0.2, ["fc1.W", "fc1.W"])
    with pytest.raises(ValueError, match="rounds.*-1"):
        one_shot_masks(w, m, {"fc1.W": 0.2}, -1)
    with pytest.raises(ValueError, match="n_weights.*0"):
        kept_after_rounds(0, 0.2, 3)
    with pytest.raises(ValueError, match="rate.*1"):
        kept_after_rounds(10, 1, 3)
    with pytest.raises(ValueError, match="mask of a.W.*2"):
        random_masks_like({"a.W": np.array([0.0, 2.0], np.float32)}, 0)
    with pytest.raises(ValueError, match="mask of a.W"):
        sparsity_report({"a.W": np.array([0.0, -1.0], np.float32)})


# ---------------------------------------------------------------- array-likes

def _as_lists(arrays):
    return {name: np.asarray(a).tolist() for name, a in arrays.items()}


@settings(deadline=None, max_examples=25)
@given(a=weights_and_mask(), b=weights_and_mask(), permille=st.integers(0, 999),
       rounds=st.integers(0, 4))
def test_every_function_takes_nested_lists_as_it_takes_arrays(a, b, permille, rounds):
    """Weights, masks and theta given as nested lists give the same results as arrays."""
    w = {"fc1.W": a[0], "out.W": b[0]}
    m = {"fc1.W": a[1], "out.W": b[1]}
    rates = {"fc1.W": permille / 1000, "out.W": permille / 2000}
    calls = [
        lambda w, m: prune_by_magnitude(w, m, rates),
        lambda w, m: prune_globally(w, m, permille / 1000),
        lambda w, m: one_shot_masks(w, m, rates, rounds),
        lambda w, m: random_masks_like(m, permille),
    ]
    for call in calls:
        from_arrays, from_lists = call(w, m), call(_as_lists(w), _as_lists(m))
        assert from_lists.keys() == from_arrays.keys()
        for name in from_arrays:
            np.testing.assert_array_equal(from_lists[name], from_arrays[name])
            assert from_lists[name].dtype == np.float32
    assert sparsity_report(_as_lists(m)).layers == sparsity_report(m).layers


def test_layerwise_rates_reads_shapes_of_nested_lists():
    shapes = {"conv1.W": np.ones((2, 1, 3, 3)), "fc1.W": np.ones((4, 3)), "out.W": np.ones((3, 2))}
    assert layerwise_rates(_as_lists(shapes), 0.2, conv_rate=0.1) == \
        layerwise_rates(shapes, 0.2, conv_rate=0.1) == {"conv1.W": 0.1, "fc1.W": 0.2, "out.W": 0.1}


def test_reset_to_takes_nested_lists():
    rng = np.random.default_rng(2)
    theta = {n: rng.standard_normal(p.shape).astype(np.float32)
             for n, p in small_convnet().named_params().items()}
    masks = {"out.W": (rng.random((8, 10)) < 0.5).astype(np.float32)}
    from_arrays, from_lists = small_convnet(), small_convnet()
    reset_to(from_arrays, theta, masks)
    reset_to(from_lists, _as_lists(theta), _as_lists(masks))
    for name, p in from_lists.named_params().items():
        assert p.tobytes() == from_arrays.named_params()[name].tobytes(), name
    np.testing.assert_array_equal(from_lists.named_masks()["out.W"], masks["out.W"])


@pytest.mark.parametrize("bad, error, pattern", [
    (lambda w, m: (w, {**m, "out.W": np.full((4, 2), "1")}), TypeError, r"masks\['out\.W'\].*dtype"),
    (lambda w, m: ({**w, "out.W": [[1.0, 2.0], [3.0]]}, m), TypeError, r"weights\['out\.W'\]"),
    (lambda w, m: ({**w, "out.W": np.ones((4, 2), complex)}, m), TypeError,
     r"weights\['out\.W'\].*complex"),
    (lambda w, m: (list(w.values()), m), TypeError, "weights must be a dict"),
    (lambda w, m: (w, None), TypeError, "masks must be a dict"),
], ids=["string-mask", "ragged-weight", "complex-weight", "list-of-weights", "no-masks"])
def test_non_numbers_raise_type_error_naming_the_argument(bad, error, pattern):
    w, m = bad(*_lenet_like())
    for call in (lambda: prune_by_magnitude(w, m, {"fc1.W": 0.2}),
                 lambda: prune_globally(w, m, 0.2),
                 lambda: one_shot_masks(w, m, {"fc1.W": 0.2}, 2)):
        with pytest.raises(error, match=pattern):
            call()
    if "masks" in pattern:
        for call in (lambda: random_masks_like(m, 0), lambda: sparsity_report(m)):
            with pytest.raises(error, match=pattern):
                call()


@pytest.mark.parametrize("value, error, pattern", [
    (np.full(10, "0"), TypeError, r"theta\['out\.b'\].*dtype"),
    (np.full(10, np.nan), ValueError, r"theta\['out\.b'\].*non-finite"),
    (np.full(10, 1e39), ValueError, r"theta\['out\.b'\].*non-finite"),     # inf in float32
], ids=["string", "nan", "beyond-float32"])
def test_reset_to_rejects_a_bad_last_entry_before_writing_any(value, error, pattern):
    """out.b comes last in the model's order: a check made while writing would have
    written every other param first."""
    model = small_convnet()
    theta = {n: np.ones_like(p) for n, p in model.named_params().items()}
    theta["out.b"] = value
    masks = {n: np.zeros_like(m) for n, m in model.named_masks().items()}
    with pytest.raises(error, match=pattern):
        reset_to(model, theta, masks)
    for name, p in model.named_params().items():
        assert not p.any(), name
    for m in model.named_masks().values():
        np.testing.assert_array_equal(m, 1.0)
