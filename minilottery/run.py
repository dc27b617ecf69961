"""The experiment from one command: ``python -m minilottery.run lenet``.

Trains the net, prunes it level by level, trains the controls, prints a table
line per level and at the end the whole table, and draws the paper's figures
into the run directory. ``--preset paper`` runs the paper's full protocol;
the default preset ``quick`` finishes in minutes on a laptop (see README).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import lottery
from .config import NETS, PRESETS, load_config, make_config
from .parallel import ProcessExecutor, Terminated, WorkerDied, sigterm_as_interrupt
from .pieces import DataSpec
from .progress import ConsoleReporter, duration
from .results import table
from .rundir import RunFileError, RunInUse, RunWriteError
from .shared import SharedArrays

# flag -> Config field; every one defaults to None, meaning "the preset's value".
OVERRIDES = {
    "rounds": int, "iterations": int, "trials": int, "seed": int, "reinits": int,
    "random_prunes": int, "batch_size": int, "lr": float, "momentum": float,
    "fc_rate": float, "conv_rate": float, "output_rate": float, "eval_every": int,
    "weight_decay": float, "warmup_iterations": int, "pruning": str,
}


class RecordGiven(argparse.Action):
    """Store the value and note that the flag was given: on --resume an explicit
    --preset quick must match the stored run, the default need not."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, self.dest + "_given", True)


def parse_layer_rate(text):
    layer, sep, rate = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return layer, float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAYER=RATE such as fc1=0.3, got {text!r}")


def parse_iterations(text):
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected iterations separated by commas such as "
                                         f"20000,25000, got {text!r}")


def build_parser():
    presets = "; ".join(
        f"{name}: " + ", ".join(f"{k}={v}" for k, v in PRESETS[name]["lenet"].items()
                                 if k in ("iterations", "rounds", "trials"))
        for name in PRESETS)
    parser = argparse.ArgumentParser(
        prog="python -m minilottery.run",
        description="Find lottery tickets: iterative magnitude pruning with reset to the "
                    "initial weights, against random-reinit and random-pruning controls.",
        epilog=f"Presets (LeNet values shown; see README for all nets): {presets}.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("net", choices=list(NETS), help="the network (and its dataset)")
    parser.add_argument("--preset", choices=list(PRESETS), default="quick", action=RecordGiven,
                        help="schedule: 'quick' for minutes on a laptop, 'paper' for the paper's")
    parser.add_argument("--out", type=Path, default=None,
                        help="run directory (default: runs/NET-PRESET-seedSEED)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the folder that holds the dataset, the only one looked in "
                             "(without it: $MINILOTTERY_DATA, data/, the cache)")
    parser.add_argument("--no-download", action="store_true",
                        help="never download a missing dataset; fail with where to put it")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last finished training")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="train independent trainings in this many processes "
                             "(results do not depend on it)")
    parser.add_argument("--cluster", metavar="ADDRESS", default=None,
                        help="train on a Dask cluster instead of --jobs processes: its scheduler's "
                             "address (tcp://host:8786), or local:N for a cluster of N worker "
                             "processes on this machine (needs pip install -e \".[cluster]\")")
    parser.add_argument("--no-plots", action="store_true", help="do not draw the figures")
    group = parser.add_argument_group("experiment settings (default: the preset's value)")
    group.add_argument("--rounds", type=int, help="pruning rounds after the dense level 0")
    group.add_argument("--iterations", type=int, help="training iterations per level")
    group.add_argument("--trials", type=int, help="independent initialisations")
    group.add_argument("--seed", type=int, help="base seed of every random stream")
    group.add_argument("--reinits", type=int, help="random-reinit controls per trial and level (0: none)")
    group.add_argument("--random-prunes", type=int,
                       help="random-pruning controls per trial and level (0: none)")
    group.add_argument("--optimizer", choices=["adam", "sgd"])
    group.add_argument("--lr", type=float, help="learning rate")
    group.add_argument("--momentum", type=float, help="SGD momentum")
    group.add_argument("--batch-size", type=int)
    group.add_argument("--weight-decay", type=float,
                       help="L2 weight decay on the surviving weights (a pruned weight stays 0)")
    group.add_argument("--warmup", type=int, dest="warmup_iterations", metavar="K",
                       help="raise the lr linearly from 0 over the first K iterations (0: none)")
    group.add_argument("--lr-milestones", type=parse_iterations, metavar="I,J,...",
                       help="divide the lr by 10 at these iterations ('' for none)")
    group.add_argument("--accuracy-at", type=parse_iterations, metavar="I,J,...",
                       help="read the test accuracy at these iterations, as §4 does, instead "
                            "of at early stopping ('' for early stopping only)")
    group.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                       help="random 4-pixel pad-and-crop and horizontal flip of training images")
    group.add_argument("--pruning", choices=["layerwise", "global"],
                       help="prune each layer by its rate, or rank each kind of layer together "
                            "(the output layer alone)")
    group.add_argument("--fc-rate", type=float, help="fraction of surviving fc weights pruned per round")
    group.add_argument("--conv-rate", type=float, help="the same for conv layers")
    group.add_argument("--output-rate", type=float, help="the same for the output layer")
    group.add_argument("--rate", type=parse_layer_rate, action="append", metavar="LAYER=RATE",
                       help="a per-layer rate, e.g. --rate fc1=0.3 (repeatable)")
    group.add_argument("--eval-every", type=int, help="iterations between evaluations")
    group.add_argument("--rewind", type=int, dest="rewind_iteration",
                       help="reset survivors to their weights at this iteration (0: theta_0)")
    group.add_argument("--one-shot", action="store_true", default=None,
                       help="prune the trained dense net once to each level's size")
    return parser


