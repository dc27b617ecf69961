"""The paper's figures, redrawn from a run directory.

Frankle & Carbin plot every measurement the same way (Figs. 3-5): the line is
the mean over trials, the error bars (or the shaded band) span the minimum and
the maximum. Each branch keeps one look in every figure:

* winning ticket: solid line,
* random reinit: dashed line,
* random pruning: dotted line.

Figures (PNG, written atomically into ``RUN/figures/``):

* ``fig3_test_accuracy.png``: test accuracy against training iteration at a
  few levels, one panel per branch (the paper's Fig. 3, left and right);
* ``fig4_early_stop.png``: early-stop iteration and test accuracy at early
  stop against the weights remaining Pm (Fig. 4a);
* ``fig5_conv.png``: the same two plus the test and train accuracy at the last
  iteration (the layout of Fig. 5, used for every net);
* ``fig8_fixed_iterations.png``, instead of Figs. 4 and 5 for a run that reads its
  accuracy at fixed iterations (``accuracy_at``, the §4 nets): test accuracy
  against Pm at each of them (the layout of Figs. 7 and 8).

Weights remaining run along a log axis, reversed so that sparser nets sit to
the right, with ticks at the run's own Pm values (100, 51.3, 21.1, ...).

Only ``matplotlib.figure.Figure`` is used, never ``pyplot``: no global figure
registry, no window, nothing shown; PNGs are rendered by the Agg backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from .config import load_config
from .results import BRANCH_LABELS, branches_in, fixed_iterations, points, read_history, summary_rows
from .rundir import Piece, RunDir, write_atomic
from .train import fixed_accuracy_column

BRANCH_STYLES = {
    "ticket": {"color": "C0", "linestyle": "-"},
    "reinit": {"color": "C1", "linestyle": "--"},
    "random": {"color": "C2", "linestyle": ":"},
}

FIG3_LEVELS = 5        # curves per panel of Fig. 3 (the paper shows 3 to 6)
MAX_PM_TICKS = 8       # Pm ticks on the weights-remaining axis
DPI = 120

# (summary column, axis label) of each panel
FIG4_PANELS = (
    ("early_stop_iteration", "early-stop iteration (val. loss)"),
    ("test_acc_at_early_stop", "test accuracy at early stop"),
)
FIG5_PANELS = FIG4_PANELS + (
    ("final_test_acc", "test accuracy at final iteration"),
    ("final_train_acc", "train accuracy at final iteration"),
)


# ----------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------

def percent_label(fraction):
    """Pm as the paper writes it: 100, 51.3, 7.0, 0.45 (percent of weights remaining)."""
    percent = 100 * fraction
    if percent >= 99.95:
        return "100"
    return f"{percent:.1f}" if percent >= 1 else f"{percent:.2g}"


def spread(items, count):
    """Up to ``count`` of ``items``, evenly spaced by position, always the first and the last.

    Levels are spaced evenly in log(Pm) (each round keeps the same fraction),
    so evenly spaced levels are the paper's choice of 100, 51.3, 21.1, 7.0 ...
    """
    items = list(items)
    if len(items) <= count:
        return items
    picks = np.unique(np.round(np.linspace(0, len(items) - 1, count)).astype(int))
    return [items[i] for i in picks]


def regular_ticks(values, count):
    """Every k-th of ``values`` from the first, k the smallest step leaving at most ``count``.

    A fixed step in levels is a fixed ratio in Pm, so the ticks sit evenly on the log axis.
    """
    step = max(1, -(-(len(values) - 1) // max(1, count - 1)))  # ceil((n - 1) / (count - 1))
    return list(values)[::step]


def source_branch(branch, level):
    """Which trainings stand for ``branch`` at ``level``.

    No control is trained at level 0: it would just be another dense net. The
    dense net (the level-0 ticket) stands in for every control there, so the
    controls' lines start at 100% like the paper's.
    """
    return "ticket" if level == 0 else branch


def branch_points(rows, branch, metric):
    """``results.points`` of ``branch``, starting from the dense net's point for controls."""
    found = points(rows, branch, metric)
    if found and found[0].level == 0:
        return found
    dense = [row for row in rows if row["level"] == 0]
    return points(dense, source_branch(branch, 0), metric) + found


