"""Numba kernels: the hot inner loops of the layers, as pure functions on arrays.

Every kernel here is compiled by Numba at module level with ``@njit(cache=True)``
and writes into an output array the caller passes in (so buffers can be reused
from one training step to the next). The kernels are generic over the float
dtype: float32 on the training path, float64 when ``minilottery.gradcheck``
checks a float64 copy of a layer.

Layouts (NCHW images, as everywhere in minilottery):

    x     (N, C, H, W)              a batch of images
    cols  (C*k*k, N*OH*OW)          im2col: row c*k*k + i*k + j holds
                                    x[n, c, oh*s - p + i, ow*s - p + j] in column
                                    n*OH*OW + oh*OW + ow (0 where it falls into
                                    the zero padding)

With this layout the convolution of a group of images is ONE matrix product,

    out_cn = W.reshape(O, C*k*k) @ cols             -> (O, N*OH*OW), i.e. (O, N, OH, OW)

and the weight gradient is one product too, dW = dout_cn @ cols^T, its sum over
the group's images done inside BLAS. (Conv2d moves out_cn to NCHW while adding
the bias, one pass it needs anyway, and keeps each group small enough for cols
to stay in cache: see its docstring.)

Inner loops run over slices indexed from 0 (``for q in range(view.size)``) and
have no branch inside: Numba then knows no index is negative and the compiler
turns them into SIMD instructions. Stride 1 gets its own plain-copy loop for the
same reason (with a runtime stride the compiler cannot vectorize).

Parallelism: the convolution kernels (im2col, col2im and the two moves) are
serial and release the GIL (``nogil=True``): Conv2d runs them on small groups
of images, several groups at once on threads of its own (``threads.parallel_pieces``).
The max-pool kernels are parallel: their outer loop runs over the N*C (example,
channel) planes with ``prange``, and every iteration writes only its own plane, so
there are no races. With ``NUMBA_DISABLE_JIT=1`` the same code runs as plain
Python (slowly), which is handy for stepping through it in a debugger.

``minilottery.reference`` holds slow, loop-based NumPy versions of the same
operations; the tests check every kernel against them. How the kernels' threads
share the cores with OpenBLAS is set once, in ``minilottery.threads``.
"""

import numpy as np
from numba import njit, prange

from . import threads  # noqa: F401  (chooses Numba's threading layer before any kernel runs)


def conv_output_size(size, kernel_size, stride, padding):
    """Output length of a convolution / pooling window sliding over `size` inputs:
    floor((size + 2*padding - kernel_size) / stride) + 1."""
    return (size + 2 * padding - kernel_size) // stride + 1


