"""Weight initialisation: Glorot (Xavier) normal, the paper's init for every network.

Glorot & Bengio (2010) pick the variance that keeps activations and gradients
roughly the same size from layer to layer:

    W ~ N(0, 2 / (fan_in + fan_out)),   biases = 0.

Each layer declares how its params start (``layer.inits``): "glorot" for weights,
"zeros" for biases and BatchNorm's shift, "ones" for BatchNorm's scale.

For a Dense W (in, out): fan_in = in, fan_out = out. For a Conv2d W (out, in, k, k):
fan_in = in*k*k, fan_out = out*k*k (each output pixel sees in*k*k inputs; each
input pixel feeds out*k*k outputs), as in TensorFlow and PyTorch.

A note on the authors' code. Frankle & Carbin's paper says "Gaussian Glorot"
(Fig 2). Their TensorFlow code uses ``tf.contrib.layers.xavier_initializer(
uniform=False)``, which draws from a *truncated* normal (values beyond two
standard deviations redrawn, with the scale adjusted). We follow the paper and
draw from the plain Gaussian N(0, 2/(fan_in + fan_out)).
"""

import numpy as np

from .protocol import parameters


def fans(shape):
    """(fan_in, fan_out) of a weight: Dense (in, out) or Conv2d (out, in, k, k)."""
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    if len(shape) == 4:
        out_ch, in_ch, kh, kw = shape
        field = int(kh) * int(kw)
        return int(in_ch) * field, int(out_ch) * field
    raise ValueError(f"fans: expected a Dense (in, out) or Conv2d (out, in, k, k) shape, got {tuple(shape)}")


def glorot_normal(shape, fan_in, fan_out, rng):
    """A float32 array of `shape` drawn from N(0, 2 / (fan_in + fan_out)) with `rng`."""
    if fan_in + fan_out <= 0:
        raise ValueError(f"glorot_normal: need fan_in + fan_out > 0, got {fan_in} + {fan_out}")
    std = np.sqrt(2.0 / (fan_in + fan_out))
    w = rng.standard_normal(shape, dtype=np.float32)
    w *= np.float32(std)
    return w


def initialize(model, seed):
    """Draw every parameter as its layer declares it (``layer.inits``): "glorot" with
    glorot_normal from np.random.default_rng(seed), "zeros" (biases, BatchNorm's shift),
    "ones" (BatchNorm's scale). The walk is minilottery.protocol's, depth first in
    forward order, so a flat net draws its weights layer by layer. Masked-out weights
    stay 0 (W *= mask after the draw; the draw itself does not depend on the mask).
    Works in place; returns the model."""
    rng = np.random.default_rng(seed)
    for name, layer, key in parameters(model):
        value, how = layer.params[key], layer.inits[key]
        if how == "glorot":
            fan_in, fan_out = fans(value.shape)
            value[...] = glorot_normal(value.shape, fan_in, fan_out, rng)
        elif how in ("zeros", "ones"):
            value[...] = 0 if how == "zeros" else 1
        else:
            raise ValueError(f"initialize: {name} declares the unknown initialiser {how!r}")
        if key in layer.masks:
            value *= layer.masks[key]
    return model
