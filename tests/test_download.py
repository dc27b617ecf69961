"""Tests of minilottery.download.fetch and of the loaders' download path,
against a real HTTP server on 127.0.0.1 (a thread, an ephemeral port).

The server serves small generated files and misbehaves on purpose: a corrupt
file, a body shorter than its Content-Length, a stall, flaky 503s, 404s.
In every failure the destination must stay absent and no temp file remain.
"""

import gzip
import hashlib
import io
import pickle
import socket
import tarfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from minilottery import data, dataformats, download
from minilottery.data import ChecksumError, DatasetNotFoundError, load_cifar10, load_mnist
from minilottery.download import DownloadError, fetch

GOOD = bytes(range(256)) * 300  # 76,800 bytes: several read chunks
GOOD_MD5 = hashlib.md5(GOOD).hexdigest()


class Server:
    """routes: path -> (kind, body). kinds: ok, stall, truncate, flaky, 404."""

    def __init__(self):
        self.routes, self.hits, self.release = {}, Counter(), threading.Event()
        self.flaky_failures = 2
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                server.hits[self.path] += 1
                kind, body = server.routes.get(self.path, ("404", b""))
                if kind == "404" or (kind == "flaky" and server.hits[self.path] <= server.flaky_failures):
                    self.send_error(404 if kind == "404" else 503)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if kind in ("ok", "flaky"):
                    self.wfile.write(body)
                elif kind == "truncate":  # promise len(body), send half, hang up
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                elif kind == "stall":  # send a little, then go silent
                    self.wfile.write(body[:1000])
                    self.wfile.flush()
                    server.release.wait(10)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def serve(self, path, body, kind="ok"):
        self.routes[path] = (kind, body)
        return self.base + path

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(download, "RETRY_BACKOFF", 0.0)


def md5_verifier(expected):
    def verify(path):
        actual = hashlib.md5(path.read_bytes()).hexdigest()
        if actual != expected:
            raise ChecksumError(path, "md5", expected, actual)
    return verify


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------- fetch

def test_good_file_lands_verified_and_alone(server, tmp_path):
    url = server.serve("/good.bin", GOOD)
    dest = tmp_path / "out" / "good.bin"
    assert fetch(url, dest, md5_verifier(GOOD_MD5), timeout=5) == dest
    assert dest.read_bytes() == GOOD
    assert listing(dest.parent) == ["good.bin"]


def test_corrupt_file_raises_and_leaves_nothing(server, tmp_path):
    url = server.serve("/bad.bin", GOOD[:-1] + b"X")
    dest = tmp_path / "bad.bin"
    with pytest.raises(DownloadError) as info:
        fetch(url, dest, md5_verifier(GOOD_MD5), timeout=5, retries=2)
    assert GOOD_MD5 in str(info.value) and url in str(info.value)
    assert server.hits["/bad.bin"] == 1  # bad content: no retry on the same mirror
    assert listing(tmp_path) == []


def test_fallback_mirror_after_a_corrupt_one(server, tmp_path):
    urls = [server.serve("/m1/f", b"garbage"), server.serve("/m2/f", GOOD)]
    dest = tmp_path / "f"
    fetch(urls, dest, md5_verifier(GOOD_MD5), timeout=5)
    assert dest.read_bytes() == GOOD and listing(tmp_path) == ["f"]
    assert server.hits["/m1/f"] == 1 and server.hits["/m2/f"] == 1


def test_stalled_server_times_out_and_leaves_nothing(server, tmp_path):
    url = server.serve("/stall.bin", GOOD, kind="stall")
    dest = tmp_path / "stall.bin"
    start = time.monotonic()
    with pytest.raises(DownloadError, match="(?i)timed out"):
        fetch(url, dest, timeout=0.3, retries=1)
    assert time.monotonic() - start < 5
    assert server.hits["/stall.bin"] == 2  # a timeout is transient: retried once
    assert listing(tmp_path) == []


def test_truncated_body_is_detected_without_a_verifier(server, tmp_path):
    url = server.serve("/short.bin", GOOD, kind="truncate")
    with pytest.raises(DownloadError, match=f"after {len(GOOD) // 2} of {len(GOOD)} bytes"):
        fetch(url, tmp_path / "short.bin", timeout=5, retries=0)
    assert listing(tmp_path) == []


def test_transient_errors_are_retried(server, tmp_path):
    url = server.serve("/flaky.bin", GOOD, kind="flaky")
    fetch(url, tmp_path / "flaky.bin", md5_verifier(GOOD_MD5), timeout=5, retries=2)
    assert server.hits["/flaky.bin"] == 3 and (tmp_path / "flaky.bin").read_bytes() == GOOD


def test_retries_are_bounded(server, tmp_path):
    url = server.serve("/flaky.bin", GOOD, kind="flaky")
    with pytest.raises(DownloadError, match="HTTP 503"):
        fetch(url, tmp_path / "flaky.bin", timeout=5, retries=1)
    assert server.hits["/flaky.bin"] == 2 and listing(tmp_path) == []


def test_404_moves_on_without_retrying(server, tmp_path):
    urls = [server.base + "/absent", server.serve("/there", GOOD)]
    fetch(urls, tmp_path / "there", timeout=5, retries=3)
    assert server.hits["/absent"] == 1 and (tmp_path / "there").read_bytes() == GOOD


