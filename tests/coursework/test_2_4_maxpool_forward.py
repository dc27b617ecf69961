"""Exercise 2.4: maxpool2d_forward (minilottery/reference.py), the loop version.

Checked on examples worked out by hand (non-overlapping and overlapping windows,
the default stride, a NaN), then on random shapes by the output shape and two
properties of a maximum: adding a constant adds it to every output, and scaling
by a > 0 scales every output."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .oracles import POOL_IMAGE, assert_equal, pool_geometries

pytestmark = pytest.mark.exercise_2_4

X = POOL_IMAGE


def test_2x2_windows_by_hand(student):
    # stride defaults to the kernel size: the four 2x2 blocks.
    got = student("2.4").maxpool2d_forward(X, 2)
    assert_equal("out", got, np.array([[5.0, 8.0], [9.0, 3.0]]).reshape(1, 1, 2, 2),
                 "x 4x4, k 2, stride None (= k)")


def test_overlapping_windows_by_hand(student):
    got = student("2.4").maxpool2d_forward(X, 3, 1)
    assert_equal("out", got, np.array([[9.0, 9.0], [9.0, 9.0]]).reshape(1, 1, 2, 2),
                 "x 4x4, k 3, stride 1")
    got = student("2.4").maxpool2d_forward(X, 2, 1)
    expected = np.array([[5, 8, 8], [9, 9, 8], [9, 9, 3]], np.float64).reshape(1, 1, 3, 3)
    assert_equal("out", got, expected, "x 4x4, k 2, stride 1")


def test_channels_and_images_are_pooled_apart(student):
    x = np.stack([X, -X, 2 * X])[:, 0].reshape(1, 3, 4, 4)
    x = np.concatenate([x, x[:, ::-1]])                    # (2, 3, 4, 4)
    got = np.asarray(student("2.4").maxpool2d_forward(x, 2))
    first = np.array([[5.0, 8.0], [9.0, 3.0]])
    minus = np.array([[-1.0, 0.0], [0.0, -1.0]])            # max of -x per block
    expected = np.stack([first, minus, 2 * first])
    assert_equal("out", got, np.stack([expected, expected[::-1]]), "x (2, 3, 4, 4), k 2")


def test_nan_propagates(student):
    x = X.copy()
    x[0, 0, 3, 2] = np.nan
    got = np.asarray(student("2.4").maxpool2d_forward(x, 2))
    expected = np.array([[5.0, 8.0], [9.0, np.nan]]).reshape(1, 1, 2, 2)
    assert_equal("out", got, expected, "a NaN in the last window (NaN propagates, as NumPy's max)")


@settings(max_examples=25, deadline=None, database=None)
@given(case=pool_geometries(), shift=st.sampled_from([-3.0, 10.0]), a=st.sampled_from([0.5, 4.0]))
def test_random_shapes_shift_and_scale(student, case, shift, a):
    shape, k, stride, seed = case
    x = np.random.default_rng(seed).standard_normal(shape)
    s = k if stride is None else stride
    pool = student("2.4").maxpool2d_forward
    setting = f"x {shape}, k {k}, stride {stride}"
    out = np.asarray(pool(x, k, stride))
    expected_shape = shape[:2] + ((shape[2] - k) // s + 1, (shape[3] - k) // s + 1)
    assert out.shape == expected_shape, f"out has shape {out.shape}, should be {expected_shape} ({setting})"
    assert_equal("out(x + c)", pool(x + shift, k, stride), out + shift, setting + f", c = {shift}")
    assert_equal("out(a x)", pool(a * x, k, stride), a * out, setting + f", a = {a}")
    inside = np.isin(out, x)
    assert inside.all(), f"out holds {out[~inside][0]:.6g}, which is no entry of x ({setting})"


def test_float32_stays_float32(student):
    out = np.asarray(student("2.4").maxpool2d_forward(X.astype(np.float32), 2))
    assert out.dtype == np.float32, f"out has dtype {out.dtype} for float32 x, should be float32"
