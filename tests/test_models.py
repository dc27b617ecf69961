"""Sequential, the paper's builders, init, state dicts and masks, memory budget, no-JIT path."""

import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from minilottery import init, models
from minilottery.gradcheck import as_float64, numerical_gradient, rel_error
from minilottery.layers import Conv2d, Dense, Flatten, MaxPool2d, ReLU
from minilottery.losses import softmax_cross_entropy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name, n_weights, input_shape", [
    ("lenet", 266_200, (1, 28, 28)),
    ("conv2", 4_300_992, (3, 32, 32)),
    ("conv4", 2_425_024, (3, 32, 32)),
    ("conv6", 2_261_184, (3, 32, 32)),
])
def test_builders_weight_counts_names_and_output(name, n_weights, input_shape):
    model = models.BUILDERS[name](seed=0)
    assert model.count_weights() == n_weights
    assert sum(m.size for m in model.named_masks().values()) == n_weights
    names = [layer.name for layer in model.layers]
    assert names[-1] == "out" and len(set(names)) == len(names)
    assert all(k.endswith(".W") for k in model.named_masks())     # biases never prunable
    x = np.random.default_rng(0).random((2,) + input_shape, dtype=np.float32)
    y = model.forward(x, training=False)
    assert y.shape == (2, 10) and y.dtype == np.float32


def test_conv_builder_layout():
    names = [layer.name for layer in models.conv4(seed=0).layers]
    assert names == ["conv1", "relu1", "conv2", "relu2", "pool1", "conv3", "relu3", "conv4", "relu4",
                     "pool2", "flatten", "fc1", "relu5", "fc2", "relu6", "out"]
    conv = models.conv6()["conv5"]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (128, 256, 3, 1)
    assert [layer.name for layer in models.lenet300_100().layers] == \
        ["flatten", "fc1", "relu1", "fc2", "relu2", "out"]


def test_dropout_variant_puts_dropout_after_hidden_fc_relus():
    model = models.conv2(seed=0, dropout=0.5)
    names = [layer.name for layer in model.layers]
    assert names[names.index("fc1"):] == ["fc1", "relu3", "dropout1", "fc2", "relu4", "dropout2", "out"]
    assert model.count_weights() == 4_300_992
    with pytest.raises(ValueError, match="dropout"):
        models.conv2(dropout=1.0)


@pytest.mark.parametrize("builder", [models.lenet300_100, models.conv2])
def test_builders_reproducible_per_seed_and_different_across_seeds(builder):
    a, b, c = builder(seed=3).named_params(), builder(seed=3).named_params(), builder(seed=4).named_params()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        if name.endswith(".W"):
            assert not np.array_equal(a[name], c[name])
        else:
            assert not a[name].any()                 # biases start at zero


def test_dropout_models_reproducible_per_seed():
    x = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    y1 = models.conv2(seed=5, dropout=0.5).forward(x)
    y2 = models.conv2(seed=5, dropout=0.5).forward(x)
    np.testing.assert_array_equal(y1, y2)
    model = models.conv2(seed=5, dropout=0.5)
    first = model.forward(x)
    assert not np.array_equal(model.forward(x), first)       # fresh masks every step
    model.reseed_dropout(5)
    np.testing.assert_array_equal(model.forward(x), first)
    assert not np.array_equal(models.conv2(seed=6, dropout=0.5).forward(x), first)


def test_glorot_normal_statistics_and_fans():
    assert init.fans((784, 300)) == (784, 300)
    assert init.fans((64, 3, 3, 3)) == (27, 576)
    with pytest.raises(ValueError, match="shape"):
        init.fans((3, 4, 5))
    model = models.conv2(seed=0)
    for name, (fan_in, fan_out) in {"fc1.W": (16384, 256), "conv2.W": (576, 576),
                                    "conv1.W": (27, 576)}.items():
        w = model.named_params()[name]
        assert w.dtype == np.float32
        expected = np.sqrt(2 / (fan_in + fan_out))
        assert abs(w.std() / expected - 1) < 0.03, name
        assert abs(w.mean()) < 0.03 * expected, name
        # plain Gaussian, not truncated: about 4.6% of draws lie beyond 2 std
        assert abs(np.mean(np.abs(w) > 2 * expected) - 0.0455) < 0.01, name


def test_initialize_keeps_masked_weights_zero():
    model = models.lenet300_100(seed=0)
    mask = (np.arange(300 * 100) % 2).reshape(300, 100).astype(np.float32)
    model.set_masks({"fc2.W": mask})
    init.initialize(model, seed=1)
    assert np.all(model.named_params()["fc2.W"][mask == 0] == 0)


