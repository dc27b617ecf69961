"""A run directory that heals: damaged files are set aside and redone, the summary is
rebuilt from the trainings, and a file nobody can redo is named in one line."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from minilottery import lottery
from minilottery.config import make_config
from minilottery.rundir import Piece, RunDir, RunFileError, load_arrays, save_arrays

TICKET1 = Piece(0, 1, "ticket")


def tiny_config(**overrides):
    settings = dict(iterations=60, eval_every=20, rounds=2, trials=1, reinits=1,
                    random_prunes=1, fc_rate=0.5, output_rate=0.25)
    return make_config("lenet", **{**settings, **overrides})


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory, small_mnist):
    """An uninterrupted, undamaged run: what every healed run must end up as."""
    root = tmp_path_factory.mktemp("whole") / "run"
    lottery.run_experiment(tiny_config(), root, data=small_mnist)
    return root


def copy_of(whole_run, tmp_path):
    shutil.copytree(whole_run, tmp_path / "run")
    return RunDir(tmp_path / "run")


def assert_same_run(healed, whole):
    """Same summary, bit for bit, and the same arrays in every .npz file."""
    assert healed.summary.read_bytes() == RunDir(whole).summary.read_bytes()
    for path in sorted(Path(whole).rglob("*.npz")):
        twin = healed.root / path.relative_to(whole)
        expected, got = load_arrays(path), load_arrays(twin)
        assert got.keys() == expected.keys(), twin
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=f"{twin} {name}")


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def garble(path):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(16)  # 16 zero bytes where the content was
    if bytes(data) == path.read_bytes():
        data[middle:middle + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))


# Every kind of file a resumed run reads, with the training its damage redoes.
RUN_FILES = {
    "theta0": lambda run: run.theta0(0),
    "mask": lambda run: run.mask(0, 1),
    "random mask": lambda run: run.piece(Piece(0, 2, "random", 0)) / "mask.npz",
    "final": lambda run: run.piece(TICKET1) / "final.npz",
    "metrics": lambda run: run.piece(TICKET1) / "metrics.json",
    "history": lambda run: run.piece(Piece(0, 2, "reinit", 0)) / "history.csv",
}


@pytest.mark.parametrize("damage", [truncate, garble], ids=["truncated", "garbled"])
@pytest.mark.parametrize("kind", RUN_FILES)
def test_a_damaged_file_is_set_aside_and_its_work_redone(whole_run, tmp_path, small_mnist,
                                                         kind, damage):
    run = copy_of(whole_run, tmp_path)
    damaged = RUN_FILES[kind](run)
    damage(damaged)
    notices = []
    rows = lottery.run_experiment(tiny_config(), run.root, data=small_mnist,
                                  notice=notices.append)
    assert len(notices) >= 1 and str(damaged) in notices[0] and ".corrupt" in notices[0]
    assert damaged.with_name(damaged.name + ".corrupt").exists()
    assert_same_run(run, whole_run)
    assert len(rows) == 1 + 2 * 3


def test_a_file_missing_from_finished_work_is_redone(whole_run, tmp_path, small_mnist):
    run = copy_of(whole_run, tmp_path)
    (run.piece(TICKET1) / "final.npz").unlink()
    notices = []
    lottery.run_experiment(tiny_config(), run.root, data=small_mnist, notice=notices.append)
    assert any("final.npz: missing" in line for line in notices), notices
    assert_same_run(run, whole_run)


def test_a_damaged_checkpoint_restarts_its_training_from_zero(whole_run, tmp_path, small_mnist):
    run = copy_of(whole_run, tmp_path)
    folder = run.piece(TICKET1)
    (folder / "metrics.json").unlink()      # the training is unfinished ...
    (folder / "checkpoint.npz").write_bytes(b"PK\x03\x04 not really a zip")  # ... and its checkpoint bad
    notices = []
    lottery.run_experiment(tiny_config(), run.root, data=small_mnist, notice=notices.append)
    assert len(notices) == 1 and "checkpoint.npz" in notices[0]
    assert "restarts from iteration 0" in notices[0]
    assert not (folder / "checkpoint.npz").exists()
    assert (folder / "checkpoint.npz.corrupt").exists()
    assert_same_run(run, whole_run)


def test_a_checkpoint_of_another_schedule_is_not_continued(whole_run, tmp_path, small_mnist):
    """A readable checkpoint from beyond this training's budget is set aside, not trusted."""
    run = copy_of(whole_run, tmp_path)
    folder = run.piece(TICKET1)
    (folder / "metrics.json").unlink()
    model = lottery.build_model(tiny_config(), seed=0)
    optimizer = lottery.make_optimizer(tiny_config(), model)
    from minilottery.train import History, save_checkpoint
    history = History()
    for iteration in range(20, 101, 20):
        history.append(iteration=iteration, train_loss=1.0, train_acc=0.5, val_loss=1.0,
                       val_acc=0.5, test_loss=1.0, test_acc=0.5)
    save_checkpoint(folder / "checkpoint.npz", model, optimizer, 100, history, None)
    notices = []
    lottery.run_experiment(tiny_config(), run.root, data=small_mnist, notice=notices.append)
    assert len(notices) == 1 and "outside the budget of 60" in notices[0]
    assert_same_run(run, whole_run)


