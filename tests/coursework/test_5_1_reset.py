"""Exercise 5.1: prepare_model (minilottery/lottery.py), the reset of a winning
ticket: a level's ticket (and its random-pruning control) starts training from
mask ⊙ theta_0, or from mask ⊙ theta_k when rewinding to iteration k.

We lay out a small run directory by hand: theta_0 and theta_k are random arrays
(not any network's init), and the masks are random, so the only way to pass is
to read them from the run directory and apply the mask."""

import numpy as np
import pytest

from minilottery.config import Config
from minilottery.rundir import Piece, RunDir, save_arrays

pytestmark = pytest.mark.exercise_5_1

NAMES = {"fc1.W": (784, 300), "fc1.b": (300,), "fc2.W": (300, 100), "fc2.b": (100,),
         "out.W": (100, 10), "out.b": (10,)}


def make_config(rewind_iteration=0):
    return Config(net="lenet", iterations=10, batch_size=60, lr=1e-3, fc_rate=0.2,
                  conv_rate=0.0, output_rate=0.1, rounds=2, rewind_iteration=rewind_iteration)


def random_arrays(rng, scale=1.0):
    return {name: (scale * rng.standard_normal(shape)).astype(np.float32)
            for name, shape in NAMES.items()}


def random_mask(rng):
    return {name: (rng.random(shape) < 0.5).astype(np.float32)
            for name, shape in NAMES.items() if name.endswith(".W")}


@pytest.fixture
def run(tmp_path):
    """A run directory with theta_0, a rewind point theta_k, level 1's mask and the
    random-pruning control's own mask."""
    rng = np.random.default_rng(0)
    run = RunDir(tmp_path / "run")
    arrays = {"theta0": random_arrays(rng), "rewind": random_arrays(rng, scale=3.0),
              "mask": random_mask(rng), "random_mask": random_mask(rng)}
    save_arrays(run.theta0(0), arrays["theta0"])
    save_arrays(run.rewind(0), arrays["rewind"])
    save_arrays(run.mask(0, 0), {name: np.ones(NAMES[name], np.float32) for name in arrays["mask"]})
    save_arrays(run.mask(0, 1), arrays["mask"])
    save_arrays(run.piece(Piece(0, 1, "random", 0)) / "mask.npz", arrays["random_mask"])
    return run, arrays


def check_start(prepare_model, run, config, piece, theta, theta_name, mask):
    result = prepare_model(run, config, piece)
    assert isinstance(result, tuple) and len(result) == 2, \
        f"prepare_model should return (model, mask), got {type(result).__name__}"
    model, returned_mask = result
    where = f"{piece.branch} at level {piece.level}"
    if config.rewind_iteration:
        where += f", rewind_iteration {config.rewind_iteration}"
    params, masks = model.named_params(), model.named_masks()
    for name in NAMES:
        got = params[name]
        if name in mask:
            assert np.array_equal(masks[name], mask[name]), \
                f"{where}: the model's mask of {name} is not the level's mask"
            assert np.array_equal(returned_mask[name], mask[name]), \
                f"{where}: the returned mask of {name} is not the level's mask"
            expected, what = np.where(mask[name] != 0, theta[name], 0), f"mask ⊙ {theta_name}"
        else:
            expected, what = theta[name], f"{theta_name} (biases are not masked)"
        wrong = np.flatnonzero(got != expected)
        assert wrong.size == 0, (f"{where}: {name} should start as {what}, but differs at "
                                 f"{wrong.size} of {got.size} entries (first at flat index "
                                 f"{wrong[0]}: expected {expected.ravel()[wrong[0]]:.4g}, "
                                 f"got {got.ravel()[wrong[0]]:.4g})")


def test_ticket_starts_from_mask_times_theta0(student, run):
    run, arrays = run
    check_start(student("5.1").prepare_model, run, make_config(), Piece(0, 1, "ticket"),
                arrays["theta0"], "theta_0", arrays["mask"])


def test_random_pruning_control_uses_its_own_mask_and_theta0(student, run):
    run, arrays = run
    check_start(student("5.1").prepare_model, run, make_config(), Piece(0, 1, "random", 0),
                arrays["theta0"], "theta_0", arrays["random_mask"])


def test_rewinding_starts_from_theta_k(student, run):
    run, arrays = run
    check_start(student("5.1").prepare_model, run, make_config(rewind_iteration=5),
                Piece(0, 1, "ticket"), arrays["rewind"], "theta_k (rewind.npz)", arrays["mask"])


def test_the_dense_level_starts_from_theta0_even_when_rewinding(student, run):
    run, arrays = run
    ones = {name: np.ones(NAMES[name], np.float32) for name in arrays["mask"]}
    check_start(student("5.1").prepare_model, run, make_config(rewind_iteration=5),
                Piece(0, 0, "ticket"), arrays["theta0"], "theta_0", ones)
