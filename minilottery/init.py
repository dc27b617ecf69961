"""Weight initialisation: Glorot (Xavier) normal, the paper's init for every network.

Glorot & Bengio (2010) pick the variance that keeps activations and gradients
roughly the same size from layer to layer:

    W ~ N(0, 2 / (fan_in + fan_out)),   biases = 0.

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
    """Draw every weight W with glorot_normal from np.random.default_rng(seed), in layer
    order, and set every bias to 0. Masked-out weights stay 0 (W *= mask after the draw;
    the draw itself does not depend on the mask). Works in place; returns the model."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for key, value in layer.params.items():
            if key == "W":
                fan_in, fan_out = fans(value.shape)
                value[...] = glorot_normal(value.shape, fan_in, fan_out, rng)
                if key in layer.masks:
                    value *= layer.masks[key]
            else:
                value[...] = 0
    return model