def describe(config):
    """The net and the pruning variant, for figure titles."""
    words = [config.net]
    if config.one_shot:
        words.append("one-shot pruning")
    if config.rewind_iteration:
        words.append(f"rewound to iteration {config.rewind_iteration}")
    if config.pruning == "global":
        words.append("global pruning")
    if config.warmup_iterations and not config.net.endswith("warmup"):
        words.append(f"warmup over {config.warmup_iterations:,} iterations")
    return ", ".join(words)


def mean_history(run_dir, pieces, column):
    """Iterations and the mean, min and max over ``pieces`` of one history ``column``."""
    histories = [read_history(run_dir, piece) for piece in pieces]
    iterations = histories[0]["iteration"]
    for piece, history in zip(pieces, histories):
        if not np.array_equal(history["iteration"], iterations):
            raise ValueError(f"{piece} was evaluated at other iterations than {pieces[0]}: "
                             f"cannot average their histories")
    values = np.stack([history[column] for history in histories])
    return iterations, values.mean(axis=0), values.min(axis=0), values.max(axis=0)


def save_figure(figure, path):
    """Write ``figure`` as a PNG at ``path``, atomically; return the path."""
    path = Path(path)
    write_atomic(path, lambda f: figure.savefig(f, format="png", dpi=DPI))
    return path


# ----------------------------------------------------------------------------
# The shared axis of Figs. 4 and 5
# ----------------------------------------------------------------------------

def plot_vs_weights(ax, series, ylabel):
    """One metric against weights remaining: per branch, the mean with min/max error bars.

    ``series`` maps a branch to its ``results.Point`` list. x is Pm in percent
    on a reversed log axis, ticked at the Pm values themselves.
    """
    remaining = set()
    for branch, pts in series.items():
        x = np.array([100 * p.weights_remaining for p in pts])
        mean = np.array([p.mean for p in pts])
        below = mean - np.array([p.low for p in pts])
        above = np.array([p.high for p in pts]) - mean
        ax.errorbar(x, mean, yerr=[below, above], label=BRANCH_LABELS[branch],
                    marker="o", markersize=3, capsize=2, linewidth=1.5, **BRANCH_STYLES[branch])
        remaining.update(p.weights_remaining for p in pts)

    ax.set_xscale("log")
    ticks = regular_ticks(sorted(remaining, reverse=True), MAX_PM_TICKS)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks([100 * t for t in ticks], [percent_label(t) for t in ticks])
    ax.set_xlim(100 * max(remaining) * 1.2, 100 * min(remaining) / 1.2)  # reversed: sparser right
    ax.set_xlabel("percent of weights remaining")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


