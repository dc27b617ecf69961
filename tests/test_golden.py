"""Refactors change no number: short seeded lotteries of LeNet, Conv-2 and Conv-6 with
dropout write the summary.csv bytes stored in tests/golden/, and their θ₀ hash to the
stored digests. The stored files were written by the code before the nested layer
protocol; regenerate them only for a change that is meant to move the numbers:

    python -c "import tests.test_golden as g; g.write_golden()"
"""

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from minilottery.config import make_config
from minilottery.data import load_mnist
from minilottery.lottery import run_experiment
from minilottery.rundir import RunDir, load_arrays

GOLDEN = Path(__file__).resolve().parent / "golden"


def _small_mnist():
    mnist = load_mnist()
    return SimpleNamespace(x_train=mnist.x_train[:600], y_train=mnist.y_train[:600],
                           x_val=mnist.x_val[:200], y_val=mnist.y_val[:200],
                           x_test=mnist.x_test[:200], y_test=mnist.y_test[:200])


def _synthetic_cifar(n=120):
    """Images and labels with structure a short training can pick up: the label shifts
    the mean of one channel."""
    rng = np.random.default_rng(7)
    parts = {}
    for split, count in (("train", n), ("val", n // 2), ("test", n // 2)):
        y = rng.integers(0, 10, count).astype(np.int64)
        x = rng.standard_normal((count, 3, 32, 32)).astype(np.float32)
        x[:, 0] += (y[:, None, None] - 4.5).astype(np.float32) / 3
        parts[f"x_{split}"], parts[f"y_{split}"] = x, y
    return SimpleNamespace(**parts)


CASES = {
    "lenet": lambda: (make_config("lenet", iterations=40, eval_every=10, rounds=2, trials=1,
                                  reinits=1, random_prunes=1, fc_rate=0.5, output_rate=0.25),
                      _small_mnist()),
    "conv2": lambda: (make_config("conv2", iterations=6, eval_every=2, eval_batch_size=30,
                                  batch_size=20, rounds=1, trials=1, reinits=1, random_prunes=1),
                      _synthetic_cifar()),
    "conv6-dropout": lambda: (make_config("conv6-dropout", iterations=4, eval_every=2,
                                          eval_batch_size=30, batch_size=20, rounds=1, trials=1,
                                          reinits=1, random_prunes=0),
                              _synthetic_cifar()),
}


def _run(name, root):
    config, data = CASES[name]()
    run_experiment(config, root, data=data, jobs=1)
    run = RunDir(root)
    theta0 = load_arrays(run.theta0(0))
    digest = hashlib.sha256()
    for key in sorted(theta0):
        digest.update(key.encode() + np.ascontiguousarray(theta0[key]).tobytes())
    return run.summary.read_bytes(), digest.hexdigest()


def write_golden():
    """Rewrite tests/golden/ from the current code (see the module docstring)."""
    import tempfile
    GOLDEN.mkdir(exist_ok=True)
    digests = {}
    for name in CASES:
        with tempfile.TemporaryDirectory() as root:
            summary, digests[name] = _run(name, Path(root) / "run")
        (GOLDEN / f"{name}-summary.csv").write_bytes(summary)
    (GOLDEN / "theta0-sha256.json").write_text(json.dumps(digests, indent=1) + "\n")


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_short_seeded_lottery_writes_the_stored_summary(name, tmp_path):
    summary, digest = _run(name, tmp_path / "run")
    assert digest == json.loads((GOLDEN / "theta0-sha256.json").read_text())[name], \
        f"{name}: θ₀ is not the one the stored run drew"
    assert summary == (GOLDEN / f"{name}-summary.csv").read_bytes()
