"""Layers: each one a forward pass and the hand-written backward pass that undoes it.

Every layer has

    params  dict of arrays, e.g. {"W": ..., "b": ...}; {} for layers without weights
    grads   dict with the same keys and shapes; backward() OVERWRITES it (in place,
            so references held by an optimizer stay valid)
    masks   dict for the prunable params only ({"W": ...}), float32, 1 = kept,
            0 = pruned. Biases are never prunable.
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

from . import kernels, threads


def real_array(value, what):
    """`value` as an ndarray of real numbers (bool, integer or float), the values a
    float32 parameter or mask can take. TypeError naming `what` for anything else:
    strings, objects, complex numbers, ragged nested lists."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:            # e.g. ragged nested lists
        raise TypeError(f"{what}: expected an array of real numbers, got {error}") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{what}: expected an array of real numbers, got dtype {array.dtype}")
    return array


class Layer:
    """Base class: bookkeeping for names, params/grads/masks, shape checks, buffers."""

    def __init__(self, *, name=None):
        self.name = name
        self.params = {}
        self.grads = {}
        self.masks = {}
        self._saved = None       # what forward(training=True) keeps for backward
        self._buffers = {}       # reusable scratch arrays, by purpose

    def forward(self, x, training=True):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, x, training=True):
        return self.forward(x, training)

    # -- helpers shared by the layers ---------------------------------------------

    def _add_param(self, key, shape, prunable):
        """Create a zero-filled float32 param, its grad, and (if prunable) an all-ones mask."""
        self.params[key] = np.zeros(shape, dtype=np.float32)
        self.grads[key] = np.zeros(shape, dtype=np.float32)
        if prunable:
            self.masks[key] = np.ones(shape, dtype=np.float32)

    def describe(self):
        """How errors name this layer, e.g. "Conv2d 'conv1'"."""
        cls = type(self).__name__
        return f"{cls} {self.name!r}" if self.name else cls

    def _bad_shape(self, what, expected, actual):
        return ValueError(f"{self.describe()}: expected {what} of shape {expected}, got {tuple(actual)}")

    def _check_dout(self, dout, expected_shape):
        dout = np.asarray(dout)
        if dout.shape != tuple(expected_shape):
            raise self._bad_shape("dout", tuple(expected_shape), dout.shape)
        return dout

    def _zero_grads(self):
        """What backward leaves on an empty batch: every gradient is a sum over no examples."""
        for grad in self.grads.values():
            grad[...] = 0

    def _take_saved(self):
        if self._saved is None:
            raise RuntimeError(f"{self.describe()}: backward() needs a preceding forward(x, training=True)")
        return self._saved

    def _buffer(self, purpose, shape, dtype):
        """A scratch array of at least this size, reused while it is large enough."""
        size = int(np.prod(shape))
        buf = self._buffers.get(purpose)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = np.empty(size, dtype=dtype)
            self._buffers[purpose] = buf
        return buf[:size].reshape(shape)

    def __repr__(self):
        shapes = ", ".join(f"{k}={v.shape}" for k, v in self.params.items())
        return f"{type(self).__name__}(name={self.name!r}{', ' + shapes if shapes else ''})"


class Dense(Layer):
    """Fully connected layer: y = x @ W + b, W (in, out), b (out,).

    Backward:  dW = x^T dout (times the mask),  db = sum_n dout,  dx = dout W^T.
    """

    def __init__(self, in_features, out_features, *, name=None):
        super().__init__(name=name)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self._add_param("W", (self.in_features, self.out_features), prunable=True)
        self._add_param("b", (self.out_features,), prunable=False)

    def forward(self, x, training=True):
        W, b = self.params["W"], self.params["b"]
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise self._bad_shape("input", f"(N, {self.in_features})", x.shape)
        x = x.astype(W.dtype, copy=False)
        y = x @ W
        y += b
        self._saved = x if training else None
        return y

    def backward(self, dout, input_grad=True):
        x = self._take_saved()
        W = self.params["W"]
        dout = self._check_dout(dout, (x.shape[0], self.out_features)).astype(W.dtype, copy=False)
        np.matmul(x.T, dout, out=self.grads["W"])
        self.grads["W"] *= self.masks["W"]
        np.sum(dout, axis=0, out=self.grads["b"])
        return dout @ W.T if input_grad else None


