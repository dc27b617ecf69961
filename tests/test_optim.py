"""Tests for minilottery.optim: SGD / Adam against plain NumPy references, the
pruning invariant (pruned weights and their state stay exactly 0), schedules,
argument validation.

These tests use a small STAND-IN model that implements only the part of the
model protocol (described in minilottery.models' docstring) that the optimizers
use: model.layers; each layer has .name and params / grads / masks dicts.
"""

import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from minilottery.optim import (SGD, Adam, constant, linear_warmup, step_decay,
                               adam_kernel, sgd_kernel)


# ---------------------------------------------------------------- stand-in model

class StandInLayer:
    """Stand-in for an engine layer: a weight W (masked) and a bias b (not masked)."""

    def __init__(self, name, W, b, mask):
        self.name = name
        self.params = {"W": W, "b": b}
        self.grads = {"W": np.zeros_like(W), "b": np.zeros_like(b)}
        self.masks = {"W": mask}


class StandInModel:
    """Stand-in for Sequential: only .layers is used by the optimizers."""

    def __init__(self, layers):
        self.layers = layers


def make_model(rng, shapes, keep=0.6):
    layers = []
    for i, shape in enumerate(shapes):
        W = rng.standard_normal(shape).astype(np.float32)
        mask = (rng.random(shape) < keep).astype(np.float32)
        W *= mask
        b = rng.standard_normal(shape[-1]).astype(np.float32)
        layers.append(StandInLayer(f"layer{i}", W, b, mask))
    return StandInModel(layers)


def fill_grads(model, rng, scale=1.0):
    """Random nonzero gradients EVERYWHERE, pruned positions included (a layer
    multiplies by the mask in backward; the optimizer must not rely on it)."""
    for layer in model.layers:
        for key, p in layer.params.items():
            layer.grads[key][...] = (scale * rng.standard_normal(p.shape)).astype(np.float32)


# ---------------------------------------------------------------- NumPy references
# Written from the textbook formulas, vectorised, float32, masks applied at the end.

def sgd_reference(w, g, vel, mask, lr, momentum, wd):
    f = np.float32
    g = g + f(wd) * w
    vel = f(momentum) * vel + g
    w = w - f(lr) * vel
    if mask is not None:
        w = np.where(mask == 1, w, f(0))
        vel = np.where(mask == 1, vel, f(0))
    return w, vel


def adam_reference(w, g, m, v, mask, t, lr, beta1, beta2, eps, wd):
    f = np.float32
    b1, b2 = f(beta1), f(beta2)
    g = g + f(wd) * w
    m = b1 * m + (f(1) - b1) * g
    v = b2 * v + (f(1) - b2) * g * g
    m_hat = m / f(1 - float(b1) ** t)       # bias corrections of the float32 betas
    v_hat = v / f(1 - float(b2) ** t)
    w = w - f(lr) * m_hat / (np.sqrt(v_hat) + f(eps))
    if mask is not None:
        w = np.where(mask == 1, w, f(0))
        m = np.where(mask == 1, m, f(0))
        v = np.where(mask == 1, v, f(0))
    return w, m, v


# ---------------------------------------------------------------- strategies

shapes = st.lists(hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=5),
                  min_size=1, max_size=3)


def params_of(model):
    out = {}
    for layer in model.layers:
        for key in layer.params:
            out[f"{layer.name}.{key}"] = (layer.params[key].copy(), layer.masks.get(key))
    return out


@settings(deadline=None, max_examples=40)
@given(shapes=shapes, seed=st.integers(0, 2**32 - 1),
       lr=st.floats(1e-4, 1.0), momentum=st.floats(0.0, 0.99),
       wd=st.sampled_from([0.0, 1e-4, 0.1]), steps=st.integers(1, 4))
