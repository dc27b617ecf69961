"""Where a convolution's time goes: each pass of Conv2d on one image, and lanes' scaling.

    PYTHONPATH=. python benchmarks/conv_parts.py        # ~1 minute

For a 3x3 "same" convolution of one image (C = O channels, the three kinds of layer
of Conv-2/4/6), on one BLAS thread, with every array in cache as in Conv2d's groups:
each kernel and product of forward and backward, in microseconds (mean of 200 calls).
Then 60 per-image forward GEMMs on one thread against the same 60 split over two
lanes (minilottery.threads.run_lanes): how far two cores scale this kind of work.
Run on demand; it is not a test.
"""

import time

import minilottery  # noqa: F401  (before NumPy: see minilottery.threads)
import numpy as np
from minilottery import kernels
from minilottery.threads import blas_threads, run_lanes

LAYERS = [(64, 32), (128, 16), (256, 8)]     # (channels in = out, height = width)


def mean_us(fn, reps=200):
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1e6


def parts(channels, size, rng):
    k, q = channels * 9, size * size
    x = rng.standard_normal((1, channels, size, size), dtype=np.float32)
    W = rng.standard_normal((channels, k), dtype=np.float32) * 0.01
    b = np.zeros(channels, np.float32)
    cols = np.empty((k, q), np.float32)
    cn = np.empty((channels, q), np.float32)
    out = np.empty((1, channels, q), np.float32)
    dW, dW_group = np.zeros((channels, k), np.float32), np.empty((channels, k), np.float32)
    flops = 2 * channels * k * q
    with blas_threads(1):
        times = {
            "im2col": mean_us(lambda: kernels.im2col(x, 3, 1, 1, cols)),
            "GEMM fwd": mean_us(lambda: np.matmul(W, cols, out=cn)),
            "move+bias+ReLU": mean_us(lambda: kernels.cn_to_nchw(cn, b, True, out)),
            "dW GEMM": mean_us(lambda: np.matmul(cn, cols.T, out=dW_group)),
            "dW add": mean_us(lambda: np.add(dW, dW_group, out=dW)),
            "dx GEMM": mean_us(lambda: np.matmul(W.T, cn, out=cols)),
            "col2im": mean_us(lambda: kernels.col2im(cols, 3, 1, 1, x)),
        }
    return times, flops


def lane_scaling(channels, size, rng, images=60):
    k, q = channels * 9, size * size
    W = rng.standard_normal((channels, k), dtype=np.float32)
    cols = [rng.standard_normal((k, q), dtype=np.float32) for _ in range(2)]
    outs = [np.empty((channels, q), np.float32) for _ in range(2)]

    def lane(index, count=images // 2):
        for _ in range(count):
            np.matmul(W, cols[index], out=outs[index])

    with blas_threads(1):
        lane(0)
        one = mean_us(lambda: lane(0, images), reps=3)
    two = mean_us(lambda: run_lanes(lane, 2), reps=3)
    return one, two


def main():
    rng = np.random.default_rng(0)
    names = None
    for channels, size in LAYERS:
        times, flops = parts(channels, size, rng)
        if names is None:
            names = list(times)
            print(f"{'layer':14}" + "".join(f"{n:>16}" for n in names) + f"{'GEMM GFLOP/s':>14}")
        gemm = times["GEMM fwd"]
        print(f"{f'{channels} ch {size}x{size}':14}" + "".join(f"{times[n]:14.0f}us" for n in names)
              + f"{flops / gemm / 1e3:14.0f}")
    print()
    for channels, size in LAYERS:
        one, two = lane_scaling(channels, size, rng)
        print(f"{channels} ch {size}x{size}: 60 forward GEMMs, 1 thread {one / 1e3:.1f} ms, "
              f"2 lanes {two / 1e3:.1f} ms: {one / two:.2f}x")


if __name__ == "__main__":
    main()
