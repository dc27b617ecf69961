"""The isolated runner of the grader: student code runs only in a worker process.

What runs where, when ``python -m minilottery.coursework grade`` grades one exercise
(minilottery/classroom.py drives it, for one submission or a class folder):

1. The grading process (the teacher's installation) builds a per-exercise tree in a
   fresh temporary directory: a copy of the *teacher's* package in which only the
   exercise's functions are replaced by the student's (found by name with ``ast``;
   a notebook exercise runs the student's notebook against that package). A syntax
   error elsewhere in the submission, even in the same module, therefore cannot fail
   this exercise, and a syntax error here is reported with the student's file and
   line. A stated constraint ("loops") is checked there too, on the student's source
   (minilottery/constraints.py), before any of it runs.
2. It starts the *teacher's* exercise tests (a fresh copy of tests/coursework, hidden
   tests included) in a pytest process that imports no student code. That process
   makes itself non-dumpable (prctl PR_SET_DUMPABLE 0: a same-user process can
   neither ptrace it nor open its /proc files) and reads a random per-run secret and
   the run's spec (the teacher's registry among it) from its stdin.
3. The ``student`` fixture of those tests starts the worker: ``python -I`` (no
   PYTHONPATH, no user site, no current directory on sys.path, so no submission
   ``sitecustomize``/``usercustomize``/``conftest.py``/plugin can load), a clean
   environment with a fresh HOME, a CPU-time and an address-space limit, in its own
   session. The tests call the student's functions through proxies: arguments and
   results cross a pipe as JSON plus ``.npy`` arrays (never pickle, so a hostile
   worker cannot run code in the tests' process). Every assertion runs in the tests'
   process, on data it received; in-place updates are copied back. The worker's
   output is drained as it comes (printing much cannot block it) and only its last
   lines are shown. For a "numba" exercise the worker also says whether the function
   is a Numba dispatcher holding a nopython compilation for the arguments it got.
4. The tests' process writes its report (every collected test with its weight and
   outcome, and any broken constraint), signed with an HMAC under the secret, to a
   pipe inherited from the grading process (the worker does not inherit it). The
   grading process accepts only a report with a valid signature and the run's token,
   and computes the points from it; it never reads an exit status or a file the
   worker could write.
5. The worker's session is killed at the end, and the grading process sweeps /proc
   for any process of that session or carrying the run's token, and kills it too.

What this does not protect against. The worker runs as the teacher's user, so it
can read whatever that user can (the teacher's tests, hidden ones included, and the
solutions in the teacher's installation: a student who knows where they are can
load the solution of the exercise being graded), use the network, or kill the
tests' process (which only makes the exercise score 0). It cannot write to files
before any student code runs (RLIMIT_FSIZE 0), but it can delete or rename what
that user may; the grader hashes the teacher's package and tests before and after,
and withholds the verdict if they changed, but cannot undo such damage. The "numba"
check's dynamic half runs in the worker, so a student who rewrites the worker's
protocol could forge it (its static half, a jit decorator, cannot be). A real
sandbox is a container that holds the grader and the submissions only, no network,
a read-only file system except a scratch tmpfs, and limits on memory and processes:

    docker run --rm --network none --read-only --tmpfs /tmp:exec --memory 4g \\
        --pids-limit 512 --cpus 2 -v "$PWD/submissions:/submissions:ro" \\
        -v "$PWD/results:/results" teacher-image \\
        python -I -m minilottery.coursework grade /submissions --out /results

where teacher-image is the teacher's checkout with ``pip install -e .``. The
container keeps a submission from the host, the network and the other containers;
inside it the worker still runs as the grader's user and can read the solutions the
grader reads (keeping those from it would take a second user for the worker).

This module uses only the standard library at import time (NumPy is imported where
arrays cross the pipe; a process that has not imported it holds no array), as
coursework.py does.
"""

import ast
import hashlib
import hmac
import io
import json
import os
import re
import resource
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

