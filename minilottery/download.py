"""Fetch one file over HTTP(S), safely: mirrors, retries, timeout, verification.

This module knows nothing about datasets. ``fetch(urls, dest, verify=...)``
tries each mirror in turn and only ever leaves one of two states on disk:

* success: ``dest`` holds the complete, verified file;
* failure: ``dest`` is untouched (absent if it was absent) and no temporary
  file is left behind.

How: the bytes are streamed into a temporary file *in the same folder* as
``dest`` (so that the final rename never crosses a file system), the caller's
``verify(tmp_path)`` checks the content (a checksum, typically), and only then
``os.replace(tmp, dest)`` moves it into place. ``os.replace`` is atomic on
POSIX and Windows: a reader sees either no file or the whole file.

Failures are of two kinds, handled differently:

* transient (connection refused, timeout, a 5xx answer, a body shorter than
  its Content-Length): retried on the same mirror, after a short back-off;
* content (``verify`` raised ``ValueError``, e.g. a checksum mismatch) or a
  4xx answer: retrying the same mirror would give the same bytes, so we move
  on to the next mirror.

When every mirror has failed, ``DownloadError`` lists each attempt and why.
The ``timeout`` is per socket operation: a server that stops sending for
``timeout`` seconds aborts the attempt (a stalled download never hangs).
"""

from __future__ import annotations

import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable

__all__ = ["DownloadError", "fetch"]

#: Seconds of silence from the server before an attempt is abandoned.
DEFAULT_TIMEOUT = 30.0
#: Extra attempts per mirror after a transient failure.
DEFAULT_RETRIES = 2
#: Seconds to wait before retry k (k = 1, 2, ...) is ``RETRY_BACKOFF * k``.
RETRY_BACKOFF = 1.0
#: Bytes read from the socket per chunk.
CHUNK_SIZE = 1 << 16

USER_AGENT = "minilottery (python urllib)"


class DownloadError(OSError):
    """Every mirror failed. ``.attempts`` is a list of (url, reason) pairs."""

    def __init__(self, dest, attempts):
        self.dest = Path(dest)
        self.attempts = list(attempts)
        lines = [f"could not download {self.dest.name} (to {self.dest}); attempts:"]
        lines += [f"  {url}: {reason}" for url, reason in self.attempts]
        super().__init__("\n".join(lines))


class _Truncated(OSError):
    """The server closed the connection before sending Content-Length bytes."""


def fetch(
    urls: Iterable[str] | str,
    dest,
    verify: Callable[[Path], None] | None = None,
    *,
    timeout: float | None = None,
    retries: int | None = None,
    progress: bool | None = None,
) -> Path:
    """Download the first mirror in ``urls`` that works to ``dest``; return ``dest``.

    verify:   called as ``verify(tmp_path)`` on the complete temporary file; it
              raises ``ValueError`` (e.g. a checksum error) to reject the bytes.
    timeout:  seconds of server silence before giving up an attempt
              (default ``DEFAULT_TIMEOUT``).
    retries:  extra attempts on the same mirror after a transient failure
              (default ``DEFAULT_RETRIES``).
    progress: draw a progress bar on stderr; default: only if stderr is a terminal.
    """
    if isinstance(urls, str):
        urls = [urls]
    urls = list(urls)
    if not urls:
        raise ValueError("fetch: no URL given")
    timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    retries = DEFAULT_RETRIES if retries is None else int(retries)
    if progress is None:
        progress = _is_terminal(sys.stderr)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)

    attempts = []
    for url in urls:
        for attempt in range(retries + 1):
            if attempt > 0:
                time.sleep(RETRY_BACKOFF * attempt)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as out:
                    _stream(url, out, timeout, dest.name if progress else None)
                if verify is not None:
                    verify(tmp)
                os.replace(tmp, dest)
                return dest
            except ValueError as exc:  # bad content: this mirror will not do better
                attempts.append((url, f"rejected content: {exc}"))
                break
            except urllib.error.HTTPError as exc:
                attempts.append((url, f"HTTP {exc.code} {exc.reason}"))
                if exc.code < 500:  # 4xx: the file is not there, do not insist
                    break
            except (OSError, http.client.HTTPException) as exc:  # incl. timeouts, URLError
                attempts.append((url, f"{type(exc).__name__}: {exc}"))
            finally:
                tmp.unlink(missing_ok=True)  # gone already after os.replace
    raise DownloadError(dest, attempts)


def _stream(url: str, out, timeout: float, label: str | None) -> None:
    """Copy the body of ``url`` into the open binary file ``out``."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length is not None and length.isdigit() else None
        done = 0
        while True:
            chunk = response.read(CHUNK_SIZE)
            if not chunk:
                break
            out.write(chunk)
            done += len(chunk)
            if label is not None:
                _draw_progress(sys.stderr, label, done, total)
        if label is not None:
            sys.stderr.write("\n")
    # http.client does not complain when the connection closes early: we do.
    if total is not None and done != total:
        raise _Truncated(f"connection closed after {done} of {total} bytes")


def _draw_progress(stream, label: str, done: int, total: int | None, width: int = 30) -> None:
    """Redraw one line: ``label [#####.....]  45%  12.3/27.1 MB``."""
    mb = done / 1e6
    if total:
        filled = min(width, width * done // total)
        bar = "#" * filled + "." * (width - filled)
        text = f"\r{label} [{bar}] {100 * done // total:3d}%  {mb:.1f}/{total / 1e6:.1f} MB"
    else:
        text = f"\r{label}  {mb:.1f} MB"
    stream.write(text)
    stream.flush()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False
