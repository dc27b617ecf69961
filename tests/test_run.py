"""The command line, end to end, as a user types it (on a tiny schedule)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--iterations", "40", "--eval-every", "20", "--rounds", "2", "--trials", "1", "--fc-rate", "0.5",
        "--output-rate", "0.25"]


def run_cli(*args, env=None, module="minilottery.run", timeout=300):
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True, env=environment, timeout=timeout)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "lenet"
    result = run_cli("lenet", *TINY, "--out", out)
    assert result.returncode == 0, result.stderr
    return out, result


def test_run_writes_table_summary_and_figures(finished_run):
    out, result = finished_run
    assert "weights %" in result.stdout and "reinit acc%" in result.stdout
    # fc1/fc2 halve each round, out loses 25%: 133,350 then 66,863 of 266,200 weights
    for level, weights in [(0, "100.0"), (1, "50.1"), (2, "25.1")]:
        assert any(line.split()[:2] == [str(level), weights] for line in result.stdout.splitlines())
    summary = (out / "summary.csv").read_text()
    assert len(summary.splitlines()) == 1 + 1 + 2 * 3  # header, dense ticket, 2 levels x 3
    figures = sorted((out / "figures").glob("*.png"))
    assert {f.name for f in figures} >= {"fig3_test_accuracy.png", "fig4_early_stop.png",
                                         "fig5_conv.png"}
    for figure in figures:
        assert figure.read_bytes().startswith(b"\x89PNG") and figure.stat().st_size > 10_000
        assert str(figure) in result.stdout


def test_resume_of_a_finished_run_trains_nothing(finished_run):
    out, _ = finished_run
    before = (out / "summary.csv").stat().st_mtime_ns
    result = run_cli("lenet", "--out", out, "--resume", "--no-plots")
    assert result.returncode == 0, result.stderr
    assert "nothing to train" in result.stdout
    assert (out / "summary.csv").stat().st_mtime_ns == before


def test_plot_command_redraws_the_figures(finished_run, tmp_path):
    out, _ = finished_run
    result = run_cli(out, "--out", tmp_path, module="minilottery.plot")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(
        p.name for p in (out / "figures").glob("*.png"))


@pytest.mark.parametrize("args, message", [
    (["resnet50"], "invalid choice: 'resnet50' (choose from 'lenet', 'conv2'"),
    (["lenet", "--fc-rate", "1.5"], "fc_rate must be in [0, 1), got 1.5"),
    (["lenet", "--rounds", "-1"], "rounds must be at least 0"),
    (["lenet", "--iterations", "ten"], "invalid int value: 'ten'"),
    (["lenet", "--rate", "fc9=0.2"], "layer_rates names layer 'fc9'"),
    (["lenet", "--rate", "fc1"], "expected LAYER=RATE"),
    (["lenet", "--jobs", "0"], "--jobs must be at least 1"),
    (["lenet", "--rewind", "100", "--iterations", "50"], "rewind_iteration 100 is beyond"),
])
def test_bad_input_gives_one_message_and_exit_2(tmp_path, args, message):
    result = run_cli(*args, "--out", tmp_path / "run")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_missing_cifar10_says_where_to_put_it(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("conv2", "--data-dir", empty, "--no-download", "--out", tmp_path / "run",
                     env={"MINILOTTERY_DATA": str(empty), "XDG_CACHE_HOME": str(empty)})
    assert result.returncode == 2
    assert "CIFAR-10 not found" in result.stderr and str(empty) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_existing_run_needs_resume(finished_run):
    out, _ = finished_run
    result = run_cli("lenet", *TINY, "--out", out)
    assert result.returncode == 2 and "--resume" in result.stderr


def test_ctrl_c_stops_cleanly_and_resume_finishes_the_same(tmp_path, finished_run):
    whole, _ = finished_run
    out = tmp_path / "interrupted"
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "minilottery.run", "lenet", *TINY, "--out", str(out), "--no-plots",
         "--jobs", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    deadline = time.monotonic() + 120
    while not (out / "trial0" / "level00" / "ticket" / "metrics.json").exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    if Path("/dev/shm").is_dir():  # the dataset's shared memory (see minilottery.shared) is gone
        assert not list(Path("/dev/shm").glob(f"minilottery-{process.pid}-*"))

    result = run_cli("lenet", "--out", out, "--resume", "--no-plots")
    assert result.returncode == 0, result.stderr
    assert (out / "summary.csv").read_bytes() == (whole / "summary.csv").read_bytes()


def test_help_lists_nets_presets_and_flags():
    result = run_cli("--help")
    assert result.returncode == 0
    for word in ["lenet", "conv6-dropout", "--preset", "paper", "--resume", "--jobs", "--rewind",
                 "--one-shot", "--data-dir", "--trials", "--seed", "--lr", "(default: quick)"]:
        assert word in result.stdout, word
