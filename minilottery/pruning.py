"""Pruning: magnitude masks (layer-wise and global), random masks, one-shot
masks, reset / rewind of the survivors, and sparsity reports.

Everything works on dicts keyed by the dotted names that a model's named_masks()
and named_params() give ("fc1.W", "conv3.W", "out.W", "stage2.block0.conv1.W"; the
layer protocol is in minilottery.protocol). A mask is a float32 array of 0s and 1s with the shape of
its weight: 1 = kept, 0 = pruned. Only weights have masks; biases are never
pruned and never counted.

The rule (docs/paper.md §3, the paper's §2): in every layer, remove a fixed
fraction `rate` of the weights that SURVIVED the previous rounds, those of
smallest |w|:

    n_surviving = number of ones in the layer's mask
    n_prune     = floor(rate * n_surviving)      computed exactly (see below)
    prune the n_prune surviving weights of smallest |w|

Rounding and ties, so that every run is reproducible and checkable by hand:
  * floor(rate * n) is computed with exact rational arithmetic on the DECIMAL
    value of the rate (fractions.Fraction(str(rate))): floor(0.7 * 90) = 63, not
    the 62 that binary floats give (0.7 * 90 == 62.99999999999999).
  * ties in |w| are broken by flat index (C order): among equal magnitudes the
    lower index is pruned first (a stable sort of |w| over the survivors).
    Global pruning uses the flat index of the concatenation of the named layers
    in the order given.
  * since rate < 1, floor(rate * n) < n: a layer with at least one survivor
    always keeps at least one. After k rounds a layer keeps
    kept_after_rounds(n, rate, k), which applies the rule k times.

Weights, masks and theta are dicts of arrays or of array-likes (nested lists
of numbers, read with np.asarray). All functions validate everything first
(real-number arrays, rates in [0, 1), known layer names, mask shapes and 0/1
values, finite weights, no empty layer) and raise a TypeError (not a dict of
real numbers) or ValueError naming the argument or layer and the value; they
never modify their inputs and return new float32 masks (reset_to is the one
function that writes, into the model, after all checks have passed).
"""

import math
import numbers
from collections.abc import Mapping
from fractions import Fraction

import numpy as np

from .protocol import named, parameters, real_array

__all__ = [
    "prune_by_magnitude", "prune_globally", "random_masks_like", "one_shot_masks",
    "layerwise_rates", "kept_after_rounds", "reset_to", "sparsity_report",
    "SparsityReport",
]


# --------------------------------------------------------------------------
# Exact counts
# --------------------------------------------------------------------------

def _exact_rate(rate, what="rate"):
    """The rate as an exact Fraction of its decimal spelling; ValueError unless 0 <= rate < 1."""
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise ValueError(f"{what} must be a number in [0, 1), got {rate!r}")
    if isinstance(rate, numbers.Rational):
        exact = Fraction(rate)
    elif math.isfinite(rate):
        exact = Fraction(str(rate))        # '0.7' -> 7/10, not the binary 0.6999999...
    else:
        raise ValueError(f"{what} must be a number in [0, 1), got {rate!r}")
    if not 0 <= exact < 1:
        raise ValueError(f"{what} must be in [0, 1), got {rate!r}")
    return exact


def _check_rounds(rounds):
    if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 0:
        raise ValueError(f"rounds must be an integer >= 0, got {rounds!r}")


def _n_prune(rate, n_surviving):
    """floor(rate * n_surviving) in exact integer arithmetic (rate is a Fraction)."""
    return (rate.numerator * n_surviving) // rate.denominator


def kept_after_rounds(n_weights, rate, rounds):
    """How many of n_weights an iterative schedule keeps after `rounds` rounds at
    `rate`: n <- n - floor(rate * n), applied `rounds` times.

    LeNet (235,200 + 30,000 weights at 0.2, 1,000 at 0.1) keeps 51.3% of its
    266,200 weights after 3 rounds and 3.6% after 15 (docs/paper.md §7)."""
    if isinstance(n_weights, bool) or not isinstance(n_weights, numbers.Integral) or n_weights < 1:
        raise ValueError(f"n_weights must be an integer >= 1, got {n_weights!r}")
    _check_rounds(rounds)
    exact = _exact_rate(rate)
    n = int(n_weights)
    for _ in range(rounds):
        n -= _n_prune(exact, n)
    return n


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------

def _arrays(group, what):
    """A dict name -> array-like as a dict name -> ndarray of real numbers (no copies of
    arrays already given as such); TypeError naming `what` and the entry otherwise."""
    if not isinstance(group, Mapping):
        raise TypeError(f"{what} must be a dict {{layer name: array}}, got {type(group).__name__}")
    return {name: real_array(value, f"{what}[{name!r}]") for name, value in group.items()}


