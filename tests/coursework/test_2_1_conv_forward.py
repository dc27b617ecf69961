"""Exercise 2.1: conv2d_forward (minilottery/reference.py), the loop version.

Checked on examples worked out by hand (a kernel of ones sums each window;
padding adds zeros; a stride skips windows; a 1x1 kernel mixes channels), then
on random shapes by three properties every convolution has: the output shape,
linearity in x (out - b is linear), and that transposing the image and the kernel
(H <-> W) transposes the output."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .oracles import assert_close, conv_geometries

pytestmark = pytest.mark.exercise_2_1


def out_shape(x, W, stride, padding):
    (n, _, h, w), (o, _, k, _) = x.shape, W.shape
    return (n, o, (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1)


def test_a_kernel_of_ones_sums_each_window(student):
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    W, b = np.ones((1, 1, 2, 2)), np.array([0.5])
    # The 2x2 windows of [[0..3], [4..7], [8..11], [12..15]], e.g. 0 + 1 + 4 + 5 = 10.
    expected = np.array([[10, 14, 18], [26, 30, 34], [42, 46, 50]], np.float64) + 0.5
    got = student("2.1").conv2d_forward(x, W, b, 1, 0)
    assert_close("out", got, expected[None, None], 1e-12, "x 4x4, 2x2 kernel of ones, b 0.5")


def test_padding_and_stride(student):
    # x = [[0, 1, 2], [3, 4, 5], [6, 7, 8]], padded by one zero; 3x3 windows every
    # 2 pixels start at the padded corners and each holds one 2x2 corner of x.
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    got = student("2.1").conv2d_forward(x, np.ones((1, 1, 3, 3)), np.zeros(1), 2, 1)
    expected = np.array([[0 + 1 + 3 + 4, 1 + 2 + 4 + 5], [3 + 4 + 6 + 7, 4 + 5 + 7 + 8]], np.float64)
    assert_close("out", got, expected[None, None], 1e-12, "x 3x3, 3x3 ones, stride 2, padding 1")


def test_a_1x1_kernel_mixes_channels(student):
    x = np.stack([np.full((2, 2), 1.0), np.full((2, 2), 10.0)])[None]     # (1, 2, 2, 2)
    W = np.array([[1.0, 2.0], [-1.0, 0.5]]).reshape(2, 2, 1, 1)
    b = np.array([0.0, 3.0])
    got = student("2.1").conv2d_forward(x, W, b, 1, 0)
    # out channel 0: 1*1 + 2*10 = 21; channel 1: -1*1 + 0.5*10 + 3 = 7.
    expected = np.stack([np.full((2, 2), 21.0), np.full((2, 2), 7.0)])[None]
    assert_close("out", got, expected, 1e-12, "two channels, 1x1 kernel")


def test_a_batch_keeps_its_images_apart(student):
    x = np.zeros((2, 1, 3, 3))
    x[1, 0, 1, 1] = 1.0                                  # only image 1 has a pixel
    W = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    got = np.asarray(student("2.1").conv2d_forward(x, W, np.zeros(1), 1, 0))
    # One 3x3 window: image 0 gives 0, image 1 gives W's centre weight, 4.
    assert_close("out", got, np.array([0.0, 4.0]).reshape(2, 1, 1, 1), 1e-12, "a batch of 2")


@settings(max_examples=20, deadline=None, database=None)
@given(case=conv_geometries(), o=st.integers(1, 3))
def test_random_shapes_linear_and_transposable(student, case, o):
    shape, k, stride, padding, seed = case
    rng = np.random.default_rng(seed)
    x1, x2 = rng.standard_normal(shape), rng.standard_normal(shape)
    W, b = rng.standard_normal((o, shape[1], k, k)), rng.standard_normal(o)
    conv = student("2.1").conv2d_forward
    setting = f"x {shape}, W {W.shape}, stride {stride}, padding {padding}"
    out1 = np.asarray(conv(x1, W, b, stride, padding))
    assert out1.shape == out_shape(x1, W, stride, padding), \
        f"out has shape {out1.shape}, should be {out_shape(x1, W, stride, padding)} ({setting})"
    out2 = np.asarray(conv(x2, W, b, stride, padding))
    mixed = np.asarray(conv(2.0 * x1 - x2, W, b, stride, padding))
    bias = b[None, :, None, None]
    assert_close("out(2 x1 - x2) - b", mixed - bias, 2 * (out1 - bias) - (out2 - bias), 1e-9,
                 setting + "; the convolution is linear in x")
    transposed = np.asarray(conv(x1.transpose(0, 1, 3, 2).copy(), W.transpose(0, 1, 3, 2).copy(),
                                 b, stride, padding))
    assert_close("out of the transposed image", transposed, out1.transpose(0, 1, 3, 2), 1e-9,
                 setting + "; transposing x and W (H <-> W) transposes out")


def test_float32_stays_float32(student):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    W, b = rng.standard_normal((3, 2, 3, 3)).astype(np.float32), np.zeros(3, np.float32)
    out = np.asarray(student("2.1").conv2d_forward(x, W, b, 1, 1))
    assert out.dtype == np.float32, f"out has dtype {out.dtype} for float32 inputs, should be float32"
