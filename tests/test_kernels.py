"""The Numba kernels and the fast layers against the loop-based NumPy references."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import conv_cases, pool_cases, seeds
from minilottery import kernels, reference
from minilottery.layers import Conv2d, MaxPool2d, ReLU
from minilottery.threads import use_threads

FAST = settings(deadline=None, max_examples=25)


def _out(size, k, s, p):
    return kernels.conv_output_size(size, k, s, p)


@FAST
@given(case=conv_cases(), seed=seeds)
def test_im2col_equals_reference(case, seed):
    n, c, h, w, _, k, s, p = case
    x = np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32)
    cols = np.full((c * k * k, n * _out(h, k, s, p) * _out(w, k, s, p)), np.nan, dtype=np.float32)
    kernels.im2col(x, k, s, p, cols)
    np.testing.assert_array_equal(cols, reference.im2col(x, k, s, p))



@st.composite
def same_conv_cases(draw):
    """(N, C, H, W, k, padding) of a stride-1 "same" convolution (odd k, padding (k-1)/2),
    the case im2col and col2im copy as one contiguous block (the paper's 3x3 convs)."""
    k = draw(st.sampled_from([1, 3, 5]))
    return (draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 7)),
            draw(st.integers(1, 7)), k, (k - 1) // 2)


@FAST
@given(case=same_conv_cases(), seed=seeds)
def test_im2col_and_col2im_same_convolution_equal_reference(case, seed):
    n, c, h, w, k, p = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    cols = np.full((c * k * k, n * h * w), np.nan, dtype=np.float32)
    kernels.im2col(x, k, 1, p, cols)
    np.testing.assert_array_equal(cols, reference.im2col(x, k, 1, p))
    dcols = rng.standard_normal(cols.shape)
    dx = np.full((n, c, h, w), np.nan)
    kernels.col2im(dcols, k, 1, p, dx)
    np.testing.assert_allclose(dx, reference.col2im(dcols, (n, c, h, w), k, 1, p), rtol=1e-12, atol=1e-12)


@FAST
@given(h=st.integers(1, 12), w=st.integers(1, 12), k=st.sampled_from([1, 3, 5, 7]))
def test_same_span_stays_inside_both_planes(h, w, k):
    """Compiled kernels do not check bounds: the runs im2col copies and col2im adds
    must lie inside the output plane and the input plane, even for planes smaller
    than the kernel."""
    p = (k - 1) // 2                          # odd k, stride 1: OH, OW == H, W
    size = h * w
    for i in range(k):
        for j in range(k):
            lo, hi, shift = kernels._same_span(h, w, p, i, j)
            assert 0 <= lo <= hi <= size
            if hi > lo:
                assert 0 <= lo + shift and hi + shift <= size


@FAST
@given(case=conv_cases(), seed=seeds)
def test_col2im_equals_reference(case, seed):
    n, c, h, w, _, k, s, p = case
    shape = (c * k * k, n * _out(h, k, s, p) * _out(w, k, s, p))
    cols = np.random.default_rng(seed).standard_normal(shape)
    dx = np.full((n, c, h, w), np.nan)
    kernels.col2im(cols, k, s, p, dx)
    np.testing.assert_allclose(dx, reference.col2im(cols, (n, c, h, w), k, s, p), rtol=1e-12, atol=1e-12)


def _conv_layer(case, rng, dtype=np.float32):
    n, c, h, w, o, k, s, p = case
    layer = Conv2d(c, o, k, stride=s, padding=p)
    layer.params["W"][...] = rng.standard_normal(layer.params["W"].shape)
    layer.params["b"][...] = rng.standard_normal(o)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    return layer, x


@FAST
@given(case=conv_cases(), seed=seeds, one_image_groups=st.booleans(), threads=st.sampled_from([1, 2]))
def test_conv2d_layer_equals_reference(case, seed, one_image_groups, threads):
    """Whatever the grouping of the batch (one image per group, or all in one) and the
    number of threads the pieces run on."""
    rng = np.random.default_rng(seed)
    layer, x = _conv_layer(case, rng)
    if one_image_groups:
        layer.group_bytes = 1
    with use_threads(threads):
        y = layer.forward(x)
        dout = rng.standard_normal(y.shape).astype(np.float32)
        dx = layer.backward(dout)
    W, b = layer.params["W"], layer.params["b"]
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    y_ref = reference.conv2d_forward(x64, W64, b.astype(np.float64), layer.stride, layer.padding)
    assert y.dtype == np.float32 and y.shape == y_ref.shape
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)

    dx_ref, dW_ref, db_ref = reference.conv2d_backward(dout.astype(np.float64), x64, W64,
                                                       layer.stride, layer.padding)
    assert dx.dtype == np.float32
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.grads["W"], dW_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.grads["b"], db_ref, rtol=1e-4, atol=1e-4)



@FAST
@given(case=conv_cases(), seed=seeds)
def test_conv2d_fused_relu_equals_conv2d_then_relu(case, seed):
    """Conv2d.forward(x, relu=True) is Conv2d then ReLU, forward and backward, bit for bit."""
    rng = np.random.default_rng(seed)
    layer, x = _conv_layer(case, rng)
    relu = ReLU()
    y = relu.forward(layer.forward(x))
    dout = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(relu.backward(dout))
    grads = {k: v.copy() for k, v in layer.grads.items()}

    y_fused = layer.forward(x, relu=True)
    np.testing.assert_array_equal(y_fused, y)
    dx_fused = layer.backward(dout)
    np.testing.assert_array_equal(dx_fused, dx)
    for key, grad in grads.items():
        np.testing.assert_array_equal(layer.grads[key], grad, err_msg=key)
    assert np.any(y == 0) == np.any(y_fused == 0)

