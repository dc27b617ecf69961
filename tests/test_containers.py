"""Nested containers and the §4 nets: residual blocks' gradient checks over shapes drawn
by hypothesis, a float64 end-to-end gradient check of ResNet-20, dotted names, declared
initialisers, exact weight counts, and the state (BatchNorm statistics) that state_dict
and checkpoints carry through nesting."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import seeds
from minilottery.containers import ResidualBlock, Sequential
from minilottery.gradcheck import as_float64, check_layer
from minilottery.init import initialize
from minilottery.layers import Conv2d, Dense, Dropout, Flatten, ReLU
from minilottery.losses import softmax_cross_entropy
from minilottery.models import basic_block, resnet20, vgg19
from minilottery.optim import SGD
from minilottery.normalization import BatchNorm2d
from minilottery.protocol import walk
from minilottery.pruning import kept_after_rounds, prune_globally
from minilottery.train import HISTORY_COLUMNS, History, load_checkpoint, save_checkpoint

FAST = settings(deadline=None, max_examples=12)
TOL = 1e-6


def _block(c_in, c_out, stride, rng):
    """A ResNet basic block (conv-BN-ReLU-conv-BN + shortcut, ReLU), projected where the
    shape changes, with random parameters."""
    block = basic_block(c_in, c_out, stride)
    for array in block.named_params().values():
        array[...] = rng.standard_normal(array.shape) * 0.5 + (1 if array.ndim == 1 else 0)
    return block


@FAST
@given(n=st.integers(2, 3), c=st.integers(1, 3), h=st.integers(2, 5), w=st.integers(2, 5), seed=seeds)
def test_residual_block_with_identity_shortcut_gradcheck(n, c, h, w, seed):
    rng = np.random.default_rng(seed)
    block = _block(c, c, 1, rng)
    assert block.shortcut is None
    errors = check_layer(block, rng.standard_normal((n, c, h, w)), seed=seed)
    assert len(errors) == 1 + 6                 # x, two conv weights, two BN scales and shifts
    assert all(e < TOL for e in errors.values()), errors


@FAST
@given(n=st.integers(2, 3), c_in=st.integers(1, 3), c_out=st.integers(1, 4),
       h=st.integers(3, 6), w=st.integers(3, 6), stride=st.sampled_from([1, 2]), seed=seeds)
def test_residual_block_with_projection_shortcut_gradcheck(n, c_in, c_out, h, w, stride, seed):
    rng = np.random.default_rng(seed)
    if stride == 1 and c_in == c_out:
        c_out += 1                               # make the shape change, so S projects
    block = _block(c_in, c_out, stride, rng)
    errors = check_layer(block, rng.standard_normal((n, c_in, h, w)), seed=seed)
    assert {"shortcut.conv.W", "shortcut.bn.gamma", "shortcut.bn.beta"} <= set(errors)
    assert all(e < TOL for e in errors.values()), errors


def test_a_residual_block_adds_its_shortcut_then_rectifies():
    x = np.arange(-4, 4, dtype=np.float32).reshape(1, 2, 2, 2)
    negate = Conv2d(2, 2, 1, bias=False)
    negate.params["W"][...] = -2 * np.eye(2, dtype=np.float32)[:, :, None, None]
    block = ResidualBlock(negate)
    assert np.array_equal(block.forward(x), np.maximum(-x, 0))          # -2x + x
    with pytest.raises(ValueError, match="shortcut output"):
        ResidualBlock(Conv2d(2, 3, 1)).forward(x)


def _nested():
    inner = Sequential(Dense(4, 3, name="fc"), ReLU(name="relu"), name="inner")
    return Sequential(Flatten(name="flat"), inner, Dropout(0.5, name="drop"), Dense(3, 2, name="out"))


def test_names_are_dotted_paths_from_one_walk():
    model = _nested()
    assert [path for path, _ in walk(model)] == ["", "flat", "inner", "inner.fc", "inner.relu",
                                                 "drop", "out"]
    assert list(model.named_params()) == ["inner.fc.W", "inner.fc.b", "out.W", "out.b"]
    assert list(model.named_masks()) == ["inner.fc.W", "out.W"]
    assert model.named_grads().keys() == model.named_params().keys()
    assert model.count_weights() == 4 * 3 + 3 * 2


def test_nested_gradients_match_finite_differences():
    rng = np.random.default_rng(4)
    model = _nested()
    initialize(model, seed=3)
    errors = check_layer(model, rng.standard_normal((3, 2, 2)), seed=5)
    assert all(e < 1e-7 for e in errors.values()), errors


def test_resnet20_has_the_papers_weights():
    model = resnet20(seed=0)
    masks = model.named_masks()
    shortcut = {n: m.size for n, m in masks.items() if "shortcut" in n}
    convs = {n: m.size for n, m in masks.items() if m.ndim == 4 and "shortcut" not in n}
    assert sum(convs.values()) == 267_696 and len(convs) == 19
    assert sum(shortcut.values()) == 2_560 and len(shortcut) == 2
    assert masks["out.W"].size == 640
    assert model.count_weights() == 270_896
    assert "stage2.block0.conv1.W" in masks and "stage2.block0.shortcut.conv.W" in masks
    assert not any(name.endswith(("gamma", "beta")) for name in masks)


def test_vgg19_has_the_papers_weights():
    model = vgg19(seed=0)
    masks = model.named_masks()
    conv = sum(m.size for m in masks.values() if m.ndim == 4)
    assert conv == 20_018_880 and sum(m.ndim == 4 for m in masks.values()) == 16
    assert masks["out.W"].size == 5_120
    assert model.count_weights() == 20_024_000


def test_initialisers_are_declared_per_parameter():
    model = resnet20(seed=1)
    for name, param in model.named_params().items():
        if name.endswith("gamma"):
            assert np.all(param == 1), name
        elif name.endswith(("beta", ".b")):
            assert np.all(param == 0), name
        else:
            assert param.std() > 0, name
    again = resnet20(seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(model.named_params().values(),
                                                    again.named_params().values()))


def _loss(model, x, labels):
    return softmax_cross_entropy(model.forward(x, training=True), labels)


def test_resnet20_end_to_end_gradcheck_in_float64():
    """Backward through all 19 convs, 21 BatchNorms, 9 blocks (two projected), the pool
    and the output layer, against central differences at 4 coordinates of every param,
    on 8x8 images (the stride-2 stages leave 2x2 maps). The step is 1e-6: with a larger
    one, a ReLU input this deep crosses zero inside the interval often enough to move the
    difference quotient by 1e-3 (measured; the analytic gradient matches once h is small)."""
    rng = np.random.default_rng(0)
    model = as_float64(resnet20(seed=2))
    x = rng.standard_normal((3, 3, 8, 8))
    labels = np.array([1, 7, 3])
    _, dlogits = _loss(model, x, labels)
    model.backward(dlogits)
    grads = {name: g.copy() for name, g in model.named_grads().items()}
    h, checked = 1e-6, 0
    for name, param in model.named_params().items():
        flat, grad = param.reshape(-1), grads[name].reshape(-1)
        for i in rng.choice(flat.size, size=min(4, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + h
            plus = _loss(model, x, labels)[0]
            flat[i] = old - h
            minus = _loss(model, x, labels)[0]
            flat[i] = old
            numeric = (plus - minus) / (2 * h)
            assert abs(grad[i] - numeric) <= 1e-6 + 1e-4 * abs(numeric), (name, i, grad[i], numeric)
            checked += 1
    assert checked > 200


def test_global_pruning_keeps_the_exact_count_and_spares_shortcuts_and_output():
    model = resnet20(seed=0)
    masks = model.named_masks()
    convs = [n for n, m in masks.items() if m.ndim == 4 and m.shape[2:] != (1, 1)]
    for k in range(1, 4):
        masks = prune_globally(model.named_params(), masks, 0.2, names=convs)
        assert sum(int(masks[n].sum()) for n in convs) == kept_after_rounds(267_696, 0.2, k)
    assert all(np.all(m == 1) for n, m in masks.items() if n not in convs)


def test_state_dict_and_checkpoints_carry_nested_batchnorm_statistics(tmp_path):
    rng = np.random.default_rng(5)
    model = resnet20(seed=0)
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    model.forward(x, training=True)             # moves every BatchNorm's running statistics
    state = model.state_dict()
    assert len(state["state"]) == 21 and "stage3.block0.shortcut.bn" in state["state"]
    fresh = resnet20(seed=0)
    fresh.load_state_dict(state)
    assert np.array_equal(fresh.forward(x, training=False), model.forward(x, training=False))

    optimizer = SGD(model, lr=0.1, momentum=0.9)
    history = History()
    history.append(**{column: (1 if column == "iteration" else 0.5) for column in HISTORY_COLUMNS})
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, model, optimizer, 1, history, None)
    restored = resnet20(seed=0)
    load_checkpoint(path, restored, SGD(restored, lr=0.1, momentum=0.9), iterations=1, eval_every=1)
    for (path_a, a), (_, b) in zip(walk(model), walk(restored)):
        assert all(np.array_equal(v, b.own_state()[k]) for k, v in a.own_state().items()), path_a


def test_a_state_for_the_wrong_layers_is_refused():
    model = resnet20(seed=0)
    state = model.state_dict()
    del state["state"]["stage1.block0.bn1"]
    with pytest.raises(ValueError, match="must name the layers that keep state"):
        resnet20(seed=1).load_state_dict(state)


def test_dropout_inside_a_container_is_reseeded_by_its_position():
    def model():
        return Sequential(Sequential(Dense(3, 3), Dropout(0.5), name="inner"), Dropout(0.5))
    a, b = model(), model()
    a.reseed_dropout(7)
    b.reseed_dropout(7)
    x = np.ones((4, 3), dtype=np.float32)
    inner_a, inner_b = a["inner"]["dropout1"], b["inner"]["dropout1"]
    assert np.array_equal(inner_a.forward(x), inner_b.forward(x))
    assert not np.array_equal(a["dropout1"].forward(x), inner_a.forward(x))


def test_evaluation_folds_batchnorm_into_the_convolution_to_float32_round_off(monkeypatch):
    rng = np.random.default_rng(11)
    model = resnet20(seed=1)
    x = rng.standard_normal((6, 3, 8, 8)).astype(np.float32)
    for _ in range(3):                     # running statistics away from 0 and 1
        model.forward(x * 3 + 1, training=True)
    for _, layer in walk(model):
        if isinstance(layer, BatchNorm2d):
            layer.params["gamma"][...] = rng.uniform(0.5, 2, layer.channels)
            layer.params["beta"][...] = rng.standard_normal(layer.channels)
    folded = model.forward(x, training=False)

    monkeypatch.setattr(Sequential, "_folds_batchnorm", lambda self, index: False)
    plain = model.forward(x, training=False)
    assert np.abs(folded - plain).max() <= 1e-4 * np.abs(plain).max()
    with pytest.raises(ValueError, match="evaluation only"):
        model.layers[0].forward(x, training=True, weights=model.layers[0].folded_with(model.layers[1]))


@pytest.mark.parametrize("build, shape", [
    (lambda: resnet20(seed=0), (3, 3, 32, 32)),
    (lambda: basic_block(4, 8, 2), (3, 4, 6, 6)),
    (lambda: Sequential(Conv2d(3, 4, 3, padding=1, name="conv"), BatchNorm2d(4, name="bn"),
                        ReLU(), Flatten(), Dropout(0.5, seed=1, name="drop"),
                        Dense(4 * 5 * 5, 3, name="out")), (2, 3, 5, 5)),
])
def test_forward_and_backward_never_write_into_the_arrays_they_are_given(build, shape):
    """Layers keep their inputs by reference for backward (BatchNorm its x, a residual
    block the block's input), which is only sound if no layer writes into an array it was
    handed: neither the input of forward nor the gradient given to backward."""
    model = build()
    initialize(model, seed=0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    x_before = x.copy()
    out = model.forward(x, training=True)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dout_before = dout.copy()
    dx = model.backward(dout)
    assert np.array_equal(x, x_before) and np.array_equal(dout, dout_before)
    assert dx.shape == x.shape and np.isfinite(dx).all()