def _check_mask(name, mask, weight=None):
    if weight is not None and mask.shape != weight.shape:
        raise ValueError(f"mask of {name} has shape {mask.shape}, "
                         f"but the weight has shape {weight.shape}")
    bad = (mask != 0) & (mask != 1)
    if bad.any():
        raise ValueError(f"mask of {name} must hold only 0 and 1, "
                         f"found {mask.ravel()[np.flatnonzero(bad.ravel())[0]]!r}")


def _check_layers(weights, masks, names, what):
    """Check every named layer: it has a mask and a weight of the same shape, the mask is
    0/1, the surviving weights are finite and there is at least one survivor."""
    for name in names:
        if name not in masks:
            raise ValueError(f"unknown layer {name!r} in {what}; prunable layers are "
                             f"{sorted(masks)}")
        if name not in weights:
            raise ValueError(f"no weight for layer {name!r} (weights hold {sorted(weights)})")
        _check_mask(name, masks[name], weights[name])
        kept = masks[name] != 0
        if not kept.any():
            raise ValueError(f"layer {name!r} has 0 surviving weights; pruning it further "
                             "is impossible (too many rounds for this layer?)")
        if not np.all(np.isfinite(weights[name][kept])):
            raise ValueError(f"layer {name!r} has non-finite surviving weights")


def _check_rates(masks, rates):
    if not isinstance(rates, dict):
        raise ValueError(f"rates must be a dict {{layer name: rate}}, got {type(rates).__name__}")
    exact = {}
    for name, rate in rates.items():
        if name not in masks:
            raise ValueError(f"unknown layer {name!r} in rates; prunable layers are "
                             f"{sorted(masks)}")
        exact[name] = _exact_rate(rate, f"rate of layer {name!r}")
    return exact


def _copy_masks(masks):
    for name, mask in masks.items():
        _check_mask(name, mask)
    return {name: mask.astype(np.float32, copy=True) for name, mask in masks.items()}


# --------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------

def _smallest_survivors(magnitudes, mask, n_prune):
    """Flat indices of the n_prune surviving entries of smallest magnitude; ties go
    to the lower flat index (survivors are listed in index order, the sort is stable).

    magnitudes (|w|) and mask (1 = survivor) have the same shape; flat indices count
    in C order over that shape. Entries whose mask is 0 are already pruned and are
    never returned."""
    ### BEGIN SOLUTION 4.1
    survivors = np.flatnonzero(mask.ravel())
    order = np.argsort(magnitudes.ravel()[survivors], kind="stable")
    return survivors[order[:n_prune]]
    ### END SOLUTION


def _prune_layer(new_mask, weight, n_prune):
    flat = new_mask.reshape(-1)
    flat[_smallest_survivors(np.abs(weight), new_mask, n_prune)] = 0.0


def prune_by_magnitude(weights, masks, rates):
    """Layer-wise magnitude pruning: in every layer named in `rates`, remove the
    floor(rate * n_surviving) surviving weights of smallest |w| (ties: lower flat
    index first). Layers not in `rates` keep their masks. Returns new masks."""
    weights, masks = _arrays(weights, "weights"), _arrays(masks, "masks")
    exact = _check_rates(masks, rates)
    _check_layers(weights, masks, exact, "rates")
    new = _copy_masks(masks)
    for name, rate in exact.items():
        _prune_layer(new[name], weights[name], _n_prune(rate, int(np.count_nonzero(new[name]))))
    return new


def random_masks_like(masks, rng):
    """Random pruning control: for every layer a mask with the same number of ones
    as masks[name], at positions drawn uniformly without replacement. rng is a
    np.random.Generator or an int seed; layers are drawn in the dict's order, so
    a seed gives the same masks every time."""
    masks = _arrays(masks, "masks")
    if not isinstance(rng, np.random.Generator):
        if isinstance(rng, bool) or not isinstance(rng, numbers.Integral):
            raise ValueError(f"rng must be a numpy Generator or an int seed, got {rng!r}")
        rng = np.random.default_rng(int(rng))
    for name, mask in masks.items():
        _check_mask(name, mask)
    ### BEGIN SOLUTION 5.2
    new = {}
    for name, mask in masks.items():
        kept = int(np.count_nonzero(mask))
        flat = np.zeros(mask.size, np.float32)
        flat[rng.choice(mask.size, size=kept, replace=False)] = 1.0
        new[name] = flat.reshape(mask.shape)
    ### END SOLUTION
    return new


