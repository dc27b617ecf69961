"""Atomic writes: a file is either absent or complete, with the usual permissions."""

import os
import stat

import numpy as np
import pytest

from minilottery.rundir import load_arrays, save_arrays, write_atomic, write_text


def test_a_written_file_has_the_mode_open_would_give(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "hello")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
    write_text(tmp_path / "kept.txt", "old")

    def fail_halfway(f):
        f.write(b"half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(tmp_path / "kept.txt", fail_halfway)
    with pytest.raises(RuntimeError):
        write_atomic(tmp_path / "new.txt", fail_halfway)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]
    assert (tmp_path / "kept.txt").read_text() == "old"


def test_arrays_round_trip_exactly(tmp_path):
    arrays = {"fc1.W": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32),
              "fc1.b": np.zeros(4, np.float32)}
    save_arrays(tmp_path / "w.npz", arrays)
    loaded = load_arrays(tmp_path / "w.npz")
    assert loaded.keys() == arrays.keys()
    for name in arrays:
        assert loaded[name].dtype == np.float32
        np.testing.assert_array_equal(loaded[name], arrays[name])