def _pool_input(case, seed, ties):
    n, c, h, w, _, _ = case
    rng = np.random.default_rng(seed)
    if ties:   # few distinct values: many windows hold their maximum twice
        return rng.integers(0, 3, size=(n, c, h, w)).astype(np.float32)
    return rng.standard_normal((n, c, h, w)).astype(np.float32)


@FAST
@given(case=pool_cases(), seed=seeds)
def test_maxpool_equals_reference_including_ties(case, seed):
    *_, k, s = case
    for ties in (False, True):
        x = _pool_input(case, seed, ties)
        layer = MaxPool2d(k, s)
        y = layer.forward(x)
        np.testing.assert_array_equal(y, reference.maxpool2d_forward(x, k, s))
        dout = np.random.default_rng(seed + 1).standard_normal(y.shape).astype(np.float32)
        dx = layer.backward(dout)
        np.testing.assert_allclose(dx, reference.maxpool2d_backward(dout, x, k, s), rtol=1e-6, atol=1e-6)


@FAST
@given(case=pool_cases(), seed=seeds)
def test_maxpool_kernel_records_argmax_of_each_window(case, seed):
    n, c, h, w, k, s = case
    x = _pool_input(case, seed, ties=False)
    oh, ow = _out(h, k, s, 0), _out(w, k, s, 0)
    out = np.empty((n, c, oh, ow), np.float32)
    argmax = np.full((n, c, oh, ow), -1, np.int32)
    kernels.maxpool_forward(x, k, s, out, argmax)
    flat = x.reshape(n, c, h * w)
    picked = np.take_along_axis(flat, argmax.reshape(n, c, -1), axis=2).reshape(out.shape)
    np.testing.assert_array_equal(picked, out)
    rows, cols_ = np.divmod(argmax, w)
    oh_idx = np.arange(oh)[None, None, :, None]
    ow_idx = np.arange(ow)[None, None, None, :]
    assert np.all((rows >= oh_idx * s) & (rows < oh_idx * s + k))
    assert np.all((cols_ >= ow_idx * s) & (cols_ < ow_idx * s + k))


def test_relu_backward_kernel():
    y = np.array([[0.0, 1.0, 2.0], [3.0, 0.0, 0.5]], np.float32)
    dout = np.array([[5.0, 6.0, 7.0], [8.0, 9.0, 10.0]], np.float32)
    dx = np.full_like(y, np.nan)
    kernels.relu_backward(dout, y, dx)
    np.testing.assert_array_equal(dx, np.where(y > 0, dout, 0))


# -- max-pooling of NaN and infinities ----------------------------------------------------

SPECIALS = [np.nan, np.inf, -np.inf]


@st.composite
def pool_inputs_with_specials(draw):
    """(x, k, stride): a pool case whose input holds NaN, +inf and -inf at drawn
    positions, over a background of normal values, of few distinct values (ties)
    or of -inf everywhere (windows whose maximum is -inf)."""
    n, c, h, w, k, s = draw(pool_cases())
    rng = np.random.default_rng(draw(seeds))
    background = draw(st.sampled_from(["normal", "ties", "-inf"]))
    if background == "normal":
        x = rng.standard_normal((n, c, h, w))
    elif background == "ties":
        x = rng.integers(0, 3, size=(n, c, h, w)).astype(np.float64)
    else:
        x = np.full((n, c, h, w), -np.inf)
    flat = x.reshape(-1)
    positions = st.integers(0, flat.size - 1)
    for at, value in draw(st.lists(st.tuples(positions, st.sampled_from(SPECIALS)), max_size=6)):
        flat[at] = value
    return x.astype(np.float32), k, s


def first_max_index(window):
    """The rule, by plain Python: the window's first NaN if it has one, else its first
    maximum (index into the window's values in C order)."""
    values = window.ravel().tolist()
    nans = [i for i, v in enumerate(values) if math.isnan(v)]
    return nans[0] if nans else values.index(max(values))


@FAST
@given(case=pool_inputs_with_specials())
def test_maxpool_propagates_nan_and_routes_its_gradient_to_the_first_nan(case):
    """A window holding a NaN outputs NaN (as PyTorch's max_pool2d), its gradient goes to
    its first NaN; ±inf are ordinary values. Same rule in the kernel, the layer and the
    reference, for every window position."""
    x, k, s = case
    n, c, h, w = x.shape
    layer = MaxPool2d(k, s)
    y = layer.forward(x)
    dout = np.arange(1, y.size + 1, dtype=np.float32).reshape(y.shape)     # distinct, nonzero
    dx = layer.backward(dout)
    expected_dx = np.zeros_like(x)
    for n_, c_, oh, ow in np.ndindex(y.shape):
        window = x[n_, c_, oh * s:oh * s + k, ow * s:ow * s + k]
        i, j = divmod(first_max_index(window), k)
        np.testing.assert_array_equal(y[n_, c_, oh, ow], window[i, j])
        expected_dx[n_, c_, oh * s + i, ow * s + j] += dout[n_, c_, oh, ow]
    np.testing.assert_array_equal(dx, expected_dx)
    np.testing.assert_array_equal(reference.maxpool2d_forward(x, k, s), y)
    np.testing.assert_array_equal(reference.maxpool2d_backward(dout, x, k, s), expected_dx)
