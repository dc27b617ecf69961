"""Memory of a whole (shrunk) run of the command line, over its whole process tree.

    PYTHONPATH=. python benchmarks/run_memory.py --data-dir DIR
    PYTHONPATH=. python benchmarks/run_memory.py --jobs 2 --run-args "--iterations 30 --rounds 1"

Runs ``python -m minilottery.run NET`` as a subprocess, once per ``--jobs``
value, and samples the process tree every ~50 ms from /proc:

* per process: its peak resident set, VmHWM from /proc/PID/status (read at
  every sample, so the last reading before the process exits is its peak).
  Not ``ru_maxrss``: Linux carries it over fork and exec, so a spawned worker
  would report its parent's peak if that was higher;
* the tree: at each sample the sum of VmRSS and the sum of Pss (from
  /proc/PID/smaps_rollup) over all processes alive; the peak of each sum is
  reported. RSS counts a page shared by k processes k times; PSS counts it
  1/k times in each, so the PSS sum is the memory the run really occupies.

The run's training schedule is shrunk (``--run-args``) but the dataset is the
whole one: the data is what dominates the memory. The run finds it as every run
does (``--data-dir``, else ``$MINILOTTERY_DATA``, the project's data/ folder, the
per-user cache; see minilottery.data) and never downloads it: if it is missing,
the benchmark stops with the run's message saying where it looked. Run on demand only (it
trains a net for minutes); it is not a test. Also prints the sha256 of each
run's summary.csv (equal for every --jobs value if results do not depend on it)
and any /dev/shm entry the run left behind.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHRUNK = "--iterations 60 --rounds 1 --trials 1 --eval-every 30 --random-prunes 0"
MB = 1 << 20


def parent_of() -> dict[int, int]:
    """pid -> parent pid of every process visible in /proc."""
    parents = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:  # exited meanwhile
                continue
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def tree(root: int) -> list[int]:
    """root and all its descendants."""
    children = {}
    for pid, ppid in parent_of().items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def kib_fields(path: str, names: tuple) -> dict[str, int] | None:
    """The named 'Name:   123 kB' lines of a /proc file, in bytes; None if the process is gone."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in names:
            values[key] = int(rest.split()[0]) * 1024
    return values


def label(pid: int, root: int) -> str:
    if pid == root:
        return "main"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"
    if "resource_tracker" in cmd:
        return "resource tracker"
    if "spawn_main" in cmd:
        return "worker"
    return cmd[:40]


def measure(command: list[str], interval: float = 0.05, log=None):
    """Run ``command``; return (per-process peaks, peak RSS sum, peak PSS sum, seconds, returncode)."""
    start = time.monotonic()
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    peaks: dict[int, list] = {}   # pid -> [label, VmHWM]
    rss_peak = pss_peak = 0
    while proc.poll() is None:
        rss_sum = pss_sum = 0
        for pid in tree(proc.pid):
            status = kib_fields(f"/proc/{pid}/status", ("VmHWM", "VmRSS"))
            rollup = kib_fields(f"/proc/{pid}/smaps_rollup", ("Pss",))
            if not status or "VmHWM" not in status or rollup is None:
                continue  # gone, or a zombie (no memory left)
            if pid not in peaks:
                peaks[pid] = [label(pid, proc.pid), 0]
            peaks[pid][1] = max(peaks[pid][1], status["VmHWM"])
            rss_sum += status["VmRSS"]
            pss_sum += rollup.get("Pss", 0)
        rss_peak, pss_peak = max(rss_peak, rss_sum), max(pss_peak, pss_sum)
        time.sleep(interval)
    return peaks, rss_peak, pss_peak, time.monotonic() - start, proc.returncode


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", default="conv6")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the datasets are (else $MINILOTTERY_DATA, data/, the cache)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--run-args", default=SHRUNK, help="the schedule flags passed to the run")
    parser.add_argument("--keep", type=Path, default=None,
                        help="put the run directories here (else a temporary directory)")
    args = parser.parse_args(argv)

    shm_before = set(os.listdir("/dev/shm"))
    with tempfile.TemporaryDirectory() as scratch:
        base = args.keep or Path(scratch)
        base.mkdir(parents=True, exist_ok=True)
        data_flags = [] if args.data_dir is None else ["--data-dir", str(args.data_dir)]
        shown = ["python -m minilottery.run", args.net, shlex.join(data_flags), args.run_args,
                 "--no-download --no-plots --jobs J"]
        print(" ".join(part for part in shown if part))
        print(f"{'jobs':>4}  {'process':<17} {'peak RSS':>9}")
        for jobs in args.jobs:
            out = base / f"{args.net}-jobs{jobs}"
            command = [sys.executable, "-m", "minilottery.run", args.net, *data_flags,
                       "--out", str(out), "--jobs", str(jobs), "--no-download", "--no-plots",
                       *shlex.split(args.run_args)]
            log_path = base / f"{args.net}-jobs{jobs}.log"
            with open(log_path, "wb") as log:
                peaks, rss, pss, seconds, code = measure(command, log=log)
            if code != 0:      # e.g. the dataset is not found: the run's message says where it looked
                tail = log_path.read_text(errors="replace").splitlines()[-30:]
                sys.exit(f"the run failed (exit {code}):\n" + "\n".join(tail))
            for name, hwm in sorted(peaks.values(), key=lambda p: p[0] != "main"):
                print(f"{jobs:>4}  {name:<17} {hwm / MB:>6.0f} MB")
            digest = hashlib.sha256((out / "summary.csv").read_bytes()).hexdigest()[:16]
            print(f"{jobs:>4}  {'tree, sum of RSS':<17} {rss / MB:>6.0f} MB")
            print(f"{jobs:>4}  {'tree, sum of PSS':<17} {pss / MB:>6.0f} MB"
                  f"   ({seconds:.0f} s, summary.csv sha256 {digest})")
    left = sorted(set(os.listdir("/dev/shm")) - shm_before)
    print("/dev/shm: nothing left behind" if not left else f"/dev/shm: LEFT BEHIND {left}")


if __name__ == "__main__":
    main()
