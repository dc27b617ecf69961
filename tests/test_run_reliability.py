"""The command line at its edges: a locked run directory, interrupts and signals anywhere,
unwritable places, damaged runs: one line each, never a traceback."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minilottery import lottery, run as run_module
from minilottery.rundir import Piece, RunDir

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--iterations", "40", "--eval-every", "20", "--rounds", "2", "--trials", "1",
        "--fc-rate", "0.5", "--output-rate", "0.25"]


def start_cli(*args):
    return subprocess.Popen([sys.executable, "-m", "minilottery.run", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def run_cli(*args, timeout=300):
    process = start_cli(*args)
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def wait_for(path, process, seconds=120):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def one_error_line(stderr):
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert "Traceback" not in stderr, stderr
    assert len(errors) == 1, stderr
    return errors[0]


def test_a_second_run_into_the_same_directory_exits_2_and_the_first_is_unaffected(tmp_path):
    out = tmp_path / "run"
    first = start_cli("lenet", *TINY, "--iterations", "400", "--eval-every", "100", "--out", out,
                      "--no-plots", "--jobs", "1")
    wait_for(out / "trial0" / "theta0.npz", first)
    second = run_cli("lenet", *TINY, "--iterations", "400", "--eval-every", "100", "--out", out,
                     "--resume", "--no-plots")
    assert second.returncode == 2
    assert one_error_line(second.stderr).endswith(f"{out} is in use by process {first.pid}")
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert len((out / "summary.csv").read_text().splitlines()) == 1 + 1 + 2 * 3
    assert not list(out.rglob("*.tmp"))


def test_out_naming_a_file_gives_one_line(tmp_path):
    target = tmp_path / "a-file"
    target.write_text("not a run")
    result = run_cli("lenet", *TINY, "--out", target)
    assert result.returncode == 2
    assert "is a file, not a directory" in result.stderr and "Traceback" not in result.stderr
    assert target.read_text() == "not a run"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, which takes no files")
def test_an_unwritable_out_is_found_before_training():
    out = Path("/proc/minilottery-test/run")
    result = run_cli("lenet", *TINY, "--out", out, "--no-plots")
    assert result.returncode != 0
    line = one_error_line(result.stderr)
    assert f"cannot write {out}" in line
    assert "trainings to do" not in result.stdout


def test_a_run_with_a_damaged_config_is_named_in_one_line(tmp_path):
    out = tmp_path / "run"
    assert run_cli("lenet", *TINY, "--out", out, "--no-plots").returncode == 0
    text = (out / "config.json").read_text()
    (out / "config.json").write_text(text[:len(text) // 2])
    result = run_cli("lenet", "--out", out, "--resume", "--no-plots")
    assert result.returncode == 2
    assert str(out / "config.json") in one_error_line(result.stderr)


def test_resume_of_a_killed_run_with_a_stale_summary_completes_it(tmp_path):
    """As after a kill between the last metrics.json and the last summary write."""
    out = tmp_path / "run"
    assert run_cli("lenet", *TINY, "--out", out, "--no-plots").returncode == 0
    complete = (out / "summary.csv").read_text()
    (out / "summary.csv").write_text("".join(complete.splitlines(keepends=True)[:-2]))
    result = run_cli("lenet", "--out", out, "--resume")
    assert result.returncode == 0, result.stderr
    assert "nothing to train" in result.stdout
    assert (out / "summary.csv").read_text() == complete
    table_lines = [line for line in result.stdout.splitlines() if line.split()[:1] == ["2"]]
    assert len(table_lines) == 1 and "-" not in table_lines[0].split()[2:]
    assert (out / "figures" / "fig4_early_stop.png").exists()


@pytest.mark.parametrize("stage", ["data loading", "plotting"])
def test_ctrl_c_anywhere_gives_one_line_and_exit_130(tmp_path, monkeypatch, capsys, stage):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    if stage == "data loading":
        monkeypatch.setattr(lottery, "load_data", interrupt)
    else:
        from minilottery import plots
        monkeypatch.setattr(plots, "draw_figures", interrupt)
    out = tmp_path / "run"
    code = run_module.main(["lenet", *TINY, "--out", str(out), "--jobs", "1"])
    captured = capsys.readouterr()
    assert code == 130
    assert one_error_line(captured.err).endswith("stopped by SIGINT")
    if stage == "data loading":  # nothing was written yet
        assert not out.exists()
    else:  # the trainings are done and kept; the resume hint is given
        assert "--resume" in captured.err
        assert not list(out.rglob("*.tmp"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_signal_stops_the_run_and_resume_finishes_it_the_same(tmp_path, signum):
    whole = tmp_path / "whole"
    assert run_cli("lenet", *TINY, "--out", whole, "--no-plots").returncode == 0
    out = tmp_path / "stopped"
    process = start_cli("lenet", *TINY, "--out", out, "--no-plots", "--jobs", "2")
    wait_for(RunDir(out).piece(Piece(0, 0, "ticket")) / "metrics.json", process)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    assert one_error_line(stderr).endswith(f"stopped by {signal.Signals(signum).name}")
    assert "--resume" in stderr
    result = run_cli("lenet", "--out", out, "--resume", "--no-plots")
    assert result.returncode == 0, result.stderr
    assert (out / "summary.csv").read_bytes() == (whole / "summary.csv").read_bytes()


def spawned_workers(pid):
    """PIDs of the multiprocessing workers of process ``pid`` (not its resource tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    workers = []
    for child in children:
        command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"spawn_main" in command:
            workers.append(int(child))
    return workers


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers in /proc")
def test_a_dead_worker_gives_one_line_and_how_to_resume(tmp_path):
    out = tmp_path / "run"
    # Two trials: both workers train a dense ticket for many seconds.
    process = start_cli("lenet", *TINY, "--iterations", "4000", "--eval-every", "1000",
                        "--trials", "2", "--out", out, "--no-plots", "--jobs", "2")
    wait_for(out / "trial1" / "theta0.npz", process)
    deadline = time.monotonic() + 60
    while len(spawned_workers(process.pid)) < 2:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    time.sleep(5.0)  # started, mapped the data, into their trainings
    os.kill(spawned_workers(process.pid)[0], signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 1, stderr
    line = one_error_line(stderr)
    assert "was killed by SIGKILL" in line and "level=0, branch='ticket'" in line
    assert f"--out {out} --resume" in stderr
