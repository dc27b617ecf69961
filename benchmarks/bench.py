"""Speed and memory of minilottery's training step and evaluation, against PyTorch when installed.

    python benchmarks/bench.py                      # all four nets, table on stdout
    python benchmarks/bench.py --nets lenet conv2   # a subset
    python benchmarks/bench.py --with-run           # also time `python -m minilottery.run lenet`

What is measured (every ratio within one run of this script; the machine is noisy):

* GEMM peak: a 2048^3 float32 matmul, best of 5, with 2 and with 1 BLAS thread.
* A masked training step at batch 60 *inside train()*, as the lottery runs it:
  forward, softmax cross-entropy, backward (the first layer's dx skipped),
  masked Adam, the minibatch drawn from a synthetic training set, 2 threads
  (``train(..., threads=2)``) and, for the "1-thr" column, 1 thread. The step
  time is (time of train() for 2 + reps iterations - time for 2 iterations) / reps,
  so the evaluation train() ends with (on one image) drops out.
* PyTorch (if importable): the same step with torch.set_num_threads(2): forward,
  cross-entropy, backward, grad *= mask, torch.optim.Adam step, weight *= mask,
  median over the repetitions.
  Ours and PyTorch are timed in ROUNDS alternating rounds; the table gives the
  median and the range over the rounds, and "ratio" is our rate over PyTorch's
  within each round (paired), median and range.
* Evaluation of 15,000 synthetic images (the size of CIFAR-10's validation plus
  test sets): ``minilottery.train.evaluate(..., threads=2)`` in the lottery's
  chunks (500 LeNet, 100 conv nets) against PyTorch's forward pass under
  torch.no_grad() with cross-entropy and argmax on the same chunks, alternating.
* Import order: each net is measured in a fresh process that imports NumPy
  before minilottery, as a notebook does; with --both-orders also in one that
  imports minilottery first (the "import" table).
* Useful FLOPs of a step = 3 x the forward FLOPs of the Dense and Conv2d layers
  (forward, dW and dx products) minus one forward of the first layer (its dx is
  not computed, by us or by PyTorch). GFLOP/s = useful FLOPs / step time (what
  im2col would do; Winograd does fewer); "peak" is the fraction of the 2-thread
  GEMM peak.
* Peak RSS: each net runs in its own process; its VmHWM after our training steps
  and evaluation, before PyTorch is imported.
* Start-up: import to the end of the first training step of LeNet in a fresh
  process, cold (empty Numba cache directory) and warm (cache filled).
"""

import sys

if "--minilottery-first" in sys.argv:           # a child process: the import order asked for
    import minilottery  # noqa: F401
else:
    import numpy  # noqa: F401  (as a notebook does)


import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
NETS = ("lenet", "conv2", "conv4", "conv6")
EVAL_BATCH = {"lenet": 500, "conv2": 100, "conv4": 100, "conv6": 100}
EVAL_IMAGES = 15_000
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


def ours_step(net, threads):
    """(model, step_seconds(reps)): a masked model and the time of one step inside train()."""
    import numpy as np
    from types import SimpleNamespace

    from minilottery import models, optim
    from minilottery.train import train

    model = models.BUILDERS[net](seed=0)
    rng = np.random.default_rng(0)
    # a realistic mask: 50% of every weight tensor kept
    model.set_masks({name: (rng.random(m.shape) < 0.5).astype(np.float32)
                     for name, m in model.named_masks().items()})
    opt = optim.Adam(model, 1e-3)
    one = rng.standard_normal(input_shape(net, 1), dtype=np.float32)
    data = SimpleNamespace(x_train=rng.standard_normal(input_shape(net, 10 * BATCH), dtype=np.float32),
                           y_train=rng.integers(0, 10, 10 * BATCH),
                           x_val=one, y_val=np.zeros(1, np.int64), x_test=one, y_test=np.zeros(1, np.int64))

    def run(iterations):
        return _time(lambda: train(model, opt, data, iterations=iterations, batch_size=BATCH, seed=0,
                                   eval_every=10 ** 9, eval_batch_size=1, threads=threads))

    def step_seconds(reps):
        return (run(2 + reps) - run(2)) / reps
    run(2)                                      # warm-up: compiled kernels, buffers
    return model, step_seconds


def _torch_model(net):
    import torch
    from torch import nn

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
    return model


def torch_step(net):
    import torch
    from torch import nn

    torch.set_num_threads(2)
    model = _torch_model(net)
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


def torch_eval(net, xs, ys, chunk):
    import torch
    torch.set_num_threads(2)
    model = _torch_model(net).eval()
    x, y = torch.from_numpy(xs), torch.from_numpy(ys)

    def run():
        loss, correct = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(x), chunk):
                logits = model(x[start:start + chunk])
                loss += float(torch.nn.functional.cross_entropy(logits, y[start:start + chunk],
                                                                reduction="sum"))
                correct += int((logits.argmax(1) == y[start:start + chunk]).sum())
        return loss, correct
    run()
    return lambda: _time(run)


