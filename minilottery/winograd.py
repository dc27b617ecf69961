"""Winograd minimal filtering F(2x2, 3x3): a 3x3 "same" convolution with 2.25x fewer
multiplications than im2col, as Numba kernels around a batch of 16 matrix products.

The idea (Lavin & Gray, 2016). Cut the output into 2x2 tiles; the 2x2 tile at
tile-row th, tile-column tw depends on the 4x4 input tile d that starts at
input pixel (2*th - 1, 2*tw - 1) (padding 1). For one input and one output
channel the tile is

    Y = A^T [ (G g G^T) * (B^T d B) ] A          (* elementwise, on 4x4 arrays)

with g the 3x3 filter and

    B^T = [[1, 0, -1,  0],     G = [[  1,    0,   0],     A^T = [[1, 1,  1,  0],
           [0, 1,  1,  0],          [1/2,  1/2, 1/2],            [0, 1, -1, -1]]
           [0, -1, 1,  0],          [1/2, -1/2, 1/2],
           [0, 1,  0, -1]]          [  0,    0,   1]]

which is 16 multiplications for 4 outputs instead of 36. Over channels, the
elementwise product becomes a matrix product for each of the 16 positions xi
of the 4x4 array: with U = G g G^T for every (o, c) and V = B^T d B for every
(c, tile t),

    M[xi] = U[xi] @ V[xi]          U[xi]: (O, C),  V[xi]: (C, T),  M[xi]: (O, T)
    Y     = A^T M A                per (o, t)

The backward pass follows from the chain rule through the same three steps
(each transform is linear, so its adjoint is the transposed matrices):

    dM[xi] = A dY A^T              per (o, t): the output transform's adjoint
    dU[xi] = dM[xi] @ V[xi]^T      (O, T) @ (T, C), the sum over tiles inside BLAS
    dW     = G^T dU G              per (o, c)
    dV[xi] = U[xi]^T @ dM[xi]      (C, O) @ (O, T)
    dx     = sum over tiles of B dV B^T, each 4x4 tile added back where it was read
             (neighbouring tiles overlap by 2 pixels; the padding is dropped)

So forward, dW and dx each cost 16 O C T multiply-adds, against 36 O C T for
im2col's 9 C-row columns of T*4 pixels: the 2.25x. The transforms are additions
only, one pass over memory each. The price is round-off: the transforms add
and subtract inputs before they are multiplied, so the result agrees with the
direct sum to float32 round-off of the inputs' magnitude, not bit for bit (the
tests bound the difference).

Layouts: x (N, C, H, W); V (16, C, T) with tile t = (n*TH + th)*TW + tw for
TH = ceil(H/2), TW = ceil(W/2) (an odd size gets a last tile that hangs over
the edge, its missing pixels read as 0 and its outputs dropped); M, dM
(16, O, T); U, dU (16, O, C). The kernels take V and M as 2-D C-contiguous
arrays (16, >= C*T), row xi holding V[xi] as C runs of T values: then the
compiler knows every inner loop has unit stride, and Conv2d can space the 16
rows so that they do not fall on the same cache sets. Every kernel is serial,
releases the GIL and overwrites its output: ``layers.Conv2d`` runs them on
groups of images, several groups at once (``threads.parallel_pieces``).
"""

import numpy as np
from numba import njit


def tiles(height, width):
    """(TH, TW): the number of 2x2 output tiles down and across an H x W image."""
    return (height + 1) // 2, (width + 1) // 2


@njit(cache=True, nogil=True)
def filter_transform(W, U):
    """U[xi, o, c] = (G W[o, c] G^T)[xi // 4, xi % 4]. W: (O, C, 3, 3); U: (16, O, C)."""
    n_out, n_in = W.shape[0], W.shape[1]
    half = W.dtype.type(0.5)
    t = np.empty((4, 3), W.dtype)
    for o in range(n_out):
        for c in range(n_in):
            g = W[o, c]
            for j in range(3):                       # t = G g
                t[0, j] = g[0, j]
                t[1, j] = half * (g[0, j] + g[1, j] + g[2, j])
                t[2, j] = half * (g[0, j] - g[1, j] + g[2, j])
                t[3, j] = g[2, j]
            for a in range(4):                       # U = t G^T
                U[4 * a + 0, o, c] = t[a, 0]
                U[4 * a + 1, o, c] = half * (t[a, 0] + t[a, 1] + t[a, 2])
                U[4 * a + 2, o, c] = half * (t[a, 0] - t[a, 1] + t[a, 2])
                U[4 * a + 3, o, c] = t[a, 2]