def prune_globally(weights, masks, rate, names=None):
    """Global magnitude pruning: rank the surviving weights of all layers in `names`
    (default: every layer in masks) together by |w| and remove the smallest
    floor(rate * total survivors). Ties: lower index in the concatenation of the
    layers, in the order of `names`, first. Other layers keep their masks."""
    weights, masks = _arrays(weights, "weights"), _arrays(masks, "masks")
    names = list(masks) if names is None else list(names)
    if not names:
        raise ValueError("names must list at least one layer")
    if len(set(names)) != len(names):
        raise ValueError(f"names must not repeat a layer, got {names!r}")
    exact = _exact_rate(rate)
    _check_layers(weights, masks, names, "names")
    ### BEGIN SOLUTION 8.3
    new = _copy_masks(masks)
    magnitudes = np.concatenate([np.abs(weights[n]).ravel() for n in names])
    joint_mask = np.concatenate([new[n].ravel() for n in names])
    pruned = _smallest_survivors(magnitudes, joint_mask,
                                 _n_prune(exact, int(np.count_nonzero(joint_mask))))
    joint_mask[pruned] = 0.0
    start = 0
    for n in names:
        size = new[n].size
        new[n][...] = joint_mask[start:start + size].reshape(new[n].shape)
        start += size
    ### END SOLUTION
    return new


def pruning_groups(rates, shapes):
    """The groups that global pruning ranks together, each at one rate: every layer of
    nonzero rate joins the others of its kind, conv (4-d weights) or dense (2-d), that
    have the same rate; the output layer "out" always stays alone. For ResNet-20 and
    VGG-19 that is one group, all their 3x3 conv weights at 20% (the paper's §4); for
    LeNet, fc1 and fc2 together. Returns [(names, rate)], in the order of ``rates``."""
    groups = {}
    for name, rate in rates.items():
        if rate == 0:
            continue
        kind = "out" if name.split(".")[0] == "out" else len(shapes[name])
        groups.setdefault((kind, rate), []).append(name)
    return [(names, rate) for (_, rate), names in groups.items()]


def prune_groups_globally(weights, masks, groups):
    """One round of global pruning: ``prune_globally`` in each of ``groups``
    [(names, rate)] (see pruning_groups). Layers in no group keep their masks."""
    for names, rate in groups:
        masks = prune_globally(weights, masks, rate, names=names)
    return masks


def one_shot_masks(weights, masks, rates, rounds):
    """Prune once, in every layer named in `rates`, down to the count that `rounds`
    iterative rounds at that layer's rate would keep (kept_after_rounds of its
    current survivors), by magnitude as above. Returns new masks."""
    weights, masks = _arrays(weights, "weights"), _arrays(masks, "masks")
    _check_rounds(rounds)
    exact = _check_rates(masks, rates)
    _check_layers(weights, masks, exact, "rates")
    new = _copy_masks(masks)
    for name in exact:
        n_surviving = int(np.count_nonzero(new[name]))
        keep = kept_after_rounds(n_surviving, rates[name], rounds)
        _prune_layer(new[name], weights[name], n_surviving - keep)
    return new


# --------------------------------------------------------------------------
# Rate maps
# --------------------------------------------------------------------------

def _prunable_shapes(model_or_masks):
    """{name: shape or None} from a model (a container; minilottery.protocol), a dict of
    arrays (e.g. named_masks()), or a plain list of names (no shapes)."""
    if hasattr(model_or_masks, "layers") or hasattr(model_or_masks, "children"):
        return {name: mask.shape for name, mask in named(model_or_masks, "masks").items()}
    if isinstance(model_or_masks, dict):
        return {name: np.shape(a) for name, a in model_or_masks.items()}
    if isinstance(model_or_masks, str):
        raise ValueError(f"expected a model, a dict of masks or a list of names, "
                         f"got the string {model_or_masks!r}")
    return {name: None for name in model_or_masks}


def layerwise_rates(model_or_names, rate, *, conv_rate=None, output_rate=None):
    """The paper's per-layer rate map {name: rate} (docs/paper.md §3, the paper's Fig. 2):
    dense weights get `rate` (the fc rate), conv weights `conv_rate` (default: rate),
    and the output layer (the layer named "out") gets `output_rate` (default:
    rate / 2, the paper's half rate for LeNet and Conv-2/4/6; pass 0 to leave it
    unpruned as for ResNet/VGG).

    Layer types are read from the weight shape, so no engine class is imported:
    2-d weights are dense (in, out), 4-d weights are conv (out, in, k, k); any other
    shape raises. Given only a list of names, every non-output layer gets `rate`
    (and conv_rate must not be set, since types are unknown).
    1x1 convolutions (the projections of ResNet's shortcuts) get 0: the paper leaves
    them unpruned (App. I.3).
    LeNet: layerwise_rates(model, 0.2) -> {"fc1.W": 0.2, "fc2.W": 0.2, "out.W": 0.1}."""
    _exact_rate(rate, "rate")
    output_rate = rate / 2 if output_rate is None else output_rate
    conv_rate = rate if conv_rate is None else conv_rate
    _exact_rate(output_rate, "output_rate")
    _exact_rate(conv_rate, "conv_rate")
    shapes = _prunable_shapes(model_or_names)
    rates = {}
    for name, shape in shapes.items():
        if name.split(".")[0] == "out":
            rates[name] = output_rate
        elif shape is None:
            if conv_rate != rate:
                raise ValueError("conv_rate needs layer shapes: pass the model or its "
                                 "named_masks(), not just names")
            rates[name] = rate
        elif len(shape) == 2:
            rates[name] = rate
        elif len(shape) == 4:
            rates[name] = 0.0 if tuple(shape[2:]) == (1, 1) else conv_rate
        else:
            raise ValueError(f"layer {name!r} has a {len(shape)}-d weight {shape}; "
                             "expected 2-d (dense) or 4-d (conv)")
    return rates


