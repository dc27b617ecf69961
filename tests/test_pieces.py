"""A training as a task: it carries its inputs, returns its results, and gives the same
numbers wherever it runs, whether or not its worker sees the run directory."""

import os
import pickle

import numpy as np
import pytest

from minilottery import lottery, pieces
from minilottery.config import make_config
from minilottery.parallel import InProcessExecutor
from minilottery.rundir import Piece, RunDir, load_arrays


class FarAway(InProcessExecutor):
    """Runs here, but as a cluster would: tasks bring their inputs, the data is a DataSpec."""

    shares_files = False

    def __init__(self):
        self.seen = []

    def runner(self, work, shared, report, tasks=None, shared_arrays=None):
        config, data = shared
        self.seen.append(type(data))
        # What a remote worker gets: a pickled copy, no path into the run directory.
        return super().runner(work, pickle.loads(pickle.dumps(shared)), report, tasks)


def tiny_config(**overrides):
    settings = dict(iterations=60, eval_every=20, rounds=2, trials=1, reinits=1,
                    random_prunes=1, fc_rate=0.5, output_rate=0.25)
    return make_config("lenet", **{**settings, **overrides})


def test_a_worker_without_the_run_directory_gives_the_same_run(tmp_path, monkeypatch):
    monkeypatch.setenv(pieces.CHECKPOINTS_ENV, str(tmp_path / "worker-checkpoints"))
    config = tiny_config(rewind_iteration=20)
    here = lottery.run_experiment(config, tmp_path / "here", executor=InProcessExecutor())
    far = FarAway()
    away = lottery.run_experiment(config, tmp_path / "away", executor=far)
    assert far.seen == [pieces.DataSpec]  # the client loaded no data: the worker did
    assert away == here
    for name in ("summary.csv", "data.json"):
        assert (tmp_path / "away" / name).read_bytes() == (tmp_path / "here" / name).read_bytes()
    for path in sorted((tmp_path / "here").rglob("*.npz")):
        twin = tmp_path / "away" / path.relative_to(tmp_path / "here")
        for key, value in load_arrays(path).items():
            np.testing.assert_array_equal(load_arrays(twin)[key], value, err_msg=str(twin))


def test_a_task_is_self_contained(tmp_path, small_mnist):
    """Built from the run directory, then trained with the directory gone."""
    config = tiny_config(rounds=0)
    run = RunDir(tmp_path / "run")
    with lottery.open_run(config, run.root) as opened:
        training = lottery.make_training(opened, config, Piece(0, 0, "ticket"), shares_files=False)
    assert training.checkpoint is None and repr(training) == repr(Piece(0, 0, "ticket"))
    expected = lottery.run_experiment(config, tmp_path / "whole", data=small_mnist)
    os.rename(run.root, tmp_path / "moved")
    reports = []
    result = pieces.run_training((config, small_mnist), pickle.loads(pickle.dumps(training)),
                                 lambda *args: reports.append(args))
    assert not run.root.exists()
    assert {key: result.metrics[key] for key in expected[0]} == expected[0]
    assert [iteration for _, iteration, _ in reports] == [20, 40, 60]
    trained = load_arrays(RunDir(tmp_path / "whole").piece(Piece(0, 0, "ticket")) / "final.npz")
    for key, value in trained.items():
        np.testing.assert_array_equal(result.final[key], value)


def test_a_worker_keeps_its_checkpoint_in_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(pieces.CHECKPOINTS_ENV, str(tmp_path / "local"))
    config = tiny_config()
    path = pieces.local_checkpoint(config, Piece(0, 2, "random", 0))
    assert path.relative_to(tmp_path / "local" / "minilottery-checkpoints").parts[1:] == (
        "trial0", "level02", "random0", "checkpoint.npz")
    assert pieces.local_checkpoint(tiny_config(seed=1), Piece(0, 2, "random", 0)) != path


def test_dataspec_loads_once_per_process(monkeypatch):
    loads = []
    spec = pieces.DataSpec("mnist", 5000, 0)
    monkeypatch.setattr(pieces.DataSpec, "load", lambda self: loads.append(self) or "dataset")
    monkeypatch.setattr(pieces, "_loaded", {})
    assert pieces.dataset_for(spec) == "dataset" and pieces.dataset_for(spec) == "dataset"
    assert loads == [spec]
    assert pieces.dataset_for("given") == "given"


def test_other_data_on_resume_is_refused(tmp_path):
    run = RunDir(tmp_path)
    lottery.record_data(run, {"source": "/a", "files": [{"algorithm": "md5", "checksum": "1"}],
                              "examples": {"train": 1}})
    lottery.record_data(run, {"source": "/b", "files": [{"algorithm": "md5", "checksum": "1"}],
                              "examples": {"train": 1}})  # the same files elsewhere: fine
    with pytest.raises(ValueError, match="trained on other data"):
        lottery.record_data(run, {"source": "/c", "files": [{"algorithm": "md5", "checksum": "2"}],
                                  "examples": {"train": 1}})