MEMORY_LIMIT = 4 * 2**30          # bytes of address space for a worker (Numba needs room)
MAX_MESSAGE = 256 * 2**20         # the largest message a worker may send
STDERR_KEPT = 64 * 2**10          # bytes of a worker's output kept for the error message
CONTROL = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]?"
                     r"|[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")


def strip_controls(text):
    """``text`` without terminal control sequences (CSI, OSC, other escapes) and C0/C1
    control characters, except newline and tab."""
    return CONTROL.sub("", str(text))


def make_undumpable():
    """prctl(PR_SET_DUMPABLE, 0): no same-user ptrace, /proc/self/{mem,fd,environ} root-owned."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


# ----------------------------------------------------------------------------
# The per-exercise tree
# ----------------------------------------------------------------------------

class SubmissionError(Exception):
    """The student's file cannot provide the exercise (the message names file and line)."""


def function_sources(text, names, shown, asked=""):
    """{name: (first line, last line, source)} of the top-level defs ``names`` in the
    student's file, decorators included (the last definition of a name counts). A file
    with a syntax error elsewhere still yields its functions: each is then cut from the
    text (from its def at column 0 to the next statement at column 0) and parsed alone,
    so only a syntax error inside the function is reported, with its file and line."""
    try:
        tree = ast.parse(text, filename=shown)
    except SyntaxError as error:
        return _functions_from_text(text, names, shown, asked, error)
    lines = text.splitlines(keepends=True)
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in names:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            found[node.name] = (start, node.end_lineno, "".join(lines[start - 1:node.end_lineno]))
    missing = [name for name in names if name not in found]
    if missing:
        raise SubmissionError(f"{shown} defines no function {', '.join(missing)}{asked}")
    return found


STATEMENT_AT_COLUMN_0 = re.compile(r"[^\s#)\]}]")


def _functions_from_text(text, names, shown, asked, error):
    lines = text.splitlines(keepends=True)
    found = {}
    for name in names:
        define = re.compile(rf"(?:async[ \t]+)?def[ \t]+{re.escape(name)}[ \t]*\(")
        starts = [i for i, line in enumerate(lines) if define.match(line)]
        if not starts:
            raise SubmissionError(f"{shown}, line {error.lineno}: SyntaxError: {error.msg} "
                                  f"(and no function {name}{asked})")
        first = starts[-1]
        while first > 0 and lines[first - 1].startswith("@"):
            first -= 1
        # Where the function may end: before a later line that starts a statement at
        # column 0 (a string's continuation line can look like one, so try each).
        ends = [i - 1 for i in range(starts[-1] + 1, len(lines))
                if STATEMENT_AT_COLUMN_0.match(lines[i])] + [len(lines) - 1]
        errors = []
        for last in ends:
            while last > starts[-1] and not lines[last].strip():
                last -= 1
            source = "".join(lines[first:last + 1])
            try:
                ast.parse(source)
                break
            except SyntaxError as inner:
                errors.append((first + (inner.lineno or 1), inner.msg))
        else:
            line, message = max(errors)
            raise SubmissionError(f"{shown}, line {line}: SyntaxError: {message}")
        found[name] = (first + 1, last + 1, source)
    return found


def splice(teacher_text, student_text, names, shown, exercise_id):
    """The teacher's module with the functions ``names`` (of exercise ``exercise_id``)
    replaced by the student's."""
    asked = f" (exercise {exercise_id} asks for {', '.join(names)})"
    theirs = function_sources(student_text, names, shown, asked)
    ours = function_sources(teacher_text, names, "the teacher's " + shown)
    lines = teacher_text.splitlines(keepends=True)
    for name in sorted(names, key=lambda n: -ours[n][0]):      # bottom up: line numbers hold
        start, end, _ = ours[name]
        source = theirs[name][2]
        lines[start - 1:end] = [source if source.endswith("\n") else source + "\n"]
    return "".join(lines)