@njit(cache=True, nogil=True)
def filter_transform_adjoint(dU, dW):
    """dW[o, c] = G^T dU[:, o, c] G (the 16 values as a 4x4 array). dU: (16, O, C); dW: (O, C, 3, 3)."""
    n_out, n_in = dW.shape[0], dW.shape[1]
    half = dW.dtype.type(0.5)
    u = np.empty((4, 4), dW.dtype)
    t = np.empty((3, 4), dW.dtype)
    for o in range(n_out):
        for c in range(n_in):
            for xi in range(16):
                u[xi // 4, xi % 4] = dU[xi, o, c]
            for b in range(4):                       # t = G^T u
                t[0, b] = u[0, b] + half * (u[1, b] + u[2, b])
                t[1, b] = half * (u[1, b] - u[2, b])
                t[2, b] = half * (u[1, b] + u[2, b]) + u[3, b]
            g = dW[o, c]
            for i in range(3):                       # dW = t G
                g[i, 0] = t[i, 0] + half * (t[i, 1] + t[i, 2])
                g[i, 1] = half * (t[i, 1] - t[i, 2])
                g[i, 2] = half * (t[i, 1] + t[i, 2]) + t[i, 3]


# Every transform works on whole planes of tiles: "the (a, b) entry of every tile of
# the plane" is one contiguous array of TH*TW values, so each step below is a loop
# over TH*TW values with unit strides (which the compiler turns into SIMD
# instructions; loops over one tile-row, 4 to 16 long, were too short for it).


@njit(cache=True, nogil=True)
def _mix2(a, sa, b, sb, out):
    """out = sa*a + sb*b, elementwise (sa, sb = +-1: exactly a + b or a - b)."""
    fa, fb = out.dtype.type(sa), out.dtype.type(sb)     # in the data's dtype
    for q in range(out.size):
        out[q] = fa * a[q] + fb * b[q]


@njit(cache=True, nogil=True)
def _mix3(a, sa, b, sb, c, sc, out):
    """out = sa*a + sb*b + sc*c, elementwise (signs +-1)."""
    fa, fb, fc = out.dtype.type(sa), out.dtype.type(sb), out.dtype.type(sc)
    for q in range(out.size):
        out[q] = fa * a[q] + fb * b[q] + fc * c[q]


@njit(cache=True, nogil=True)
def _copy(a, out, sign):
    """out = sign * a, elementwise (sign +-1)."""
    f = out.dtype.type(sign)
    for q in range(out.size):
        out[q] = f * a[q]


@njit(cache=True, nogil=True)
def _entry(phases, a, b, tw_n, per_plane):
    """Entry (a, b) of every input tile of the plane in ``phases``, as one array."""
    start = (a // 2) * tw_n
    return phases[b, a % 2].reshape(-1)[start:start + per_plane]


@njit(cache=True, nogil=True)
def _to_phases(plane, phases):
    """Split the zero-padded plane p (p[h + 1, w + 1] = plane[h, w]) so that entry (a, b)
    of every 4x4 input tile is one contiguous array: phases[b, r % 2, r // 2, q] =
    p[r, 2q + b]. Tile (th, q) reads p[2th + a, 2q + b] = phases[b, a % 2, th + a // 2, q],
    so entry (a, b) of all tiles is ``phases[b, a % 2]`` flat, from (a // 2) * TW on.
    Positions in the padding are never written (the caller zeroes them once)."""
    height, width = plane.shape
    tw_n = phases.shape[3]
    for h in range(height):
        r = h + 1
        src = plane[h]
        for b in range(4):                       # p[r, 2q + b] = plane[h, 2q + b - 1]
            lo = 1 if b == 0 else 0
            hi = min(tw_n, (width - b) // 2 + 1)
            dst = phases[b, r % 2, r // 2]
            for q in range(lo, hi):
                dst[q] = src[2 * q + b - 1]


@njit(cache=True, nogil=True)
def _from_phases_adding(phases, plane):
    """The adjoint of ``_to_phases``: plane[h, w] = the sum of every phases entry that
    p[h + 1, w + 1] went to (column j = w + 1 is in group b = j % 2 at q = j // 2 and in
    group b + 2 at q = j // 2 - 1)."""
    height, width = plane.shape
    tw_n = phases.shape[3]
    for h in range(height):
        r = h + 1
        dst = plane[h]
        for w in range(width):
            j = w + 1
            b, q = j % 2, j // 2
            v = phases[b, r % 2, r // 2, q] if q < tw_n else plane.dtype.type(0.0)
            if q >= 1:
                v += phases[b + 2, r % 2, r // 2, q - 1]
            dst[w] = v


@njit(cache=True, nogil=True)
def _to_quads(plane, quads):
    """quads[a, c, th, q] = plane[2th + a, 2q + c]: entry (a, c) of every 2x2 output tile as
    one array. Beyond an odd edge nothing is written (the caller zeroes it once)."""
    height, width = plane.shape
    for h in range(height):
        src = plane[h]
        for c in range(2):
            dst = quads[h % 2, c, h // 2]
            for q in range((width - c + 1) // 2):
                dst[q] = src[2 * q + c]


@njit(cache=True, nogil=True)
def _from_quads(quads, plane):
    """The inverse of ``_to_quads``: plane[h, w] = quads[h % 2, w % 2, h // 2, w // 2]."""
    height, width = plane.shape
    for h in range(height):
        dst = plane[h]
        for c in range(2):
            src = quads[h % 2, c, h // 2]
            for q in range((width - c + 1) // 2):
                dst[2 * q + c] = src[q]


@njit(cache=True, nogil=True)
def input_transform(x, V):
    """V[xi, c, t] = (B^T d B)[xi // 4, xi % 4] for the 4x4 input tile d of tile t in
    channel c (zeros outside the image). x: (N, C, H, W); V: (16, >= C*N*TH*TW), its row xi
    holding V[xi] as C runs of N*TH*TW tiles."""
    n_img, n_ch, height, width = x.shape
    th_n, tw_n = (height + 1) // 2, (width + 1) // 2
    n_tiles, per_plane = n_img * th_n * tw_n, th_n * tw_n
    phases = np.zeros((4, 2, th_n + 2, tw_n), x.dtype)
    t = np.empty((4, 4, per_plane), x.dtype)       # t = B^T d, per entry, over the tiles
    for n in range(n_img):
        for c in range(n_ch):
            _to_phases(x[n, c], phases)
            for b in range(4):                      # d_a = entry (a, b) of every tile
                d0, d1 = _entry(phases, 0, b, tw_n, per_plane), _entry(phases, 1, b, tw_n, per_plane)
                d2, d3 = _entry(phases, 2, b, tw_n, per_plane), _entry(phases, 3, b, tw_n, per_plane)
                _mix2(d0, 1.0, d2, -1.0, t[0, b])
                _mix2(d1, 1.0, d2, 1.0, t[1, b])
                _mix2(d2, 1.0, d1, -1.0, t[2, b])
                _mix2(d1, 1.0, d3, -1.0, t[3, b])
            lo = c * n_tiles + n * per_plane
            for a in range(4):                                     # V = t B
                _mix2(t[a, 0], 1.0, t[a, 2], -1.0, V[4 * a, lo:lo + per_plane])
                _mix2(t[a, 1], 1.0, t[a, 2], 1.0, V[4 * a + 1, lo:lo + per_plane])
                _mix2(t[a, 2], 1.0, t[a, 1], -1.0, V[4 * a + 2, lo:lo + per_plane])
                _mix2(t[a, 1], 1.0, t[a, 3], -1.0, V[4 * a + 3, lo:lo + per_plane])


@njit(cache=True, nogil=True)
def input_transform_adjoint(dV, dx):
    """dx[n, c] = the sum over tiles of B dV[:, c, t] B^T, each 4x4 result added onto
    the input pixels its tile read (those in the padding dropped). dV laid out as V in
    ``input_transform``; dx: (N, C, H, W), fully overwritten."""
    n_img, n_ch, height, width = dx.shape
    th_n, tw_n = (height + 1) // 2, (width + 1) // 2
    n_tiles, per_plane = n_img * th_n * tw_n, th_n * tw_n
    phases = np.empty((4, 2, th_n + 2, tw_n), dx.dtype)
    t = np.empty((4, 4, per_plane), dx.dtype)       # t = B u
    e = np.empty((4, per_plane), dx.dtype)          # one row of t B^T
    for n in range(n_img):
        for c in range(n_ch):
            lo = c * n_tiles + n * per_plane
            for b in range(4):                      # u_a = entry (a, b) of dV
                u0, u1 = dV[b, lo:lo + per_plane], dV[4 + b, lo:lo + per_plane]
                u2, u3 = dV[8 + b, lo:lo + per_plane], dV[12 + b, lo:lo + per_plane]
                _copy(u0, t[0, b], 1.0)
                _mix3(u1, 1.0, u2, -1.0, u3, 1.0, t[1, b])
                _mix3(u1, 1.0, u2, 1.0, u0, -1.0, t[2, b])
                _copy(u3, t[3, b], -1.0)
            phases[:] = 0.0
            for a in range(4):                      # entry (a, b) of t B^T, added where it was read
                _copy(t[a, 0], e[0], 1.0)
                _mix3(t[a, 1], 1.0, t[a, 2], -1.0, t[a, 3], 1.0, e[1])
                _mix3(t[a, 1], 1.0, t[a, 2], 1.0, t[a, 0], -1.0, e[2])
                _copy(t[a, 3], e[3], -1.0)
                for b in range(4):
                    dst = _entry(phases, a, b, tw_n, per_plane)
                    _mix2(dst, 1.0, e[b], 1.0, dst)
            _from_phases_adding(phases, dx[n, c])


@njit(cache=True, nogil=True)
def output_transform(M, b, relu, out):
    """out[n, o] = the 2x2 tiles A^T M[:, o, t] A plus b[o] (then max(., 0) if ``relu``),
    the pixels beyond an odd edge dropped. M laid out as V in ``input_transform``
    (O runs); b: (O,); out: (N, O, H, W)."""
    n_img, n_out, height, width = out.shape
    th_n, tw_n = (height + 1) // 2, (width + 1) // 2
    n_tiles, per_plane = n_img * th_n * tw_n, th_n * tw_n
    t = np.empty((2, 4, per_plane), out.dtype)      # t = A^T m
    quads = np.empty((2, 2, th_n, tw_n), out.dtype)
    zero = out.dtype.type(0.0)
    for n in range(n_img):
        for o in range(n_out):
            lo = o * n_tiles + n * per_plane
            for j in range(4):                      # m_a = entry (a, j) of M
                m0, m1 = M[j, lo:lo + per_plane], M[4 + j, lo:lo + per_plane]
                m2, m3 = M[8 + j, lo:lo + per_plane], M[12 + j, lo:lo + per_plane]
                _mix3(m0, 1.0, m1, 1.0, m2, 1.0, t[0, j])
                _mix3(m1, 1.0, m2, -1.0, m3, -1.0, t[1, j])
            bias = b[o]
            for a in range(2):                      # y = t A + bias, then the ReLU
                s0, s1, s2, s3 = t[a, 0], t[a, 1], t[a, 2], t[a, 3]
                left, right = quads[a, 0].reshape(-1), quads[a, 1].reshape(-1)
                for q in range(per_plane):
                    y0 = s0[q] + s1[q] + s2[q] + bias
                    y1 = s1[q] - s2[q] - s3[q] + bias
                    if relu:
                        y0 = y0 if y0 > zero else zero
                        y1 = y1 if y1 > zero else zero
                    left[q] = y0
                    right[q] = y1
            _from_quads(quads, out[n, o])


@njit(cache=True, nogil=True)
def output_transform_adjoint(dout, y, relu, dM, db):
    """dM[:, o, t] = A g A^T for the 2x2 tile g of dout[n, o] (0 beyond an odd edge),
    times (y > 0) first if ``relu`` (y = the ReLU's output; ReLU's backward on the way).
    On the way, adds the plane's (masked) dout to the bias gradient: db[o] += its sum.
    dout, y: (N, O, H, W) (y unused unless relu); dM laid out as M; db: (O,)."""
    n_img, n_out, height, width = dout.shape
    th_n, tw_n = (height + 1) // 2, (width + 1) // 2
    n_tiles, per_plane = n_img * th_n * tw_n, th_n * tw_n
    masked = np.empty((height, width), dM.dtype)   # the plane of dout, times the ReLU's mask
    sums = np.empty(width, dM.dtype)               # per column, so that the sum runs in SIMD
    quads = np.zeros((2, 2, th_n, tw_n), dM.dtype)
    r = np.empty((4, 2, per_plane), dM.dtype)      # r = A g
    zero = dM.dtype.type(0.0)
    for n in range(n_img):
        for o in range(n_out):
            grad, kept = dout[n, o], y[n, o]
            sums[:] = zero
            for h in range(height):
                src, mask, dst = grad[h], kept[h], masked[h]
                for w in range(width):
                    v = src[w]
                    if relu:
                        v = v if mask[w] > zero else zero
                    dst[w] = v
                    sums[w] += v
            _to_quads(masked, quads)
            for c in range(2):
                g0, g1 = quads[0, c].reshape(-1), quads[1, c].reshape(-1)
                _copy(g0, r[0, c], 1.0)
                _mix2(g0, 1.0, g1, 1.0, r[1, c])
                _mix2(g0, 1.0, g1, -1.0, r[2, c])
                _copy(g1, r[3, c], -1.0)
            lo = o * n_tiles + n * per_plane
            for a in range(4):                      # dM = r A^T
                _copy(r[a, 0], dM[4 * a, lo:lo + per_plane], 1.0)
                _mix2(r[a, 0], 1.0, r[a, 1], 1.0, dM[4 * a + 1, lo:lo + per_plane])
                _mix2(r[a, 0], 1.0, r[a, 1], -1.0, dM[4 * a + 2, lo:lo + per_plane])
                _copy(r[a, 1], dM[4 * a + 3, lo:lo + per_plane], -1.0)
            total = zero
            for w in range(width):
                total += sums[w]
            db[o] += total
