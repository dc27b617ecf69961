"""Redraw the paper's figures of a run: ``python -m minilottery.plot RUN_DIR [--out DIR]``.

Prints the path of every PNG written (see ``minilottery.plots``). A missing or
invalid run directory gives one message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from .plots import draw_figures


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m minilottery.plot",
        description="Draw Figs. 3-5 of Frankle & Carbin from a minilottery run directory.")
    parser.add_argument("run_dir", help="the run directory (holds config.json and summary.csv)")
    parser.add_argument("--out", default=None,
                        help="directory for the PNGs (default: RUN_DIR/figures)")
    args = parser.parse_args(argv)
    try:
        paths = draw_figures(args.run_dir, args.out)
    except (OSError, ValueError) as error:  # missing files, bad JSON or CSV
        print(f"minilottery.plot: error: {error}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
