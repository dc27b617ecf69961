"""Exercise 2.2: im2col (minilottery/reference.py).

Checked on two examples worked out by hand (one with padding and a stride), and
on random shapes by the adjoint identity with col2im (in reference.py, given):
sum(im2col(x) * Y) = sum(x * col2im(Y)) for every x and Y. Since col2im adds each
column entry back onto its source pixel, only the right im2col satisfies it."""

import numpy as np
import pytest
from hypothesis import given, settings

from minilottery.reference import col2im

from .oracles import assert_equal, conv_geometries

pytestmark = pytest.mark.exercise_2_2


def shape_of_cols(x_shape, k, stride, padding):
    n, c, h, w = x_shape
    oh, ow = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    return (c * k * k, n * oh * ow)


def test_by_hand(student):
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)   # [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    # Row i*k + j holds the pixel at offset (i, j) of every 2x2 window, windows in
    # row-major order: offset (0, 0) of the 4 windows is 0, 1, 3, 4.
    expected = np.array([[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]], np.float64)
    assert_equal("cols", student("2.2").im2col(x, 2, 1, 0), expected, "x 3x3, k 2")


def test_by_hand_with_padding_and_stride(student):
    # x = [[1, 2], [3, 4]] padded by one zero is 4x4; the 2x2 windows every 2 pixels
    # are the padded image's four corners, each holding one pixel of x.
    x = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    expected = np.array([[0, 0, 0, 4], [0, 0, 3, 0], [0, 2, 0, 0], [1, 0, 0, 0]], np.float64)
    assert_equal("cols", student("2.2").im2col(x, 2, 2, 1), expected, "x 2x2, k 2, stride 2, padding 1")


def test_channels_are_rows_and_images_are_columns(student):
    # k = 1: row c holds channel c; columns run over image n, then over its pixels.
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float64).reshape(2, 3, 2, 2)
    expected = x.transpose(1, 0, 2, 3).reshape(3, 8)
    assert_equal("cols", student("2.2").im2col(x, 1, 1, 0), expected, "x (2, 3, 2, 2), k 1")


@settings(max_examples=30, deadline=None, database=None)
@given(case=conv_geometries())
def test_random_shapes_are_the_adjoint_of_col2im(student, case):
    shape, k, stride, padding, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    setting = f"x {shape}, k {k}, stride {stride}, padding {padding}"
    cols = np.asarray(student("2.2").im2col(x, k, stride, padding))
    assert cols.shape == shape_of_cols(shape, k, stride, padding), \
        f"cols has shape {cols.shape}, should be {shape_of_cols(shape, k, stride, padding)} ({setting})"
    for _ in range(3):
        Y = rng.standard_normal(cols.shape)
        left, right = float(np.sum(cols * Y)), float(np.sum(x * col2im(Y, shape, k, stride, padding)))
        assert abs(left - right) <= 1e-9 * max(1.0, abs(right)), \
            (f"sum(im2col(x) * Y) = {left:.6g} but sum(x * col2im(Y)) = {right:.6g} ({setting}): "
             f"some column entry is not the pixel col2im sends it back to")


def test_float32_stays_float32(student):
    x = np.ones((1, 2, 3, 3), np.float32)
    cols = np.asarray(student("2.2").im2col(x, 2, 1, 1))
    assert cols.dtype == np.float32, f"cols has dtype {cols.dtype} for float32 x, should be float32"
