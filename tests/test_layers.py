"""Layers: finite-difference gradient checks, masks, shapes and errors, dtypes, dropout."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import conv_cases, pool_cases, seeds
from minilottery.gradcheck import check_layer, numerical_gradient, rel_error
from minilottery.layers import Conv2d, Dense, Dropout, Flatten, MaxPool2d, ReLU
from minilottery.threads import use_threads

FAST = settings(deadline=None, max_examples=15)
TOL = 1e-7   # float64 central differences; linear layers come out near 1e-10


def _random_params(layer, rng, mask_fraction=0.0):
    for key, value in layer.params.items():
        value[...] = rng.standard_normal(value.shape)
    for key, mask in layer.masks.items():
        mask[...] = rng.random(mask.shape) >= mask_fraction
        layer.params[key] *= mask
    return layer


def _assert_small(errors):
    assert errors and all(e < TOL for e in errors.values()), errors


@FAST
@given(n=st.integers(1, 4), d_in=st.integers(1, 6), d_out=st.integers(1, 6), seed=seeds)
def test_dense_gradcheck(n, d_in, d_out, seed):
    rng = np.random.default_rng(seed)
    layer = _random_params(Dense(d_in, d_out), rng)
    errors = check_layer(layer, rng.standard_normal((n, d_in)), seed=seed)
    assert set(errors) == {"x", "W", "b"}
    _assert_small(errors)


@FAST
@given(case=conv_cases(), seed=seeds, one_image_groups=st.booleans())
def test_conv2d_gradcheck(case, seed, one_image_groups):
    n, c, h, w, o, k, s, p = case
    rng = np.random.default_rng(seed)
    layer = _random_params(Conv2d(c, o, k, stride=s, padding=p), rng)
    if one_image_groups:
        layer.group_bytes = 1      # dW, db summed over groups, dx assembled from them
    _assert_small(check_layer(layer, rng.standard_normal((n, c, h, w)), seed=seed))


@FAST
@given(case=pool_cases(), seed=seeds)
def test_maxpool_gradcheck(case, seed):
    n, c, h, w, k, s = case
    rng = np.random.default_rng(seed)
    # distinct values at least 0.01 apart: no window's maximum changes under a perturbation of 1e-5
    x = rng.permutation(n * c * h * w).reshape(n, c, h, w) * 0.01
    _assert_small(check_layer(MaxPool2d(k, s), x, seed=seed))


@FAST
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), seed=seeds)
def test_relu_gradcheck(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    x[np.abs(x) < 1e-2] = 0.5      # stay away from the kink at 0
    _assert_small(check_layer(ReLU(), x, seed=seed))


@FAST
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=4), seed=seeds)
def test_flatten_gradcheck(shape, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    _assert_small(check_layer(Flatten(), x, seed=seed))


@FAST
@given(n=st.integers(1, 4), d=st.integers(1, 8), p=st.sampled_from([0.0, 0.2, 0.5, 0.9]), seed=seeds)
def test_dropout_gradcheck(n, d, p, seed):
    x = np.random.default_rng(seed).standard_normal((n, d))
    _assert_small(check_layer(Dropout(p, seed=seed), x, seed=seed))


def test_gradcheck_catches_a_wrong_backward():
    class BrokenDense(Dense):
        def backward(self, dout):
            dx = super().backward(dout)
            self.grads["W"] *= 1.01          # a 1% bug
            return dx

    rng = np.random.default_rng(0)
    layer = _random_params(BrokenDense(3, 2), rng)
    errors = check_layer(layer, rng.standard_normal((4, 3)))
    assert errors["W"] > 1e-3 and errors["x"] < TOL


def test_rel_error_and_numerical_gradient():
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    # max |a - b| = 1, max(|a| + |b|) = max(2, 3) = 3
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 1.0])) == pytest.approx(1 / 3)
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    x = np.array([1.0, -2.0, 3.0])
    g = numerical_gradient(lambda: np.sum(x ** 3), x)
    np.testing.assert_allclose(g, 3 * x ** 2, rtol=1e-8)
    np.testing.assert_array_equal(x, [1.0, -2.0, 3.0])       # restored
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.zeros(2), np.zeros(3))


# -- masks --------------------------------------------------------------------------

@FAST
@given(case=conv_cases(), seed=seeds)
def test_masked_weights_get_exactly_zero_gradient(case, seed):
    n, c, h, w, o, k, s, p = case
    rng = np.random.default_rng(seed)
    for layer, x in ((Conv2d(c, o, k, stride=s, padding=p), rng.standard_normal((n, c, h, w))),
                     (Dense(c * h, o), rng.standard_normal((n, c * h)))):
        _random_params(layer, rng, mask_fraction=0.5)
        y = layer.forward(x.astype(np.float32))
        layer.backward(rng.standard_normal(y.shape).astype(np.float32))
        pruned = layer.masks["W"] == 0
        assert np.all(layer.grads["W"][pruned] == 0)
        assert "b" not in layer.masks                      # biases are never prunable
        # the masked layer's grads still match finite differences (times the mask)
        _assert_small(check_layer(layer, x, seed=seed))


def test_new_layers_are_zero_with_all_ones_masks():
    for layer in (Dense(3, 4), Conv2d(2, 3, 3)):
        assert set(layer.params) == set(layer.grads) == {"W", "b"} and set(layer.masks) == {"W"}
        for key in layer.params:
            assert layer.params[key].dtype == np.float32 and not layer.params[key].any()
            assert layer.grads[key].shape == layer.params[key].shape
        assert layer.masks["W"].dtype == np.float32 and np.all(layer.masks["W"] == 1)
    assert Dense(3, 4).params["W"].shape == (3, 4)
    assert Conv2d(2, 5, 3).params["W"].shape == (5, 2, 3, 3)
    for layer in (ReLU(), Flatten(), MaxPool2d(2), Dropout(0.5)):
        assert layer.params == layer.grads == layer.masks == {}


def test_backward_overwrites_grads_in_place():
    rng = np.random.default_rng(1)
    layer = _random_params(Dense(3, 2), rng)
    held = layer.grads["W"]
    x = rng.standard_normal((5, 3)).astype(np.float32)
    for _ in range(2):    # the second call must not accumulate
        layer.forward(x)
        layer.backward(np.ones((5, 2), np.float32))
    assert layer.grads["W"] is held
    np.testing.assert_allclose(held, x.T @ np.ones((5, 2)), rtol=1e-5)


# -- shapes, errors, dtypes -----------------------------------------------------------

@pytest.mark.parametrize("layer, x, expected", [
    (Dense(4, 3, name="fc1"), np.zeros((2, 5)), r"Dense 'fc1'.*\(N, 4\).*\(2, 5\)"),
    (Dense(4, 3), np.zeros(4), r"Dense.*\(N, 4\).*\(4,\)"),
    (Conv2d(3, 8, 3, name="conv1"), np.zeros((2, 1, 8, 8)), r"Conv2d 'conv1'.*\(N, 3, H, W\).*\(2, 1, 8, 8\)"),
    (Conv2d(3, 8, 5), np.zeros((2, 3, 4, 4)), r"Conv2d.*H, W >= 5.*\(2, 3, 4, 4\)"),
    (Conv2d(3, 8, 3), np.zeros((3, 8, 8)), r"Conv2d.*\(3, 8, 8\)"),
    (MaxPool2d(2, name="pool1"), np.zeros((2, 3, 1, 4)), r"MaxPool2d 'pool1'.*\(2, 3, 1, 4\)"),
    (Flatten(name="flat"), np.zeros(3), r"Flatten 'flat'.*\(3,\)"),
])
def test_wrong_input_shape_names_layer_expected_and_actual(layer, x, expected):
    with pytest.raises(ValueError, match=expected):
        layer.forward(x)


def test_wrong_dout_shape_and_backward_without_forward():
    layer = Dense(4, 3, name="fc9")
    with pytest.raises(RuntimeError, match="fc9"):
        layer.backward(np.zeros((2, 3), np.float32))
    layer.forward(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"fc9.*dout.*\(2, 3\).*\(2, 4\)"):
        layer.backward(np.zeros((2, 4), np.float32))
    conv = Conv2d(1, 1, 3)
    conv.forward(np.zeros((1, 1, 4, 4), np.float32), training=False)
    with pytest.raises(RuntimeError):     # inference keeps nothing for backward
        conv.backward(np.zeros((1, 1, 2, 2), np.float32))


@pytest.mark.parametrize("make, shape", [
    (lambda: Dense(6, 4), (5, 6)),
    (lambda: Conv2d(2, 3, 3, padding=1), (2, 2, 5, 5)),
    (lambda: MaxPool2d(2), (2, 3, 4, 4)),
    (lambda: ReLU(), (3, 4)),
    (lambda: Flatten(), (2, 3, 4)),
    (lambda: Dropout(0.5), (3, 4)),
])
def test_float32_in_float32_out(make, shape):
    layer = make()
    _random_params(layer, np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    y = layer.forward(x)
    assert y.dtype == np.float32
    dx = layer.backward(np.ones_like(y))
    assert dx.dtype == np.float32 and dx.shape == x.shape
    assert all(g.dtype == np.float32 for g in layer.grads.values())


def test_layers_with_params_cast_float64_input_to_float32():
    layer = _random_params(Conv2d(1, 2, 3), np.random.default_rng(0))
    assert layer.forward(np.ones((1, 1, 4, 4))).dtype == np.float32
    assert Dense(2, 2).forward(np.ones((1, 2))).dtype == np.float32


def test_invalid_hyperparameters():
    with pytest.raises(ValueError):
        Conv2d(1, 1, 3, stride=0)
    with pytest.raises(ValueError):
        MaxPool2d(0)
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="Dropout"):
            Dropout(p)


def test_conv_groups_and_threads_are_deterministic():
    """The same batch gives the same bits every time, for each grouping and on any number
    of threads; groupings agree to float32 rounding (their sums are split differently)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 2, 6, 6)).astype(np.float32)
    dout = rng.standard_normal((7, 3, 3, 3)).astype(np.float32)
    results = {}
    image_bytes = 2 * 3 * 3 * (3 * 3) * 4     # one image's cols: C*k*k rows x OH*OW columns, float32
    for group_bytes in (1, 2 * image_bytes, Conv2d.group_bytes):   # 1, 2 and all 7 images per group
        for threads in (1, 2, 3):
            layer = _random_params(Conv2d(2, 3, 3, stride=2, padding=1), np.random.default_rng(0))
            layer.group_bytes = group_bytes
            with use_threads(threads):
                y = layer.forward(x, training=True)
                y_inference = layer.forward(x, training=False)
                layer.forward(x, training=True)
                dx = layer.backward(dout)
            got = [y, y_inference, dx, layer.grads["W"].copy(), layer.grads["b"].copy()]
            if threads > 1:
                for a, b in zip(got, results[group_bytes, 1]):
                    np.testing.assert_array_equal(a, b)
            results[group_bytes, threads] = got
    first = results[1, 1]
    for got in results.values():
        for a, b in zip(got, first):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_dense_products_do_not_depend_on_the_thread_count():
    """Large enough to be cut into pieces; the same bits on 1, 2 and 3 threads."""
    rng = np.random.default_rng(8)
    layer = _random_params(Dense(700, 300), rng, mask_fraction=0.5)
    x = rng.standard_normal((60, 700)).astype(np.float32)
    dout = rng.standard_normal((60, 300)).astype(np.float32)
    runs = []
    for threads in (1, 2, 3):
        with use_threads(threads):
            y = layer.forward(x)
            dx = layer.backward(dout)
        runs.append((y, dx, layer.grads["W"].copy()))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(runs[0][0], x @ layer.params["W"] + layer.params["b"], rtol=1e-5, atol=1e-4)