class Conv2d(Layer):
    """2-D convolution (cross-correlation, as in every DL framework), NCHW.

    out[n, o, oh, ow] = b[o] + sum_{c,i,j} W[o, c, i, j] * x[n, c, oh*s - p + i, ow*s - p + j]
    with zeros outside the image. W (out, in, k, k), b (out,).

    How: im2col unfolds every k x k patch of a group of images x_g into a column of
    cols_g (C*k*k, G*OH*OW); then the group's convolution is one GEMM,

        out_cn = Wm @ cols_g      with Wm = W.reshape(O, C*k*k),  out_cn (O, G*OH*OW)

    and one pass moves out_cn into NCHW order while adding the bias. Backward, with
    dout_cn = the group's dout moved to the same (O, G*OH*OW) order:

        dW    = sum over groups of dout_cn @ cols_g^T     (then times the mask)
        db[o] = sum over groups of row o of dout_cn
        dcols = Wm^T @ dout_cn,  dx_g = col2im(dcols)     (overlapping patches add up)

    Why groups: cols has C*k*k rows per output pixel, nine times the input for a 3x3
    kernel (141 MB for a batch of 60 64-channel 32x32 images). Built for the whole
    batch it lives in main memory, and writing it, reading it back for the GEMM and
    again for col2im cost more time than the products. A group holds just enough
    images for cols_g to stay in the core's cache (about ``group_bytes``), so those
    passes run at cache speed, and backward recomputes cols_g from x instead of
    keeping it. Groups are split over lanes (``threads.run_lanes``), one core each,
    each with its own buffers and its own partial sums of dW and db, added in lane
    order at the end: the result depends on the number of lanes (= the BLAS thread
    count, 1 in training) the way BLAS results depend on its thread count.
    In inference (training=False) nothing is saved, so memory does not grow with the
    batch beyond its output.
    """

    group_bytes = 1 << 20

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, *, name=None):
        super().__init__(name=name)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = int(kernel_size)
        self.stride = int(stride)
        self.padding = int(padding)
        if self.kernel_size < 1 or self.stride < 1 or self.padding < 0:
            raise ValueError(f"{self.describe()}: need kernel_size >= 1, stride >= 1, padding >= 0; "
                             f"got {kernel_size}, {stride}, {padding}")
        k = self.kernel_size
        self._add_param("W", (self.out_channels, self.in_channels, k, k), prunable=True)
        self._add_param("b", (self.out_channels,), prunable=False)

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

    def _in_groups(self, x_shape, work):
        """Split the batch into groups of images and the groups over lanes; call
        ``work(lane, groups)`` for each lane with its (start, stop) image ranges."""
        n = x_shape[0]
        _, _, oh, ow = self.output_shape(x_shape)
        image_bytes = self.in_channels * self.kernel_size ** 2 * oh * ow * self.params["W"].itemsize
        size = max(1, self.group_bytes // image_bytes)
        groups = [(start, min(n, start + size)) for start in range(0, n, size)]
        lanes = max(1, min(threads.blas_thread_count(), len(groups)))
        threads.run_lanes(lambda lane: work(lane, groups[lane * len(groups) // lanes:
                                                         (lane + 1) * len(groups) // lanes]), lanes)
        return lanes

    def _cols(self, lane, x_group):
        """im2col of a group into this lane's buffer: (C*k*k, G*OH*OW)."""
        _, _, oh, ow = self.output_shape(x_group.shape)
        ckk = self.in_channels * self.kernel_size ** 2
        cols = self._buffer(f"cols{lane}", (ckk, len(x_group) * oh * ow), x_group.dtype)
        kernels.im2col(x_group, self.kernel_size, self.stride, self.padding, cols)
        return cols

    def forward(self, x, training=True, relu=False):
        """The convolution; with ``relu=True``, max(convolution, 0) in the same pass (what
        Sequential uses for a Conv2d followed by a ReLU). backward then takes dL/d(that)."""
        x = self._check_input(x)
        W, b = self.params["W"], self.params["b"]
        n, o, oh, ow = self.output_shape(x.shape)
        Wm = W.reshape(o, -1)
        out = np.empty((n, o, oh * ow), dtype=W.dtype)

        def lane_work(lane, groups):
            for start, stop in groups:
                cols = self._cols(lane, x[start:stop])
                out_cn = self._buffer(f"cn{lane}", (o, cols.shape[1]), W.dtype)
                np.matmul(Wm, cols, out=out_cn)
                # (O, G, OH*OW) -> (G, O, OH*OW), adding b[o] (and the ReLU) on the way
                kernels.cn_to_nchw(out_cn, b, relu, out[start:stop])

        self._in_groups(x.shape, lane_work)
        self._saved = (x, out if relu else None) if training else None
        return out.reshape(n, o, oh, ow)

    def backward(self, dout, input_grad=True):
        x, relu_out = self._take_saved()
        W = self.params["W"]
        n, o, oh, ow = self.output_shape(x.shape)
        Wm = W.reshape(o, -1)
        dout = np.ascontiguousarray(self._check_dout(dout, (n, o, oh, ow)), dtype=W.dtype)
        dout = dout.reshape(n, o, oh * ow)
        relu = relu_out is not None            # then dout is dL/d(ReLU output)
        dx = np.empty(x.shape, dtype=W.dtype) if input_grad else None
        if n == 0:                             # sums over no images (and no lanes to run)
            self._zero_grads()
            self._saved = None
            return dx
        partial_dW = {}                        # lane -> its sum over its groups
        partial_db = {}

        def lane_work(lane, groups):
            dW = self._buffer(f"dW{lane}", Wm.shape, W.dtype)
            db = self._buffer(f"db{lane}", (o,), W.dtype)
            for index, (start, stop) in enumerate(groups):
                cols = self._cols(lane, x[start:stop])
                dout_cn = self._buffer(f"cn{lane}", (o, cols.shape[1]), W.dtype)
                kernels.nchw_to_cn(dout[start:stop], relu_out[start:stop] if relu else dout[start:stop],
                                   relu, dout_cn)
                if index == 0:
                    np.matmul(dout_cn, cols.T, out=dW)
                    np.sum(dout_cn, axis=1, out=db)
                else:
                    dW += np.matmul(dout_cn, cols.T, out=self._buffer(f"dW_group{lane}", Wm.shape, W.dtype))
                    db += np.sum(dout_cn, axis=1)
                if input_grad:
                    dcols = np.matmul(Wm.T, dout_cn, out=cols)    # cols is not needed any more
                    kernels.col2im(dcols, self.kernel_size, self.stride, self.padding, dx[start:stop])
            partial_dW[lane], partial_db[lane] = dW, db

        lanes = self._in_groups(x.shape, lane_work)
        grad_W = self.grads["W"].reshape(Wm.shape)
        np.copyto(grad_W, partial_dW[0])
        np.copyto(self.grads["b"], partial_db[0])
        for lane in range(1, lanes):
            grad_W += partial_dW[lane]
            self.grads["b"] += partial_db[lane]
        self.grads["W"] *= self.masks["W"]
        self._saved = None
        return dx


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


class Dropout(Layer):
    """Inverted dropout: in training, y = x * keep / (1 - p) with keep ~ Bernoulli(1 - p)
    drawn per element; at inference y = x. Scaling at training time keeps E[y] = x, so
    nothing changes at test time. dx = dout * keep / (1 - p).

    The layer owns its random generator, seeded by `seed` (and by ``reseed(seed)``),
    so a seeded run draws the same masks bit for bit.
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
        scale = 1.0 / (1.0 - self.p)
        scaled_keep = (self.rng.random(x.shape, dtype=dtype) >= self.p).astype(dtype)
        scaled_keep *= scale
        self._saved = (x.shape, scaled_keep)
        return x * scaled_keep

    def backward(self, dout):
        x_shape, scaled_keep = self._take_saved()
        dout = self._check_dout(dout, x_shape)
        return dout if scaled_keep is None else dout * scaled_keep
