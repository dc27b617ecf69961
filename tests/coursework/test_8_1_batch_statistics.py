"""Exercise 8.1: batch_statistics(x, mean, var) (minilottery/normalization.py), the
Numba kernel that fills mean[c] and the biased variance var[c] of each channel of x
(N, C, H, W), summed in float64.

Checked by hand, then on random float32 batches by what a mean and a variance do:
adding a constant to a channel shifts its mean and leaves its variance, scaling by a
scales the variance by a^2, a constant channel has variance 0, and changing one
channel changes no other channel's statistics. All inputs are float32, so Numba
compiles the kernel once."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .oracles import assert_close

pytestmark = pytest.mark.exercise_8_1

F = np.float32


def statistics(batch_statistics, x):
    mean, var = np.full(x.shape[1], np.nan), np.full(x.shape[1], np.nan)
    batch_statistics(x, mean, var)
    return mean, var


def test_by_hand(student):
    # Channel 0 holds 1, 2, 3, 4: mean 2.5, biased variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25.
    # Channel 1 holds 7 four times: mean 7, variance 0. The values are spread over N, H and W.
    x = np.empty((2, 2, 1, 2), F)
    x[:, 0] = np.array([1, 2, 3, 4], F).reshape(2, 1, 2)
    x[:, 1] = 7
    mean, var = statistics(student("8.1").batch_statistics, x)
    assert_close("mean", mean, [2.5, 7.0], 1e-12, "channel 0 = 1, 2, 3, 4; channel 1 = 7")
    assert_close("var", var, [1.25, 0.0], 1e-12, "the biased variance: divide by m = N*H*W, not m - 1")


@st.composite
def batches(draw):
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4)),
             draw(st.integers(1, 4)))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).standard_normal(shape).astype(F), seed


@settings(max_examples=25, deadline=None, database=None)
@given(batch=batches(), shift=st.sampled_from([-2.0, 0.5, 8.0]), a=st.sampled_from([0.5, 2.0, 4.0]))
def test_shift_scale_and_channels(student, batch, shift, a):
    x, seed = batch
    kernel = student("8.1").batch_statistics
    setting = f"x {x.shape} (seed {seed})"
    mean, var = statistics(kernel, x)
    assert np.all(var >= 0), f"var is {var.tolist()}: a variance is never negative ({setting})"
    shifted_mean, shifted_var = statistics(kernel, x + F(shift))
    assert_close("mean(x + c)", shifted_mean, mean + shift, 1e-5, setting + f", c = {shift}")
    assert np.allclose(shifted_var, var, rtol=1e-4, atol=1e-5), \
        f"var(x + c) is {shifted_var.tolist()}, should equal var(x) = {var.tolist()} ({setting}, c = {shift})"
    scaled_mean, scaled_var = statistics(kernel, x * F(a))          # exact: a is a power of two
    assert_close("mean(a x)", scaled_mean, a * mean, 1e-12, setting + f", a = {a}")
    assert_close("var(a x)", scaled_var, a * a * var, 1e-12, setting + f", a = {a}")
    changed = x.copy()
    changed[:, 0] = 5.0
    other_mean, other_var = statistics(kernel, changed)
    assert other_mean[0] == 5.0 and other_var[0] == 0.0, \
        f"a channel of fives has mean {other_mean[0]} and var {other_var[0]}, should be 5 and 0 ({setting})"
    assert np.array_equal(other_mean[1:], mean[1:]) and np.array_equal(other_var[1:], var[1:]), \
        f"changing channel 0 changed another channel's statistics ({setting})"


def test_a_long_channel_sums_in_float64(student):
    # 2^20 copies of float32(0.1): in float64 the sum, the mean and the variance (0) are
    # exact; a float32 running sum drifts by several percent, and its variance with it.
    x = np.full((1, 1, 1024, 1024), 0.1, F)
    mean, var = statistics(student("8.1").batch_statistics, x)
    expected = float(F(0.1))
    assert abs(mean[0] - expected) < 1e-12 and abs(var[0]) < 1e-12, \
        (f"2^20 values {expected!r} give mean {mean[0]!r} and var {var[0]!r}, should be "
         f"{expected!r} and 0: sum in float64")
