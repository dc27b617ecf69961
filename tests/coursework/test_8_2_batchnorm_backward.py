"""Exercise 8.2: batchnorm_backward (minilottery/normalization.py), the Numba kernel of
BatchNorm2d's backward pass: dgamma, dbeta and, if asked, dx, per channel.

Checked against central differences of the forward pass written here in float64,
y = gamma (x - mu) / sqrt(var + eps) + beta, with the batch's mu and var (training)
or fixed ones (evaluation, batch_stats False), and with a fused ReLU after it
(relu True). The kernel gets float32 x, dout and dx, as BatchNorm2d hands them
over, so it compiles once; the gradients are compared to 1e-5."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .oracles import assert_close, numerical_gradient

pytestmark = pytest.mark.exercise_8_2

F = np.float32
EPS = 1e-5
TOLERANCE = 1e-5


def forward(x, gamma, beta, relu, stats=None):
    """float64 BatchNorm (and ReLU); stats = (mean, var) fixed, or None: the batch's."""
    mean, var = (x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))) if stats is None else stats
    out = (gamma[None, :, None, None] * (x - mean[None, :, None, None])
           / np.sqrt(var[None, :, None, None] + EPS) + beta[None, :, None, None])
    return np.maximum(out, 0) if relu else out


def run_kernel(batchnorm_backward, x32, dout32, gamma, beta, relu, stats, input_grad=True):
    x = x32.astype(np.float64)
    batch_stats = stats is None
    mean, var = (x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))) if batch_stats else stats
    inv_std = 1.0 / np.sqrt(var + EPS)
    y = forward(x, gamma, beta, relu, stats).astype(F) if relu else x32
    dgamma, dbeta = np.full(len(gamma), np.nan), np.full(len(gamma), np.nan)
    dx = np.full(x32.shape, 7.0, F)
    batchnorm_backward(dout32, x32, y, relu, mean, inv_std, gamma, batch_stats, input_grad,
                       dgamma, dbeta, dx)
    return dx, dgamma, dbeta


def check(batchnorm_backward, shape, relu, fixed, seed):
    rng = np.random.default_rng(seed)
    x32 = (1.5 * rng.standard_normal(shape) + 0.3).astype(F)
    dout32 = rng.standard_normal(shape).astype(F)
    c = shape[1]
    gamma, beta = rng.uniform(0.5, 2.0, c), rng.standard_normal(c)
    stats = (rng.standard_normal(c), rng.uniform(0.5, 2.0, c)) if fixed else None
    dx, dgamma, dbeta = run_kernel(batchnorm_backward, x32, dout32, gamma, beta, relu, stats)
    x, dout = x32.astype(np.float64), dout32.astype(np.float64)
    def loss():
        return float(np.sum(dout * forward(x, gamma, beta, relu, stats)))

    setting = (f"x {shape}, relu {relu}, "
               f"{'fixed statistics (batch_stats False)' if fixed else 'batch statistics'}")
    assert_close("dgamma", dgamma, numerical_gradient(loss, gamma, h=1e-6), TOLERANCE, setting)
    assert_close("dbeta", dbeta, numerical_gradient(loss, beta, h=1e-6), TOLERANCE, setting)
    # With m = 2 values per channel, x_hat is always (-1, 1) and dx is nearly 0: the
    # error is measured against at least 1e-2 (the size of dout gamma / std).
    assert_close("dx", dx, numerical_gradient(loss, x, h=1e-6), TOLERANCE, setting, floor=1e-2)


def test_one_channel_batch_statistics(student):
    check(student("8.2").batchnorm_backward, (4, 1, 1, 1), False, False, seed=0)


def test_several_channels_with_relu(student):
    check(student("8.2").batchnorm_backward, (2, 3, 2, 2), True, False, seed=1)


def test_fixed_statistics(student):
    check(student("8.2").batchnorm_backward, (2, 2, 3, 1), False, True, seed=2)


@settings(max_examples=20, deadline=None, database=None)
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3))
       .filter(lambda s: s[0] * s[2] * s[3] >= 2),
       relu=st.booleans(), fixed=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_random_shapes(student, shape, relu, fixed, seed):
    check(student("8.2").batchnorm_backward, shape, relu, fixed, seed)


def test_without_input_grad_dx_is_left_alone(student):
    rng = np.random.default_rng(3)
    x32, dout32 = rng.standard_normal((2, 2, 2, 2)).astype(F), rng.standard_normal((2, 2, 2, 2)).astype(F)
    gamma, beta = np.array([1.0, 2.0]), np.zeros(2)
    dx, dgamma, dbeta = run_kernel(student("8.2").batchnorm_backward, x32, dout32, gamma, beta,
                                   False, None, input_grad=False)
    assert np.all(dx == 7.0), "input_grad False: only dgamma and dbeta are wanted, dx must not be written"
    full_dx, full_dgamma, full_dbeta = run_kernel(student("8.2").batchnorm_backward, x32, dout32,
                                                  gamma, beta, False, None)
    assert np.array_equal(dgamma, full_dgamma) and np.array_equal(dbeta, full_dbeta), \
        "dgamma and dbeta should not depend on input_grad"