def test_connection_refused_is_reported(tmp_path):
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=f"127.0.0.1:{port}"):
        fetch(f"http://127.0.0.1:{port}/x", tmp_path / "x", timeout=2, retries=0)
    assert listing(tmp_path) == []


def test_failure_leaves_an_existing_file_untouched(server, tmp_path):
    dest = tmp_path / "keep.bin"
    dest.write_bytes(b"previous content")
    with pytest.raises(DownloadError):
        fetch(server.serve("/bad", b"nope"), dest, md5_verifier(GOOD_MD5), timeout=5)
    assert dest.read_bytes() == b"previous content" and listing(tmp_path) == ["keep.bin"]


def test_progress_bar_only_when_asked_or_on_a_terminal(server, tmp_path, capsys):
    url = server.serve("/p.bin", GOOD)
    fetch(url, tmp_path / "a.bin", timeout=5)  # stderr is captured: not a terminal
    assert capsys.readouterr().err == ""
    fetch(url, tmp_path / "b.bin", timeout=5, progress=True)
    err = capsys.readouterr().err
    assert "b.bin" in err and "100%" in err and "\r" in err


def test_fetch_needs_a_url(tmp_path):
    with pytest.raises(ValueError, match="no URL"):
        fetch([], tmp_path / "x")


# ---------------------------------------------------------------- the loaders' download path



def serve_fake_mnist(server, monkeypatch, n_train=30, n_test=10):
    """Serve tiny IDX .gz files under /good/ and damaged copies under /bad/."""
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    table = {}
    for stem, a in arrays.items():
        raw = bytes([0, 0, 8, a.ndim]) + np.array(a.shape, ">u4").tobytes() + a.tobytes()
        table[stem] = hashlib.md5(raw).hexdigest()
        server.serve(f"/good/{stem}.gz", gzip.compress(raw))
        server.serve(f"/bad/{stem}.gz", gzip.compress(raw[:-1] + bytes([raw[-1] ^ 1])))
    monkeypatch.setattr(dataformats, "MNIST_MD5", table)
    return arrays


def test_load_mnist_downloads_with_fallback(server, isolated, monkeypatch):
    arrays = serve_fake_mnist(server, monkeypatch)
    monkeypatch.setattr(data, "MNIST_MIRRORS", (server.base + "/bad/", server.base + "/good/"))
    (isolated / "root").mkdir()  # an explicit data_dir must exist (minilottery.data)
    ds = load_mnist(isolated / "root", val_size=5, normalize=False)
    folder = isolated / "root" / "mnist"
    assert listing(folder) == sorted(s + ".gz" for s in arrays)
    assert ds.source == str(folder) and ds.x_train.shape == (25, 1, 28, 28)
    np.testing.assert_array_equal(ds.x_test[:, 0], arrays["t10k-images-idx3-ubyte"] / np.float32(255))
    assert all(server.hits[f"/bad/{s}.gz"] == 1 for s in arrays)
    # a second load finds the files and downloads nothing
    load_mnist(isolated / "root", val_size=5)
    assert all(server.hits[f"/good/{s}.gz"] == 1 for s in arrays)


def test_load_mnist_downloads_into_the_cache_by_default(server, isolated, monkeypatch):
    serve_fake_mnist(server, monkeypatch)
    monkeypatch.setattr(data, "MNIST_MIRRORS", (server.base + "/good/",))
    ds = load_mnist(val_size=5)
    assert ds.source == str(isolated / "xdg" / "minilottery" / "mnist")


def test_load_mnist_download_failure_lists_places_and_attempts(server, isolated, monkeypatch):
    serve_fake_mnist(server, monkeypatch)
    monkeypatch.setattr(data, "MNIST_MIRRORS", (server.base + "/bad/", server.base + "/nothing/"))
    (isolated / "env").mkdir()  # $MINILOTTERY_DATA must name an existing folder
    monkeypatch.setenv("MINILOTTERY_DATA", str(isolated / "env"))
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist()
    message = str(info.value)
    assert str(isolated / "env" / "mnist") in message and str(isolated / "project" / "mnist") in message
    assert server.base + "/bad/train-images-idx3-ubyte.gz" in message and "HTTP 404" in message
    assert "md5" in message
    target = isolated / "env" / "mnist"  # downloads go to $MINILOTTERY_DATA/mnist: left empty
    assert listing(target) == []


def test_load_cifar10_downloads_the_tar(server, isolated, monkeypatch):
    rng = np.random.default_rng(2)
    buffer, md5s, test_x = io.BytesIO(), {}, None
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            x = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
            blob = pickle.dumps({b"data": x, b"labels": [int(v) for v in rng.integers(0, 10, 4)]}, protocol=2)
            md5s[name] = hashlib.md5(blob).hexdigest()
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
            test_x = x
    archive = buffer.getvalue()
    monkeypatch.setattr(dataformats, "CIFAR10_BATCH_MD5", md5s)
    monkeypatch.setattr(dataformats, "CIFAR10_TAR_MD5", hashlib.md5(archive).hexdigest())
    monkeypatch.setattr(data, "CIFAR10_URLS", (server.serve("/cifar.tar.gz", archive),))
    (isolated / "root").mkdir()
    ds = load_cifar10(isolated / "root", val_size=4, normalize=False)
    assert listing(isolated / "root" / "cifar10") == ["cifar-10-python.tar.gz"]
    assert ds.x_train.shape == (16, 3, 32, 32)
    np.testing.assert_array_equal(ds.x_test, test_x.reshape(4, 3, 32, 32) / np.float32(255))
