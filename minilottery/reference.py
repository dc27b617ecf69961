"""Slow, readable NumPy versions of convolution and max-pooling.

These are the definitions, written as directly as possible: loops over the
output positions and the kernel offsets, NumPy over the batch and channels.
They are kept for teaching (read these first, then the fast versions in
``minilottery.layers`` / ``minilottery.kernels``) and as the oracle the tests
compare the Numba kernels against. Nothing in training calls them.

Shapes: x (N, C, H, W), weights W (O, C, k, k), bias b (O,), NCHW outputs.
"""

import numpy as np


def _out_size(size, k, stride, padding):
    return (size + 2 * padding - k) // stride + 1


def conv2d_forward(x, W, b, stride=1, padding=0):
    """out[n, o, oh, ow] = b[o] + sum_{c,i,j} W[o, c, i, j] * xp[n, c, oh*s + i, ow*s + j],
    where xp is x zero-padded by `padding` pixels on every side."""
    n, _, h, w = x.shape
    o, _, k, _ = W.shape
    oh_n, ow_n = _out_size(h, k, stride, padding), _out_size(w, k, stride, padding)
    ### BEGIN SOLUTION 2.1
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out = np.zeros((n, o, oh_n, ow_n), dtype=x.dtype)
    for oh in range(oh_n):
        for ow in range(ow_n):
            patch = xp[:, :, oh * stride:oh * stride + k, ow * stride:ow * stride + k]
            # (N, C, k, k) x (O, C, k, k) -> (N, O)
            out[:, :, oh, ow] = np.tensordot(patch, W, axes=([1, 2, 3], [1, 2, 3])) + b
    ### END SOLUTION
    return out


def im2col(x, kernel_size, stride=1, padding=0):
    """cols[c*k*k + i*k + j, n*OH*OW + oh*OW + ow] = xp[n, c, oh*s + i, ow*s + j]
    (see kernels.im2col)."""
    n, c, h, w = x.shape
    k = kernel_size
    oh_n, ow_n = _out_size(h, k, stride, padding), _out_size(w, k, stride, padding)
    ### BEGIN SOLUTION 2.2
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    cols = np.zeros((n, c, k, k, oh_n, ow_n), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = xp[:, :, i:i + stride * oh_n:stride, j:j + stride * ow_n:stride]
    # (n, c, k, k, OH, OW) -> (c, k, k, n, OH, OW)
    return cols.transpose(1, 2, 3, 0, 4, 5).reshape(c * k * k, n * oh_n * ow_n)
    ### END SOLUTION


def col2im(cols, x_shape, kernel_size, stride=1, padding=0):
    """The adjoint of im2col: every column entry is added back onto its source pixel."""
    n, c, h, w = x_shape
    k = kernel_size
    oh_n, ow_n = _out_size(h, k, stride, padding), _out_size(w, k, stride, padding)
    cols = cols.reshape(c, k, k, n, oh_n, ow_n).transpose(3, 0, 1, 2, 4, 5)
    dxp = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=cols.dtype)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i:i + stride * oh_n:stride, j:j + stride * ow_n:stride] += cols[:, :, i, j]
    return dxp[:, :, padding:padding + h, padding:padding + w]


def conv2d_backward(dout, x, W, stride=1, padding=0):
    """Gradients of conv2d_forward given dL/dout: returns (dx, dW, db).

    db[o] = sum_{n,oh,ow} dout[n, o, oh, ow]
    dW[o, c, i, j] = sum_{n,oh,ow} dout[n, o, oh, ow] * xp[n, c, oh*s + i, ow*s + j]
    dxp[n, c, oh*s + i, ow*s + j] += sum_o dout[n, o, oh, ow] * W[o, c, i, j]; dx = dxp unpadded.
    """
    n, c, h, w = x.shape
    k = W.shape[2]
    _, _, oh_n, ow_n = dout.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ### BEGIN SOLUTION 2.3
    dxp = np.zeros_like(xp)
    dW = np.zeros_like(W)
    for oh in range(oh_n):
        for ow in range(ow_n):
            hs, ws = oh * stride, ow * stride
            patch = xp[:, :, hs:hs + k, ws:ws + k]
            g = dout[:, :, oh, ow]                                   # (N, O)
            dW += np.tensordot(g, patch, axes=([0], [0]))            # (O, C, k, k)
            dxp[:, :, hs:hs + k, ws:ws + k] += np.tensordot(g, W, axes=([1], [0]))
    db = dout.sum(axis=(0, 2, 3))
    dx = dxp[:, :, padding:padding + h, padding:padding + w]
    ### END SOLUTION
    return dx, dW, db


def maxpool2d_forward(x, kernel_size, stride=None):
    """out[n, c, oh, ow] = max of x[n, c, oh*s : oh*s + k, ow*s : ow*s + k] (no padding).
    NaN propagates: a window holding a NaN gives NaN (NumPy's max does)."""
    stride = kernel_size if stride is None else stride
    n, c, h, w = x.shape
    k = kernel_size
    oh_n, ow_n = _out_size(h, k, stride, 0), _out_size(w, k, stride, 0)
    ### BEGIN SOLUTION 2.4
    out = np.empty((n, c, oh_n, ow_n), dtype=x.dtype)
    for oh in range(oh_n):
        for ow in range(ow_n):
            window = x[:, :, oh * stride:oh * stride + k, ow * stride:ow * stride + k]
            out[:, :, oh, ow] = window.max(axis=(2, 3))
    ### END SOLUTION
    return out


def maxpool2d_backward(dout, x, kernel_size, stride=None):
    """dx: each dout entry goes to the first position of its window's maximum, in C
    order; in a window holding a NaN, to its first NaN (NumPy's argmax ranks NaN
    above every number)."""
    stride = kernel_size if stride is None else stride
    n, c, h, w = x.shape
    k = kernel_size
    ### BEGIN SOLUTION 2.5
    dx = np.zeros_like(x)
    for oh in range(dout.shape[2]):
        for ow in range(dout.shape[3]):
            hs, ws = oh * stride, ow * stride
            window = x[:, :, hs:hs + k, ws:ws + k].reshape(n, c, k * k)
            first_max = window.argmax(axis=2)                        # (N, C)
            i, j = np.divmod(first_max, k)
            nn, cc = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
            np.add.at(dx, (nn, cc, hs + i, ws + j), dout[:, :, oh, ow])
    ### END SOLUTION
    return dx
