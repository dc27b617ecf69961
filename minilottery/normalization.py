"""Batch normalisation (Ioffe & Szegedy, 2015), for convolutional feature maps (NCHW).

Per channel c, over the m = N*H*W values of a batch,

    mu = mean(x),  var = mean((x - mu)^2)   (biased),  x_hat = (x - mu) / sqrt(var + eps)
    y  = gamma * x_hat + beta.

In training the batch's mu and var normalise, and the running statistics follow them:
running_mean <- (1 - momentum) running_mean + momentum mu, and running_var the same with
the unbiased m / (m - 1) var (PyTorch's convention, momentum 0.1, eps 1e-5). In evaluation
the running statistics normalise, so an image's output does not depend on its batch.

Backward in training. Every x enters y through x_hat, mu and var; with
d_hat = dout * gamma, the three paths sum to

    dx = (1 / sqrt(var + eps)) * (d_hat - mean(d_hat) - x_hat * mean(d_hat * x_hat)),
    dgamma = sum(dout * x_hat),  dbeta = sum(dout)     (means and sums per channel).

In evaluation mode (or with ``frozen = True`` in training) mu and var are constants and
dx = dout * gamma / sqrt(running_var + eps).

gamma and beta are parameters (initialised to 1 and 0) but never prunable: they have no
mask and are not counted among the weights.

The work is three Numba kernels, one channel per ``prange`` iteration: the statistics
(two passes, summed in float64), the affine map y = x * (gamma / std) + (beta - mu gamma /
std), and the backward pass (its two sums, then dx, in one visit of the channel). A
channel is summed in one fixed order by one thread, so the numbers do not depend on how
many threads run. ``forward(x, relu=True)`` also applies a following ReLU in the same
pass (Sequential fuses BatchNorm2d + ReLU so); backward then masks dout by y > 0 first.
"""

import numpy as np
from numba import njit, prange

from .protocol import Layer, _checked


@njit(cache=True, parallel=True)
def batch_statistics(x, mean, var):
    """mean[c], var[c] (float64): the mean and the biased variance of channel c of x (N, C, H, W)."""
    ### BEGIN SOLUTION 8.1
    n, channels, h, w = x.shape
    m = n * h * w
    for c in prange(channels):
        total = 0.0
        for i in range(n):
            for j in range(h):
                for k in range(w):
                    total += x[i, c, j, k]
        mu = total / m
        squares = 0.0
        for i in range(n):
            for j in range(h):
                for k in range(w):
                    d = x[i, c, j, k] - mu
                    squares += d * d
        mean[c] = mu
        var[c] = squares / m
    ### END SOLUTION


@njit(cache=True, parallel=True)
def scale_shift(x, scale, shift, relu, y):
    """y = x * scale[c] + shift[c] per channel c, then max(y, 0) if ``relu``."""
    n, channels, h, w = x.shape
    zero = y.dtype.type(0.0)
    for plane in prange(n * channels):
        i, c = plane // channels, plane % channels
        a, b = scale[c], shift[c]
        for j in range(h):
            for k in range(w):
                v = x[i, c, j, k] * a + b
                y[i, c, j, k] = max(v, zero) if relu else v


@njit(cache=True, inline="always")
def _upstream(dout, y, relu, i, c, j, k):
    """The gradient reaching the normalised value: dout, or 0 where a fused ReLU cut it."""
    if relu and y[i, c, j, k] <= 0:
        return dout.dtype.type(0.0)
    return dout[i, c, j, k]


@njit(cache=True, parallel=True)
def batchnorm_backward(dout, x, y, relu, mean, inv_std, gamma, batch_stats, input_grad,
                       dgamma, dbeta, dx):
    """With g = dout (masked by y > 0 if ``relu``) and x_hat = (x - mean) inv_std, per
    channel: dbeta = sum g, dgamma = sum g x_hat, and, if ``input_grad``,
    dx = gamma inv_std (g - dbeta / m - x_hat dgamma / m)  (``batch_stats``) or
    dx = gamma inv_std g (fixed statistics)."""
    ### BEGIN SOLUTION 8.2
    n, channels, h, w = x.shape
    m = n * h * w
    for c in prange(channels):
        mu, s = mean[c], inv_std[c]
        sum_g = 0.0
        sum_gx = 0.0
        for i in range(n):
            for j in range(h):
                for k in range(w):
                    g = _upstream(dout, y, relu, i, c, j, k)
                    sum_g += g
                    sum_gx += g * ((x[i, c, j, k] - mu) * s)
        dbeta[c] = sum_g
        dgamma[c] = sum_gx
        if input_grad:                    # dx too, not only dgamma and dbeta
            a = gamma[c] * s
            mean_g = sum_g / m if batch_stats else 0.0
            mean_gx = sum_gx / m if batch_stats else 0.0
            for i in range(n):
                for j in range(h):
                    for k in range(w):
                        g = _upstream(dout, y, relu, i, c, j, k)
                        x_hat = (x[i, c, j, k] - mu) * s
                        dx[i, c, j, k] = a * (g - mean_g - x_hat * mean_gx)
    ### END SOLUTION


