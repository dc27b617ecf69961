"""Summaries of a run's trainings: per level and branch, the mean and range over trials.

The paper plots the mean over trials with error bars at the minimum and the
maximum (Figs. 3-5). Controls (random reinit, random pruning) pool all their
replicates: 5 trials x 3 reinits = 15 per point in the paper.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from .rundir import RunDir

SUMMARY_COLUMNS = (
    "level", "trial", "branch", "replicate", "weights_remaining",
    "early_stop_iteration", "val_loss_at_early_stop", "val_acc_at_early_stop",
    "test_acc_at_early_stop", "final_train_acc", "final_val_acc", "final_test_acc",
)
_INTEGER_COLUMNS = {"level", "trial", "replicate", "early_stop_iteration"}

BRANCH_LABELS = {"ticket": "winning ticket", "reinit": "random reinit", "random": "random pruning"}


def summary_csv(rows):
    """CSV text of summary rows; floats written with repr, so they read back exactly."""
    out = io.StringIO()
    writer = csv.DictWriter(out, SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    return out.getvalue()


def read_summary(run_dir):
    """The rows of a run's summary.csv (one per finished training), numbers parsed."""
    path = RunDir(run_dir).summary
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a minilottery run?")
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: (v if k == "branch" else int(v) if k in _INTEGER_COLUMNS else float(v))
                 for k, v in row.items()} for row in csv.DictReader(f)]


def read_history(run_dir, piece):
    """One training's evaluation history: {column: array}, columns as in train.HISTORY_COLUMNS."""
    path = RunDir(run_dir).piece(piece) / "history.csv"
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} holds no evaluations")
    return {name: np.array([float(row[name]) for row in rows]) for name in rows[0]}


@dataclass(frozen=True)
class Point:
    """One metric of one branch at one level, over every training there."""

    level: int
    weights_remaining: float  # fraction (the paper's Pm), 1.0 at level 0
    mean: float
    low: float                # minimum over trials
    high: float               # maximum over trials
    count: int


def points(rows, branch, metric):
    """The ``metric`` of ``branch`` at each level where it was trained, by level."""
    by_level = {}
    for row in rows:
        if row["branch"] == branch:
            by_level.setdefault(row["level"], []).append(row)
    result = []
    for level in sorted(by_level):
        values = np.array([row[metric] for row in by_level[level]], dtype=float)
        result.append(Point(level, by_level[level][0]["weights_remaining"],
                            float(values.mean()), float(values.min()), float(values.max()),
                            len(values)))
    return result


COLUMN_WIDTH = 10


def table_header(branches):
    """Header lines of the per-level table, for the given branches (in BRANCH_LABELS order)."""
    cells = ["level", "weights %"]
    for branch in branches:
        cells += [f"{branch} stop", f"{branch} acc%"]
    line = "".join(cell.rjust(COLUMN_WIDTH + 2 * (i > 1)) for i, cell in enumerate(cells))
    return line + "\n" + "-" * len(line)


def table_line(rows, level, branches):
    """One level of the table: Pm in percent, then per branch the mean early-stop
    iteration and the mean test accuracy (%) at that iteration, over trials and replicates."""
    here = [row for row in rows if row["level"] == level]
    cells = [str(level), f"{100 * here[0]['weights_remaining']:.1f}"]
    for branch in branches:
        stop = points(here, branch, "early_stop_iteration")
        acc = points(here, branch, "test_acc_at_early_stop")
        cells += [f"{stop[0].mean:.0f}", f"{100 * acc[0].mean:.2f}"] if stop else ["-", "-"]
    return "".join(cell.rjust(COLUMN_WIDTH + 2 * (i > 1)) for i, cell in enumerate(cells))


def branches_in(rows):
    return [b for b in BRANCH_LABELS if any(row["branch"] == b for row in rows)]


def table(rows):
    """The whole per-level table of a run's summary rows, as text."""
    branches = branches_in(rows)
    levels = sorted({row["level"] for row in rows})
    return "\n".join([table_header(branches)] + [table_line(rows, lv, branches) for lv in levels])
