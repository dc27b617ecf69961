"""Where a convolution's time goes: each pass of Conv2d, with im2col and with Winograd,
and how a whole layer scales from one thread to two.

    PYTHONPATH=. python benchmarks/conv_parts.py        # ~2 minutes

For a 3x3 "same" convolution (C = O channels, the three kinds of layer of
Conv-2/4/6), on one BLAS thread, with every array the size of one of Conv2d's
groups (1 image of 32x32, 4 of 16x16, 16 of 8x8; mean of 100 calls): each
kernel and product of forward and backward, in microseconds per image.
Then the whole layer (forward with the ReLU, backward with dx) on a batch of
60, per algorithm, on 1 and 2 threads (``threads.use_threads``).
Run on demand; it is not a test.
"""

import time

import numpy as np

from minilottery import kernels, winograd
from minilottery.layers import Conv2d
from minilottery.threads import use_threads

LAYERS = [(64, 32, 1), (128, 16, 4), (256, 8, 16)]  # (channels in = out, height = width, images)


def mean_us(fn, reps=100):
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1e6


def im2col_parts(channels, size, images, rng):
    k, q = channels * 9, images * size * size
    x = rng.standard_normal((images, channels, size, size), dtype=np.float32)
    W = rng.standard_normal((channels, k), dtype=np.float32) * 0.01
    b = np.zeros(channels, np.float32)
    cols, cn = np.empty((k, q), np.float32), np.empty((channels, q), np.float32)
    out = np.empty((images, channels, size * size), np.float32)
    dW = np.empty((channels, k), np.float32)
    return {
        "im2col": mean_us(lambda: kernels.im2col(x, 3, 1, 1, cols)),
        "GEMM fwd": mean_us(lambda: np.matmul(W, cols, out=cn)),
        "move+bias+ReLU": mean_us(lambda: kernels.cn_to_nchw(cn, b, True, out)),
        "dW GEMM": mean_us(lambda: np.matmul(cn, cols.T, out=dW)),
        "dx GEMM": mean_us(lambda: np.matmul(W.T, cn, out=cols)),
        "col2im": mean_us(lambda: kernels.col2im(cols, 3, 1, 1, x)),
    }


def winograd_parts(channels, size, images, rng):
    th, tw = winograd.tiles(size, size)
    t = images * th * tw
    x = rng.standard_normal((images, channels, size, size), dtype=np.float32)
    U = rng.standard_normal((16, channels, channels), dtype=np.float32) * 0.01
    rows = [np.empty((16, channels * t + 16), np.float32) for _ in range(2)]   # as Conv2d pads them
    V, M = (r[:, :channels * t].reshape(16, channels, t) for r in rows)
    out = np.empty_like(x)
    b, db = np.zeros(channels, np.float32), np.zeros(channels, np.float32)
    dU = np.empty_like(U)
    return {
        "input transform": mean_us(lambda: winograd.input_transform(x, rows[0])),
        "16 GEMMs fwd": mean_us(lambda: np.matmul(U, V, out=M)),
        "output transform": mean_us(lambda: winograd.output_transform(rows[1], b, True, out)),
        "its adjoint": mean_us(lambda: winograd.output_transform_adjoint(out, out, True, rows[1], db)),
        "16 GEMMs dU": mean_us(lambda: np.matmul(M, V.transpose(0, 2, 1), out=dU)),
        "16 GEMMs dV": mean_us(lambda: np.matmul(U.transpose(0, 2, 1), M, out=V)),
        "input adjoint": mean_us(lambda: winograd.input_transform_adjoint(rows[0], x)),
    }


def whole_layer_ms(channels, size, algorithm, threads, rng, batch=60):
    layer = Conv2d(channels, channels, 3, padding=1, algorithm=algorithm)
    layer.params["W"][...] = rng.standard_normal(layer.params["W"].shape) * 0.05
    x = rng.standard_normal((batch, channels, size, size), dtype=np.float32)
    dout = rng.standard_normal((batch, channels, size, size), dtype=np.float32)

    def step():
        layer.forward(x, relu=True)
        layer.backward(dout)
    with use_threads(threads):
        return mean_us(step, reps=5) / 1e3


def main():
    rng = np.random.default_rng(0)
    for title, parts in (("im2col", im2col_parts), ("Winograd F(2x2, 3x3)", winograd_parts)):
        print(f"{title}, us per image, 1 thread")
        names = None
        for channels, size, images in LAYERS:
            times = parts(channels, size, images, rng)
            if names is None:
                names = list(times)
                print(f"  {'layer':14}" + "".join(f"{n:>17}" for n in names) + f"{'total':>9}")
            print(f"  {f'{channels} ch {size}x{size}':14}"
                  + "".join(f"{times[n] / images:17.0f}" for n in names)
                  + f"{sum(times.values()) / images:9.0f}")
        print()
    print("whole layer, batch 60, forward + backward with dx, ms")
    for channels, size, _ in LAYERS:
        cells = [f"{algorithm} {threads} thr {whole_layer_ms(channels, size, algorithm, threads, rng):6.1f}"
                 for algorithm in ("im2col", "winograd") for threads in (1, 2)]
        print(f"  {channels} ch {size}x{size}:  " + "   ".join(cells))


if __name__ == "__main__":
    main()
