"""The lottery on a Dask cluster: the same run as in this process, through a killed worker
and a killed client.

Every run here is one short seeded LeNet experiment (4 trainings of 200
iterations) and must equal, file for file, the run trained in this process
(``--jobs 1``): summary.csv byte for byte; theta_0, the masks and the trained
weights array for array; every metrics.json.
"""

import os
import signal
import subprocess
import sys
import time

import cluster_tasks  # worker_path
import numpy as np
import pytest

from minilottery import lottery
from minilottery.config import make_config
from minilottery.parallel import InProcessExecutor
from minilottery.pieces import CHECKPOINTS_ENV
from minilottery.rundir import Piece, load_arrays, read_json

pytest.importorskip("distributed", reason='the cluster extra is not installed: '
                                          'pip install -e ".[cluster]"')

SETTINGS = {"iterations": 200, "eval_every": 100, "rounds": 1, "trials": 1, "reinits": 1,
            "random_prunes": 1, "fc_rate": 0.5, "output_rate": 0.25}
TRAININGS = 4  # the dense ticket, then a ticket and its 2 controls at level 1


def flags():
    """SETTINGS as command-line flags."""
    return [part for name, value in SETTINGS.items()
            for part in (f"--{name.replace('_', '-')}", str(value))]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The run trained in this process: the one every cluster run must reproduce."""
    root = tmp_path_factory.mktemp("reference") / "run"
    lottery.run_experiment(make_config("lenet", **SETTINGS), root, executor=InProcessExecutor())
    return root


def assert_same_run(run, reference):
    assert (run / "summary.csv").read_bytes() == (reference / "summary.csv").read_bytes()
    for pattern, compare in (("*.npz", assert_same_arrays), ("metrics.json", assert_same_json)):
        paths = sorted(path.relative_to(reference) for path in reference.rglob(pattern))
        assert paths and paths == sorted(path.relative_to(run) for path in run.rglob(pattern))
        for path in paths:
            compare(run / path, reference / path)


def assert_same_arrays(path, expected_path):
    arrays, expected = load_arrays(path), load_arrays(expected_path)
    assert arrays.keys() == expected.keys(), path
    for key, value in expected.items():
        np.testing.assert_array_equal(arrays[key], value, err_msg=f"{path}: {key}")


def assert_same_json(path, expected_path):
    assert read_json(path) == read_json(expected_path), path


def test_a_local_cluster_trains_the_run_of_one_process(local_dask, reference, tmp_path):
    lottery.run_experiment(make_config("lenet", **SETTINGS), tmp_path / "run", executor=local_dask)
    assert_same_run(tmp_path / "run", reference)


class KillItsWorker(lottery.Reporter):
    """Kills the worker process that trains ``victim`` at its first progress report."""

    def __init__(self, client, victim):
        self.client, self.victim = client, victim
        self.killed, self.after = None, []  # the pid killed; the victim's reports since

    def piece_progress(self, piece, iteration, val_acc):
        if piece != self.victim:
            return
        if self.killed is None:
            self.killed = self.kill_worker_of(piece)
        else:
            self.after.append(iteration)

    def kill_worker_of(self, piece):
        for address, keys in self.client.processing().items():
            if any(repr(piece) in str(key) for key in keys):
                pid = self.client.run(os.getpid, workers=[address])[address]
                os.kill(pid, signal.SIGKILL)
                return pid
        raise AssertionError(f"no worker is training {piece}")


def test_a_worker_killed_mid_training_changes_nothing(local_dask, reference, tmp_path):
    killer = KillItsWorker(local_dask.client, victim=Piece(0, 1, "ticket"))
    lottery.run_experiment(make_config("lenet", **SETTINGS), tmp_path / "run",
                           executor=local_dask, reporter=killer)
    assert killer.killed is not None and killer.after  # killed mid-training, then trained again
    assert killer.killed not in local_dask.client.run(os.getpid).values()
    assert_same_run(tmp_path / "run", reference)
    local_dask.client.wait_for_workers(2, timeout=30)  # its nanny restarts it, for what follows


def test_a_client_killed_mid_run_resumes_without_training_anything_again(reference, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "minilottery.run", "lenet", "--cluster", "local:2",
               "--out", str(out), "--no-plots", *flags()]
    env = {**os.environ, "PYTHONPATH": cluster_tasks.worker_path(),
           CHECKPOINTS_ENV: str(tmp_path / "worker-checkpoints")}
    with open(tmp_path / "first.log", "wb") as log:
        client = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        finished = wait_for_finished_trainings(out, client, timeout=120)
    finally:
        client.kill()  # the client alone: its LocalCluster's workers end with it
        client.wait()
    assert 0 < len(finished) < TRAININGS, (tmp_path / "first.log").read_text()

    resumed = subprocess.run([*command, "--resume"], check=False, capture_output=True, text=True,
                             env=env, timeout=180)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "cluster local:2: 2 workers" in resumed.stdout
    assert {path: path.stat().st_mtime_ns for path in finished} == finished  # none trained again
    assert_same_run(out, reference)


def wait_for_finished_trainings(out, process, timeout):
    """``{metrics.json: mtime}`` of the trainings finished, as soon as there is one."""
    deadline = time.monotonic() + timeout
    while True:
        finished = {path: path.stat().st_mtime_ns for path in out.rglob("metrics.json")}
        if finished:
            return finished
        assert process.poll() is None, f"the run exited with code {process.returncode}"
        assert time.monotonic() < deadline, f"no training finished in {timeout} s"
        time.sleep(0.02)
