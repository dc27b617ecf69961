"""Shared memory for worker processes: equal arrays, no copies, nothing left behind."""

import multiprocessing
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minilottery.parallel import run_tasks
from minilottery.shared import MIN_SHARED_BYTES, SharedArrays

SHM = Path("/dev/shm")
pytestmark = pytest.mark.skipif(not SHM.is_dir(), reason="lists segments in /dev/shm (Linux)")


def our_segments(pid=None):
    """The segments process ``pid`` (default: this one) made and has not unlinked."""
    return sorted(p.name for p in SHM.glob(f"minilottery-{pid or os.getpid()}-*"))


@pytest.fixture(scope="module")
def worker():
    """One spawned process, as the lottery's workers are, for every example."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


def load_in_worker(payload):
    """What a worker sees: each array, whether it may write it, and what holds its memory."""
    return [(a, a.flags.writeable, type(a.base).__name__) for a in pickle.loads(payload)]


arrays = st.lists(
    st.tuples(st.sampled_from([np.float32, np.float64, np.int64, np.uint8]),
              st.lists(st.integers(0, 70), min_size=1, max_size=4),
              st.booleans()),            # a strided view instead of the array itself
    min_size=1, max_size=4)


@settings(deadline=None, max_examples=10)
@given(specs=arrays, size=st.sampled_from([1, MIN_SHARED_BYTES // 2, 2 * MIN_SHARED_BYTES]))
def test_workers_get_equal_arrays_and_nothing_is_left_behind(worker, specs, size):
    rng = np.random.default_rng(0)
    sent = []
    for dtype, shape, strided in specs:
        n = max(1, size // np.dtype(dtype).itemsize // int(np.prod(shape[1:]) or 1))
        full = (rng.standard_normal((n, *shape[1:])) * 100).astype(dtype)
        sent.append(full[::2] if strided else full)
    with SharedArrays() as shared:
        made = shared.empty((3, 5), np.float32)
        made[...] = np.arange(15).reshape(3, 5)
        payload = shared.dumps([made, *sent])
        received = worker.submit(load_in_worker, payload).result()
    assert our_segments() == []
    for original, (copy, writeable, holder) in zip([made, *sent], received):
        assert copy.dtype == original.dtype and copy.shape == original.shape
        np.testing.assert_array_equal(copy, original)
        if original.nbytes >= MIN_SHARED_BYTES:  # mapped, and read-only: workers share it
            assert holder == "_Mapping" and not writeable
    np.testing.assert_array_equal(made, np.arange(15).reshape(3, 5))  # still readable here


def test_arrays_made_by_empty_are_sent_by_name_others_copied_once():
    with SharedArrays() as shared:
        big = shared.empty((MIN_SHARED_BYTES // 4,), np.float32)
        assert len(our_segments()) == 1
        payload = shared.dumps({"images": big, "labels": np.zeros(10, np.int64)})
        assert len(our_segments()) == 1, "an array already in shared memory was copied"
        assert len(payload) < 1000, "the images were pickled as bytes"
        other = np.ones(MIN_SHARED_BYTES // 4, np.float32)
        shared.dumps(other)
        assert len(our_segments()) == 2  # the ordinary array got its own segment
    assert our_segments() == []


def test_segments_are_unlinked_when_the_block_fails_and_arrays_stay_usable():
    with pytest.raises(RuntimeError, match="boom"):
        with SharedArrays() as shared:
            kept = shared.empty((1000, 10), np.float64)
            kept[...] = 2.0
            assert len(our_segments()) == 1
            raise RuntimeError("boom")
    assert our_segments() == []
    assert kept.sum() == 20000.0  # unlinked, not unmapped: this process still reads it


def fail_on_second(shared, task, progress):
    if task == 1:
        raise ValueError(f"task {task} failed in a worker")
    return float(shared.x.sum())


def test_run_tasks_shares_the_data_and_cleans_up_after_a_failing_worker():
    data = SimpleNamespace(x=np.ones(MIN_SHARED_BYTES, np.uint8))
    with pytest.raises(ValueError, match="task 1 failed"):
        list(run_tasks([0, 1, 2], ready=lambda task: True, work=fail_on_second,
                       shared=data, jobs=2))
    assert our_segments() == []
    done = list(run_tasks([0, 2], ready=lambda task: True, work=fail_on_second, shared=data, jobs=2))
    assert sorted(done) == [(0, float(MIN_SHARED_BYTES)), (2, float(MIN_SHARED_BYTES))]
    assert our_segments() == []


def test_empty_rejects_object_arrays():
    with SharedArrays() as shared, pytest.raises(ValueError, match="object"):
        shared.empty((2,), object)
