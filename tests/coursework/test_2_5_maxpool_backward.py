"""Exercise 2.5: maxpool2d_backward (minilottery/reference.py), the loop version.

Each dout entry goes to the position of its window's maximum, the first one in C
order on ties (and the first NaN in a window holding a NaN); where windows
overlap, the contributions add up. Checked on examples worked out by hand, then on
random shapes: dx has x's shape, is linear in dout, and keeps its total
(sum dx = sum dout), and it is 0 wherever x is below every maximum."""

import numpy as np
import pytest
from hypothesis import given, settings

from .oracles import POOL_IMAGE, assert_close, assert_equal, pool_geometries

pytestmark = pytest.mark.exercise_2_5

X = POOL_IMAGE


def test_2x2_windows_by_hand(student):
    dout = np.array([[10.0, 20.0], [30.0, 40.0]]).reshape(1, 1, 2, 2)
    expected = np.zeros((1, 1, 4, 4))
    expected[0, 0, 0, 1], expected[0, 0, 1, 2], expected[0, 0, 2, 1], expected[0, 0, 3, 2] = 10, 20, 30, 40
    assert_equal("dx", student("2.5").maxpool2d_backward(dout, X, 2), expected,
                 "x 4x4, k 2, stride None (= k): each dout to its window's maximum")


def test_overlapping_windows_add_up(student):
    # k 3, stride 1: 9 (at row 2, column 1) is the maximum of all four windows.
    dout = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    expected = np.zeros((1, 1, 4, 4))
    expected[0, 0, 2, 1] = 1 + 2 + 3 + 4
    assert_equal("dx", student("2.5").maxpool2d_backward(dout, X, 3, 1), expected,
                 "x 4x4, k 3, stride 1: the four windows share their maximum")


def test_ties_go_to_the_first_maximum(student):
    x = np.array([[2.0, 7.0], [7.0, 7.0]]).reshape(1, 1, 2, 2)
    expected = np.array([[0.0, 5.0], [0.0, 0.0]]).reshape(1, 1, 2, 2)
    assert_equal("dx", student("2.5").maxpool2d_backward(np.full((1, 1, 1, 1), 5.0), x, 2),
                 expected, "three equal maxima: the first in C order (row by row) gets dout")


def test_a_nan_takes_the_gradient(student):
    x = np.array([[2.0, 7.0], [np.nan, 1.0]]).reshape(1, 1, 2, 2)
    expected = np.array([[0.0, 0.0], [5.0, 0.0]]).reshape(1, 1, 2, 2)
    assert_equal("dx", student("2.5").maxpool2d_backward(np.full((1, 1, 1, 1), 5.0), x, 2),
                 expected, "a window holding a NaN: its output is NaN, the NaN gets dout")


@settings(max_examples=25, deadline=None, database=None)
@given(case=pool_geometries(strides=(None, 1, 2), extra=3))
def test_random_shapes_linear_and_conserving(student, case):
    shape, k, stride, seed = case
    rng = np.random.default_rng(seed)
    s = k if stride is None else stride
    x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float64)   # no ties
    out_shape = shape[:2] + ((shape[2] - k) // s + 1, (shape[3] - k) // s + 1)
    d1, d2 = rng.standard_normal(out_shape), rng.standard_normal(out_shape)
    backward = student("2.5").maxpool2d_backward
    setting = f"x {shape}, k {k}, stride {stride}"
    dx1 = np.asarray(backward(d1, x, k, stride))
    assert dx1.shape == shape, f"dx has shape {dx1.shape}, should be x's {shape} ({setting})"
    assert abs(dx1.sum() - d1.sum()) <= 1e-9 * max(1.0, np.abs(d1).sum()), \
        f"sum(dx) = {dx1.sum():.6g} but sum(dout) = {d1.sum():.6g}: every dout entry goes to one pixel ({setting})"
    dx2 = np.asarray(backward(d2, x, k, stride))
    assert_close("dx(dout1 - 3 dout2)", backward(d1 - 3 * d2, x, k, stride), dx1 - 3 * dx2, 1e-9,
                 setting + "; dx is linear in dout")
    # With k > 1, each plane's smallest pixel is in a window with a larger pixel (no ties),
    # so it is no window's maximum and gets no gradient.
    if k > 1:
        for n in range(shape[0]):
            for c in range(shape[1]):
                smallest = np.unravel_index(np.argmin(x[n, c]), shape[2:])
                assert dx1[n, c][smallest] == 0, \
                    (f"dx[{n}, {c}, {smallest[0]}, {smallest[1]}] is {dx1[n, c][smallest]:g}, but "
                     f"x there is its plane's smallest pixel, no window's maximum ({setting})")


def test_float32_stays_float32(student):
    dx = np.asarray(student("2.5").maxpool2d_backward(np.ones((1, 1, 2, 2), np.float32),
                                                      X.astype(np.float32), 2))
    assert dx.dtype == np.float32, f"dx has dtype {dx.dtype} for float32 inputs, should be float32"