def copy_tree(source, target, ignore=("__pycache__", "*.pyc", "*.nbi", "*.nbc")):
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*ignore))
    return target


def digest(folder):
    """A SHA-256 over every file's relative path and bytes under ``folder``."""
    total = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".nbi", ".nbc"):
            total.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return total.hexdigest()


# ----------------------------------------------------------------------------
# Messages over a pipe: JSON plus arrays, never pickle
# ----------------------------------------------------------------------------

ALLOWED_CLASSES = {"minilottery.config.Config", "minilottery.rundir.Piece"}


def encode(value, arrays):
    np = sys.modules.get("numpy")      # no array can exist in a process without NumPy
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if np is not None and isinstance(value, (np.ndarray, np.generic)):
        arrays.append(np.asarray(value))
        return {"array": len(arrays) - 1, "scalar": isinstance(value, np.generic)}
    if isinstance(value, (tuple, list)):
        return {"tuple" if isinstance(value, tuple) else "list": [encode(v, arrays) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[encode(k, arrays), encode(v, arrays)] for k, v in value.items()]}
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    if kind in ALLOWED_CLASSES:
        import dataclasses
        return {"class": kind, "fields": encode({f.name: getattr(value, f.name)
                                                 for f in dataclasses.fields(value)}, arrays)}
    if kind == "minilottery.rundir.RunDir":
        return {"rundir": str(value.root)}
    if callable(getattr(value, "named_params", None)):      # a model: its arrays only
        return {"model": encode({"params": value.named_params(),
                                 "masks": value.named_masks()}, arrays)}
    raise TypeError(f"cannot send a {kind} between the grader and the student's code")


def decode(value, arrays):
    if not isinstance(value, dict):
        return value
    if "array" in value:
        array = arrays[value["array"]]
        return array[()] if value.get("scalar") else array
    if "tuple" in value:
        return tuple(decode(v, arrays) for v in value["tuple"])
    if "list" in value:
        return [decode(v, arrays) for v in value["list"]]
    if "dict" in value:
        return {decode(k, arrays): decode(v, arrays) for k, v in value["dict"]}
    if "class" in value and value["class"] in ALLOWED_CLASSES:
        import importlib
        module, name = value["class"].rsplit(".", 1)
        return getattr(importlib.import_module(module), name)(**decode(value["fields"], arrays))
    if "rundir" in value:
        from minilottery.rundir import RunDir
        return RunDir(value["rundir"])
    if "model" in value:
        parts = decode(value["model"], arrays)
        return types.SimpleNamespace(named_params=lambda: parts["params"],
                                     named_masks=lambda: parts["masks"])
    raise ValueError(f"unknown value in a message: {sorted(value)}")


def send(stream, message):
    arrays = []
    skeleton = json.dumps(encode(message, arrays)).encode()
    buffer = io.BytesIO()
    for array in arrays:
        sys.modules["numpy"].save(buffer, array, allow_pickle=False)
    body = struct.pack("<QQ", len(skeleton), len(arrays)) + skeleton + buffer.getvalue()
    stream.write(struct.pack("<Q", len(body)) + body)
    stream.flush()


def receive(stream):
    header = stream.read(8)
    if len(header) < 8:
        raise EOFError("the student's process ended without an answer")
    (size,) = struct.unpack("<Q", header)
    if size > MAX_MESSAGE:
        raise ValueError(f"the student's process sent {size} bytes, more than {MAX_MESSAGE}")
    body = stream.read(size)
    if len(body) < size:
        raise EOFError("the student's process ended in the middle of an answer")
    n_skeleton, n_arrays = struct.unpack("<QQ", body[:16])
    skeleton = json.loads(body[16:16 + n_skeleton])
    buffer = io.BytesIO(body[16 + n_skeleton:])
    if n_arrays:
        import numpy as np
    arrays = [np.load(buffer, allow_pickle=False) for _ in range(n_arrays)]
    return decode(skeleton, arrays)