def test_sequential_names_and_views():
    model = models.Sequential(Dense(2, 3), ReLU(), Dense(3, 1, name="head"))
    assert [layer.name for layer in model.layers] == ["dense0", "relu1", "head"]
    assert list(model.named_params()) == ["dense0.W", "dense0.b", "head.W", "head.b"]
    assert list(model.named_masks()) == ["dense0.W", "head.W"]
    assert model.named_params()["head.W"] is model["head"].params["W"]      # live references
    assert model.named_grads()["dense0.b"] is model.layers[0].grads["b"]
    with pytest.raises(ValueError, match="duplicate"):
        models.Sequential(ReLU(name="a"), ReLU(name="a"))
    with pytest.raises(ValueError, match="'.'"):
        models.Sequential(ReLU(name="a.b"))
    unnamed = Dense(2, 2)
    for bad in (ReLU(name="a.b"), ReLU(name="dense0")):       # rejected: no layer renamed
        with pytest.raises(ValueError):
            models.Sequential(unnamed, bad)
        assert unnamed.name is None
    with pytest.raises(KeyError):
        model["nope"]


def test_sequential_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    layers = [Conv2d(1, 2, 3, padding=1), ReLU(), MaxPool2d(2), Flatten(), Dense(8, 3)]
    for layer in layers:
        for value in layer.params.values():
            value[...] = rng.standard_normal(value.shape)
    model = models.Sequential(*[as_float64(layer) for layer in layers])
    x = rng.standard_normal((2, 1, 4, 4))
    labels = np.array([0, 2])

    def loss():
        return softmax_cross_entropy(model.forward(x), labels)[0]

    _, dlogits = softmax_cross_entropy(model.forward(x), labels)
    dx = model.backward(dlogits)
    grads = {k: v.copy() for k, v in model.named_grads().items()}
    assert rel_error(dx, numerical_gradient(loss, x)) < 1e-6
    for name, param in model.named_params().items():
        assert rel_error(grads[name], numerical_gradient(loss, param)) < 1e-6, name



def test_sequential_fused_conv_relu_equals_the_layers_one_by_one():
    """Sequential runs Conv2d + ReLU as one fused pass; walking the same layers one by one
    (unfused) must give the same output, grads and dx, bit for bit."""
    rng = np.random.default_rng(1)
    model = models.conv4(seed=3)
    x = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    dlogits = rng.standard_normal((3, 10)).astype(np.float32)
    assert model._fuses_relu(0) and not model._fuses_relu(1)

    h = x
    for layer in model.layers:
        h = layer.forward(h)
    d = dlogits
    for layer in reversed(model.layers):
        d = layer.backward(d)
    grads = {k: v.copy() for k, v in model.named_grads().items()}

    np.testing.assert_array_equal(model.forward(x), h)
    np.testing.assert_array_equal(model.backward(dlogits), d)
    for name, grad in model.named_grads().items():
        np.testing.assert_array_equal(grad, grads[name], err_msg=name)

@pytest.mark.parametrize("builder, image", [(models.lenet300_100, (1, 28, 28)),
                                            (models.conv2, (3, 32, 32))])
def test_empty_batch_runs_through_a_model_with_zero_grads(builder, image):
    model = builder(seed=0)
    rng = np.random.default_rng(0)
    logits = model.forward(rng.random((2,) + image, dtype=np.float32))
    model.backward(rng.standard_normal(logits.shape, dtype=np.float32))
    logits = model.forward(np.zeros((0,) + image, np.float32))
    assert logits.shape == (0, 10)
    assert model.backward(np.zeros((0, 10), np.float32)).shape == (0,) + image
    for name, grad in model.named_grads().items():
        np.testing.assert_array_equal(grad, 0, err_msg=name)


def test_set_masks_zeroes_weights_and_validates():
    model = models.lenet300_100(seed=0)
    rng = np.random.default_rng(0)
    mask = (rng.random((100, 10)) < 0.5).astype(np.float32)
    model.set_masks({"out.W": mask})
    w = model.named_params()["out.W"]
    assert np.all(w[mask == 0] == 0) and np.all(w[mask == 1] != 0)
    np.testing.assert_array_equal(model.named_masks()["out.W"], mask)
    before = model.state_dict()
    good = np.ones((300, 100), np.float32)
    for bad, message in [({"fc9.W": mask}, "unknown"), ({"fc1.b": mask}, "unknown"),
                         ({"fc2.W": good, "out.W": np.ones((10, 100))}, r"expected shape \(100, 10\)"),
                         ({"fc2.W": good * 0.5}, "0 or 1")]:
        with pytest.raises(ValueError, match=message):
            model.set_masks(bad)
    after = model.state_dict()      # nothing changed by the failed calls
    for part in ("params", "masks"):
        for name in before[part]:
            np.testing.assert_array_equal(before[part][name], after[part][name])


