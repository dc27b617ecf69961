"""A one-line progress display for experiments: a bar over trainings, one per running training.

Drawn on stderr, and only when stderr is a terminal: in a log file or a CI
run the display stays quiet and only the per-level table lines (on stdout)
appear.
"""

from __future__ import annotations

import sys
import time

from .lottery import Reporter
from .results import fixed_iterations, table_header, table_line

LINE_WIDTH = 150


def bar(fraction, width=12):
    filled = int(round(width * min(max(fraction, 0.0), 1.0)))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def duration(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ConsoleReporter(Reporter):
    """Shows progress while ``run_experiment`` works and prints a table line per level.

    ``total_trainings`` trainings of ``iterations`` each remain to be done;
    the ETA extrapolates the iterations per second measured so far.
    """

    def __init__(self, total_trainings, iterations, branches, levels=None, out=sys.stdout,
                 err=sys.stderr, live=None):
        self.total = total_trainings
        self.levels = levels        # how many levels the run has, for the bar over levels
        self.levels_done = 0
        self.iterations = iterations
        self.branches = branches
        self.out, self.err = out, err
        self.live = err.isatty() if live is None else live
        self.finished = 0
        self.running = {}  # piece -> (iteration, val_acc) of its latest evaluation
        self.start = time.monotonic()
        self.header_printed = False

    def elapsed(self):
        return time.monotonic() - self.start

    def piece_progress(self, piece, iteration, val_acc):
        self.running[piece] = (iteration, val_acc)
        self.draw()

    def piece_done(self, piece, metrics):
        self.running.pop(piece, None)
        self.finished += 1
        self.draw()

    def draw(self):
        if not self.live:
            return
        done = self.finished * self.iterations + sum(it for it, _ in self.running.values())
        remaining = self.total * self.iterations - done
        eta = self.elapsed() * remaining / done if done else 0.0
        parts = [f"trainings {bar(self.finished / max(self.total, 1))} {self.finished}/{self.total}"]
        if self.levels:
            parts.insert(0, f"levels {bar(self.levels_done / self.levels, 8)} "
                            f"{self.levels_done}/{self.levels}")
        for piece, (iteration, val_acc) in sorted(self.running.items(), key=lambda kv: str(kv[0])):
            parts.append(f"{piece} {bar(iteration / self.iterations, 8)} val {100 * val_acc:.1f}%")
        parts.append(f"ETA {duration(eta)}")
        self.err.write("\r" + "  ".join(parts)[:LINE_WIDTH].ljust(LINE_WIDTH))
        self.err.flush()

    def close(self):
        """Clear the progress line (at the end, or when interrupted)."""
        if self.live:
            self.err.write("\r" + " " * LINE_WIDTH + "\r")
            self.err.flush()

    def level_done(self, level, rows):
        self.levels_done = level + 1
        self.close()
        fixed = fixed_iterations(rows)
        if not self.header_printed:
            print(table_header(self.branches, fixed), file=self.out)
            self.header_printed = True
        if rows:
            print(table_line(rows, level, self.branches, fixed), file=self.out, flush=True)
        self.draw()