# ----------------------------------------------------------------------------
# The worker, and its proxy in the tests' process
# ----------------------------------------------------------------------------

def _limits(cpu_seconds):
    def apply():
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


class Worker:
    """The student's code in a child process: ``call(name, *args)`` runs one function."""

    def __init__(self, spec, timeout):
        """``spec``: {"tree": the per-exercise tree, "exercise": id, "names": [...],
        "notebook": a notebook or None, "token": the run's token, "scratch": a folder}."""
        self.timeout, self.token = timeout, spec["token"]
        home = Path(tempfile.mkdtemp(prefix="home-", dir=spec["scratch"]))
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home),
               "LANG": "C.UTF-8", "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1",
               "NUMBA_CACHE_DIR": str(home / "numba"), "OMP_NUM_THREADS": "1",
               "MINILOTTERY_WORKER_TOKEN": self.token}
        self.process = subprocess.Popen(
            [sys.executable, "-I", __file__, "--worker", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=home, env=env, start_new_session=True, close_fds=True,
            preexec_fn=_limits(int(timeout) + 1))
        self.session = self.process.pid
        self.stderr = bytearray()      # the student's prints: the last STDERR_KEPT bytes
        threading.Thread(target=self._drain, daemon=True).start()
        self.violations = []      # a stated constraint the student's code broke (numba)
        self.ended = None         # why the worker is gone; every later call fails the same way
        self.ready = self._answer()
        if self.ready.get("violation"):
            self.violations.append(self.ready["violation"])

    def _drain(self):
        """Read the worker's stderr as it comes, so that printing much never blocks it."""
        while True:
            chunk = self.process.stderr.read1(1 << 16)
            if not chunk:
                return
            self.stderr += chunk
            del self.stderr[:-STDERR_KEPT]

    def _answer(self):
        timed_out = threading.Event()
        timer = threading.Timer(self.timeout, lambda: (timed_out.set(), self.kill()))
        timer.start()
        try:
            return receive(self.process.stdout)
        except EOFError:
            pass                  # (outside this block, so that the error has no context)
        finally:
            timer.cancel()
        self.kill()
        if timed_out.is_set():
            self._end(f"timed out after {self.timeout:g} s (an endless loop? a very "
                      f"slow implementation?)")
        time.sleep(0.05)          # the last of stderr
        error = strip_controls(bytes(self.stderr).decode(errors="replace")).strip()
        self._end(f"the student's code stopped the process "
                  f"({error.splitlines()[-1] if error else 'no message'})")

    def _end(self, why):
        """Raise WorkerError(why), now and for every later call: a test that calls again
        (hypothesis replays a failing example) sees the same error, from the same line."""
        self.ended = self.ended or why
        raise WorkerError(self.ended)

    def call(self, name, args):
        if self.ended is None:
            try:
                send(self.process.stdin, {"call": name, "args": list(args)})
            except (BrokenPipeError, ValueError):
                self.ended = "the student's process is gone (it stopped)"
            else:
                return self._answer()
        self._end(self.ended)

    def kill(self):
        kill_session(self.session, self.token)


class WorkerError(Exception):
    pass


def kill_session(session, token):
    """SIGKILL every process of ``session`` (the worker's) or whose environment carries
    ``token`` (a descendant that called setsid), until none is left."""
    for _ in range(50):
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                stat = (entry / "stat").read_text()
                sid = int(stat.rsplit(")", 1)[1].split()[3])
                state = stat.rsplit(")", 1)[1].split()[0]
                marked = sid == session or f"MINILOTTERY_WORKER_TOKEN={token}".encode() in \
                    (entry / "environ").read_bytes().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            if marked and state != "Z":
                found.append(int(entry.name))
        if not found:
            return
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.02)