def test_state_dict_round_trip():
    model = models.conv2(seed=0)
    mask = np.ones((256, 10), np.float32)
    mask[::3] = 0
    model.set_masks({"out.W": mask})
    state = model.state_dict()
    assert set(state) == {"params", "masks"}
    assert state["params"]["fc1.W"] is not model.named_params()["fc1.W"]       # copies
    other = models.conv2(seed=1)
    other.load_state_dict(state)
    for part, views in (("params", other.named_params()), ("masks", other.named_masks())):
        for name, value in views.items():
            np.testing.assert_array_equal(value, state[part][name])
            assert value.dtype == np.float32
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    np.testing.assert_array_equal(other.forward(x), model.forward(x))


def test_load_state_dict_errors():
    model = models.lenet300_100(seed=0)
    good = model.state_dict()

    def edited(part, name, value=None, drop=False):
        state = {"params": dict(good["params"]), "masks": dict(good["masks"])}
        if drop:
            del state[part][name]
        else:
            state[part][name] = value
        return state

    cases = [
        ({"params": good["params"]}, "'params' and 'masks'"),
        (edited("params", "fc1.W", drop=True), r"missing \['fc1.W'\]"),
        (edited("params", "fc3.W", np.zeros(3)), r"unexpected \['fc3.W'\]"),
        (edited("masks", "out.W", drop=True), r"masks names differ.*missing \['out.W'\]"),
        (edited("params", "fc2.b", np.zeros(99)), r"'fc2.b'.*\(100,\).*\(99,\)"),
        (edited("masks", "out.W", np.full((100, 10), 2.0)), "0 or 1"),
        (edited("masks", "out.W", np.zeros((100, 10))), "nonzero weights where its mask is 0"),
    ]
    for state, message in cases:
        with pytest.raises(ValueError, match=message):
            model.load_state_dict(state)
    for name, value in model.named_params().items():        # nothing half-loaded
        np.testing.assert_array_equal(value, good["params"][name])


def _bits(model):
    """Every param and mask of the model, as raw bytes (NaN and -0.0 compare exactly)."""
    views = {**model.named_params(), **{f"mask {k}": v for k, v in model.named_masks().items()}}
    return {name: value.tobytes() for name, value in views.items()}


@pytest.mark.parametrize("part, name, value, error, message", [
    ("params", "out.b", np.array(["a"] * 10), TypeError, r"'out.b'.*dtype <U1"),
    ("params", "out.b", np.array([None] * 10), TypeError, r"'out.b'.*dtype object"),
    ("params", "out.b", np.ones(10, np.complex64), TypeError, r"'out.b'.*complex64"),
    ("params", "out.b", [[1.0], [1.0, 2.0]] + [[0.0]] * 8, TypeError, r"'out.b'.*real numbers"),
    ("params", "out.b", np.full(10, np.nan), ValueError, r"'out.b'.*finite"),
    ("params", "out.b", np.full(10, -np.inf), ValueError, r"'out.b'.*finite"),
    ("params", "out.b", np.full(10, 1e39), ValueError, r"'out.b'.*finite"),    # inf in float32
    ("masks", "out.W", np.full((100, 10), 1 + 1e-9), ValueError, r"'out.W'.*0 or 1"),
    ("masks", "out.W", np.full((100, 10), "1"), TypeError, r"'out.W'.*dtype"),
], ids=["string", "object", "complex", "ragged", "nan", "-inf", "beyond-float32", "mask-near-1",
        "mask-string"])
def test_rejected_state_leaves_the_model_bit_identical(part, name, value, error, message):
    """The bad entry comes last in the model's order and every other entry differs from the
    model's, so writing anything before rejecting would show."""
    model = models.lenet300_100(seed=0)
    state = models.lenet300_100(seed=1).state_dict()
    state["params"] = {k: v + 1 if k.endswith(".b") else v for k, v in state["params"].items()}
    state[part][name] = value
    before = _bits(model)
    with pytest.raises(error, match=message):
        model.load_state_dict(state)
    assert _bits(model) == before


