"""A one-line progress display for experiments: a bar over trainings, one over iterations.

Drawn on stderr, and only when stderr is a terminal: in a log file or a CI
run the display stays quiet and only the per-level table lines (on stdout)
appear.
"""

from __future__ import annotations

import sys
import time

from .lottery import Reporter
from .results import table_header, table_line


def bar(fraction, width=20):
    filled = int(round(width * min(max(fraction, 0.0), 1.0)))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def duration(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ConsoleReporter(Reporter):
    """Shows progress while ``run_experiment`` works and prints a table line per level.

    ``total_trainings`` trainings of ``iterations`` each remain to be done;
    the ETA extrapolates the time per iteration measured so far.
    """

    def __init__(self, total_trainings, iterations, branches, out=sys.stdout, err=sys.stderr,
                 live=None):
        self.total = total_trainings
        self.branches = branches
        self.iterations = iterations
        self.out, self.err = out, err
        self.live = err.isatty() if live is None else live
        self.finished = 0
        self.start = time.monotonic()
        self.header_printed = False

    def elapsed(self):
        return time.monotonic() - self.start

    def piece_progress(self, piece, iteration, history):
        if not self.live:
            return
        done = self.finished * self.iterations + iteration
        total = max(self.total * self.iterations, 1)
        elapsed = time.monotonic() - self.start
        eta = elapsed * (total - done) / done if done else 0.0
        val_acc = history.rows[-1][4]  # HISTORY_COLUMNS: ..., "val_acc" at index 4
        line = (f"trainings {bar(self.finished / max(self.total, 1), 12)} "
                f"{self.finished}/{self.total}  {piece}: it {bar(iteration / self.iterations, 12)} "
                f"{iteration}/{self.iterations}  val {100 * val_acc:.1f}%  ETA {duration(eta)}")
        self.err.write("\r" + line[:150].ljust(150))
        self.err.flush()

    def piece_done(self, piece, metrics):
        self.finished += 1
        if self.live:
            elapsed = time.monotonic() - self.start
            eta = elapsed * (self.total - self.finished) / self.finished
            self.err.write("\r" + f"trainings {bar(self.finished / max(self.total, 1), 12)} "
                           f"{self.finished}/{self.total}  ETA {duration(eta)}".ljust(150))
            self.err.flush()

    def level_done(self, level, rows):
        if self.live:
            self.err.write("\r" + " " * 150 + "\r")
            self.err.flush()
        if not self.header_printed:
            print(table_header(self.branches), file=self.out)
            self.header_printed = True
        if rows:
            print(table_line(rows, level, self.branches), file=self.out, flush=True)