def resolve_config(args):
    """The Config the command asks for, or with --resume the stored one, validated.

    On --resume every flag given explicitly (the net, --preset, each setting)
    must agree with the stored config.json (read with load_config, which
    refuses a hand-edited file); a disagreement is an error naming each one.
    """
    overrides = {name: getattr(args, name) for name in OVERRIDES}
    overrides.update(optimizer=args.optimizer, rewind_iteration=args.rewind_iteration,
                     one_shot=args.one_shot, lr_milestones=args.lr_milestones,
                     accuracy_at=args.accuracy_at,
                     augment=args.augment,
                     layer_rates=dict(args.rate) if args.rate else None)
    stored_path = args.out / "config.json"
    if not (args.resume and stored_path.exists()):
        return make_config(args.net, args.preset, **overrides)
    stored = load_config(stored_path)
    asked = {"net": args.net, **{k: v for k, v in overrides.items() if v is not None}}
    if getattr(args, "preset_given", False):
        asked["preset"] = args.preset
    differs = [f"{name} is {getattr(stored, name)!r} there, {value!r} asked"
               for name, value in asked.items() if getattr(stored, name) != value]
    if differs:
        raise ValueError(f"--resume: {args.out} holds a run made with other settings "
                         f"({'; '.join(differs)}); drop those flags or choose another --out")
    return stored


def load_data(args, config, shared_arrays):
    """The run's dataset; with --jobs > 1 straight into shared memory, one copy that every
    worker maps (see minilottery.shared)."""
    allocate = shared_arrays.empty if args.jobs > 1 else np.empty
    return lottery.load_data(config, args.data_dir, download=not args.no_download,
                             allocate=allocate)


@contextmanager
def executor_for(args):
    """Where the trainings run: --cluster's Dask cluster, else --jobs worker processes."""
    if args.cluster is None:
        yield ProcessExecutor(args.jobs)  # one job runs in this process
        return
    from .cluster import DaskExecutor
    with DaskExecutor(args.cluster) as executor:
        link = f", dashboard {executor.dashboard_link}" if executor.dashboard_link else ""
        print(f"cluster {args.cluster}: {executor.size} workers{link}")
        yield executor


def run(args, config, prog):
    """Open (or start) the run, train what is missing, print the table, draw the figures."""
    def notice(line):
        print(f"{prog}: {line}", file=sys.stderr)

    with SharedArrays() as shared_arrays, executor_for(args) as executor:
        def data_for_workers():
            # On a cluster each worker loads the data itself; here it goes to shared memory.
            if not executor.shares_files:
                return DataSpec.of(config, args.data_dir, download=not args.no_download)
            return load_data(args, config, shared_arrays)

        # A new run loads its data first: a missing dataset must not leave a run directory.
        new = not (args.out / "config.json").exists()
        data = data_for_workers() if new else None
        with lottery.open_run(config, args.out, notice=notice) as run_dir:
            todo = lottery.pieces_to_do(config, run_dir.root)
            if todo:
                data = data or data_for_workers()
                branches = ["ticket"] + ["reinit"] * (config.reinits > 0) + ["random"] * (config.random_prunes > 0)
                print(f"{config.net}: {config.rounds + 1} levels x {config.trials} trials, "
                      f"{config.iterations} iterations each; {len(todo)} trainings to do "
                      f"-> {run_dir.root}")
                reporter = ConsoleReporter(len(todo), config.iterations, branches,
                                           levels=config.rounds + 1)
                try:
                    lottery.train_pieces(config, run_dir, data, todo, executor=executor,
                                         reporter=reporter, shared_arrays=shared_arrays)
                finally:
                    reporter.close()
                print(f"done in {duration(reporter.elapsed())}")
            else:
                print(f"{args.out}: every training of this run is finished; nothing to train.")
            rows = lottery.write_summary(run_dir, config)  # also repairs a stale or damaged one
            print()
            print(table(rows))
            print(f"\nsummary: {run_dir.summary}")
            if not args.no_plots:
                from .plots import draw_figures
                for path in draw_figures(run_dir.root):
                    print(f"figure:  {path}")


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    seed = args.seed if args.seed is not None else 0
    args.out = args.out or Path("runs") / f"{args.net}-{args.preset}-seed{seed}"
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file, not a directory")

    try:
        config = resolve_config(args)
        lottery.check_schedule(config)
    except ValueError as error:
        parser.error(str(error))
    if (args.out / "config.json").exists() and not args.resume:
        parser.error(f"{args.out} already holds a run: add --resume to continue it, "
                     f"or choose another --out")

    def fail(message, code, resumable=False):
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        if resumable and (args.out / "config.json").exists():
            print(f"Finished trainings are saved in {args.out}; continue with:\n"
                  f"  python -m minilottery.run {config.net} --out {args.out} --resume",
                  file=sys.stderr)
        return code

    try:
        with sigterm_as_interrupt():
            run(args, config, parser.prog)
    except KeyboardInterrupt as interrupt:
        signum = interrupt.signum if isinstance(interrupt, Terminated) else signal.SIGINT
        print(file=sys.stderr)
        return fail(f"stopped by {signal.Signals(signum).name}", 128 + signum, resumable=True)
    except RunInUse as error:
        return fail(error, 2)
    except RunFileError as error:  # a damaged file the run cannot redo
        return fail(error, 2)
    except (RunWriteError, WorkerDied) as error:
        return fail(error, 1, resumable=True)
    except (OSError, ValueError) as error:  # a missing or corrupt dataset, a bad run directory
        return fail(error, 2)
    except ImportError as error:  # --cluster without the cluster extra
        return fail(error, 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