# --------------------------------------------------------------------------
# Reset / rewind
# --------------------------------------------------------------------------

def reset_to(model, theta, masks):
    """Set every parameter of `model` to its value in theta (name -> array, e.g. the
    state_dict()["params"] saved at iteration 0 for a reset, or at iteration k for a
    rewind) and install the masks: W = theta_W where mask is 1, exactly +0.0 where it
    is 0; biases come back from theta unmasked. Prunable layers missing from `masks`
    keep their current mask. Everything is checked before anything is written,
    including that theta is finite in the params' dtype."""
    theta, masks = _arrays(theta, "theta"), _arrays(masks, "masks")
    layers = {name: (layer, key, layer.params[key]) for name, layer, key in parameters(model)}
    missing = sorted(set(layers) - set(theta))
    extra = sorted(set(theta) - set(layers))
    if missing or extra:
        raise ValueError(f"theta does not match the model: missing {missing}, unknown {extra}")
    for name, mask in masks.items():
        if name not in layers or layers[name][1] not in layers[name][0].masks:
            raise ValueError(f"unknown layer {name!r} in masks; prunable layers are "
                             f"{sorted(n for n, (l, k, _) in layers.items() if k in l.masks)}")
    values = {}
    for name, (layer, key, param) in layers.items():
        if theta[name].shape != param.shape:
            raise ValueError(f"theta[{name!r}] has shape {theta[name].shape}, "
                             f"the model's param has shape {param.shape}")
        if name in masks:
            _check_mask(name, masks[name], param)
        with np.errstate(over="ignore"):
            values[name] = theta[name].astype(param.dtype)
        if not np.all(np.isfinite(values[name])):
            raise ValueError(f"theta[{name!r}] has non-finite values (in {param.dtype})")
    for name, (layer, key, param) in layers.items():
        value = values[name]
        if key in layer.masks:
            if name in masks:
                layer.masks[key][...] = masks[name]
            param[...] = np.where(layer.masks[key] != 0, value, param.dtype.type(0))
        else:
            param[...] = value


# --------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------

class SparsityReport:
    """Weights remaining per layer and in total, in the paper's convention
    Pm = ||m||_0 / |theta| over weights only (biases are not counted).

    .layers: {name: (kept, total)}; .kept, .total; .fraction_remaining (Pm in [0, 1]);
    .percent_remaining (100 Pm); str(report) is a table."""

    def __init__(self, layers):
        self.layers = dict(layers)
        self.kept = sum(kept for kept, _ in self.layers.values())
        self.total = sum(total for _, total in self.layers.values())

    @property
    def fraction_remaining(self):
        return self.kept / self.total if self.total else 0.0

    @property
    def percent_remaining(self):
        return 100.0 * self.fraction_remaining

    def __repr__(self):
        return f"SparsityReport(kept={self.kept}, total={self.total}, Pm={self.percent_remaining:.2f}%)"

    def __str__(self):
        rows = [(name, kept, total) for name, (kept, total) in self.layers.items()]
        rows.append(("total", self.kept, self.total))
        width = max(len("layer"), *(len(name) for name, _, _ in rows))
        lines = [f"{'layer':<{width}}  {'kept':>10}  {'total':>10}  {'remaining':>9}"]
        for i, (name, kept, total) in enumerate(rows):
            if i == len(rows) - 1:
                lines.append("-" * len(lines[0]))
            pct = 100.0 * kept / total if total else 0.0
            lines.append(f"{name:<{width}}  {kept:>10,}  {total:>10,}  {pct:>8.2f}%")
        return "\n".join(lines)


def sparsity_report(masks):
    """Per-layer and total (kept, total) counts of a mask dict (weights only)."""
    masks = _arrays(masks, "masks")
    for name, mask in masks.items():
        _check_mask(name, mask)
    return SparsityReport({name: (int(np.count_nonzero(mask)), int(mask.size))
                           for name, mask in masks.items()})
