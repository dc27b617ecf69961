"""Before a run continues, every file it will rely on is read and checked.

Atomic writes (``minilottery.rundir``) mean a killed run leaves each file
absent or complete. Files can still be damaged afterwards: a disk error, a
copy cut short, an edit by hand. ``check_run`` reads them all before the
lottery trusts any of them:

==============  ====================================================  ===========================
file            must hold                                             when it does not
==============  ====================================================  ===========================
theta0.npz      the net's parameters: names, shapes, float32          rebuilt from the seed
rewind.npz      the same                                              the dense ticket trains again
mask.npz        the prunable weights' names and shapes, only 0 and 1  pruned again from its source
metrics.json    the summary's fields, for this very training          the training runs again
history.csv     the schedule's evaluations, agreeing with metrics     the training runs again
final.npz       the net's parameters                                  the training runs again
checkpoint.npz  see ``train.read_checkpoint``                         restarts from iteration 0
==============  ====================================================  ===========================

A damaged file is set aside (renamed ``NAME.corrupt``, see
``rundir.set_aside``) and reported in one line, and its work is redone.
Seeded training is deterministic, so a redone file is the file that was
lost, and the healed run ends with the numbers of one never damaged.
"""

from __future__ import annotations

import math

from .results import read_metrics, summary_columns
from .rundir import Piece, RunFileError, level_pieces, load_arrays, set_aside
from .train import History, evaluation_iterations, read_checkpoint


def check_run(run, config, model, optimizer, notice):
    """Set aside every damaged file of ``run`` (a RunDir of ``config``), telling ``notice(line)``.

    ``model`` and ``optimizer`` are a template of the experiment's net and
    optimizer: their parameter names and shapes are what the files must hold.
    Afterwards every file left is intact, and a training counts as done
    (``run.is_done``) only if all its files are.
    """
    params = {name: p.shape for name, p in model.named_params().items()}
    masks = {name: m.shape for name, m in model.named_masks().items()}
    columns = summary_columns(config)

    def check(path, consequence, read, required=False):
        """Read ``path`` with ``read``; if damaged, set it aside and say so. True if intact.

        A missing file is intact (the run writes it when it gets there) unless ``required``.
        """
        try:
            read(path)
            return True
        except FileNotFoundError:
            if required:
                notice(f"{path}: missing; {consequence}")
            return not required
        except RunFileError as error:
            moved = set_aside(path)
            notice(f"{error}; set aside as {moved.name}, {consequence}")
            return False

    def read_params(path):
        return load_arrays(path, params)

    def read_mask(path):
        return load_arrays(path, masks, binary=True)

    for trial in range(config.trials):
        check(run.theta0(trial), "rebuilt from the seed", read_params)
        dense = Piece(trial, 0, "ticket")
        if config.rewind_iteration > 0 and not check(run.rewind(trial), "the dense ticket trains "
                                                     "again", read_params, run.is_done(dense)):
            _undo(run, dense)
        for level in range(config.rounds + 1):
            check(run.mask(trial, level), "pruned again from its source", read_mask)
            for r in range(config.random_prunes if level > 0 else 0):
                check(run.piece(Piece(trial, level, "random", r)) / "mask.npz",
                      "drawn again from its seed", read_mask)

    again = "the training runs again"
    for level in range(config.rounds + 1):
        for piece in level_pieces(config, level):
            folder = run.piece(piece)
            if run.is_done(piece):
                metrics = {}
                intact = (check(folder / "metrics.json", again,
                                lambda path: metrics.update(read_metrics(path, piece, columns)))
                          and check(folder / "history.csv", again,
                                    lambda path: check_history(path, config, metrics), required=True)
                          and (piece.branch != "ticket"
                               or check(folder / "final.npz", again, read_params, required=True)))
                if intact:
                    (folder / "checkpoint.npz").unlink(missing_ok=True)  # a kill just after the end
                else:
                    _undo(run, piece)
            if not run.is_done(piece):
                rewinds = config.rewind_iteration > 0 and piece == Piece(piece.trial, 0, "ticket")
                check(folder / "checkpoint.npz", "the training restarts from iteration 0",
                      lambda path: read_checkpoint(path, model, optimizer, config.iterations,
                                                   config.eval_every,
                                                   config.rewind_iteration if rewinds else None))


def _undo(run, piece):
    """Mark a finished training as not done, so that it runs again and rewrites its files."""
    (run.piece(piece) / "metrics.json").unlink(missing_ok=True)


def check_history(path, config, metrics):
    """A training's history.csv, checked: the schedule's evaluations, agreeing with ``metrics``."""
    try:
        history = History.from_csv(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as error:
        raise RunFileError(path, f"not readable as a history ({error})") from error
    expected = evaluation_iterations(config.iterations, config.eval_every)
    if history.column("iteration").tolist() != expected:
        raise RunFileError(path, f"does not hold the evaluations at iterations {expected[0]}, "
                                 f"{expected[1] if len(expected) > 1 else ''}..., {expected[-1]}")
    summary = history.summary(config.accuracy_at)
    differs = sorted(name for name, value in summary.items()
                     if name in metrics and not _same(metrics[name], value))
    if differs:
        raise RunFileError(path, f"disagrees with metrics.json on {', '.join(differs)}")
    return history


def _same(a, b):
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a)
                      and math.isnan(b))