class BatchNorm2d(Layer):
    """BatchNorm2d(channels, eps=1e-5, momentum=0.1): params "gamma", "beta" (channels,);
    own state running_mean, running_var (see the module docstring). ``frozen = True``
    normalises with the running statistics in training too (and leaves them alone)."""

    def __init__(self, channels, *, eps=1e-5, momentum=0.1, name=None):
        super().__init__(name=name)
        self.channels = int(channels)
        if self.channels < 1 or not eps > 0 or not 0 <= momentum <= 1:
            raise ValueError(f"{self.describe()}: need channels >= 1, eps > 0, 0 <= momentum <= 1; "
                             f"got {channels}, {eps}, {momentum}")
        self.eps, self.momentum = float(eps), float(momentum)
        self._add_param("gamma", (self.channels,), prunable=False, init="ones")
        self._add_param("beta", (self.channels,), prunable=False, init="zeros")
        self.params["gamma"][...] = 1    # usable as built; minilottery.init sets the same
        self.running_mean = np.zeros(self.channels, dtype=np.float32)
        self.running_var = np.ones(self.channels, dtype=np.float32)
        self.frozen = False

    def forward(self, x, training=True, relu=False):
        """Normalise x (N, C, H, W); with ``relu=True``, max(that, 0) in the same pass."""
        gamma = self.params["gamma"]
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise self._bad_shape("input", f"(N, {self.channels}, H, W)", x.shape)
        x = np.ascontiguousarray(x, dtype=gamma.dtype)
        m = x.shape[0] * x.shape[2] * x.shape[3]
        batch_stats = training and not self.frozen
        if batch_stats:
            if m < 2:
                raise ValueError(f"{self.describe()}: batch statistics need more than one value "
                                 f"per channel, got input of shape {x.shape}")
            mean, var = np.empty(self.channels), np.empty(self.channels)
            batch_statistics(x, mean, var)
            self.running_mean[...] = (1 - self.momentum) * self.running_mean + self.momentum * mean
            self.running_var[...] = ((1 - self.momentum) * self.running_var
                                     + self.momentum * var * (m / (m - 1)))
        else:
            mean = self.running_mean.astype(np.float64)
            var = self.running_var.astype(np.float64)
        inv_std = 1.0 / np.sqrt(var + self.eps)
        scale = gamma * inv_std
        shift = self.params["beta"] - mean * scale
        y = np.empty_like(x)
        scale_shift(x, scale.astype(x.dtype), shift.astype(x.dtype), relu, y)
        self._saved = (x, y if relu else None, mean, inv_std, batch_stats) if training else None
        return y

    def backward(self, dout, input_grad=True):
        x, relu_out, mean, inv_std, batch_stats = self._take_saved()
        gamma = self.params["gamma"]
        dout = np.ascontiguousarray(self._check_dout(dout, x.shape), dtype=gamma.dtype)
        dgamma, dbeta = np.empty(self.channels), np.empty(self.channels)
        dx = np.empty_like(x) if input_grad else np.empty((0, 0, 0, 0), x.dtype)
        relu = relu_out is not None
        batchnorm_backward(dout, x, relu_out if relu else x, relu, mean, inv_std,
                           gamma.astype(np.float64), batch_stats, input_grad, dgamma, dbeta, dx)
        self.grads["gamma"][...] = dgamma
        self.grads["beta"][...] = dbeta
        return dx if input_grad else None

    def own_state(self):
        return {"running_mean": self.running_mean.copy(), "running_var": self.running_var.copy()}

    def check_own_state(self, state):
        if not isinstance(state, dict) or set(state) != {"running_mean", "running_var"}:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{self.describe()}: expected state running_mean, running_var; got {got}")
        for key, value in state.items():
            _checked(f"{self.describe()} {key}", value, (self.channels,))
        if np.any(np.asarray(state["running_var"], dtype=np.float64) < 0):
            raise ValueError(f"{self.describe()}: running_var must be >= 0")

    def load_own_state(self, state):
        self.check_own_state(state)
        self.running_mean[...] = state["running_mean"]
        self.running_var[...] = state["running_var"]
