"""Exercise 2.3: conv2d_backward (minilottery/reference.py), the loop version.

Checked against finite differences of an independent forward pass (sliding
windows + einsum), in float64: the loss L = sum(dout * conv(x, W, b)) is linear
in each of x, W and b, so central differences are exact up to round-off and a
correct backward pass has a relative error of about 1e-10."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from .oracles import assert_backward_matches

pytestmark = pytest.mark.exercise_2_3

TOLERANCE = 1e-6


def conv_forward(x, W, b, stride, padding):
    """out[n, o, oh, ow] = b[o] + sum_{c,i,j} W[o, c, i, j] xp[n, c, oh*s + i, ow*s + j]."""
    k = W.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", windows, W) + b[None, :, None, None]


def check_gradients(conv2d_backward, n, c, h, w, o, k, stride, padding, seed):
    rng = np.random.default_rng(seed)
    x, W, b = rng.standard_normal((n, c, h, w)), rng.standard_normal((o, c, k, k)), rng.standard_normal(o)
    dout = rng.standard_normal(conv_forward(x, W, b, stride, padding).shape)
    result = conv2d_backward(dout, x.copy(), W.copy(), stride, padding)
    def loss():
        return float(np.sum(dout * conv_forward(x, W, b, stride, padding)))

    setting = f"x {x.shape}, W {W.shape}, stride {stride}, padding {padding}"
    assert_backward_matches("conv2d_backward", result, loss, (x, W, b), setting, TOLERANCE)


def test_one_channel_no_padding(student):
    check_gradients(student("2.3").conv2d_backward, 1, 1, 4, 4, 1, 2, 1, 0, seed=0)


def test_several_channels_with_stride_and_padding(student):
    check_gradients(student("2.3").conv2d_backward, 2, 3, 5, 6, 2, 3, 2, 1, seed=1)


@st.composite
def conv_cases(draw):
    """(N, C, H, W, O, k, stride, padding) with an output of at least 1x1."""
    k, padding = draw(st.integers(1, 3)), draw(st.integers(0, 1))
    low = max(1, k - 2 * padding)
    return (draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(low, low + 4)),
            draw(st.integers(low, low + 4)), draw(st.integers(1, 3)), k,
            draw(st.integers(1, 2)), padding)


@settings(max_examples=15, deadline=None, database=None)
@given(case=conv_cases(), seed=st.integers(0, 2**32 - 1))
def test_random_shapes(student, case, seed):
    check_gradients(student("2.3").conv2d_backward, *case, seed=seed)


def test_float32_stays_float32(student):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    W = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    dout = rng.standard_normal((1, 3, 2, 2)).astype(np.float32)
    for name, grad in zip(("dx", "dW", "db"), student("2.3").conv2d_backward(dout, x, W, 1, 0)):
        assert np.asarray(grad).dtype == np.float32, \
            f"{name} has dtype {np.asarray(grad).dtype} for float32 inputs, should be float32"
