"""What running a training through Dask costs beyond the training, against worker processes.

    PYTHONPATH=. python benchmarks/cluster_overhead.py             # per-task overhead, ~15 s
    PYTHONPATH=. python benchmarks/cluster_overhead.py --with-run  # + the quick LeNet run, both ways

Needs the cluster extra (pip install -e ".[cluster]"). What is measured:

* Per-task overhead: ``run_tasks`` over TASKS tasks that do nothing but send one
  progress report, on ``DaskExecutor("local:2")`` and on ``ProcessExecutor(2)``
  (each started, and warmed with a few tasks, before the clock starts): wall
  time per task. Once with tasks of a few bytes, once with tasks that carry a
  LeNet training's inputs (its 266,610 weights and a mask of the same size,
  float32: 2.1 MB), as the lottery's do.
* ``--with-run``: the wall time of ``python -m minilottery.run lenet`` (the quick
  preset) with ``--jobs 2`` and with ``--cluster local:2``, each into a fresh
  temporary run directory, with start-up included.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from minilottery.cluster import DaskExecutor
from minilottery.parallel import ProcessExecutor, run_tasks

TASKS = 200
LENET_WEIGHTS = 266_610  # lenet300_100: 784*300 + 300 + 300*100 + 100 + 100*10 + 10


def noop(shared, task, progress):
    """One progress report: a task that costs nothing but being a task."""
    progress(task[0], "done")
    return task[0]


def seconds_per_task(executor, payload, tasks=TASKS):
    started = time.perf_counter()
    for _ in run_tasks([(index, payload) for index in range(tasks)], ready=lambda task: True,
                       work=noop, shared=None, executor=executor):
        pass
    return (time.perf_counter() - started) / tasks


def overheads():
    lenet = {"params": np.ones(LENET_WEIGHTS, np.float32), "masks": np.ones(LENET_WEIGHTS, np.float32)}
    rows = []
    with DaskExecutor("local:2") as dask_executor:
        seconds_per_task(dask_executor, None, tasks=20)  # the workers import the package
        rows.append(("--cluster local:2", seconds_per_task(dask_executor, None),
                     seconds_per_task(dask_executor, lenet)))
    process_executor = ProcessExecutor(2)  # a pool per run_tasks, as the lottery has
    rows.append(("--jobs 2", seconds_per_task(process_executor, None),
                 seconds_per_task(process_executor, lenet)))
    print(f"per-task overhead over {TASKS} tasks, 2 workers:")
    print(f"{'executor':<18} {'empty task':>12} {'LeNet inputs':>14}")
    for name, empty, loaded in rows:
        print(f"{name:<18} {empty * 1e3:>9.1f} ms {loaded * 1e3:>11.1f} ms")


def quick_runs():
    """Time the quick LeNet run both ways; check that both write the same summary.csv."""
    times, summaries = {}, {}
    for flags in (["--jobs", "2"], ["--cluster", "local:2"]):
        name = " ".join(flags)
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "minilottery.run", "lenet", "--no-plots",
                            "--out", f"{folder}/run", *flags], check=True,
                           stdout=subprocess.DEVNULL)
            times[name] = time.perf_counter() - started
            summaries[name] = Path(folder, "run", "summary.csv").read_bytes()
        print(f"python -m minilottery.run lenet {name}: {times[name]:.0f} s")
    trainings = len(summaries["--jobs 2"].splitlines()) - 1
    extra = times["--cluster local:2"] - times["--jobs 2"]
    print(f"difference: {extra:+.0f} s over {trainings} trainings ({extra / trainings:+.2f} s each); "
          f"summary.csv {'identical' if len(set(summaries.values())) == 1 else 'DIFFERS'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--with-run", action="store_true",
                        help="also time the quick LeNet run with --jobs 2 and --cluster local:2")
    args = parser.parse_args()
    overheads()
    if args.with_run:
        quick_runs()


if __name__ == "__main__":
    main()
