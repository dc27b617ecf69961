"""Exercise 7.1: start_weights (minilottery/lottery.py), the weights a level's ticket
or random-pruning control resets its survivors to: theta_0, or theta_k when
rewinding to iteration k (the dense level 0 always starts from theta_0). Without
rewinding, start_weights returns theta_0 before the exercise's code is reached.

We lay out a run directory by hand with a random theta_0 and theta_k per trial, so
the only way to pass is to read the right file of the right trial."""

import numpy as np
import pytest

from minilottery.config import Config
from minilottery.rundir import Piece, RunDir, save_arrays

pytestmark = pytest.mark.exercise_7_1

SHAPES = {"fc1.W": (784, 300), "fc1.b": (300,), "fc2.W": (300, 100), "fc2.b": (100,),
          "out.W": (100, 10), "out.b": (10,)}


def make_config(rewind_iteration):
    return Config(net="lenet", iterations=10, batch_size=60, lr=1e-3, fc_rate=0.2, conv_rate=0.0,
                  output_rate=0.1, rounds=2, trials=2, rewind_iteration=rewind_iteration)


@pytest.fixture
def run(tmp_path):
    rng = np.random.default_rng(0)
    run = RunDir(tmp_path / "run")
    thetas = {}
    for trial in (0, 1):
        for kind, path in (("theta_0", run.theta0(trial)), ("theta_k", run.rewind(trial))):
            thetas[trial, kind] = {name: rng.standard_normal(shape).astype(np.float32)
                                   for name, shape in SHAPES.items()}
            save_arrays(path, thetas[trial, kind])
    return run, thetas


def check(start_weights, run, thetas, rewind_iteration, piece, expected):
    got = start_weights(run, make_config(rewind_iteration), piece)
    where = f"{piece.branch} of trial {piece.trial} at level {piece.level}, rewind_iteration {rewind_iteration}"
    assert isinstance(got, dict) and set(got) == set(SHAPES), \
        f"{where}: expected a dict of the arrays {sorted(SHAPES)}, got {sorted(got) if isinstance(got, dict) else type(got).__name__}"
    for name in SHAPES:
        if not np.array_equal(got[name], thetas[piece.trial, expected][name]):
            others = [kind for kind in ("theta_0", "theta_k")
                      for trial in (0, 1) if np.array_equal(got[name], thetas[trial, kind][name])]
            seen = f"{others[0]} of a trial" if others else "neither theta_0 nor theta_k"
            raise AssertionError(f"{where}: {name} should be {expected} of trial {piece.trial}, got {seen}")


def test_rewinding_starts_pruned_levels_from_theta_k(student, run):
    run, thetas = run
    for piece in (Piece(0, 1, "ticket"), Piece(1, 2, "ticket"), Piece(1, 1, "random", 0)):
        check(student("7.1").start_weights, run, thetas, 5, piece, "theta_k")


def test_the_dense_level_starts_from_theta0_even_when_rewinding(student, run):
    run, thetas = run
    for trial in (0, 1):
        check(student("7.1").start_weights, run, thetas, 5, Piece(trial, 0, "ticket"), "theta_0")


def test_any_rewind_iteration_above_zero_rewinds_each_trial_to_its_own_theta_k(student, run):
    run, thetas = run
    for k in (1, 10):
        for trial in (0, 1):
            check(student("7.1").start_weights, run, thetas, k, Piece(trial, 3, "ticket"), "theta_k")
