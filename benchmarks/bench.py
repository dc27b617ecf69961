"""Speed and memory of minilottery's training step, against PyTorch when it is installed.

    python benchmarks/bench.py                      # all four nets, table on stdout
    python benchmarks/bench.py --nets lenet conv2   # a subset
    python benchmarks/bench.py --with-run           # also time `python -m minilottery.run lenet`

What is measured (every ratio within one run of this script; the machine is noisy):

* GEMM peak: a 2048^3 float32 matmul, best of 5, with 2 and with 1 BLAS thread.
* A masked training step at batch 60 on synthetic data: forward, softmax
  cross-entropy, backward (the first layer's dx skipped, as training does), Adam
  step with the masks. Timed with 2 BLAS threads (what PyTorch gets below) and
  inside blas_threads(1) (what the lottery uses; see minilottery.threads).
  Each timing is the median over the repetitions, after warm-up steps.
* PyTorch (if importable): the same step, torch.set_num_threads(2): forward,
  cross-entropy, backward, grad *= mask, torch.optim.Adam step, weight *= mask.
  Ours (2 threads) and PyTorch are timed in ROUNDS alternating rounds; the table
  gives the median and the range over the rounds, and "ratio" is our rate over
  PyTorch's within each round (paired), median and range.
* Useful FLOPs of a step = 3 x the forward FLOPs of the Dense and Conv2d layers
  (forward, dW and dx products) minus one forward of the first layer (its dx is
  not computed, by us or by PyTorch). GFLOP/s = useful FLOPs / step time; "peak"
  is the fraction of the 2-thread GEMM peak.
* Evaluation: minilottery.train.evaluate on 10,000 synthetic images in chunks of
  the lottery's eval_batch_size (500 LeNet, 100 conv nets).
* Peak RSS: each net runs in its own process; its VmHWM after training steps and
  the evaluation is reported.
* Start-up: import to the end of the first training step of LeNet in a fresh
  process, cold (empty Numba cache directory) and warm (cache filled).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
NETS = ("lenet", "conv2", "conv4", "conv6")
EVAL_BATCH = {"lenet": 500, "conv2": 100, "conv4": 100, "conv6": 100}
BATCH = 60
ROUNDS = 3         # alternating rounds of ours and PyTorch, see measure_net


def input_shape(net, n):
    return (n, 1, 28, 28) if net == "lenet" else (n, 3, 32, 32)


def useful_flops(model, batch):
    """3 x forward FLOPs of Dense/Conv2d layers, minus the skipped dx of the first one."""
    import numpy as np
    from minilottery.layers import Conv2d, Dense

    shape = input_shape_of(model, batch)
    x = np.zeros(shape, np.float32)
    forward = []
    for layer in model.layers:
        if isinstance(layer, Dense):
            forward.append(2 * batch * layer.in_features * layer.out_features)
        elif isinstance(layer, Conv2d):
            _, o, oh, ow = layer.output_shape(x.shape)
            forward.append(2 * batch * o * layer.in_channels * layer.kernel_size ** 2 * oh * ow)
        x = layer.forward(x, training=False)
    return 3 * sum(forward) - forward[0]


def input_shape_of(model, batch):
    from minilottery.layers import Flatten
    return input_shape("lenet" if isinstance(model.layers[0], Flatten) else "conv", batch)


def gemm_peak(threads, size=2048):
    import numpy as np
    from minilottery.threads import blas_threads

    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    c = np.empty_like(a)
    with blas_threads(threads):
        np.matmul(a, a, out=c)
        best = min(_time(lambda: np.matmul(a, a, out=c)) for _ in range(5))
    return 2 * size ** 3 / best / 1e9


def _time(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_step(step, reps, warmup=2):
    for _ in range(warmup):
        step()
    times = sorted(_time(step) for _ in range(reps))
    return times[len(times) // 2]


def ours_step(net):
    import numpy as np
    from minilottery import losses, models, optim, pruning  # noqa: F401

    model = models.BUILDERS[net](seed=0)
    rng = np.random.default_rng(0)
    # a realistic mask: 50% of every weight tensor kept
    model.set_masks({name: (rng.random(m.shape) < 0.5).astype(np.float32)
                     for name, m in model.named_masks().items()})
    opt = optim.Adam(model, 1e-3)
    x = rng.standard_normal(input_shape(net, BATCH), dtype=np.float32)
    y = rng.integers(0, 10, BATCH)

    def step():
        logits = model.forward(x, training=True)
        _, dlogits = losses.softmax_cross_entropy(logits, y)
        model.backward(dlogits, input_grad=False)
        opt.step()
    return model, step


def torch_step(net):
    import torch
    from torch import nn

    torch.set_num_threads(2)
    torch.manual_seed(0)
    if net == "lenet":
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100),
                              nn.ReLU(), nn.Linear(100, 10))
    else:
        widths = {"conv2": [64], "conv4": [64, 128], "conv6": [64, 128, 256]}[net]
        layers, ch, size = [], 3, 32
        for w in widths:
            layers += [nn.Conv2d(ch, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1),
                       nn.ReLU(), nn.MaxPool2d(2)]
            ch, size = w, size // 2
        layers += [nn.Flatten(), nn.Linear(ch * size * size, 256), nn.ReLU(), nn.Linear(256, 256),
                   nn.ReLU(), nn.Linear(256, 10)]
        model = nn.Sequential(*layers)
    weights = [p for p in model.parameters() if p.dim() > 1]
    masks = [(torch.rand_like(w) < 0.5).float() for w in weights]
    with torch.no_grad():
        for w, m in zip(weights, masks):
            w.mul_(m)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(input_shape(net, BATCH))
    y = torch.randint(0, 10, (BATCH,))
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=False)
        loss = loss_fn(model(x), y)
        loss.backward()
        with torch.no_grad():
            for w, m in zip(weights, masks):
                w.grad.mul_(m)
        opt.step()
        with torch.no_grad():
            for w, m in zip(weights, masks):
                w.mul_(m)
    return step


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_net(net, reps):
    """Everything about one net, in this process; returns a dict."""
    import minilottery  # noqa: F401  (before NumPy, as in minilottery.run: see minilottery.threads)
    import numpy as np
    from minilottery import models
    from minilottery.threads import blas_threads
    from minilottery.train import evaluate

    model, step = ours_step(net)
    flops = useful_flops(model, BATCH)
    result = {"net": net, "flops": flops}
    with blas_threads(1):
        result["ours_1"] = median_step(step, reps)
    rng = np.random.default_rng(1)
    xs = rng.standard_normal(input_shape(net, 10_000), dtype=np.float32)
    ys = rng.integers(0, 10, 10_000)
    eval_model = models.BUILDERS[net](seed=0)
    with blas_threads(1):
        result["eval_s"] = _time(lambda: evaluate(eval_model, xs, ys, EVAL_BATCH[net]))
    del xs
    result["peak_rss_mb"] = peak_rss_mb()
    # PyTorch after the RSS reading: its import alone would add hundreds of MB to it
    try:
        other = torch_step(net)
    except ImportError:
        other = None
    # Ours (2 BLAS threads) and PyTorch alternate, ROUNDS times: this VM's speed drifts
    # by 10-30% over minutes, and a drift then hits both sides of a round alike.
    # (The first steps after the evaluation ran 10-30% slower in every run: one untimed round.)
    result["ours_2"], result["torch"] = [], []
    with blas_threads(2):
        median_step(step, 3)
    for _ in range(ROUNDS):
        with blas_threads(2):
            result["ours_2"].append(median_step(step, reps))
        if other is not None:
            result["torch"].append(median_step(other, reps))
    return result


def startup_seconds(cache_dir):
    """Seconds from interpreter start to the end of LeNet's first training step."""
    code = ("import time; t0 = time.perf_counter()\n"
            "import numpy as np\n"
            "from minilottery import models, optim, losses\n"
            "m = models.lenet300_100(seed=0); opt = optim.Adam(m, 1e-3)\n"
            "x = np.zeros((60, 1, 28, 28), np.float32); y = np.zeros(60, np.int64)\n"
            "_, d = losses.softmax_cross_entropy(m.forward(x), y)\n"
            "m.backward(d, input_grad=False); opt.step()\n"
            "print(time.perf_counter() - t0)\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip()), time.perf_counter() - start


def run_wall_seconds():
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "minilottery.run", "lenet", "--out", out],
                       cwd=ROOT, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nets", nargs="+", choices=NETS, default=list(NETS))
    parser.add_argument("--reps", type=int, default=None,
                        help="timed steps per measurement (default: 50 LeNet, 7 conv nets)")
    parser.add_argument("--with-run", action="store_true",
                        help="also time the default `python -m minilottery.run lenet` (minutes)")
    parser.add_argument("--one", choices=NETS, help=argparse.SUPPRESS)   # child process mode
    args = parser.parse_args()

    if args.one:
        reps = args.reps or (50 if args.one == "lenet" else 7)
        print(json.dumps(measure_net(args.one, reps)))
        return

    import numpy
    peak2, peak1 = gemm_peak(2), gemm_peak(1)
    print(f"numpy {numpy.__version__}; float32 GEMM peak (2048^3): {peak2:.0f} GFLOP/s with "
          f"2 BLAS threads, {peak1:.0f} with 1")
    rows = []
    for net in args.nets:
        cmd = [sys.executable, __file__, "--one", net] + (["--reps", str(args.reps)] if args.reps else [])
        out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))

    head = (f"{'net':6} {'ours it/s':>15} {'torch it/s':>15} {'ratio':>15} {'1-thr it/s':>10} "
            f"{'1-thr ratio':>11} {'GFLOP/s':>8} {'of peak':>7} {'eval 10k':>8} {'peak RSS':>9}")
    print(head)
    print("-" * len(head))

    def spread(values):       # "median (min-max)", 3 significant digits
        return f"{median(values):.3g} ({min(values):.3g}-{max(values):.3g})"

    for r in rows:
        ours = [1 / t for t in r["ours_2"]]
        torch_rates = [1 / t for t in r["torch"]]
        ratios = [o / t for o, t in zip(ours, torch_rates)]     # paired, round by round
        gflops = r["flops"] * median(ours) / 1e9
        torch_s = f"{spread(torch_rates):>15}" if torch_rates else f"{'-':>15}"
        ratio_s = f"{spread(ratios):>15}" if ratios else f"{'-':>15}"
        ratio1 = f"{(1 / r['ours_1']) / median(torch_rates):11.2f}" if torch_rates else f"{'-':>11}"
        print(f"{r['net']:6} {spread(ours):>15} {torch_s} {ratio_s} {1 / r['ours_1']:10.1f} "
              f"{ratio1} {gflops:8.1f} {gflops / peak2:7.0%} {r['eval_s']:7.2f}s {r['peak_rss_mb']:7.0f}MB")
    if any(r["torch"] for r in rows):
        print("torch: " + ", ".join(f"{r['net']} {r['flops'] / median(r['torch']) / 1e9:.1f} GFLOP/s"
                                    for r in rows if r["torch"]))

    with tempfile.TemporaryDirectory() as cache:
        cold, cold_wall = startup_seconds(cache)
        warm, warm_wall = startup_seconds(cache)
    print(f"start-up to the end of the first LeNet step: cold (compiling) {cold:.1f} s "
          f"({cold_wall:.1f} s with the interpreter), warm (cached) {warm:.1f} s ({warm_wall:.1f} s)")
    if args.with_run:
        print(f"python -m minilottery.run lenet (default preset): {run_wall_seconds():.0f} s wall")


if __name__ == "__main__":
    main()