def test_outputs_are_fresh_arrays():
    rng = np.random.default_rng(4)
    layer = _random_params(Conv2d(1, 2, 3), rng)
    x1, x2 = (rng.standard_normal((2, 1, 5, 5)).astype(np.float32) for _ in range(2))
    y1 = layer.forward(x1)
    y1_copy = y1.copy()
    layer.forward(x2)
    np.testing.assert_array_equal(y1, y1_copy)


# -- dropout ---------------------------------------------------------------------------

def test_dropout_reproducible_per_seed_and_scaled():
    x = np.ones((200, 50), np.float32)
    a = Dropout(0.25, seed=7).forward(x)
    b = Dropout(0.25, seed=7).forward(x)
    c = Dropout(0.25, seed=8).forward(x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(np.unique(a)) == {0.0, np.float32(1 / 0.75)}
    assert abs((a == 0).mean() - 0.25) < 0.02             # 10,000 draws: sd ~ 0.004
    layer = Dropout(0.25, seed=7)
    first = layer.forward(x)
    layer.reseed(7)
    np.testing.assert_array_equal(layer.forward(x), first)
    np.testing.assert_array_equal(layer.forward(x, training=False), x)   # identity at inference
    dout = np.full_like(x, 2.0)
    kept = layer.forward(x) != 0
    np.testing.assert_array_equal(layer.backward(dout), np.where(kept, 2 * np.float32(1 / 0.75), 0))


def test_dropout_reseed_with_a_bad_seed_changes_nothing():
    layer = Dropout(0.5, seed=3)
    with pytest.raises(TypeError):
        layer.reseed("three")
    assert layer.seed == 3
    np.testing.assert_array_equal(layer.forward(np.ones((4, 5), np.float32)),
                                  Dropout(0.5, seed=3).forward(np.ones((4, 5), np.float32)))


# -- empty batches ---------------------------------------------------------------------

@pytest.mark.parametrize("make, shape", [
    pytest.param(lambda: Dense(3, 2), (3,), id="dense"),
    pytest.param(lambda: Conv2d(2, 3, 3, padding=1), (2, 5, 5), id="conv-same"),
    pytest.param(lambda: Conv2d(2, 3, 3, stride=2), (2, 5, 5), id="conv-strided"),
    pytest.param(lambda: MaxPool2d(2), (2, 4, 4), id="maxpool"),
    pytest.param(lambda: ReLU(), (3,), id="relu-2d"),
    pytest.param(lambda: ReLU(), (2, 4, 4), id="relu-4d"),
    pytest.param(lambda: Flatten(), (2, 3), id="flatten"),
    pytest.param(lambda: Dropout(0.5), (3,), id="dropout"),
])
def test_empty_batch_gives_empty_outputs_and_zero_grads(make, shape):
    """N = 0: forward returns (0, ...) of the usual shape, backward an empty dx of the
    input's shape, and a layer's grads are the sums over no examples, exactly 0, even
    right after a step on a real batch (whose grads must not linger)."""
    layer = _random_params(make(), np.random.default_rng(0))
    rng = np.random.default_rng(1)
    y = layer.forward(rng.standard_normal((2,) + shape).astype(np.float32))
    layer.backward(rng.standard_normal(y.shape).astype(np.float32))
    assert all(g.any() for g in layer.grads.values())        # the real batch left grads
    y_empty = layer.forward(np.zeros((0,) + shape, np.float32))
    assert y_empty.shape == (0,) + y.shape[1:] and y_empty.dtype == np.float32
    dx = layer.backward(np.zeros(y_empty.shape, np.float32))
    assert dx.shape == (0,) + shape and dx.dtype == np.float32
    for key, grad in layer.grads.items():
        np.testing.assert_array_equal(grad, 0, err_msg=key)
    if layer.params:
        layer.forward(np.zeros((0,) + shape, np.float32))
        assert layer.backward(np.zeros(y_empty.shape, np.float32), input_grad=False) is None
