"""Summaries of a run's trainings: per level and branch, the mean and range over trials.

The paper plots the mean over trials with error bars at the minimum and the
maximum (Figs. 3-5). Controls (random reinit, random pruning) pool all their
replicates: 5 trials x 3 reinits = 15 per point in the paper.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import numpy as np

from .rundir import RunDir, RunFileError, level_pieces, read_json
from .train import FIXED_PREFIX, fixed_accuracy_column

SUMMARY_COLUMNS = (
    "level", "trial", "branch", "replicate", "weights_remaining",
    "early_stop_iteration", "val_loss_at_early_stop", "val_acc_at_early_stop",
    "test_acc_at_early_stop", "final_train_acc", "final_val_acc", "final_test_acc",
)
_INTEGER_COLUMNS = {"level", "trial", "replicate", "early_stop_iteration"}


def summary_columns(config):
    """The summary's columns for ``config``: SUMMARY_COLUMNS, then the test accuracy at
    each of its ``accuracy_at`` iterations (the paper's §4 measure)."""
    return SUMMARY_COLUMNS + tuple(fixed_accuracy_column(k) for k in config.accuracy_at)


def fixed_iterations(rows):
    """The iterations of the rows' fixed-iteration accuracies (none for early stopping)."""
    return [int(name[len(FIXED_PREFIX):]) for name in (rows[0] if rows else ())
            if name.startswith(FIXED_PREFIX)]


BRANCH_LABELS = {"ticket": "winning ticket", "reinit": "random reinit", "random": "random pruning"}


def summary_csv(rows):
    """CSV text of summary rows (the columns of the first row, SUMMARY_COLUMNS if none);
    floats written with repr, so they read back exactly."""
    out = io.StringIO()
    writer = csv.DictWriter(out, list(rows[0]) if rows else SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    return out.getvalue()


def summary_rows(run, config):
    """The summary rows of every finished training of ``run`` (a RunDir), from its metrics.json.

    Ordered by level, trial, branch, replicate. This, never summary.csv, is
    where the summary comes from: summary.csv is only its written copy.
    """
    rows, columns = [], summary_columns(config)
    for level in range(config.rounds + 1):
        for piece in level_pieces(config, level):
            if run.is_done(piece):
                metrics = read_metrics(run.piece(piece) / "metrics.json", piece, columns)
                rows.append({column: metrics[column] for column in columns})
    return rows


def read_metrics(path, piece, columns=SUMMARY_COLUMNS):
    """A training's metrics.json, checked: every field of ``columns`` (the run's
    summary_columns), of the right type, for ``piece``."""
    metrics = read_json(path)
    if not isinstance(metrics, dict):
        raise RunFileError(path, "does not hold a JSON object")
    missing = [name for name in columns if name not in metrics]
    if missing:
        raise RunFileError(path, f"lacks the fields {missing}")
    for name in columns:
        value = metrics[name]
        if name == "branch":
            ok = isinstance(value, str)
        elif name in _INTEGER_COLUMNS:
            ok = type(value) is int
        else:
            ok = type(value) is float and not math.isinf(value)
        if not ok:
            raise RunFileError(path, f"{name} is {value!r}")
    identity = (metrics["trial"], metrics["level"], metrics["branch"], metrics["replicate"])
    if identity != (piece.trial, piece.level, piece.branch, piece.replicate):
        raise RunFileError(path, f"holds the metrics of another training {identity}")
    if not 0 < metrics["weights_remaining"] <= 1:
        raise RunFileError(path, f"weights_remaining is {metrics['weights_remaining']!r}")
    return metrics


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
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        history = {name: np.array([float(row[name]) for row in rows]) for name in rows[0]}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, TypeError, IndexError) as error:  # cut short, garbled
        raise RunFileError(path, f"not readable as a history ({type(error).__name__}: "
                                 f"{error})") from error
    return history


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


def _iteration_label(iteration):
    return f"{iteration // 1000}K" if iteration % 1000 == 0 else str(iteration)


def _header_cells(branches, fixed):
    cells = ["level", "weights %"]
    for branch in branches:
        if fixed:   # §4: the test accuracy at each fixed iteration
            cells += [f"{branch} acc@{_iteration_label(k)}" for k in fixed]
        else:
            cells += [f"{branch} stop", f"{branch} acc%"]
    return cells


def _join(cells, header):
    """The cells right-aligned under the header's: each column as wide as its header
    cell needs, at least COLUMN_WIDTH (two more after the first two)."""
    widths = [max(COLUMN_WIDTH + 2 * (i > 1), len(h) + 2) for i, h in enumerate(header)]
    return "".join(cell.rjust(width) for cell, width in zip(cells, widths))


def table_header(branches, fixed=()):
    """Header lines of the per-level table, for the given branches (in BRANCH_LABELS
    order); with ``fixed`` iterations (fixed_iterations), §4's columns."""
    header = _header_cells(branches, fixed)
    line = _join(header, header)
    return line + "\n" + "-" * len(line)


def table_line(rows, level, branches, fixed=()):
    """One level of the table: Pm in percent, then per branch the mean early-stop
    iteration and the mean test accuracy (%) at that iteration, over trials and
    replicates; or, with ``fixed`` iterations, the mean test accuracy (%) at each
    (column "ticket acc@10K": at iteration 10,000)."""
    here = [row for row in rows if row["level"] == level]
    cells = [str(level), f"{100 * here[0]['weights_remaining']:.1f}"]
    for branch in branches:
        if fixed:
            accs = [points(here, branch, fixed_accuracy_column(k)) for k in fixed]
            cells += [f"{100 * acc[0].mean:.2f}" if acc else "-" for acc in accs]
            continue
        stop = points(here, branch, "early_stop_iteration")
        acc = points(here, branch, "test_acc_at_early_stop")
        cells += [f"{stop[0].mean:.0f}", f"{100 * acc[0].mean:.2f}"] if stop else ["-", "-"]
    return _join(cells, _header_cells(branches, fixed))


def branches_in(rows):
    return [b for b in BRANCH_LABELS if any(row["branch"] == b for row in rows)]


def table(rows):
    """The whole per-level table of a run's summary rows, as text."""
    branches, fixed = branches_in(rows), fixed_iterations(rows)
    levels = sorted({row["level"] for row in rows})
    return "\n".join([table_header(branches, fixed)]
                     + [table_line(rows, lv, branches, fixed) for lv in levels])
