"""Threads: pieces run in parallel and every one once; a training's numbers do not depend
on how many threads it gets, bit for bit, even when the count changes while it trains."""

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from minilottery import parallel, threads
from minilottery.models import conv2, lenet300_100
from minilottery.optim import Adam
from minilottery.train import evaluate, train


def test_parallel_pieces_runs_every_piece_once_at_the_same_time():
    seen = []
    both_running = threading.Barrier(2, timeout=10)     # breaks unless two pieces overlap

    def work(piece, worker):
        seen.append((piece, worker))
        if piece < 2:
            both_running.wait()

    with threads.use_threads(2):
        threads.parallel_pieces(7, work)
    assert sorted(piece for piece, _ in seen) == list(range(7))
    assert {worker for _, worker in seen} <= {0, 1}


def test_parallel_pieces_reraises_and_runs_nested_calls_serially():
    def fails(piece, worker):
        if piece == 3:
            raise ArithmeticError("piece 3")

    with threads.use_threads(3), pytest.raises(ArithmeticError, match="piece 3"):
        threads.parallel_pieces(6, fails)

    inner = []

    def outer(piece, worker):
        threads.parallel_pieces(2, lambda p, w: inner.append((piece, p, w)))

    with threads.use_threads(2):
        threads.parallel_pieces(2, outer)
    assert sorted(inner) == [(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0)]


def test_use_threads_sets_and_restores_the_count():
    assert threads.thread_count() == 1
    with threads.use_threads(3) as count:
        assert count == threads.thread_count() == 3
        threads.set_threads(2)
        assert threads.thread_count() == 2
        with threads.use_threads(None):
            assert threads.thread_count() == threads.available_cores()
        assert threads.thread_count() == 2
    assert threads.thread_count() == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", [2]])
def test_a_bad_thread_count_is_named(bad):
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        threads.check_threads(bad)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        train(lenet300_100(), None, None, iterations=1, batch_size=1, seed=0, threads=bad)


def _data(shape, rng, n=240):
    def images(count):
        return rng.standard_normal((count, *shape)).astype(np.float32)
    return SimpleNamespace(x_train=images(n), y_train=rng.integers(0, 10, n),
                           x_val=images(50), y_val=rng.integers(0, 10, 50),
                           x_test=images(40), y_test=rng.integers(0, 10, 40))


@pytest.mark.parametrize("build, shape, iterations", [(lenet300_100, (1, 28, 28), 12),
                                                      (conv2, (3, 32, 32), 3)])
def test_training_is_identical_on_1_2_and_3_threads(build, shape, iterations):
    """The acceptance test of the thread count: parameters, optimizer state and history,
    bit for bit; and once more with a count that changes at every step."""
    data = _data(shape, np.random.default_rng(1))
    counts = iter([1, 3, 2] * iterations)
    runs = []
    for threads_given in (1, 2, 3, lambda: next(counts)):
        model = build(seed=4)
        optimizer = Adam(model, lr=1e-3)
        result = train(model, optimizer, data, iterations=iterations, batch_size=60, seed=9,
                       eval_every=2, eval_batch_size=20, threads=threads_given)
        runs.append(({name: p.copy() for name, p in model.named_params().items()},
                     {name: {k: a.copy() for k, a in s.items()} for name, s in optimizer.state.items()},
                     result.history.rows,
                     evaluate(model, data.x_test, data.y_test, 16, threads=threads_given
                              if not callable(threads_given) else 2)))
    for params, state, rows, scores in runs[1:]:
        assert rows == runs[0][2] and scores == runs[0][3]
        for name, value in params.items():
            np.testing.assert_array_equal(value, runs[0][0][name])
        for name, slots in state.items():
            for slot, value in slots.items():
                np.testing.assert_array_equal(value, runs[0][1][name][slot])


def _wait_for_threads(count):
    deadline = time.monotonic() + 10
    while parallel.worker_threads() != count and time.monotonic() < deadline:
        time.sleep(0.005)
    return parallel.worker_threads()


def report_thread_shares(shared, task, progress):
    """Task "first": the threads it is told while both tasks run, then it stays a while.
    Task "second": the same, then what it is told once it runs alone."""
    share = max(1, threads.available_cores() // 2)
    seen = [_wait_for_threads(share)]
    if task == "first":
        time.sleep(0.5)
    else:
        seen.append(_wait_for_threads(threads.available_cores()))
    return seen


def test_workers_share_the_cores_among_the_running_trainings():
    """Two tasks at once: each worker is told half the cores; the one left alone, all of them."""
    results = dict(parallel.run_tasks(["first", "second"], ready=lambda task: True,
                                      work=report_thread_shares, shared=SimpleNamespace(), jobs=2))
    share = max(1, threads.available_cores() // 2)
    assert results == {"first": [share], "second": [share, threads.available_cores()]}


def test_worker_threads_outside_a_pool(monkeypatch):
    monkeypatch.delenv(parallel.THREADS_ENV, raising=False)
    assert parallel.worker_threads() is None             # every core
    monkeypatch.setenv(parallel.THREADS_ENV, "3")
    assert parallel.worker_threads() == 3
    monkeypatch.setenv(parallel.THREADS_ENV, "many")
    assert parallel.worker_threads() is None



def test_a_conv2_lottery_writes_the_same_summary_with_jobs_1_and_2(tmp_path):
    """A short Conv-2 lottery (Winograd layers, threads shared among the workers as
    trainings start and end) writes byte-identical summary.csv files serially and on
    two worker processes."""
    from minilottery.config import make_config
    from minilottery.lottery import run_experiment
    from minilottery.rundir import RunDir

    data = _data((3, 32, 32), np.random.default_rng(2), n=300)
    config = make_config("conv2", iterations=4, eval_every=2, eval_batch_size=20, rounds=1,
                         trials=1, reinits=1, random_prunes=0)
    for jobs in (1, 2):
        run_experiment(config, tmp_path / f"jobs{jobs}", data=data, jobs=jobs)
    summaries = [RunDir(tmp_path / f"jobs{jobs}").summary.read_bytes() for jobs in (1, 2)]
    assert summaries[0] == summaries[1] and summaries[0].count(b"\n") == 1 + 3
