"""Winograd F(2x2, 3x3): the transforms are adjoint pairs, the layer agrees with im2col and
with the loop reference over shapes from hypothesis, and its gradients pass finite differences."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import seeds
from minilottery import reference, winograd
from minilottery.gradcheck import check_layer
from minilottery.layers import Conv2d
from minilottery.threads import use_threads

FAST = settings(deadline=None, max_examples=20)


@st.composite
def same_cases(draw):
    """(N, C, O, H, W) for a 3x3 "same" convolution; odd sizes and single pixels included."""
    return (draw(st.integers(0, 3)), draw(st.integers(1, 10)), draw(st.integers(1, 6)),
            draw(st.integers(1, 9)), draw(st.integers(1, 9)))


def _layer(c, o, rng, algorithm, mask_fraction=0.3, dtype=np.float32):
    layer = Conv2d(c, o, 3, padding=1, algorithm=algorithm)
    layer.masks["W"][...] = rng.random(layer.masks["W"].shape) >= mask_fraction
    layer.params["W"][...] = rng.standard_normal(layer.params["W"].shape) * layer.masks["W"]
    layer.params["b"][...] = rng.standard_normal(o)
    return layer


def _rows(array):
    """A (16, C, T) array as the kernels take it: (16, C*T), C-contiguous."""
    return np.ascontiguousarray(array).reshape(16, -1)


@FAST
@given(case=same_cases(), seed=seeds)
def test_transforms_are_adjoint_pairs(case, seed):
    """<input_transform(x), v> = <x, input_transform_adjoint(v)>, and likewise for the output
    transform (bias 0, no ReLU) and the filter transform: each adjoint really is the transpose."""
    n, c, o, h, w = case
    rng = np.random.default_rng(seed)
    th, tw = winograd.tiles(h, w)
    t = n * th * tw
    x, v = rng.standard_normal((n, c, h, w)), rng.standard_normal((16, c, t))
    V, dx = np.empty((16, c * t)), np.empty((n, c, h, w))
    winograd.input_transform(x, V)
    winograd.input_transform_adjoint(_rows(v), dx)
    assert np.vdot(V, _rows(v)) == pytest.approx(np.vdot(x, dx), rel=1e-10, abs=1e-10)

    m, g = rng.standard_normal((16, o, t)), rng.standard_normal((n, o, h, w))
    out, dM, db = np.empty((n, o, h, w)), np.empty((16, o * t)), np.zeros(o)
    winograd.output_transform(_rows(m), np.zeros(o), False, out)
    winograd.output_transform_adjoint(g, g, False, dM, db)
    assert np.vdot(out, g) == pytest.approx(np.vdot(_rows(m), dM), rel=1e-10, abs=1e-10)
    np.testing.assert_allclose(db, g.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)

    W, u = rng.standard_normal((o, c, 3, 3)), rng.standard_normal((16, o, c))
    U, dW = np.empty((16, o, c)), np.empty((o, c, 3, 3))
    winograd.filter_transform(W, U)
    winograd.filter_transform_adjoint(u, dW)
    assert np.vdot(U, u) == pytest.approx(np.vdot(W, dW), rel=1e-10, abs=1e-10)


@FAST
@given(case=same_cases(), seed=seeds, relu=st.booleans(), threads=st.sampled_from([1, 2, 3]),
       one_image_groups=st.booleans())
def test_winograd_agrees_with_im2col_and_the_reference(case, seed, relu, threads, one_image_groups):
    """Forward, dx, dW and db of the two algorithms agree to float32 round-off, on any number
    of threads and any grouping; both agree with the float64 loops of minilottery.reference."""
    n, c, o, h, w = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    dout = rng.standard_normal((n, o, h, w)).astype(np.float32)
    results = {}
    for algorithm in ("im2col", "winograd"):
        layer = _layer(c, o, np.random.default_rng(seed), algorithm)
        if one_image_groups:
            layer.group_bytes = 1
        with use_threads(threads):
            y = layer.forward(x, relu=relu)
            dx = layer.backward(dout)
        results[algorithm] = (y, dx, layer.grads["W"].copy(), layer.grads["b"].copy())
    W, b = layer.params["W"].astype(np.float64), layer.params["b"].astype(np.float64)
    y_ref = reference.conv2d_forward(x.astype(np.float64), W, b, 1, 1)
    g = dout * (y_ref > 0) if relu else dout
    dx_ref, dW_ref, db_ref = reference.conv2d_backward(g.astype(np.float64), x.astype(np.float64), W, 1, 1)
    if relu:
        y_ref = np.maximum(y_ref, 0)
    dW_ref *= layer.masks["W"]
    for got in results.values():
        for value, expected in zip(got, (y_ref, dx_ref, dW_ref, db_ref)):
            assert value.dtype == np.float32 and value.shape == expected.shape
            scale = 1.0 + np.abs(expected).max(initial=0.0)
            np.testing.assert_allclose(value, expected, rtol=0, atol=2e-5 * scale)
    for a, b in zip(*results.values()):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * (1.0 + np.abs(b).max(initial=0.0)))
    assert np.all(results["winograd"][2][layer.masks["W"] == 0] == 0)    # pruned: no gradient


@settings(deadline=None, max_examples=10)
@given(case=same_cases(), seed=seeds)
def test_winograd_gradcheck(case, seed):
    n, c, o, h, w = case
    rng = np.random.default_rng(seed)
    layer = _layer(c, o, rng, "winograd", mask_fraction=0.0)
    errors = check_layer(layer, rng.standard_normal((max(n, 1), c, h, w)), seed=seed)
    assert set(errors) == {"x", "W", "b"} and all(e < 1e-7 for e in errors.values()), errors


def test_results_do_not_depend_on_the_thread_count():
    """Bit for bit, both algorithms, with many groups and pieces (one image per group)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((19, 9, 8, 8)).astype(np.float32)
    dout = rng.standard_normal((19, 5, 8, 8)).astype(np.float32)
    for algorithm in ("im2col", "winograd"):
        runs = []
        for threads in (1, 2, 3):
            layer = _layer(9, 5, np.random.default_rng(0), algorithm)
            layer.group_bytes = 1
            with use_threads(threads):
                y = layer.forward(x, relu=True)
                y_eval = layer.forward(x, training=False, relu=True)
                layer.forward(x, relu=True)
                dx = layer.backward(dout)
            runs.append((y, y_eval, dx, layer.grads["W"].copy(), layer.grads["b"].copy()))
        for other in runs[1:]:
            for a, b in zip(runs[0], other):
                np.testing.assert_array_equal(a, b)


def test_choice_of_algorithm():
    assert Conv2d(8, 4, 3, padding=1).uses_winograd()              # "auto", 3x3 same, 8 channels
    assert not Conv2d(3, 4, 3, padding=1).uses_winograd()          # an RGB image: im2col
    assert not Conv2d(8, 4, 3, padding=1, stride=2).uses_winograd()
    assert not Conv2d(8, 4, 3, padding=1, algorithm="im2col").uses_winograd()
    assert Conv2d(3, 4, 3, padding=1, algorithm="winograd").uses_winograd()
    with pytest.raises(ValueError, match="Winograd F.2x2, 3x3. needs kernel_size 3, stride 1 and padding 1"):
        Conv2d(8, 4, 5, padding=2, algorithm="winograd")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        Conv2d(8, 4, 3, padding=1, algorithm="fft")
    layer = Conv2d(8, 4, 3, padding=1)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        layer.algorithm = "direct"
    assert layer.algorithm == "auto"
