"""Numerical gradient checking: is my backward pass right?

The derivative of a function f at x is approximately the central difference

    df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / (2h),

whose error shrinks like h^2. We compare it with the analytic gradient from a
layer's backward(). Work in float64: in float32 the round-off in f (about
1e-7 relative) divided by 2h would swamp the comparison.

How close is close? We report

    rel_error(a, b) = max_i |a_i - b_i| / max(1e-8, max_i (|a_i| + |b_i|)),

the largest difference relative to the largest magnitude. A correct layer
checked in float64 gives about 1e-7 or less (1e-10 for linear layers); a bug
typically gives 1e-2 or more.

In a notebook:

    >>> from minilottery.layers import Conv2d
    >>> from minilottery.gradcheck import check_layer
    >>> layer = Conv2d(2, 3, 3, padding=1); layer.params["W"][...] = np.random.randn(3, 2, 3, 3)
    >>> check_layer(layer, np.random.randn(4, 2, 5, 5))
    {'x': 3.1e-11, 'W': 2.2e-11, 'b': 1.4e-11}
"""

import copy

import numpy as np

from .protocol import walk


def rel_error(a, b):
    """max |a - b| / max(1e-8, max(|a| + |b|)), over all entries."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(1e-8, float(np.max(np.abs(a) + np.abs(b)))))


def numerical_gradient(f, x, h=1e-5):
    """Central-difference gradient of the scalar function f at x (an array).

    x is perturbed in place, one entry at a time, and restored afterwards, so f may
    read x (or an array that shares its memory, e.g. a layer's param) directly.
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    flat_x = x.reshape(-1)          # a view: writes go to x
    flat_grad = grad.reshape(-1)
    for i in range(flat_x.size):
        old = flat_x[i]
        flat_x[i] = old + h
        f_plus = float(f())
        flat_x[i] = old - h
        f_minus = float(f())
        flat_x[i] = old
        flat_grad[i] = (f_plus - f_minus) / (2 * h)
    return grad


def as_float64(layer):
    """A deep copy of `layer` (and of every layer inside it) whose params, grads and masks
    are float64 (scratch buffers dropped)."""
    twin = copy.deepcopy(layer)
    for _, inner in walk(twin):
        for store in (inner.params, inner.grads, inner.masks):
            for key in store:
                store[key] = store[key].astype(np.float64)
        inner._buffers = {}
        inner._saved = None
    return twin


def check_layer(layer, x, dout=None, h=1e-5, seed=0):
    """Compare a layer's backward() with central differences, on a float64 copy.

    The scalar checked is L = sum(forward(x) * dout) (dout random if not given), whose
    gradient is what backward(dout) returns. Layers with randomness (Dropout) are
    reseeded with `seed` before every forward pass, so each pass draws the same mask.
    The analytic grad of a masked param is compared with the numerical one times the
    mask (pruned weights must get exactly 0).

    A container (a Sequential, a residual block) is checked whole: every param inside it.
    Returns {"x": rel_error of dx, name: rel_error of its grad for every param}, named
    as named_params() names them ("W"; "conv1.W" inside a container).
    """
    twin = as_float64(layer)
    x = np.array(x, dtype=np.float64)           # our own copy, perturbed in place below

    def forward():
        for _, inner in walk(twin):
            if hasattr(inner, "reseed"):
                inner.reseed(seed)
        return twin.forward(x, training=True)

    y = forward()
    if dout is None:
        dout = np.random.default_rng(seed).standard_normal(y.shape)
    dout = np.asarray(dout, dtype=np.float64)
    dx = twin.backward(dout)
    analytic = {key: g.copy() for key, g in twin.named_grads().items()}
    masks = twin.named_masks()

    def loss():
        return np.sum(forward() * dout)

    errors = {"x": rel_error(dx, numerical_gradient(loss, x, h))}
    for key, param in twin.named_params().items():
        numeric = numerical_gradient(loss, param, h)
        if key in masks:
            numeric = numeric * masks[key]
        errors[key] = rel_error(analytic[key], numeric)
    return errors


def check_loss(loss_fn, logits, labels, h=1e-5):
    """rel_error between the gradient returned by loss_fn(logits, labels) -> (loss, dlogits)
    and central differences of the loss, in float64."""
    logits = np.array(logits, dtype=np.float64)
    _, analytic = loss_fn(logits, labels)
    numeric = numerical_gradient(lambda: loss_fn(logits, labels)[0], logits, h)
    return rel_error(analytic, numeric)
