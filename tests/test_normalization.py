"""BatchNorm2d: finite-difference gradient checks in training and evaluation mode over
shapes drawn by hypothesis, the running statistics, its state, its errors, and (where
PyTorch is installed) agreement with torch.nn.BatchNorm2d."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import seeds
from minilottery.gradcheck import check_layer
from minilottery.normalization import BatchNorm2d

FAST = settings(deadline=None, max_examples=20)
TOL = 1e-6   # float64 central differences through the batch statistics


def _bn(c, rng, running=False):
    layer = BatchNorm2d(c)
    layer.params["gamma"][...] = rng.uniform(0.5, 2.0, c)
    layer.params["beta"][...] = rng.standard_normal(c)
    if running:
        layer.running_mean[...] = rng.standard_normal(c)
        layer.running_var[...] = rng.uniform(0.2, 3.0, c)
    return layer


@st.composite
def bn_shapes(draw):
    """(N, C, H, W) with at least three values per channel. With two, x_hat is +-1
    whatever x is, and dx (of the order of eps) is below what central differences resolve."""
    n, c, h, w = (draw(st.integers(1, 3)), draw(st.integers(1, 3)),
                  draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    if n * h * w < 3:
        n = 3
    return n, c, h, w


@FAST
@given(shape=bn_shapes(), seed=seeds)
def test_batchnorm_gradcheck_with_batch_statistics(shape, seed):
    rng = np.random.default_rng(seed)
    errors = check_layer(_bn(shape[1], rng), rng.standard_normal(shape) * 3 + 1, seed=seed)
    assert set(errors) == {"x", "gamma", "beta"}
    assert all(e < TOL for e in errors.values()), errors


@FAST
@given(shape=st.tuples(*(st.integers(1, 4),) * 4), seed=seeds)
def test_batchnorm_gradcheck_with_running_statistics(shape, seed):
    """frozen = True: evaluation-mode normalisation, differentiated (one value per channel
    is allowed here, since no batch statistic is taken)."""
    rng = np.random.default_rng(seed)
    layer = _bn(shape[1], rng, running=True)
    layer.frozen = True
    errors = check_layer(layer, rng.standard_normal(shape), seed=seed)
    assert all(e < TOL for e in errors.values()), errors


def test_batch_statistics_normalise_and_running_statistics_follow():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((8, 3, 5, 5)) * [[[[2.0]], [[0.5]], [[4.0]]]] + 3).astype(np.float32)
    layer = BatchNorm2d(3, momentum=0.25)
    y = layer.forward(x, training=True)
    assert np.allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    assert np.allclose(y.var(axis=(0, 2, 3)), 1, atol=1e-3)
    m = 8 * 5 * 5
    assert np.allclose(layer.running_mean, 0.25 * x.mean(axis=(0, 2, 3)), rtol=1e-5)
    assert np.allclose(layer.running_var, 0.75 + 0.25 * x.var(axis=(0, 2, 3)) * m / (m - 1),
                       rtol=1e-5)


def test_evaluation_uses_running_statistics_and_leaves_them_alone():
    rng = np.random.default_rng(1)
    layer = _bn(2, rng, running=True)
    before = layer.own_state()
    x = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    y = layer.forward(x, training=False)
    expected = ((x - layer.running_mean[:, None, None]) / np.sqrt(layer.running_var[:, None, None] + 1e-5)
                * layer.params["gamma"][:, None, None] + layer.params["beta"][:, None, None])
    assert np.allclose(y, expected, atol=1e-5)
    one = layer.forward(x[:1], training=False)          # an image's output ignores its batch
    assert np.array_equal(one, y[:1])
    assert all(np.array_equal(before[k], v) for k, v in layer.own_state().items())


def test_scale_and_shift_are_parameters_but_never_weights():
    layer = BatchNorm2d(4)
    assert set(layer.params) == {"gamma", "beta"} and layer.masks == {}
    assert layer.count_weights() == 0
    assert layer.inits == {"gamma": "ones", "beta": "zeros"}


def test_state_dict_round_trip_carries_the_running_statistics():
    rng = np.random.default_rng(2)
    layer = _bn(3, rng, running=True)
    state = layer.state_dict()
    assert set(state["state"][""]) == {"running_mean", "running_var"}
    other = BatchNorm2d(3)
    other.load_state_dict(state)
    x = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    assert np.array_equal(other.forward(x, training=False), layer.forward(x, training=False))


@pytest.mark.parametrize("state, message", [
    ({"running_mean": np.zeros(3)}, "expected state running_mean, running_var"),
    ({"running_mean": np.zeros(2), "running_var": np.ones(3)}, "expected shape"),
    ({"running_mean": np.zeros(3), "running_var": -np.ones(3)}, "running_var must be >= 0"),
    ({"running_mean": np.full(3, np.nan), "running_var": np.ones(3)}, "finite"),
])
def test_a_bad_state_is_refused_and_changes_nothing(state, message):
    layer = BatchNorm2d(3, name="bn1")
    with pytest.raises(ValueError, match=message) as error:
        layer.load_own_state(state)
    assert "bn1" in str(error.value)
    assert np.array_equal(layer.running_mean, np.zeros(3)) and np.array_equal(layer.running_var, np.ones(3))


def test_bad_input_and_settings_are_named():
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, H, W\), got \(2, 4, 1, 1\)"):
        BatchNorm2d(3).forward(np.zeros((2, 4, 1, 1)))
    with pytest.raises(ValueError, match="more than one value per channel"):
        BatchNorm2d(3).forward(np.zeros((1, 3, 1, 1)), training=True)
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm2d(3, momentum=1.5)


@pytest.mark.parametrize("training", [True, False])
def test_agrees_with_torch(training):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    ours = _bn(4, rng, running=True)
    theirs = torch.nn.BatchNorm2d(4).double()
    with torch.no_grad():
        theirs.weight[:] = torch.from_numpy(ours.params["gamma"].astype(np.float64))
        theirs.bias[:] = torch.from_numpy(ours.params["beta"].astype(np.float64))
        theirs.running_mean[:] = torch.from_numpy(ours.running_mean.astype(np.float64))
        theirs.running_var[:] = torch.from_numpy(ours.running_var.astype(np.float64))
    theirs.train(training)
    x = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    dout = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    yt = theirs(xt)
    (yt * torch.from_numpy(dout.astype(np.float64))).sum().backward()
    ours.frozen = not training                   # torch differentiates eval mode the frozen way
    y = ours.forward(x, training=True)
    dx = ours.backward(dout)
    assert np.allclose(y, yt.detach().numpy(), atol=1e-5)
    assert np.allclose(dx, xt.grad.numpy(), atol=1e-4)
    assert np.allclose(ours.grads["gamma"], theirs.weight.grad.numpy(), atol=1e-4)
    assert np.allclose(ours.grads["beta"], theirs.bias.grad.numpy(), atol=1e-4)
    assert np.allclose(ours.running_mean, theirs.running_mean.numpy(), atol=1e-6)
    assert np.allclose(ours.running_var, theirs.running_var.numpy(), atol=1e-5)


@settings(deadline=None, max_examples=10)
@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5),
                       st.integers(1, 5)).filter(lambda s: s[0] * s[2] * s[3] >= 2),
       seed=seeds, training=st.booleans())
def test_the_fused_relu_is_batchnorm_then_relu_bit_for_bit(shape, seed, training):
    from minilottery.layers import ReLU
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    dout = rng.standard_normal(shape).astype(np.float32)
    fused, plain, relu = BatchNorm2d(shape[1]), BatchNorm2d(shape[1]), ReLU()
    gamma = rng.standard_normal(shape[1]).astype(np.float32)
    fused.params["gamma"][...] = plain.params["gamma"][...] = gamma
    y = fused.forward(x, training, relu=True)
    np.testing.assert_array_equal(y, relu.forward(plain.forward(x, training), training))
    if training:
        dx = fused.backward(dout)
        np.testing.assert_array_equal(dx, plain.backward(relu.backward(dout)))
        np.testing.assert_array_equal(fused.grads["gamma"], plain.grads["gamma"])
        np.testing.assert_array_equal(fused.grads["beta"], plain.grads["beta"])


def test_the_numbers_do_not_depend_on_the_thread_count():
    from minilottery.threads import use_threads
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 6, 9, 9)).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        layer = BatchNorm2d(6)
        with use_threads(threads):
            y = layer.forward(x)
            dx = layer.backward(dout)
        results.append((y, dx, layer.grads["gamma"].copy(), layer.running_var.copy()))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
