"""The paper's figures, drawn from synthetic run directories with the real layout."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from minilottery.config import Config
from minilottery.plots import (BRANCH_STYLES, branch_points, draw_figures, figure3,
                               mean_history, plot_vs_weights, read_run, regular_ticks,
                               spread)
from minilottery.results import BRANCH_LABELS, Point, read_summary, summary_csv
from minilottery.rundir import Piece, RunDir, write_json, write_text

try:
    from minilottery.train import HISTORY_COLUMNS
except ImportError:  # train.py needs modules of other branches; same columns, same order
    HISTORY_COLUMNS = ("iteration", "train_loss", "train_acc", "val_loss", "val_acc",
                       "test_loss", "test_acc")

WORKTREE = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = ("fig3_test_accuracy.png", "fig4_early_stop.png", "fig5_conv.png")


def synthetic_history(rng, iterations, eval_every, level, branch):
    """A plausible history: accuracy rises to a plateau that tickets hold longer."""
    steps = np.arange(eval_every, iterations + 1, eval_every)
    top = 0.98 - (0.002 * level if branch == "ticket" else 0.006 * level)
    t = steps / iterations
    test_acc = top - (top - 0.6) * np.exp(-8 * t) + rng.normal(0, 0.002, len(steps))
    val_loss = 0.1 + 0.5 * np.exp(-8 * t) + 0.05 * t ** 2 + rng.normal(0, 0.001, len(steps))
    return {"iteration": steps, "train_loss": val_loss / 2, "train_acc": np.minimum(1, test_acc + 0.02),
            "val_loss": val_loss, "val_acc": test_acc - 0.001,
            "test_loss": val_loss, "test_acc": test_acc}


def write_history(path, history):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HISTORY_COLUMNS)
        for i in range(len(history["iteration"])):
            writer.writerow([repr(float(history[name][i])) for name in HISTORY_COLUMNS])


def make_run(root, levels=4, trials=2, reinits=2, random_prunes=1, net="lenet",
             iterations=1000, eval_every=100, seed=0):
    """A finished run directory: config.json, summary.csv, every history.csv and metrics.json."""
    rng = np.random.default_rng(seed)
    config = Config(net=net, iterations=iterations, batch_size=60, lr=1e-3, fc_rate=0.2,
                    conv_rate=0.1, output_rate=0.1, rounds=levels - 1, trials=trials,
                    reinits=reinits, random_prunes=random_prunes, eval_every=eval_every)
    run = RunDir(root)
    write_text(run.config, config.to_json())
    rows = []
    for level in range(levels):
        for trial in range(trials):
            pieces = [Piece(trial, level, "ticket")]
            if level > 0:
                pieces += [Piece(trial, level, "reinit", r) for r in range(reinits)]
                pieces += [Piece(trial, level, "random", r) for r in range(random_prunes)]
            for piece in pieces:
                history = synthetic_history(rng, iterations, eval_every, level, piece.branch)
                write_history(run.piece(piece) / "history.csv", history)
                stop = int(np.argmin(history["val_loss"]))
                rows.append({
                    "level": level, "trial": trial, "branch": piece.branch,
                    "replicate": piece.replicate, "weights_remaining": 0.8 ** level,
                    "early_stop_iteration": int(history["iteration"][stop]),
                    "val_loss_at_early_stop": float(history["val_loss"][stop]),
                    "val_acc_at_early_stop": float(history["val_acc"][stop]),
                    "test_acc_at_early_stop": float(history["test_acc"][stop]),
                    "final_train_acc": float(history["train_acc"][-1]),
                    "final_val_acc": float(history["val_acc"][-1]),
                    "final_test_acc": float(history["test_acc"][-1]),
                })
                write_json(run.piece(piece) / "metrics.json", rows[-1])
    write_text(run.summary, summary_csv(rows))
    return run


def assert_png(path):
    data = Path(path).read_bytes()
    assert len(data) > 1000, f"{path} is suspiciously small"
    assert data.startswith(PNG_SIGNATURE), f"{path} is not a PNG"


# ----------------------------------------------------------------------------
# draw_figures
# ----------------------------------------------------------------------------

def test_draw_figures_writes_every_figure(tmp_path):
    run = make_run(tmp_path / "run")
    paths = draw_figures(run.root)
    assert sorted(p.name for p in paths) == sorted(FIGURES)
    for path in paths:
        assert path.parent == run.figures
        assert_png(path)
    assert not [p for p in run.figures.iterdir() if p.name.endswith(".tmp")]


def test_one_level_run_gets_figure3_only(tmp_path):
    run = make_run(tmp_path / "run", levels=1)
    paths = draw_figures(run.root, tmp_path / "out")
    assert [p.name for p in paths] == ["fig3_test_accuracy.png"]
    assert paths[0].parent == tmp_path / "out"
    assert_png(paths[0])


def test_run_without_controls(tmp_path):
    run = make_run(tmp_path / "run", levels=3, reinits=0, random_prunes=0, net="conv4")
    paths = draw_figures(run.root)
    assert sorted(p.name for p in paths) == sorted(FIGURES)


def test_not_a_run_raises_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        draw_figures(tmp_path / "nowhere")
    run = make_run(tmp_path / "run")
    for metrics in run.root.rglob("metrics.json"):
        metrics.unlink()
    with pytest.raises(ValueError, match="no finished training"):
        draw_figures(run.root)


def test_figures_come_from_the_trainings_not_from_summary_csv(tmp_path):
    run = make_run(tmp_path / "run")
    expected = read_run(run.root)[1]
    write_text(run.summary, summary_csv(expected[:3]))       # stale: 3 rows of many
    assert read_run(run.root)[1] == expected
    run.summary.unlink()
    assert read_run(run.root)[1] == expected
    assert sorted(p.name for p in draw_figures(run.root)) == sorted(FIGURES)


# ----------------------------------------------------------------------------
# What the figures show
# ----------------------------------------------------------------------------

def test_plot_vs_weights_plots_the_given_points():
    rng = np.random.default_rng(1)
    series = {}
    for branch in ("ticket", "reinit", "random"):
        series[branch] = []
        for level in range(5):
            low, high = np.sort(rng.uniform(0.5, 1.0, 2))
            series[branch].append(Point(level, 0.8 ** level, float(rng.uniform(low, high)),
                                        float(low), float(high), 3))
    ax = Figure().subplots()
    plot_vs_weights(ax, series, "test accuracy")

    containers = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(containers) == 3
    for container, (branch, pts) in zip(containers, series.items()):
        line, _caps, (bars,) = container.lines
        assert container.get_label() == BRANCH_LABELS[branch]
        assert line.get_linestyle() == BRANCH_STYLES[branch]["linestyle"]
        np.testing.assert_allclose(line.get_xdata(), [100 * p.weights_remaining for p in pts])
        np.testing.assert_allclose(line.get_ydata(), [p.mean for p in pts])
        segments = bars.get_segments()
        np.testing.assert_allclose([s[0][1] for s in segments], [p.low for p in pts])
        np.testing.assert_allclose([s[1][1] for s in segments], [p.high for p in pts])
    assert ax.get_xscale() == "log"
    assert ax.xaxis_inverted()  # sparser to the right
    assert [t.get_text() for t in ax.get_xticklabels()] == ["100", "80.0", "64.0", "51.2", "41.0"]


def test_controls_start_from_the_dense_net(tmp_path):
    rows = read_summary(make_run(tmp_path / "run", levels=3).root)
    dense = [r["test_acc_at_early_stop"] for r in rows if r["level"] == 0]
    reinit = branch_points(rows, "reinit", "test_acc_at_early_stop")
    assert [p.level for p in reinit] == [0, 1, 2]
    assert reinit[0].mean == pytest.approx(np.mean(dense))
    assert (reinit[0].low, reinit[0].high) == (min(dense), max(dense))
    level1 = [r["test_acc_at_early_stop"] for r in rows if r["level"] == 1 and r["branch"] == "reinit"]
    assert reinit[1].mean == pytest.approx(np.mean(level1))
    assert reinit[1].count == len(level1)


def test_figure3_curves_are_the_mean_over_trials(tmp_path):
    run = make_run(tmp_path / "run", levels=8, trials=3)
    config, rows = read_run(run.root)
    figure = figure3(run.root, rows, config)
    ticket_ax, reinit_ax, random_ax = figure.axes
    assert [ax.get_title() for ax in figure.axes] == [BRANCH_LABELS[b] for b in ("ticket", "reinit", "random")]

    levels = [0, 2, 4, 5, 7]  # 5 of 8, spread, with the first and the last
    labels = [f"{100 * 0.8 ** lv:.1f}%".replace("100.0%", "100%") for lv in levels]
    assert [line.get_label() for line in ticket_ax.get_lines()] == labels
    for line, level in zip(ticket_ax.get_lines(), levels):
        assert line.get_linestyle() == "-"
        accs = [np.loadtxt(run.piece(Piece(t, level, "ticket")) / "history.csv", delimiter=",",
                           skiprows=1)[:, HISTORY_COLUMNS.index("test_acc")] for t in range(3)]
        np.testing.assert_allclose(line.get_ydata(), np.mean(accs, axis=0))
        np.testing.assert_allclose(line.get_xdata(), np.arange(100, 1001, 100))
    assert all(line.get_linestyle() == "--" for line in reinit_ax.get_lines())
    assert reinit_ax.get_lines()[0].get_label() == "100% (dense net)"
    last = reinit_ax.get_lines()[-1]
    accs = [np.loadtxt(run.piece(Piece(t, 7, "reinit", r)) / "history.csv", delimiter=",",
                       skiprows=1)[:, HISTORY_COLUMNS.index("test_acc")]
            for t in range(3) for r in range(2)]
    np.testing.assert_allclose(last.get_ydata(), np.mean(accs, axis=0))


def test_mean_history_refuses_mismatched_evaluations(tmp_path):
    run = make_run(tmp_path / "run", levels=1, trials=2)
    history = synthetic_history(np.random.default_rng(0), 500, 50, 0, "ticket")
    write_history(run.piece(Piece(1, 0, "ticket")) / "history.csv", history)
    with pytest.raises(ValueError, match="other iterations"):
        mean_history(run.root, [Piece(0, 0, "ticket"), Piece(1, 0, "ticket")], "test_acc")


@settings(deadline=None)
@given(n=st.integers(1, 40), count=st.integers(2, 10))
def test_regular_ticks_are_evenly_stepped(n, count):
    ticks = regular_ticks(list(range(n)), count)
    assert ticks[0] == 0 and 1 <= len(ticks) <= count
    assert len(set(np.diff(ticks))) <= 1  # one step throughout
    if n <= count:
        assert ticks == list(range(n))


def test_weights_axis_ticks_of_a_long_run():
    pts = [Point(k, 0.8 ** k, 0.9, 0.8, 1.0, 1) for k in range(17)]
    ax = Figure().subplots()
    plot_vs_weights(ax, {"ticket": pts}, "y")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["100", "51.2", "26.2", "13.4", "6.9", "3.5"]


@settings(deadline=None)
@given(n=st.integers(1, 40), count=st.integers(2, 10))
def test_spread_keeps_ends_and_order(n, count):
    picked = spread(range(n), count)
    assert picked[0] == 0 and picked[-1] == n - 1
    assert len(picked) == min(n, count)
    assert picked == sorted(set(picked))


# ----------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------

def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "minilottery.plot", *map(str, args)],
                          cwd=WORKTREE, capture_output=True, text=True, timeout=120)


def test_cli_draws_and_prints_paths(tmp_path):
    run = make_run(tmp_path / "run", levels=3)
    result = run_cli(run.root, "--out", tmp_path / "figs")
    assert result.returncode == 0, result.stderr
    printed = result.stdout.split()
    assert sorted(Path(p).name for p in printed) == sorted(FIGURES)
    for path in printed:
        assert Path(path).parent == tmp_path / "figs"
        assert_png(path)


@pytest.mark.parametrize("case", ["missing", "garbled metrics"])
def test_cli_rejects_what_is_not_a_run(tmp_path, case):
    target = tmp_path / "nowhere"
    if case == "garbled metrics":
        target = make_run(tmp_path / "run", levels=1).root
        damaged = RunDir(target).piece(Piece(0, 0, "ticket")) / "metrics.json"
        damaged.write_text('{"level": 0, "tri')
    result = run_cli(target)
    assert result.returncode == 2
    assert result.stdout == ""
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert str(target) in message
    assert ("not a directory" if case == "missing" else "metrics.json") in message
