"""Layers: each one a forward pass and the hand-written backward pass that undoes it.

Every layer has params, grads, masks and inits (``minilottery.protocol`` describes
them and the containers that nest layers), and

    forward(x, training=True) -> y
    backward(dout) -> dx        where dout = dL/dy and dx = dL/dx

Layers with parameters (Dense, Conv2d) also take ``backward(dout, input_grad=False)``:
it fills ``grads`` but skips computing dx (one matrix product of three) and
returns None. Sequential uses it for its first layer, whose dx nobody needs.

Masks and the zero invariant. A pruned weight is stored as exactly 0:
``Sequential.set_masks`` zeroes it and the optimizers keep it at 0. So the
forward pass uses W as stored, without multiplying by the mask. The backward
pass multiplies dW by the mask, so a pruned weight gets exactly zero gradient.

Dtypes. Parameters are float32 and a layer with parameters computes in their
dtype: its input is cast to it (a float64 input gives a float32 output, never
the reverse). ``minilottery.gradcheck`` makes float64 copies of layers to check
gradients precisely; the same code then runs in float64.

Buffers. The large scratch arrays (Conv2d's im2col matrix, MaxPool2d's argmax)
are kept by the layer and reused while the batch shape repeats. Returned arrays
are always fresh, so holding on to an output is safe.

Backward needs the values saved by the last ``forward(x, training=True)``;
call forward, then backward once, per step. An empty batch (N = 0) is a batch
like any other: empty outputs and dx, and grads that are sums over no examples,
exactly 0.
"""

import math

import numpy as np

from . import kernels, threads, winograd
from .protocol import Layer, real_array  # noqa: F401  (real_array: part of this module's API)
from .winograd import tiles as winograd_tiles


