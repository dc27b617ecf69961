"""The §4 nets' training step against PyTorch: ResNet-20 at batch 128, VGG-19 at batch 64.

    python benchmarks/bench_section4.py                    # both nets
    python benchmarks/bench_section4.py --nets resnet20 --reps 5
    python benchmarks/bench_section4.py --profile resnet20 # where a step's time goes, by layer type

The step is the one the §4 lottery runs, *inside train()* with 2 threads: forward
with BatchNorm in training mode, softmax cross-entropy, backward (the first layer's
dx skipped), masked SGD with momentum 0.9 and weight decay 1e-4, a 50% mask on every
weight tensor, the minibatch padded, cropped and flipped. The step time is (time of
train() for 2 + reps iterations - time for 2 iterations) / reps. PyTorch 2.13 CPU (if
importable) runs the same architecture with 2 threads: forward, cross-entropy,
backward, grad *= mask, torch.optim.SGD(momentum 0.9, weight_decay 1e-4), weight *=
mask. Ours and PyTorch alternate for ROUNDS rounds; "ratio" is our rate over
PyTorch's within each round (paired), median and range. NumPy is imported before
minilottery, as a notebook does.
"""

import numpy  # noqa: F401  (first, as a notebook does)

import argparse
import collections
import time
from statistics import median
from types import SimpleNamespace

BATCH = {"resnet20": 128, "vgg19": 64}
ROUNDS = 3


def _time(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ours_step(net):
    import numpy as np

    from minilottery import models, optim
    from minilottery.train import train

    model = models.BUILDERS[net](seed=0)
    rng = np.random.default_rng(0)
    model.set_masks({name: (rng.random(m.shape) < 0.5).astype(np.float32)
                     for name, m in model.named_masks().items()})
    opt = optim.SGD(model, 0.01, momentum=0.9, weight_decay=1e-4)
    batch = BATCH[net]
    one = rng.standard_normal((1, 3, 32, 32), dtype=np.float32)
    data = SimpleNamespace(x_train=rng.standard_normal((4 * batch, 3, 32, 32), dtype=np.float32),
                           y_train=rng.integers(0, 10, 4 * batch), x_val=one,
                           y_val=np.zeros(1, np.int64), x_test=one, y_test=np.zeros(1, np.int64))

    def run(iterations):
        return _time(lambda: train(model, opt, data, iterations=iterations, batch_size=batch,
                                   seed=0, eval_every=10 ** 9, eval_batch_size=1, augment=True,
                                   threads=2))
    run(2)
    return model, lambda reps: (run(2 + reps) - run(2)) / reps


def torch_model(net):
    import torch
    from torch import nn

    torch.manual_seed(0)

    def conv_bn(c_in, c_out, stride=1, k=3):
        return [nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
                nn.BatchNorm2d(c_out)]

    if net == "vgg19":
        from minilottery.models import VGG19_WIDTHS
        layers, c = [], 3
        for width in VGG19_WIDTHS:
            if width == "pool":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += conv_bn(c, width) + [nn.ReLU()]
                c = width
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 10))

    class Block(nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.body = nn.Sequential(*conv_bn(c_in, c_out, stride), nn.ReLU(),
                                      *conv_bn(c_out, c_out))
            self.shortcut = (nn.Sequential(*conv_bn(c_in, c_out, stride, k=1))
                             if stride != 1 or c_in != c_out else nn.Identity())

        def forward(self, x):
            return torch.relu(self.body(x) + self.shortcut(x))

    layers, c = conv_bn(3, 16) + [nn.ReLU()], 16
    for s, width in enumerate((16, 32, 64)):
        for b in range(3):
            layers.append(Block(c, width, 2 if (b == 0 and s > 0) else 1))
            c = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def torch_step(net):
    import torch
    from torch import nn

    torch.set_num_threads(2)
    model = torch_model(net).train()
    weights = [p for p in model.parameters() if p.dim() > 1]
    masks = [(torch.rand_like(w) < 0.5).float() for w in weights]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(BATCH[net], 3, 32, 32)
    y = torch.randint(0, 10, (BATCH[net],))
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=False)
        loss_fn(model(x), y).backward()
        with torch.no_grad():
            for w, m in zip(weights, masks):
                w.grad.mul_(m)
        opt.step()
        with torch.no_grad():
            for w, m in zip(weights, masks):
                w.mul_(m)
    for _ in range(2):
        step()
    return lambda reps: median(_time(step) for _ in range(reps))


def profile(net, reps=3):
    """Seconds per step in each layer type's forward and backward (2 threads)."""
    import numpy as np

    from minilottery import models
    from minilottery.losses import softmax_cross_entropy
    from minilottery.protocol import walk
    from minilottery.threads import use_threads

    model = models.BUILDERS[net](seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH[net], 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, BATCH[net])
    spent = collections.Counter()
    for path, layer in walk(model):
        if hasattr(layer, "children") and list(layer.children()):
            continue
        for method in ("forward", "backward"):
            original = getattr(layer, method)

            def timed(*args, _original=original, _key=(type(layer).__name__, method, path), **kw):
                start = time.perf_counter()
                result = _original(*args, **kw)
                spent[_key] += time.perf_counter() - start
                return result
            setattr(layer, method, timed)
    with use_threads(2):
        for rep in range(reps + 1):
            if rep == 1:
                spent.clear()
            start = time.perf_counter()
            logits = model.forward(x, training=True)
            _, dlogits = softmax_cross_entropy(logits, y)
            model.backward(dlogits, input_grad=False)
            total = time.perf_counter() - start
    by_type = collections.Counter()
    for (kind, method, _), seconds in spent.items():
        by_type[f"{kind}.{method}"] += seconds / reps
    print(f"{net}, batch {BATCH[net]}: forward + backward {total:.3f} s (last step)")
    for key, seconds in by_type.most_common():
        print(f"  {key:24} {seconds:.3f} s")
    layers = collections.Counter()
    for (_, _, path), seconds in spent.items():
        layers[path] += seconds / reps
    print("  slowest layers (forward + backward):")
    for path, seconds in layers.most_common(10):
        print(f"    {path:32} {seconds:.3f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nets", nargs="+", choices=list(BATCH), default=list(BATCH))
    parser.add_argument("--reps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--profile", choices=list(BATCH), help="time each layer type instead")
    args = parser.parse_args()
    if args.profile:
        profile(args.profile)
        return
    print(f"{'net':9} {'batch':>5} {'ours it/s':>18} {'torch it/s':>18} {'ratio':>18}")
    for net in args.nets:
        _, ours = ours_step(net)
        try:
            other = torch_step(net)
        except ImportError:
            other = None
        rates, torch_rates = [], []
        for _ in range(ROUNDS):
            rates.append(1 / ours(args.reps))
            if other is not None:
                torch_rates.append(1 / other(args.reps))

        def spread(values):
            return f"{median(values):.3g} ({min(values):.3g}-{max(values):.3g})" if values else "-"
        ratios = [o / t for o, t in zip(rates, torch_rates)]
        print(f"{net:9} {BATCH[net]:5} {spread(rates):>18} {spread(torch_rates):>18} "
              f"{spread(ratios):>18}", flush=True)


if __name__ == "__main__":
    main()