def measure_net(net, reps):
    """Everything about one net, in this process; returns a dict."""
    import numpy as np
    from minilottery import models
    from minilottery.train import evaluate

    model, ours_2 = ours_step(net, threads=2)
    _, ours_1 = ours_step(net, threads=1)
    flops = useful_flops(model, BATCH)
    result = {"net": net, "flops": flops, "ours_1": ours_1(max(2, reps // 2))}
    rng = np.random.default_rng(1)
    xs = rng.standard_normal(input_shape(net, EVAL_IMAGES), dtype=np.float32)
    ys = rng.integers(0, 10, EVAL_IMAGES)
    eval_model = models.BUILDERS[net](seed=0)
    evaluate(eval_model, xs[:200], ys[:200], EVAL_BATCH[net], threads=2)

    def ours_eval():
        return _time(lambda: evaluate(eval_model, xs, ys, EVAL_BATCH[net], threads=2))
    result["eval_ours"] = [ours_eval()]
    result["peak_rss_mb"] = peak_rss_mb()
    # PyTorch after the RSS reading: its import alone would add hundreds of MB to it
    try:
        other, other_eval = torch_step(net), torch_eval(net, xs, ys, EVAL_BATCH[net])
    except ImportError:
        other = other_eval = None
    # Ours and PyTorch alternate, ROUNDS times: this VM's speed drifts by 10-30% over
    # minutes, and a drift then hits both sides of a round alike.
    result["ours_2"], result["torch"], result["eval_torch"] = [], [], []
    for round_ in range(ROUNDS):
        result["ours_2"].append(ours_2(reps))
        if other is not None:
            result["torch"].append(median_step(other, reps))
            if round_ < 2:
                result["eval_torch"].append(other_eval())
                result["eval_ours"].append(ours_eval())
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
                        help="timed steps per measurement (default: 200 LeNet, 10 conv nets)")
    parser.add_argument("--with-run", action="store_true",
                        help="also time the default `python -m minilottery.run lenet` (minutes)")
    parser.add_argument("--both-orders", action="store_true",
                        help="also measure each net in a process that imports minilottery first")
    parser.add_argument("--one", choices=NETS, help=argparse.SUPPRESS)   # child process mode
    parser.add_argument("--minilottery-first", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        reps = args.reps or (200 if args.one == "lenet" else 10)
        print(json.dumps(measure_net(args.one, reps)))
        return

    import numpy
    peak2, peak1 = gemm_peak(2), gemm_peak(1)
    print(f"numpy {numpy.__version__}; float32 GEMM peak (2048^3): {peak2:.0f} GFLOP/s with "
          f"2 BLAS threads, {peak1:.0f} with 1")

    def child(net, minilottery_first=False):
        cmd = [sys.executable, __file__, "--one", net] + (["--reps", str(args.reps)] if args.reps else [])
        cmd += ["--minilottery-first"] if minilottery_first else []
        out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout
        return json.loads(out.strip().splitlines()[-1])

    rows = [child(net) for net in args.nets]
    head = (f"{'net':6} {'ours it/s':>16} {'torch it/s':>16} {'ratio':>16} {'1-thr it/s':>10} "
            f"{'GFLOP/s':>8} {'of peak':>7} {'eval ours':>9} {'eval torch':>10} {'eval ratio':>10} "
            f"{'peak RSS':>9}")
    print(head)
    print("-" * len(head))

    def spread(values):       # "median (min-max)", 3 significant digits
        return f"{median(values):.3g} ({min(values):.3g}-{max(values):.3g})"

    for r in rows:
        ours = [1 / t for t in r["ours_2"]]
        torch_rates = [1 / t for t in r["torch"]]
        ratios = [o / t for o, t in zip(ours, torch_rates)]     # paired, round by round
        eval_ratios = [t / o for o, t in zip(r["eval_ours"][1:], r["eval_torch"])]
        gflops = r["flops"] * median(ours) / 1e9
        torch_s = f"{spread(torch_rates):>16}" if torch_rates else f"{'-':>16}"
        ratio_s = f"{spread(ratios):>16}" if ratios else f"{'-':>16}"
        eval_torch = f"{median(r['eval_torch']):9.2f}s" if r["eval_torch"] else f"{'-':>10}"
        eval_ratio = f"{spread(eval_ratios):>10}" if eval_ratios else f"{'-':>10}"
        print(f"{r['net']:6} {spread(ours):>16} {torch_s} {ratio_s} {1 / r['ours_1']:10.1f} "
              f"{gflops:8.1f} {gflops / peak2:7.0%} {median(r['eval_ours']):8.2f}s {eval_torch} "
              f"{eval_ratio} {r['peak_rss_mb']:7.0f}MB")
    if any(r["torch"] for r in rows):
        print("torch: " + ", ".join(f"{r['net']} {r['flops'] / median(r['torch']) / 1e9:.1f} GFLOP/s"
                                    for r in rows if r["torch"]))
    if args.both_orders:
        print("import order (ours, it/s inside train(), 2 threads): numpy first / minilottery first")
        for r in rows:
            first = child(r["net"], minilottery_first=True)
            print(f"  {r['net']:6} {median(1 / t for t in r['ours_2']):.3g} / "
                  f"{median(1 / t for t in first['ours_2']):.3g}")

    with tempfile.TemporaryDirectory() as cache:
        cold, cold_wall = startup_seconds(cache)
        warm, warm_wall = startup_seconds(cache)
    print(f"start-up to the end of the first LeNet step: cold (compiling) {cold:.1f} s "
          f"({cold_wall:.1f} s with the interpreter), warm (cached) {warm:.1f} s ({warm_wall:.1f} s)")
    if args.with_run:
        print(f"python -m minilottery.run lenet (default preset): {run_wall_seconds():.0f} s wall")


if __name__ == "__main__":
    main()