def test_sgd_matches_numpy_reference(shapes, seed, lr, momentum, wd, steps):
    rng = np.random.default_rng(seed)
    model = make_model(rng, shapes)
    opt = SGD(model, lr, momentum=momentum, weight_decay=wd)
    ref = {name: (w, np.zeros_like(w), mask) for name, (w, mask) in params_of(model).items()}
    for _ in range(steps):
        fill_grads(model, rng)
        for layer in model.layers:
            for key in layer.params:
                name = f"{layer.name}.{key}"
                w, vel, mask = ref[name]
                w, vel = sgd_reference(w, layer.grads[key], vel, mask, lr, momentum, wd)
                ref[name] = (w, vel, mask)
        opt.step()
    assert opt.iteration == steps
    for layer in model.layers:
        for key, p in layer.params.items():
            name = f"{layer.name}.{key}"
            w, vel, _ = ref[name]
            np.testing.assert_allclose(p, w, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(opt.state[name]["velocity"], vel, rtol=1e-5, atol=1e-6)
            assert p.dtype == np.float32


@settings(deadline=None, max_examples=40)
@given(shapes=shapes, seed=st.integers(0, 2**32 - 1),
       lr=st.floats(1e-4, 0.1), beta1=st.floats(0.0, 0.99), beta2=st.floats(0.0, 0.9999),
       eps=st.sampled_from([1e-8, 1e-6, 1e-3]), wd=st.sampled_from([0.0, 1e-4, 0.1]),
       steps=st.integers(1, 4))
def test_adam_matches_numpy_reference(shapes, seed, lr, beta1, beta2, eps, wd, steps):
    rng = np.random.default_rng(seed)
    model = make_model(rng, shapes)
    opt = Adam(model, lr, betas=(beta1, beta2), eps=eps, weight_decay=wd)
    ref = {name: (w, np.zeros_like(w), np.zeros_like(w), mask)
           for name, (w, mask) in params_of(model).items()}
    for t in range(1, steps + 1):
        fill_grads(model, rng)
        for layer in model.layers:
            for key in layer.params:
                name = f"{layer.name}.{key}"
                w, m, v, mask = ref[name]
                ref[name] = (*adam_reference(w, layer.grads[key], m, v, mask, t,
                                             lr, beta1, beta2, eps, wd), mask)
        opt.step()
    for layer in model.layers:
        for key, p in layer.params.items():
            name = f"{layer.name}.{key}"
            w, m, v, _ = ref[name]
            np.testing.assert_allclose(p, w, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(opt.state[name]["m"], m, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(opt.state[name]["v"], v, rtol=1e-5, atol=1e-6)


def test_adam_first_step_is_lr_times_sign():
    """A hand-checkable case: at t = 1, m_hat = g and v_hat = g^2, so the step is
    lr * g / (|g| + eps), i.e. about lr * sign(g)."""
    layer = StandInLayer("fc", np.zeros((2, 2), np.float32), np.zeros(2, np.float32),
                         np.ones((2, 2), np.float32))
    layer.grads["W"][...] = [[3.0, -2.0], [0.5, -0.25]]
    opt = Adam(StandInModel([layer]), 0.01, eps=1e-8)
    opt.step()
    np.testing.assert_allclose(layer.params["W"], [[-0.01, 0.01], [-0.01, 0.01]], rtol=1e-6)
    np.testing.assert_array_equal(layer.params["b"], 0.0)   # zero grad -> zero step


# ---------------------------------------------------------------- the pruning invariant

@pytest.mark.parametrize("make_opt", [
    lambda m: SGD(m, 10.0, momentum=0.99, weight_decay=1.0),
    lambda m: SGD(m, 1.0, momentum=0.0, weight_decay=5.0),
    lambda m: Adam(m, 10.0, betas=(0.99, 0.999), weight_decay=1.0),
    lambda m: Adam(m, linear_warmup(step_decay(5.0, [10, 20]), 5), weight_decay=0.5),
], ids=["sgd-momentum", "sgd-plain", "adam", "adam-schedule"])
def test_pruned_weights_and_state_stay_exactly_zero(make_opt):
    rng = np.random.default_rng(7)
    model = make_model(rng, [(6, 5), (3, 2, 3, 3), (5, 1)], keep=0.5)
    # A pruned weight that is NOT zero at the start must be forced to 0 as well.
    model.layers[0].params["W"][model.layers[0].masks["W"] == 0] = 3.0
    opt = make_opt(model)
    for _ in range(30):
        fill_grads(model, rng, scale=100.0)
        opt.step()
        for layer in model.layers:
            pruned = layer.masks["W"] == 0
            kept = ~pruned
            W = layer.params["W"]
            assert np.all(W[pruned] == 0) and not np.any(np.signbit(W[pruned]))
            for buf in opt.state[f"{layer.name}.W"].values():
                assert np.all(buf[pruned] == 0)
            assert np.any(W[kept] != 0)      # the kept weights do move
            assert np.all(np.isfinite(W))


@pytest.mark.parametrize("make_opt", [
    lambda m: SGD(m, 0.1, momentum=0.9, weight_decay=0.1),
    lambda m: Adam(m, 0.1, weight_decay=0.1),
], ids=["sgd", "adam"])
def test_state_of_weights_pruned_mid_run_is_cleared(make_opt):
    """Train dense for a while (state becomes nonzero everywhere), then prune in place
    and keep the same optimizer: the newly pruned weights and their state are 0 after
    the next step and stay 0; the survivors' state is untouched by the mask change."""
    rng = np.random.default_rng(11)
    model = make_model(rng, [(5, 4), (2, 3, 3, 3)], keep=1.0)
    opt = make_opt(model)
    for _ in range(5):
        fill_grads(model, rng)
        opt.step()
    for layer in model.layers:
        for buf in opt.state[f"{layer.name}.W"].values():
            assert np.all(buf != 0)
        layer.masks["W"][...] = (rng.random(layer.masks["W"].shape) < 0.5)
    for _ in range(5):
        fill_grads(model, rng, scale=10.0)
        opt.step()
        for layer in model.layers:
            pruned = layer.masks["W"] == 0
            assert np.all(layer.params["W"][pruned] == 0)
            for buf in opt.state[f"{layer.name}.W"].values():
                assert np.all(buf[pruned] == 0) and np.all(buf[~pruned] != 0)


def test_biases_are_never_masked():
    layer = StandInLayer("fc", np.ones((2, 3), np.float32), np.ones(3, np.float32),
                         np.zeros((2, 3), np.float32))
    layer.grads["b"][...] = 1.0
    SGD(StandInModel([layer]), 0.5).step()
    np.testing.assert_array_equal(layer.params["W"], 0.0)
    np.testing.assert_array_equal(layer.params["b"], 0.5)


def test_kernels_directly_without_mask():
    """The mask-free specialisation used for biases."""
    w = np.array([1.0, -2.0], np.float32)
    vel = np.zeros(2, np.float32)
    sgd_kernel(w, np.array([1.0, 1.0], np.float32), vel, None,
               np.float32(0.1), np.float32(0.9), np.float32(0.0))
    np.testing.assert_allclose(w, [0.9, -2.1], rtol=1e-6)
    m = np.zeros(2, np.float32)
    v = np.zeros(2, np.float32)
    adam_kernel(w, np.array([1.0, -1.0], np.float32), m, v, None, np.float32(0.1),
                np.float32(0.9), np.float32(0.999), np.float32(1e-8), np.float32(0.0),
                np.float32(0.1), np.float32(0.001))
    np.testing.assert_allclose(w, [0.8, -2.0], rtol=1e-5)
    assert w.dtype == m.dtype == v.dtype == np.float32


# ---------------------------------------------------------------- schedules

def test_constant():
    s = constant(0.3)
    assert [s(t) for t in (0, 1, 10**6)] == [0.3, 0.3, 0.3]


def test_linear_warmup_values():
    s = linear_warmup(0.1, 100)
    assert s(0) == 0.0
    assert s(25) == pytest.approx(0.025)
    assert s(50) == pytest.approx(0.05)
    assert s(100) == pytest.approx(0.1)
    assert s(10_000) == pytest.approx(0.1)


def test_step_decay_values():
    s = step_decay(0.1, [20_000, 25_000])      # Resnet-18, Frankle & Carbin 2019, App. I.3
    assert s(0) == pytest.approx(0.1)
    assert s(19_999) == pytest.approx(0.1)
    assert s(20_000) == pytest.approx(0.01)
    assert s(24_999) == pytest.approx(0.01)
    assert s(25_000) == pytest.approx(0.001)
    assert s(30_000) == pytest.approx(0.001)
    assert step_decay(1.0, [3], factor=0.5)(3) == 0.5


def test_warmup_composed_with_step_decay():
    s = linear_warmup(step_decay(0.1, [56_240, 84_360]), 10_000)
    assert s(0) == 0.0
    assert s(5_000) == pytest.approx(0.05)
    assert s(10_000) == pytest.approx(0.1)
    assert s(56_239) == pytest.approx(0.1)
    assert s(56_240) == pytest.approx(0.01)
    assert s(84_360) == pytest.approx(0.001)
    # warmup shorter than the first milestone is irrelevant there; inside the warmup
    # the factor multiplies the decayed value
    s2 = linear_warmup(step_decay(1.0, [2]), 4)
    assert s2(3) == pytest.approx(0.1 * 3 / 4)


def test_optimizer_follows_schedule():
    model = make_model(np.random.default_rng(0), [(2, 2)])
    opt = SGD(model, linear_warmup(1.0, 4))
    seen = []
    for _ in range(6):
        seen.append(opt.lr_now())
        opt.step()
    assert seen == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    assert opt.iteration == 6
    # lr 0 on step 0: weights did not move on that step
    model2 = make_model(np.random.default_rng(0), [(2, 2)])
    before = model2.layers[0].params["W"].copy()
    fill_grads(model2, np.random.default_rng(1))
    SGD(model2, linear_warmup(1.0, 4)).step()
    np.testing.assert_array_equal(model2.layers[0].params["W"], before)


# ---------------------------------------------------------------- validation

def _model():
    return make_model(np.random.default_rng(0), [(2, 2)])


@pytest.mark.parametrize("build, argument", [
    (lambda m: SGD(m, -0.1), "lr"),
    (lambda m: SGD(m, float("nan")), "lr"),
    (lambda m: SGD(m, 0.1, momentum=-0.5), "momentum"),
    (lambda m: SGD(m, 0.1, momentum=1.0), "momentum"),
    (lambda m: SGD(m, 0.1, weight_decay=-1e-4), "weight_decay"),
    (lambda m: Adam(m, -1e-3), "lr"),
    (lambda m: Adam(m, 1e-3, betas=(1.0, 0.999)), "betas[0]"),
    (lambda m: Adam(m, 1e-3, betas=(-0.1, 0.999)), "betas[0]"),
    (lambda m: Adam(m, 1e-3, betas=(0.9, 1.5)), "betas[1]"),
    (lambda m: Adam(m, 1e-3, betas=(0.9,)), "betas"),
    (lambda m: Adam(m, 1e-3, eps=0.0), "eps"),
    (lambda m: Adam(m, 1e-3, weight_decay=-1.0), "weight_decay"),
    (lambda m: linear_warmup(0.1, 0), "warmup_iterations"),
    (lambda m: linear_warmup(-0.1, 10), "lr"),
    (lambda m: step_decay(0.1, [20, 10]), "milestones"),
    (lambda m: step_decay(0.1, [10], factor=0.0), "factor"),
    (lambda m: constant(-1.0), "lr"),
    # the same rules as Config (minilottery.checks): lr > 0, finite, also in float32
    (lambda m: Adam(m, 0.0), "lr must be > 0"),
    (lambda m: SGD(m, 0), "lr must be > 0"),
    (lambda m: Adam(m, float("inf")), "lr must be a finite number"),
    (lambda m: Adam(m, 1e39), "lr must be > 0 and finite in float32"),
    (lambda m: SGD(m, 1e-46), "lr must be > 0 and finite in float32"),
    (lambda m: Adam(m, True), "lr must be a number"),
    (lambda m: Adam(m, "0.1"), "lr must be a number"),
    (lambda m: constant(0.0), "lr must be > 0"),
    (lambda m: linear_warmup(float("inf"), 10), "lr must be a finite number"),
    (lambda m: step_decay(float("nan"), [10]), "lr must be a finite number"),
    (lambda m: Adam(m, 1e-3, betas=(0.9, 0.99999999999)), "betas[1] must be in [0, 1) and finite in float32"),
    (lambda m: Adam(m, 1e-3, betas=(0.9, float("nan"))), "betas[1]"),
    (lambda m: Adam(m, 1e-3, eps=1e-50), "eps must be > 0 and finite in float32"),
    (lambda m: SGD(m, 0.1, momentum=0.999999999), "momentum must be in [0, 1) and finite in float32"),
    (lambda m: SGD(m, 0.1, weight_decay=float("inf")), "weight_decay"),
    (lambda m: linear_warmup(0.1, 2.0), "warmup_iterations must be an integer"),
    (lambda m: step_decay(0.1, [10, 10.5]), "milestones[1] must be an integer"),
])
def test_bad_arguments_raise_naming_the_argument(build, argument):
    with pytest.raises(ValueError, match=re.escape(argument)):
        build(_model())


def test_schedule_giving_negative_lr_raises():
    opt = SGD(_model(), lambda t: 0.1 - t)
    opt.step()
    with pytest.raises(ValueError, match="iteration 1"):
        opt.step()


def test_schedule_giving_an_lr_float32_cannot_hold_raises():
    opt = Adam(_model(), lambda t: 1e39)
    with pytest.raises(ValueError, match="iteration 0 must be >= 0 and finite in float32"):
        opt.step()


@settings(max_examples=200, deadline=None)
@given(lr=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3),
                    st.sampled_from([0.0, -0.0, 1e-46, 1e-45, 3.4e38, 3.5e38, True])))
def test_config_optimizers_and_schedules_accept_the_same_learning_rates(lr):
    """One rule for lr (minilottery.checks.learning_rate), wherever an lr is given."""
    from minilottery.config import make_config

    def accepts(build):
        try:
            build()
            return True
        except ValueError:
            return False

    model = _model()
    verdicts = {accepts(lambda: make_config("lenet", lr=lr)), accepts(lambda: Adam(model, lr)),
                accepts(lambda: SGD(model, lr)), accepts(lambda: constant(lr)),
                accepts(lambda: linear_warmup(lr, 10)), accepts(lambda: step_decay(lr, [10]))}
    assert len(verdicts) == 1
    expected = (not isinstance(lr, bool) and 0 < lr <= float(np.finfo(np.float32).max)
                and np.float32(lr) > 0)  # positive, and neither inf nor 0 in float32
    assert verdicts == {expected}


def test_grad_shape_mismatch_raises_naming_param():
    model = _model()
    model.layers[0].grads["W"] = np.zeros((3, 3), np.float32)
    opt_builder = lambda: Adam(model, 1e-3)
    with pytest.raises(ValueError, match="layer0.W"):
        opt_builder()


def test_float64_param_raises():
    model = _model()
    model.layers[0].params["b"] = model.layers[0].params["b"].astype(np.float64)
    with pytest.raises(ValueError, match="layer0.b"):
        SGD(model, 0.1)


@pytest.mark.parametrize("masked", [True, False], ids=["mask", "no-mask"])
def test_parallel_chunks_match_the_serial_update(masked):
    """Tensors larger than one chunk are updated by several threads, chunk by chunk:
    the result must be the serial update's, bit for bit (elementwise math)."""
    from minilottery.optim import CHUNK, adam_update, sgd_update
    rng = np.random.default_rng(3)
    n = 3 * CHUNK + 17
    w = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    mask = (rng.random(n) < 0.5).astype(np.float32) if masked else None
    f = np.float32
    state = [rng.random(n).astype(np.float32) for _ in range(2)]
    adam_args = (f(0.01), f(0.9), f(0.999), f(1e-8), f(1e-4), f(0.1), f(0.001))
    fast = [w.copy(), *(s.copy() for s in state)]
    slow = [w.copy(), *(s.copy() for s in state)]
    adam_kernel(fast[0], g, fast[1], fast[2], mask, *adam_args)
    adam_update(slow[0], g, slow[1], slow[2], mask, *adam_args)
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)
    # the bias corrections 0.1, 0.001 above are those of t = 1 with betas 0.9, 0.999
    ref = adam_reference(w, g, state[0], state[1], mask, 1, 0.01, 0.9, 0.999, 1e-8, 1e-4)
    for a, b in zip(fast, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    fast_w, fast_v = w.copy(), state[0].copy()
    slow_w, slow_v = w.copy(), state[0].copy()
    sgd_kernel(fast_w, g, fast_v, mask, f(0.1), f(0.9), f(1e-4))
    sgd_update(slow_w, g, slow_v, mask, f(0.1), f(0.9), f(1e-4))
    np.testing.assert_array_equal(fast_w, slow_w)
    np.testing.assert_array_equal(fast_v, slow_v)
    ref_w, ref_v = sgd_reference(w, g, state[0], mask, 0.1, 0.9, 1e-4)
    np.testing.assert_allclose(fast_w, ref_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast_v, ref_v, rtol=1e-5, atol=1e-6)