def metric_panels(rows, panels, title, ncols):
    """A figure with one ``plot_vs_weights`` panel per (summary column, label) of ``panels``."""
    nrows = -(-len(panels) // ncols)
    figure = Figure(figsize=(5.2 * ncols, 3.8 * nrows), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    branches = branches_in(rows)
    for ax, (metric, label) in zip(axes, panels):
        plot_vs_weights(ax, {b: branch_points(rows, b, metric) for b in branches}, label)
    axes[0].legend()
    figure.suptitle(title)
    return figure


# ----------------------------------------------------------------------------
# The figures
# ----------------------------------------------------------------------------

def figure3(run_dir, rows, config):
    """Test accuracy against iteration at up to ``FIG3_LEVELS`` levels, one panel per branch.

    Each curve is the mean over trials (and control replicates) of the
    ``test_acc`` history, the band its min and max. A level keeps its colour
    in every panel; the branch sets the line style.
    """
    levels = spread(sorted({row["level"] for row in rows}), FIG3_LEVELS)
    pm = {p.level: p.weights_remaining for p in points(rows, "ticket", "weights_remaining")}
    branches = branches_in(rows)
    colours = colormaps["viridis"](np.linspace(0, 0.85, len(levels)))  # dense dark, sparse light

    figure = Figure(figsize=(5.2 * len(branches), 4), layout="constrained")
    axes = figure.subplots(1, len(branches), sharey=True, squeeze=False)[0]
    for ax, branch in zip(axes, branches):
        for colour, level in zip(colours, levels):
            here = source_branch(branch, level)
            pieces = [Piece(row["trial"], level, here, row["replicate"])
                      for row in rows if row["level"] == level and row["branch"] == here]
            if not pieces:
                continue
            iterations, mean, low, high = mean_history(run_dir, pieces, "test_acc")
            dense = " (dense net)" if here != branch else ""
            ax.plot(iterations, mean, color=colour, linestyle=BRANCH_STYLES[branch]["linestyle"],
                    label=f"{percent_label(pm[level])}%{dense}")
            ax.fill_between(iterations, low, high, color=colour, alpha=0.15, linewidth=0)
        ax.set_title(BRANCH_LABELS[branch])
        ax.set_xlabel("training iteration")
        ax.grid(True, alpha=0.3)
        ax.legend(title="weights remaining", fontsize="small")
    axes[0].set_ylabel("test accuracy")
    figure.suptitle(f"{describe(config)}: test accuracy during training")
    return figure


def figure4(rows, config):
    """Early-stop iteration and test accuracy at early stop against weights remaining."""
    return metric_panels(rows, FIG4_PANELS, f"{describe(config)}: early stopping", ncols=2)


def figure5(rows, config):
    """Fig. 5's four panels: early stop, accuracy at early stop, final test and train accuracy."""
    return metric_panels(rows, FIG5_PANELS,
                         f"{describe(config)}: early stopping and final accuracy", ncols=2)


def figure_fixed_iterations(rows, config):
    """The layout of the paper's Figs. 7 and 8 (§4): test accuracy against weights
    remaining at each fixed iteration of the run (``config.accuracy_at``), one panel each."""
    panels = [(fixed_accuracy_column(k), f"test accuracy at iteration {k:,}")
              for k in fixed_iterations(rows)]
    return metric_panels(rows, panels, f"{describe(config)}: accuracy at fixed iterations",
                         ncols=len(panels))


def read_run(run_dir):
    """The Config and the summary rows of a run directory; clear errors if it is not one.

    The rows come from the trainings' own metrics.json files (as summary.csv
    does), so a figure never shows a stale or damaged summary.
    """
    run = RunDir(run_dir)
    if not run.root.is_dir():
        raise FileNotFoundError(f"{run.root} is not a directory")
    if not run.config.exists():
        raise FileNotFoundError(f"{run.config} does not exist: is {run.root} a minilottery run?")
    config = load_config(run.config)
    rows = summary_rows(run, config)
    if not rows:
        raise ValueError(f"{run.root} holds no finished training yet: nothing to plot")
    return config, rows


def draw_figures(run_dir, out_dir=None):
    """Draw every figure the run's data supports into ``out_dir`` (default RUN/figures).

    Fig. 3 needs one level; Figs. 4 and 5 plot against weights remaining, so
    they need at least two. Returns the paths of the PNGs written.
    """
    config, rows = read_run(run_dir)
    out = Path(out_dir) if out_dir is not None else RunDir(run_dir).figures
    figures = {"fig3_test_accuracy.png": figure3(run_dir, rows, config)}
    if len({row["level"] for row in rows}) >= 2:
        if fixed_iterations(rows):   # §4's nets: no early stopping (docs/paper.md §4)
            figures["fig8_fixed_iterations.png"] = figure_fixed_iterations(rows, config)
        else:
            figures["fig4_early_stop.png"] = figure4(rows, config)
            figures["fig5_conv.png"] = figure5(rows, config)
    return [save_figure(figure, out / name) for name, figure in figures.items()]