@pytest.mark.parametrize("state", ["stale", "missing", "garbled"])
def test_the_summary_is_rebuilt_from_the_trainings(whole_run, tmp_path, small_mnist, state):
    """A kill between the last metrics.json and the summary's write leaves a stale summary."""
    run = copy_of(whole_run, tmp_path)
    lines = run.summary.read_text().splitlines(keepends=True)
    if state == "stale":
        run.summary.write_text("".join(lines[:-2]))
    elif state == "missing":
        run.summary.unlink()
    else:
        run.summary.write_text("level,trial\n0,zero\n\x00\x00")
    assert lottery.pieces_to_do(tiny_config(), run.root) == []
    rows = lottery.run_experiment(tiny_config(), run.root, data=None)  # nothing to train: no data
    assert len(rows) == 1 + 2 * 3
    assert_same_run(run, whole_run)


def test_a_damaged_config_is_named_in_one_line(whole_run, tmp_path):
    run = copy_of(whole_run, tmp_path)
    truncate(run.config)
    with pytest.raises(ValueError) as raised:
        lottery.run_experiment(tiny_config(), run.root, data=None)
    message = str(raised.value)
    assert str(run.config) in message and "\n" not in message


def test_partial_writes_of_a_killed_run_are_swept(whole_run, tmp_path):
    run = copy_of(whole_run, tmp_path)
    partial = run.figures / ".fig3_test_accuracy.png.abc123.tmp"
    partial.parent.mkdir(exist_ok=True)
    partial.write_bytes(b"")
    lottery.run_experiment(tiny_config(), run.root, data=None)
    assert not partial.exists()


def test_a_new_run_that_fails_before_it_holds_a_run_leaves_no_directory(tmp_path, small_mnist,
                                                                        monkeypatch):
    def fail(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(lottery, "write_inputs", fail)
    with pytest.raises(OSError):
        lottery.run_experiment(tiny_config(), tmp_path / "new", data=small_mnist)
    assert not (tmp_path / "new").exists()


def test_too_little_free_space_is_found_before_training(tmp_path, small_mnist, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=1000))
    trained = []
    monkeypatch.setattr(lottery, "run_training", lambda *args, **kw: trained.append(args))
    with pytest.raises(OSError, match=r"cannot write .*new: the run needs about \d+ MB"):
        lottery.run_experiment(tiny_config(), tmp_path / "new", data=small_mnist)
    assert trained == [] and not (tmp_path / "new").exists()


def test_a_failed_write_names_its_file(tmp_path, small_mnist, monkeypatch):
    from minilottery import rundir
    real_replace = rundir.os.replace

    def disk_full_for_metrics(source, target):
        if Path(target).name == "metrics.json":
            raise OSError(28, "No space left on device")
        real_replace(source, target)
    monkeypatch.setattr(rundir.os, "replace", disk_full_for_metrics)
    with pytest.raises(rundir.RunWriteError) as raised:
        lottery.run_experiment(tiny_config(rounds=0), tmp_path / "run", data=small_mnist)
    assert str(raised.value) == (f"cannot write {tmp_path / 'run/trial0/level00/ticket/metrics.json'}"
                                 f": No space left on device")
    assert not list((tmp_path / "run").rglob("*.tmp"))


def test_load_arrays_names_what_is_wrong(tmp_path):
    path = tmp_path / "w.npz"
    save_arrays(path, {"fc1.W": np.ones((2, 3), np.float32)})
    assert load_arrays(path, {"fc1.W": (2, 3)}, binary=True)["fc1.W"].shape == (2, 3)
    with pytest.raises(RunFileError, match=r"missing \['out.W'\], unexpected \[\]"):
        load_arrays(path, {"fc1.W": (2, 3), "out.W": (3, 1)})
    with pytest.raises(RunFileError, match=r"fc1.W is float32 \(2, 3\), expected float32 \(3, 2\)"):
        load_arrays(path, {"fc1.W": (3, 2)})
    save_arrays(path, {"fc1.W": np.full((2, 3), 0.5, np.float32)})
    with pytest.raises(RunFileError, match="values other than 0 and 1"):
        load_arrays(path, binary=True)
    truncate(path)
    with pytest.raises(RunFileError, match=f"{path}: not a readable .npz archive"):
        load_arrays(path)