def matmul(a, b, out=None):
    """a @ b for 2-D arrays on the threads of ``threads.parallel_pieces``: the columns of
    the result are cut into 1, 2, 4 or 8 pieces, by the shapes alone (about
    ``PIECE_WORK`` multiply-adds each, at least 64 columns), one product each. So the
    result does not depend on the thread count."""
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    columns = out.shape[1]
    pieces = 1
    while (pieces < 8 and columns // (2 * pieces) >= 64
           and a.shape[0] * a.shape[1] * columns // (2 * pieces) >= PIECE_WORK):
        pieces *= 2
    if pieces == 1:
        return np.matmul(a, b, out=out)
    bounds = [columns * p // pieces for p in range(pieces + 1)]

    def work(piece, worker):
        lo, hi = bounds[piece], bounds[piece + 1]
        np.matmul(a, b[:, lo:hi], out=out[:, lo:hi])

    threads.parallel_pieces(pieces, work)
    return out


PIECE_WORK = 2_000_000


class Dense(Layer):
    """Fully connected layer: y = x @ W + b, W (in, out), b (out,).

    Backward:  dW = x^T dout (times the mask),  db = sum_n dout,  dx = dout W^T.
    """

    def __init__(self, in_features, out_features, *, name=None):
        super().__init__(name=name)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self._add_param("W", (self.in_features, self.out_features), prunable=True, init="glorot")
        self._add_param("b", (self.out_features,), prunable=False, init="zeros")

    def forward(self, x, training=True):
        W, b = self.params["W"], self.params["b"]
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise self._bad_shape("input", f"(N, {self.in_features})", x.shape)
        x = x.astype(W.dtype, copy=False)
        y = matmul(x, W)
        y += b
        self._saved = x if training else None
        return y

    def backward(self, dout, input_grad=True):
        x = self._take_saved()
        W = self.params["W"]
        dout = self._check_dout(dout, (x.shape[0], self.out_features)).astype(W.dtype, copy=False)
        matmul(x.T, dout, out=self.grads["W"])
        self.grads["W"] *= self.masks["W"]
        np.sum(dout, axis=0, out=self.grads["b"])
        return matmul(dout, W.T) if input_grad else None


class Conv2d(Layer):
    """2-D convolution (cross-correlation, as in every DL framework), NCHW.

    out[n, o, oh, ow] = b[o] + sum_{c,i,j} W[o, c, i, j] * x[n, c, oh*s - p + i, ow*s - p + j]
    with zeros outside the image. W (out, in, k, k), b (out,); ``bias=False`` leaves b
    out (b = 0), as before a BatchNorm, whose shift does its work.

    Two algorithms compute it (``algorithm``):

    * ``"im2col"``, for any kernel, stride and padding. im2col unfolds every k x k
      patch of a group of images x_g into a column of cols_g (C*k*k, G*OH*OW); then
      the group's convolution is one GEMM, out_cn = Wm @ cols_g with
      Wm = W.reshape(O, C*k*k), and one pass moves out_cn (O, G*OH*OW) into NCHW
      while adding the bias. Backward, with dout_cn = the group's dout in that order:

          dW    = sum over groups of dout_cn @ cols_g^T     (then times the mask)
          db[o] = sum over groups of row o of dout_cn
          dcols = Wm^T @ dout_cn,  dx_g = col2im(dcols)     (overlapping patches add up)

    * ``"winograd"``, for the 3x3 "same" layers (stride 1, padding 1) of every net
      in the paper: Winograd's F(2x2, 3x3) (``minilottery.winograd``, whose
      docstring derives it), 2.25x fewer multiplications in the forward pass, dW
      and dx. It agrees with im2col to float32 round-off, not bit for bit.

    ``"auto"`` (the default) takes Winograd where it applies and the layer has at
    least ``winograd_min_channels`` input channels (with 3, an RGB image, the
    products are too thin to gain), else im2col.

    Groups and pieces. Either way the batch is cut into groups of images whose
    scratch arrays (cols, or Winograd's V and M) fit in about ``group_bytes``, so
    that writing them and reading them back run at cache speed; backward recomputes
    them from x instead of keeping them. The groups are cut into at most
    ``max_pieces`` pieces of consecutive groups, which run on the threads of
    ``threads.parallel_pieces``, each thread with its own scratch arrays. A piece sums
    dW and db over its groups in order, and the pieces' sums are added in piece order.
    Groups and pieces depend on the shapes only, never on the thread count, so the
    result is the same bit for bit on any number of threads.
    In inference (training=False) nothing is saved, so memory does not grow with the
    batch beyond its output.
    """

    group_bytes = 1 << 20
    max_pieces = 8
    winograd_min_channels = 8
    ALGORITHMS = ("auto", "im2col", "winograd")

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, *,
                 bias=True, algorithm="auto", name=None):
        super().__init__(name=name)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = int(kernel_size)
        self.stride = int(stride)
        self.padding = int(padding)
        if self.kernel_size < 1 or self.stride < 1 or self.padding < 0:
            raise ValueError(f"{self.describe()}: need kernel_size >= 1, stride >= 1, padding >= 0; "
                             f"got {kernel_size}, {stride}, {padding}")
        self.algorithm = algorithm
        k = self.kernel_size
        self._add_param("W", (self.out_channels, self.in_channels, k, k), prunable=True,
                        init="glorot")
        if bias:
            self._add_param("b", (self.out_channels,), prunable=False, init="zeros")

    @property
    def algorithm(self):
        return self._algorithm

    @algorithm.setter
    def algorithm(self, value):
        if value not in self.ALGORITHMS:
            raise ValueError(f"{self.describe()}: algorithm must be one of {self.ALGORITHMS}, got {value!r}")
        if value == "winograd" and not self.winograd_applies():
            raise ValueError(f"{self.describe()}: Winograd F(2x2, 3x3) needs kernel_size 3, stride 1 "
                             f"and padding 1; this layer has {self.kernel_size}, {self.stride}, "
                             f"{self.padding}")
        self._algorithm = value

    def winograd_applies(self):
        return (self.kernel_size, self.stride, self.padding) == (3, 1, 1)

    def uses_winograd(self):
        """True when forward and backward run Winograd's algorithm (see ``algorithm``)."""
        if self.algorithm == "auto":
            return self.winograd_applies() and self.in_channels >= self.winograd_min_channels
        return self.algorithm == "winograd"

    def output_shape(self, input_shape):
        n, _, h, w = input_shape
        k, s, p = self.kernel_size, self.stride, self.padding
        return (n, self.out_channels, kernels.conv_output_size(h, k, s, p),
                kernels.conv_output_size(w, k, s, p))

    def _check_input(self, x):
        x = np.asarray(x)
        k, p = self.kernel_size, self.padding
        if (x.ndim != 4 or x.shape[1] != self.in_channels
                or x.shape[2] + 2 * p < k or x.shape[3] + 2 * p < k):
            raise self._bad_shape(
                "input", f"(N, {self.in_channels}, H, W) with H, W >= {k - 2 * p}", x.shape)
        return np.ascontiguousarray(x, dtype=self.params["W"].dtype)

    def _scratch_per_image(self, x_shape, winograd):
        """Bytes of scratch one image needs: cols, or the larger of V and M."""
        _, _, oh, ow = self.output_shape(x_shape)
        itemsize = self.params["W"].itemsize
        if winograd:
            th, tw = winograd_tiles(oh, ow)
            return 16 * max(self.in_channels, self.out_channels) * th * tw * itemsize
        return self.in_channels * self.kernel_size ** 2 * oh * ow * itemsize

    def _pieces(self, x_shape, winograd):
        """The batch cut into groups of images, the groups into pieces: a list, per
        piece, of its (start, stop) image ranges. Fixed by the shapes alone."""
        n = x_shape[0]
        size = max(1, self.group_bytes // self._scratch_per_image(x_shape, winograd))
        groups = [(start, min(n, start + size)) for start in range(0, n, size)]
        count = min(len(groups), self.max_pieces)
        return [groups[p * len(groups) // count:(p + 1) * len(groups) // count] for p in range(count)]

    def _cols(self, worker, x_group):
        """im2col of a group into this worker's buffer: (C*k*k, G*OH*OW)."""
        _, _, oh, ow = self.output_shape(x_group.shape)
        ckk = self.in_channels * self.kernel_size ** 2
        cols = self._buffer(f"cols{worker}", (ckk, len(x_group) * oh * ow), x_group.dtype)
        kernels.im2col(x_group, self.kernel_size, self.stride, self.padding, cols)
        return cols

    def _winograd_rows(self, purpose, channels, n_tiles, dtype):
        """A (16, >= channels * n_tiles) scratch array for Winograd's V or M, and the same
        memory as (16, channels, n_tiles) for the matrix products. Its rows lie 64 bytes
        more than a multiple of 4 KiB apart: 16 streams exactly 4 KiB apart would compete
        for the same cache sets (and did: the transforms ran 2x slower)."""
        size = channels * n_tiles
        rows = self._buffer(purpose, (16, size + (-size) % 1024 + 16), dtype)  # C-contiguous:
        return rows, rows[:, :size].reshape(16, channels, n_tiles)  # the kernels' loops need it

    def _winograd_V(self, worker, x_group):
        """Winograd's input transform of a group into this worker's buffer, as
        ``_winograd_rows`` returns it."""
        th, tw = winograd_tiles(*x_group.shape[2:])
        rows, V = self._winograd_rows(f"V{worker}", self.in_channels, len(x_group) * th * tw,
                                      x_group.dtype)
        winograd.input_transform(x_group, rows)
        return rows, V

    def forward(self, x, training=True, relu=False, weights=None):
        """The convolution; with ``relu=True``, max(convolution, 0) in the same pass (what
        Sequential uses for a Conv2d followed by a ReLU). backward then takes dL/d(that).
        ``weights=(W, b)`` convolves with those instead of the layer's own, in evaluation
        only (Sequential's BatchNorm folding, see ``folded_with``)."""
        x = self._check_input(x)
        if weights is not None:
            if training:
                raise ValueError(f"{self.describe()}: other weights are for evaluation only")
            W, b = weights
        else:
            W = self.params["W"]
            b = self.params.get("b")
        if b is None:                          # bias=False
            b = np.zeros(self.out_channels, dtype=W.dtype)
        n, o, oh, ow = self.output_shape(x.shape)
        use_winograd = self.uses_winograd()
        out = np.empty((n, o, oh, ow), dtype=W.dtype)
        pieces = self._pieces(x.shape, use_winograd)
        if use_winograd:
            U = np.empty((16, o, self.in_channels), dtype=W.dtype)
            winograd.filter_transform(W, U)

            def work(piece, worker):
                for start, stop in pieces[piece]:
                    _, V = self._winograd_V(worker, x[start:stop])
                    M_rows, M = self._winograd_rows(f"M{worker}", o, V.shape[2], W.dtype)
                    np.matmul(U, V, out=M)
                    winograd.output_transform(M_rows, b, relu, out[start:stop])
        else:
            U = None
            Wm = W.reshape(o, -1)
            flat_out = out.reshape(n, o, oh * ow)

            def work(piece, worker):
                for start, stop in pieces[piece]:
                    cols = self._cols(worker, x[start:stop])
                    out_cn = self._buffer(f"cn{worker}", (o, cols.shape[1]), W.dtype)
                    np.matmul(Wm, cols, out=out_cn)
                    # (O, G, OH*OW) -> (G, O, OH*OW), adding b[o] (and the ReLU) on the way
                    kernels.cn_to_nchw(out_cn, b, relu, flat_out[start:stop])

        threads.parallel_pieces(len(pieces), work)
        self._saved = (x, out if relu else None, U) if training else None
        return out

    def folded_with(self, bn):
        """(W', b'): this convolution followed by the BatchNorm2d ``bn`` in evaluation, as
        one convolution. With a = gamma / sqrt(running_var + eps) per output channel,
        bn(conv(x)) = a (W * x + b - running_mean) + beta, so W' = a W and
        b' = a (b - running_mean) + beta."""
        W = self.params["W"]
        a = bn.params["gamma"] / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
        b = self.params["b"] if "b" in self.params else np.zeros(self.out_channels)
        folded_b = a * (b - bn.running_mean) + bn.params["beta"]
        return ((W * a[:, None, None, None]).astype(W.dtype), folded_b.astype(W.dtype))

    def backward(self, dout, input_grad=True):
        x, relu_out, U = self._take_saved()
        W = self.params["W"]
        n, o, oh, ow = self.output_shape(x.shape)
        dout = np.ascontiguousarray(self._check_dout(dout, (n, o, oh, ow)), dtype=W.dtype)
        relu = relu_out is not None            # then dout is dL/d(ReLU output)
        y = relu_out if relu else dout         # what the ReLU mask is read from
        dx = np.empty(x.shape, dtype=W.dtype) if input_grad else None
        if n == 0:                             # sums over no images (and no pieces to run)
            self._zero_grads()
            self._saved = None
            return dx
        pieces = self._pieces(x.shape, U is not None)
        partial_shape = U.shape if U is not None else (o, W[0].size)
        partial_W = [self._buffer(f"dW_piece{p}", partial_shape, W.dtype) for p in range(len(pieces))]
        partial_b = [self._buffer(f"db_piece{p}", (o,), W.dtype) for p in range(len(pieces))]

        def winograd_work(piece, worker):
            dU, db = partial_W[piece], partial_b[piece]
            db[...] = 0
            for index, (start, stop) in enumerate(pieces[piece]):
                V_rows, V = self._winograd_V(worker, x[start:stop])
                dM_rows, dM = self._winograd_rows(f"M{worker}", o, V.shape[2], W.dtype)
                winograd.output_transform_adjoint(dout[start:stop], y[start:stop], relu, dM_rows, db)
                _accumulate(dM, V.transpose(0, 2, 1), dU, index == 0,
                            self._buffer(f"dU_group{worker}", dU.shape, W.dtype))
                if input_grad:
                    np.matmul(U.transpose(0, 2, 1), dM, out=V)    # dV, where V was
                    winograd.input_transform_adjoint(V_rows, dx[start:stop])

        def im2col_work(piece, worker):
            dW, db = partial_W[piece], partial_b[piece]
            flat_dout, flat_y = dout.reshape(n, o, -1), y.reshape(n, o, -1)
            for index, (start, stop) in enumerate(pieces[piece]):
                cols = self._cols(worker, x[start:stop])
                dout_cn = self._buffer(f"cn{worker}", (o, cols.shape[1]), W.dtype)
                kernels.nchw_to_cn(flat_dout[start:stop], flat_y[start:stop], relu, dout_cn)
                _accumulate(dout_cn, cols.T, dW, index == 0,
                            self._buffer(f"dW_group{worker}", dW.shape, W.dtype))
                if index == 0:
                    np.sum(dout_cn, axis=1, out=db)
                else:
                    db += np.sum(dout_cn, axis=1)
                if input_grad:
                    dcols = np.matmul(W.reshape(o, -1).T, dout_cn, out=cols)  # cols: not needed
                    kernels.col2im(dcols, self.kernel_size, self.stride, self.padding, dx[start:stop])

        threads.parallel_pieces(len(pieces), winograd_work if U is not None else im2col_work)
        for piece in range(1, len(pieces)):    # in piece order, whoever computed them
            partial_W[0] += partial_W[piece]
            partial_b[0] += partial_b[piece]
        if U is not None:
            winograd.filter_transform_adjoint(partial_W[0], self.grads["W"])
        else:
            np.copyto(self.grads["W"].reshape(partial_shape), partial_W[0])
        if "b" in self.grads:
            np.copyto(self.grads["b"], partial_b[0])
        self.grads["W"] *= self.masks["W"]
        self._saved = None
        return dx


def _accumulate(a, b, total, first, scratch):
    """total = a @ b (``first``) or total += a @ b, the product written into ``scratch``."""
    if first:
        np.matmul(a, b, out=total)
    else:
        total += np.matmul(a, b, out=scratch)


class MaxPool2d(Layer):
    """Max over k x k windows moved by `stride` (default k), no padding, NCHW.

    out[n, c, oh, ow] = max_{i,j < k} x[n, c, oh*s + i, ow*s + j]. The forward pass
    records where each maximum was (argmax, the first one on ties); backward sends
    dout there, 0 elsewhere. NaN propagates, as in PyTorch's max_pool2d: a window
    holding a NaN outputs NaN. Its gradient goes to its first NaN in C order, the
    tie rule's choice (PyTorch's CPU kernel, which updates on every NaN, picks the last).
    """

    def __init__(self, kernel_size, stride=None, *, name=None):
        super().__init__(name=name)
        self.kernel_size = int(kernel_size)
        self.stride = self.kernel_size if stride is None else int(stride)
        if self.kernel_size < 1 or self.stride < 1:
            raise ValueError(f"{self.describe()}: need kernel_size >= 1 and stride >= 1, "
                             f"got {kernel_size}, {stride}")

    def forward(self, x, training=True):
        x = np.asarray(x)
        k, s = self.kernel_size, self.stride
        if x.ndim != 4 or x.shape[2] < k or x.shape[3] < k:
            raise self._bad_shape("input", f"(N, C, H, W) with H, W >= {k}", x.shape)
        n, c, h, w = x.shape
        oh, ow = kernels.conv_output_size(h, k, s, 0), kernels.conv_output_size(w, k, s, 0)
        out = np.empty((n, c, oh, ow), dtype=x.dtype)
        argmax = self._buffer("argmax", (n, c, oh, ow), np.int32)
        kernels.maxpool_forward(x, k, s, out, argmax)
        self._saved = (x.shape, x.dtype, argmax) if training else None
        return out

    def backward(self, dout):
        x_shape, dtype, argmax = self._take_saved()
        dout = self._check_dout(dout, argmax.shape).astype(dtype, copy=False)
        dx = np.empty(x_shape, dtype=dtype)
        kernels.maxpool_backward(dout, argmax, dx)
        return dx


class GlobalAvgPool2d(Layer):
    """The mean of each feature map: (N, C, H, W) -> (N, C), y[n, c] = mean_{h,w} x[n, c, h, w];
    dx[n, c, h, w] = dout[n, c] / (H W)."""

    def forward(self, x, training=True):
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[2] * x.shape[3] == 0:
            raise self._bad_shape("input", "(N, C, H, W) with H, W >= 1", x.shape)
        self._saved = (x.shape, x.dtype) if training else None
        return x.mean(axis=(2, 3))

    def backward(self, dout):
        (n, c, h, w), dtype = self._take_saved()
        dout = self._check_dout(dout, (n, c)).astype(dtype, copy=False)
        dx = np.empty((n, c, h, w), dtype=dtype)
        dx[...] = (dout / (h * w))[:, :, None, None]
        return dx


class ReLU(Layer):
    """y = max(x, 0);  dx = dout where y > 0, else 0."""

    def forward(self, x, training=True):
        y = np.maximum(x, 0)
        self._saved = y if training else None
        return y

    def backward(self, dout):
        y = self._take_saved()
        dout = np.ascontiguousarray(self._check_dout(dout, y.shape), dtype=y.dtype)
        dx = np.empty_like(y)
        kernels.relu_backward(dout.reshape(1, -1), y.reshape(1, -1), dx.reshape(1, -1))
        return dx


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...), in C order; backward reshapes back."""

    def forward(self, x, training=True):
        x = np.asarray(x)
        if x.ndim < 2:
            raise self._bad_shape("input", "(N, ...) with at least 2 dims", x.shape)
        self._saved = x.shape if training else None
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))    # not -1: N may be 0

    def backward(self, dout):
        x_shape = self._take_saved()
        dout = self._check_dout(dout, (x_shape[0], math.prod(x_shape[1:])))
        return dout.reshape(x_shape)


def dropout_forward(x, u, p):
    """Inverted dropout in training, given u (x's shape): uniform draws in [0, 1) of
    the dtype of the result. An entry is kept when u >= p (so with probability 1 - p):

        scaled_keep = [u >= p] / (1 - p)     (in u's dtype)
        y = x * scaled_keep

    Returns (y, scaled_keep); the backward pass needs scaled_keep."""
    ### BEGIN SOLUTION 6.1
    scaled_keep = (u >= p).astype(u.dtype)
    scaled_keep *= 1.0 / (1.0 - p)
    return x * scaled_keep, scaled_keep
    ### END SOLUTION


def dropout_backward(dout, scaled_keep):
    """dL/dx of y = x * scaled_keep (dropout_forward): dx = dout * scaled_keep, so a
    dropped entry gets no gradient and a kept one dout / (1 - p)."""
    ### BEGIN SOLUTION 6.2
    return dout * scaled_keep
    ### END SOLUTION


class Dropout(Layer):
    """Inverted dropout: in training, y = x * keep / (1 - p) with keep ~ Bernoulli(1 - p)
    drawn per element; at inference y = x. Scaling at training time keeps E[y] = x, so
    nothing changes at test time. dx = dout * keep / (1 - p).

    The layer owns its random generator, seeded by `seed` (and by ``reseed(seed)``),
    so a seeded run draws the same masks bit for bit; its state is the layer's own
    state (``own_state``), so a checkpoint continues the stream.
    """

    def __init__(self, p, *, seed=0, name=None):
        super().__init__(name=name)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"{self.describe()}: dropout rate p must be in [0, 1), got {p}")
        self.p = float(p)
        self.reseed(seed)

    def reseed(self, seed):
        """Restart the random stream: the next masks are those of a fresh Dropout(p, seed=seed)."""
        rng = np.random.default_rng(seed)          # raises on a bad seed before anything changes
        self.seed, self.rng = seed, rng

    def forward(self, x, training=True):
        x = np.asarray(x)
        if not training or self.p == 0.0:
            self._saved = (x.shape, None) if training else None    # None: identity
            return x
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
        y, scaled_keep = dropout_forward(x, self.rng.random(x.shape, dtype=dtype), self.p)
        self._saved = (x.shape, scaled_keep)
        return y

    def backward(self, dout):
        x_shape, scaled_keep = self._take_saved()
        dout = self._check_dout(dout, x_shape)
        return dout if scaled_keep is None else dropout_backward(dout, scaled_keep)

    def own_state(self):
        """{"rng": the generator's state}: where the next masks come from."""
        return {"rng": self.rng.bit_generator.state}

    def check_own_state(self, state):
        if not isinstance(state, dict) or set(state) != {"rng"}:
            raise ValueError(f"{self.describe()}: expected state {{'rng': ...}}, got {state!r:.80}")
        trial = type(self.rng.bit_generator)()
        try:
            trial.state = state["rng"]
        except (TypeError, ValueError, KeyError) as error:
            raise ValueError(f"{self.describe()}: not a state of its generator ({error})") from None

    def load_own_state(self, state):
        self.check_own_state(state)
        self.rng.bit_generator.state = state["rng"]