@njit(cache=True)
def _valid_range(out_size, size, stride, offset):
    """The output positions o in [lo, hi) whose input position o*stride + offset
    lies inside [0, size); the others fall into the zero padding."""
    lo = max(0, (-offset + stride - 1) // stride)
    hi = min(out_size, (size - 1 - offset) // stride + 1)
    return lo, max(lo, hi)


@njit(cache=True, nogil=True)
def im2col(x, kernel_size, stride, padding, cols):
    """Unfold image patches into columns: cols[c*k*k + i*k + j, n*OH*OW + oh*OW + ow] =
    x[n, c, oh*stride - padding + i, ow*stride - padding + j] (0 outside the image).

    x: (N, C, H, W); cols: (C*k*k, N*OH*OW), fully overwritten.
    """
    n_img, n_ch, height, width = x.shape
    k = kernel_size
    out_h = (height + 2 * padding - k) // stride + 1
    out_w = (width + 2 * padding - k) // stride + 1
    n_out = out_h * out_w
    if stride == 1 and out_w == width:                  # "same": see _same_span
        inside = _columns_inside(width, k, padding, n_out)
        zero = np.zeros(1, cols.dtype)[0]      # a 0 of the data's dtype keeps the loop in it
        for plane in range(n_img * n_ch):
            n = plane // n_ch
            c = plane % n_ch
            flat = x[n, c].reshape(height * width)
            for i in range(k):
                for j in range(k):
                    dst = cols[c * k * k + i * k + j, n * n_out:(n + 1) * n_out]
                    lo, hi, shift = _same_span(height, width, padding, i, j)
                    for q in range(lo):
                        dst[q] = 0.0
                    part, src, keep = dst[lo:hi], flat[lo + shift:hi + shift], inside[j, lo:hi]
                    for q in range(part.size):
                        part[q] = src[q] if keep[q] else zero
                    for q in range(hi, n_out):
                        dst[q] = 0.0
        return
    for plane in range(n_img * n_ch):
        n = plane // n_ch
        c = plane % n_ch
        for i in range(k):
            h_lo, h_hi = _valid_range(out_h, height, stride, i - padding)
            for j in range(k):
                w_lo, w_hi = _valid_range(out_w, width, stride, j - padding)
                dst = cols[c * k * k + i * k + j, n * n_out:(n + 1) * n_out]
                for q in range(h_lo * out_w):                 # rows in the top padding
                    dst[q] = 0.0
                for q in range(h_hi * out_w, n_out):          # rows in the bottom padding
                    dst[q] = 0.0
                for oh in range(h_lo, h_hi):
                    row = dst[oh * out_w:(oh + 1) * out_w]
                    start = w_lo * stride - padding + j
                    src = x[n, c, oh * stride - padding + i, start:]
                    for q in range(w_lo):                     # left padding
                        row[q] = 0.0
                    part = row[w_lo:w_hi]
                    if stride == 1:                           # a plain copy: SIMD
                        for q in range(part.size):
                            part[q] = src[q]
                    else:
                        for q in range(part.size):
                            part[q] = src[q * stride]
                    for q in range(w_hi, out_w):              # right padding
                        row[q] = 0.0


@njit(cache=True)
def _same_span(height, width, padding, i, j):
    """A "same" convolution (stride 1, OH, OW = H, W) seen on flattened planes: output
    pixel q = oh*W + ow reads input pixel q + shift, shift = (i - p)*W + (j - p), for
    kernel offset (i, j). Returns (lo, hi, shift) where [lo, hi) are the output pixels
    whose input ROW is inside the image. So one row of cols is one long run
    cols[.., lo:hi] <-> plane[lo + shift:hi + shift] (SIMD, no loop per image row,
    which matters for 16x16 and 8x8 planes); within it, the pixels whose input COLUMN
    falls off the left or right edge (where the run wraps into the neighbouring row)
    are the ones ``_columns_inside`` marks 0.
    """
    shift = (i - padding) * width + (j - padding)
    h_lo, h_hi = _valid_range(height, height, 1, i - padding)
    size = height * width                 # clamped to [0, size]: tiny planes, wide padding
    lo = min(max(h_lo * width, -shift), size)
    hi = min(max(lo, min(h_hi * width, size - shift)), size)
    return lo, hi, shift


@njit(cache=True)
def _columns_inside(width, kernel_size, padding, n_out):
    """inside[j, q] = True when output pixel q of a "same" convolution, in kernel
    column j, reads an input column inside [0, W): 0 <= q % W + j - p < W."""
    inside = np.empty((kernel_size, n_out), dtype=np.bool_)
    for j in range(kernel_size):
        for q in range(n_out):
            column = q % width + j - padding
            inside[j, q] = 0 <= column < width
    return inside


@njit(cache=True, nogil=True)
def col2im(cols, kernel_size, stride, padding, dx):
    """The adjoint of im2col: add every column entry back onto the pixel it was
    copied from. dx[n, c, h, w] = sum of cols[c*k*k + i*k + j, n*OH*OW + oh*OW + ow] over
    all (i, j, oh, ow) with oh*stride - padding + i == h and ow*stride - padding + j == w.

    cols: (C*k*k, N*OH*OW); dx: (N, C, H, W), fully overwritten.
    """
    n_img, n_ch, height, width = dx.shape
    k = kernel_size
    out_h = (height + 2 * padding - k) // stride + 1
    out_w = (width + 2 * padding - k) // stride + 1
    n_out = out_h * out_w
    same = stride == 1 and out_w == width               # see _same_span
    inside = _columns_inside(width, k, padding, n_out if same else 0)
    zero = np.zeros(1, dx.dtype)[0]            # a 0 of the data's dtype keeps the loop in it
    for plane in range(n_img * n_ch):
        n = plane // n_ch
        c = plane % n_ch
        flat = dx[n, c].reshape(height * width)
        for q in range(flat.size):
            flat[q] = 0.0
        for i in range(k):
            h_lo, h_hi = _valid_range(out_h, height, stride, i - padding)
            for j in range(k):
                src = cols[c * k * k + i * k + j, n * n_out:(n + 1) * n_out]
                if same:
                    lo, hi, shift = _same_span(height, width, padding, i, j)
                    part, dst, keep = src[lo:hi], flat[lo + shift:hi + shift], inside[j, lo:hi]
                    for q in range(part.size):
                        dst[q] += part[q] if keep[q] else zero
                    continue
                w_lo, w_hi = _valid_range(out_w, width, stride, j - padding)
                for oh in range(h_lo, h_hi):
                    start = w_lo * stride - padding + j
                    dst = dx[n, c, oh * stride - padding + i, start:]
                    part = src[oh * out_w + w_lo:oh * out_w + w_hi]
                    if stride == 1:                           # a plain add: SIMD
                        for q in range(part.size):
                            dst[q] += part[q]
                    else:
                        for q in range(part.size):
                            dst[q * stride] += part[q]


@njit(cache=True, parallel=True)
def maxpool_forward(x, kernel_size, stride, out, argmax):
    """Max over each k x k window: out[n, c, oh, ow] = max of
    x[n, c, oh*s : oh*s + k, ow*s : ow*s + k]; argmax[n, c, oh, ow] records where the
    maximum sits, as a flat index h*W + w into the (H, W) plane (first one on ties).

    NaN propagates: a window holding a NaN outputs NaN and argmax points at its first
    NaN (in C order), whatever the window position. ±inf compare as usual. (``v > best``
    is False whenever a NaN takes part, so the scan alone would keep a NaN only in the
    window's first position. Instead the scan also sums the window, and a NaN sum,
    which a NaN always causes, sends the window to ``_first_nan``: one add per value on
    the hot path, where a NaN test in the comparison would stop it from compiling to
    branch-free code.)

    x: (N, C, H, W); out and argmax (int32): (N, C, OH, OW), fully overwritten.
    """
    n_img, n_ch, height, width = x.shape
    out_h = out.shape[2]
    out_w = out.shape[3]
    k = kernel_size
    zero = np.zeros(1, x.dtype)[0]             # a 0 of the data's dtype keeps the sum in it
    for plane in prange(n_img * n_ch):
        n = plane // n_ch
        c = plane % n_ch
        src, dst, where = x[n, c], out[n, c], argmax[n, c]   # 2-D views of this plane
        for oh in range(out_h):
            for ow in range(out_w):
                h0 = oh * stride
                w0 = ow * stride
                best = src[h0, w0]
                best_at = h0 * width + w0
                total = zero
                for i in range(k):
                    for j in range(k):
                        v = src[h0 + i, w0 + j]
                        total += v
                        if v > best:
                            best = v
                            best_at = (h0 + i) * width + (w0 + j)
                if total != total:             # NaN: the window may hold a NaN
                    i, j = _first_nan(src[h0:h0 + k, w0:w0 + k])
                    if i >= 0:
                        best = src[h0 + i, w0 + j]
                        best_at = (h0 + i) * width + (w0 + j)
                dst[oh, ow] = best
                where[oh, ow] = best_at


@njit(cache=True)
def _first_nan(window):
    """(i, j) of the first NaN of a 2-D window in C order, or (-1, -1) if it has none
    (its sum was NaN from +inf + -inf)."""
    rows, cols = window.shape
    for i in range(rows):
        for j in range(cols):
            if window[i, j] != window[i, j]:
                return i, j
    return -1, -1


@njit(cache=True, parallel=True)
def maxpool_backward(dout, argmax, dx):
    """Route each output gradient back to the input pixel that won the max:
    dx[n, c].flat[argmax[n, c, oh, ow]] += dout[n, c, oh, ow]; every other pixel gets 0.

    dout, argmax: (N, C, OH, OW); dx: (N, C, H, W), fully overwritten.
    """
    n_img, n_ch, height, width = dx.shape
    out_h = dout.shape[2]
    out_w = dout.shape[3]
    for plane in prange(n_img * n_ch):
        n = plane // n_ch
        c = plane % n_ch
        flat = dx[n, c].reshape(height * width)      # the plane, indexed like argmax
        for q in range(flat.size):
            flat[q] = 0.0
        grad, where = dout[n, c], argmax[n, c]
        for oh in range(out_h):
            for ow in range(out_w):
                flat[where[oh, ow]] += grad[oh, ow]


@njit(cache=True)
def relu_backward(dout, y, dx):
    """dx = dout where the ReLU output y > 0, else 0. All arrays 2-D (rows, cols),
    the same shape; dx is fully overwritten. Serial: one pass over memory is too
    little work to pay for waking a second thread."""
    n_rows, n_cols = y.shape
    for r in range(n_rows):
        for q in range(n_cols):
            dx[r, q] = dout[r, q] if y[r, q] > 0 else 0.0


@njit(cache=True, nogil=True)
def cn_to_nchw(out_cn, b, relu, out):
    """Move a convolution's GEMM result to NCHW, adding the bias (and applying ReLU):
    out[n, o, q] = out_cn[o, n*Q + q] + b[o], then max(., 0) if `relu`.

    out_cn: (O, N*Q); b: (O,); out: (N, O, Q) with Q = OH*OW, fully overwritten.
    One pass over memory instead of three (move + bias, then ReLU).
    """
    n_img, n_ch, q_size = out.shape
    for plane in range(n_img * n_ch):
        n = plane // n_ch
        o = plane % n_ch
        src = out_cn[o, n * q_size:(n + 1) * q_size]
        dst = out[n, o]
        bias = b[o]
        if relu:
            for q in range(q_size):
                v = src[q] + bias
                dst[q] = v if v > 0 else 0.0
        else:
            for q in range(q_size):
                dst[q] = src[q] + bias


@njit(cache=True, nogil=True)
def nchw_to_cn(dout, y, relu, dout_cn):
    """The backward move of cn_to_nchw: dout_cn[o, n*Q + q] = dout[n, o, q], times
    (y[n, o, q] > 0) if `relu` (y = the ReLU's output, i.e. ReLU's backward on the way).

    dout, y: (N, O, Q) (y unused unless relu); dout_cn: (O, N*Q), fully overwritten.
    """
    n_img, n_ch, q_size = dout.shape
    for plane in range(n_img * n_ch):
        n = plane // n_ch
        o = plane % n_ch
        src = dout[n, o]
        dst = dout_cn[o, n * q_size:(n + 1) * q_size]
        if relu:
            mask = y[n, o]
            for q in range(q_size):
                dst[q] = src[q] if mask[q] > 0 else 0.0
        else:
            for q in range(q_size):
                dst[q] = src[q]
