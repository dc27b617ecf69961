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
"""

import numpy as np

from .protocol import Layer, _checked


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

    def forward(self, x, training=True):
        gamma = self.params["gamma"]
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise self._bad_shape("input", f"(N, {self.channels}, H, W)", x.shape)
        x = x.astype(gamma.dtype, copy=False)
        m = x.shape[0] * x.shape[2] * x.shape[3]
        if training and not self.frozen:
            if m < 2:
                raise ValueError(f"{self.describe()}: batch statistics need more than one value "
                                 f"per channel, got input of shape {x.shape}")
            mean = x.mean(axis=(0, 2, 3))
            var = ((x - mean[:, None, None]) ** 2).mean(axis=(0, 2, 3))
            self.running_mean[...] = (1 - self.momentum) * self.running_mean + self.momentum * mean
            self.running_var[...] = ((1 - self.momentum) * self.running_var
                                     + self.momentum * var * (m / (m - 1)))
        else:
            mean, var = self.running_mean.astype(x.dtype), self.running_var.astype(x.dtype)
        inv_std = (1.0 / np.sqrt(var + self.eps)).astype(x.dtype)
        x_hat = (x - mean[:, None, None]) * inv_std[:, None, None]
        y = x_hat * gamma[:, None, None] + self.params["beta"][:, None, None]
        self._saved = (x_hat, inv_std, training and not self.frozen) if training else None
        return y

    def backward(self, dout, input_grad=True):
        x_hat, inv_std, batch_statistics = self._take_saved()
        gamma = self.params["gamma"]
        dout = self._check_dout(dout, x_hat.shape).astype(gamma.dtype, copy=False)
        np.sum(dout * x_hat, axis=(0, 2, 3), out=self.grads["gamma"])
        np.sum(dout, axis=(0, 2, 3), out=self.grads["beta"])
        if not input_grad:
            return None
        d_hat = dout * gamma[:, None, None]
        if batch_statistics:
            m = x_hat.shape[0] * x_hat.shape[2] * x_hat.shape[3]
            d_hat = d_hat - (self.grads["beta"] * gamma / m)[:, None, None] \
                - x_hat * (self.grads["gamma"] * gamma / m)[:, None, None]
        return d_hat * inv_std[:, None, None]

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