def student_proxy(worker, names):
    """A namespace of callables that run the student's functions in ``worker`` and copy
    back the arguments they changed in place."""

    def proxy(name):
        def call(*args):
            answer = worker.call(name, args)
            if "error" in answer:
                raise StudentError(answer["error"])
            if answer.get("violation"):
                worker.violations.append(answer["violation"])
                raise StudentError(answer["violation"])
            np = sys.modules.get("numpy")
            for sent, back in zip(args, answer["args"]):
                if np is not None and isinstance(sent, np.ndarray) and isinstance(back, np.ndarray) \
                        and back.shape == sent.shape and sent.flags.writeable:
                    np.copyto(sent, back, casting="unsafe")
            return answer["result"]
        call.__name__ = name
        return call
    return types.SimpleNamespace(**{name: proxy(name) for name in names})


class StudentError(Exception):
    """An exception raised by the student's function, as text: 'TypeError: ...'."""


def _no_writes():
    """From here on this process cannot write a byte to any file (a write fails with
    EFBIG; CPython ignores SIGXFSZ): not the teacher's tests, not a report. Numba's
    cache=True stops saving, so that compiling does not fail."""
    if resource.getrlimit(resource.RLIMIT_FSIZE)[0] == 0:
        return
    try:
        from numba.core import caching
        caching.Cache.save_overload = lambda self, signature, data: None
    except ImportError:
        pass
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def _worker_main(spec):
    """In the child: load the student's functions, then answer calls until stdin closes."""
    out, stdin = sys.stdout.buffer, sys.stdin.buffer
    sys.stdout = sys.stderr                   # the student's prints never reach the pipe
    sys.path.insert(0, spec["tree"])
    sys.path.insert(1, str(Path(__file__).resolve().parent))   # coursework.py, for notebooks
    import coursework
    registry = tuple(coursework.Exercise(e["id"], e["title"], e["file"], tuple(e["names"]))
                     for e in spec.get("registry") or ()) or None
    try:
        if spec["notebook"]:
            namespace = coursework.run_notebook(spec["notebook"], spec["exercise"],
                                                workdir=tempfile.mkdtemp(), before_run=_no_writes,
                                                exercises=registry)
        else:
            import importlib
            _no_writes()                  # decorators and defaults run at import
            namespace = vars(importlib.import_module(spec["module"]))
        functions = {name: namespace[name] for name in spec["names"]}
    except coursework.ImplementationError as error:     # names the file and cell
        send(out, {"error": str(error)})
        return
    except Exception as error:
        send(out, {"error": f"importing {spec['module']} failed: {type(error).__name__}: {error}"})
        return
    _no_writes()
    numba = spec.get("constraint") == "numba"
    violation = next(filter(None, (_not_compiled(name, function, called=False)
                                   for name, function in functions.items())), None) if numba else None
    send(out, {"ready": True, "violation": violation})
    while True:
        try:
            request = receive(stdin)
        except EOFError:
            return
        args = request["args"]
        try:
            function = functions[request["call"]]
            result = function(*args)
            answer = {"result": result, "args": args}
            if numba:
                answer["violation"] = _not_compiled(request["call"], function, called=True)
            send(out, answer)
        except Exception as error:
            send(out, {"error": f"{type(error).__name__}: {error}"})


def _not_compiled(name, function, called):
    """Why ``function`` is not a Numba kernel compiled in nopython mode (None if it is):
    it must be a Numba dispatcher and, once called, hold a nopython compilation."""
    try:
        from numba.core.dispatcher import Dispatcher
    except ImportError:
        return "numba cannot be imported"
    if not isinstance(function, Dispatcher):
        return (f"{name} is a plain {type(function).__name__}, not a Numba-compiled function "
                f"(decorate it with @njit)")
    if called:
        if not function.overloads:
            return f"{name} ran without being compiled by Numba"
        if any(getattr(result, "objectmode", False) for result in function.overloads.values()):
            return f"{name} was compiled in object mode, not nopython mode"
    return None


def sign(secret, payload):
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


def new_secret():
    return secrets.token_bytes(32)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker_main(json.loads(sys.argv[2]))