def test_load_state_dict_accepts_array_likes_of_real_numbers():
    model = models.lenet300_100(seed=0)
    state = models.lenet300_100(seed=1).state_dict()
    state["params"]["out.b"] = list(range(10))                   # ints, as a list
    state["masks"]["out.W"] = np.ones((100, 10), bool)
    model.load_state_dict(state)
    np.testing.assert_array_equal(model.named_params()["out.b"], np.arange(10, dtype=np.float32))
    assert model.named_params()["out.b"].dtype == np.float32
    np.testing.assert_array_equal(model.named_params()["fc1.W"], state["params"]["fc1.W"])


def test_set_masks_rejects_non_numbers_before_writing():
    model = models.lenet300_100(seed=0)
    before = _bits(model)
    for bad, error in [(np.full((100, 10), "1"), TypeError), (np.full((100, 10), np.nan), ValueError)]:
        with pytest.raises(error, match="out.W"):
            model.set_masks({"fc2.W": np.zeros((300, 100)), "out.W": bad})
        assert _bits(model) == before


@pytest.mark.parametrize("scale, tolerance", [(0.1, 0.05), (1.0, 0.3)])
def test_initial_loss_is_about_log_10(scale, tolerance):
    """CS231n's sanity check: an untrained net is about uniform over 10 classes."""
    rng = np.random.default_rng(0)
    losses = []
    for seed in range(5):
        x = rng.random((100, 1, 28, 28), dtype=np.float32) * scale
        y = rng.integers(0, 10, 100)
        losses.append(softmax_cross_entropy(models.lenet300_100(seed=seed).forward(x), y)[0])
    assert abs(np.mean(losses) - np.log(10)) < tolerance


def test_lenet_overfits_a_small_batch():
    """The other sanity ritual: plain SGD drives the loss on 20 examples close to 0."""
    rng = np.random.default_rng(0)
    x = rng.random((20, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 20)
    model = models.lenet300_100(seed=0)
    params, grads = model.named_params(), model.named_grads()
    first = None
    for _ in range(150):
        loss, dlogits = softmax_cross_entropy(model.forward(x), y)
        first = loss if first is None else first
        model.backward(dlogits)
        for name in params:
            params[name] -= 0.05 * grads[name]
    assert first > 2.0 and loss < 0.05


def test_conv2_training_step_allocates_within_im2col_budget():
    """A Conv-2 step at batch 60 allocates no more than one im2col matrix beyond its
    reusable im2col buffers (tracemalloc sees NumPy's allocations)."""
    model = models.conv2(seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((60, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, 60)
    cols_bytes = [60 * layer.in_channels * 9 * 32 * 32 * 4 for layer in model.layers
                  if isinstance(layer, Conv2d)]

    def step():
        _, dlogits = softmax_cross_entropy(model.forward(x), y)
        model.backward(dlogits)

    tracemalloc.start()
    try:
        step()                                    # first step: allocates the im2col buffers
        cold_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        step()                                    # later steps reuse them
        warm_peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert cold_peak <= sum(cols_bytes) + max(cols_bytes)
    assert warm_peak <= max(cols_bytes)


def test_runs_without_numba_jit():
    """NUMBA_DISABLE_JIT=1 runs the same kernels as plain Python, with the same results."""
    script = (
        "import numpy as np\n"
        "from minilottery.layers import Conv2d, MaxPool2d, ReLU\n"
        "from minilottery.models import Sequential\n"
        "rng = np.random.default_rng(0)\n"
        "m = Sequential(Conv2d(2, 3, 3, stride=2, padding=1), ReLU(), MaxPool2d(2))\n"
        "m.layers[0].params['W'][...] = rng.standard_normal((3, 2, 3, 3))\n"
        "x = rng.standard_normal((2, 2, 8, 8)).astype(np.float32)\n"
        "y = m.forward(x)\n"
        "dx = m.backward(np.ones_like(y))\n"
        "np.save('OUT', np.concatenate([y.ravel(), dx.ravel(), m.layers[0].grads['W'].ravel()]))\n"
    )
    results = []
    for disable in ("1", "0"):
        out = os.path.join(ROOT, ".pytest_cache", f"nojit_{disable}.npy")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        env = dict(os.environ, NUMBA_DISABLE_JIT=disable, PYTHONPATH=ROOT)
        subprocess.run([sys.executable, "-c", script.replace("OUT", out)], env=env, check=True, cwd=ROOT)
        results.append(np.load(out))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-6)
