"""The stated constraints of the exercises, checked: "loops" and "numba".

An exercise of the registry may state how it must be written (``Exercise.constraint``).
The checks are generic: they read the constraint, never the exercise.

``"loops"``, checked here with ``ast`` on the student's source, in the grading process
(student code never runs for it):

* each function the exercise asks for must contain a Python ``for`` or ``while`` loop
  whose body assigns something (comprehensions do not count);
* shortcuts that build sliding windows or call the package's fast code are refused
  anywhere: ``as_strided``, ``sliding_window_view``, ``im2col``, ``col2im``, the
  modules ``kernels``, ``layers``, ``winograd`` and their layers (``Conv2d``, ...);
* contractions (``einsum``, ``tensordot``, ``dot``, ``vdot``, ``inner``, ``matmul``
  and the ``@`` operator) are allowed only inside a loop, on the slices the loop
  walks: a contraction of the whole input is the vectorised version;
* dynamic lookups that could hide a name (``getattr``, ``eval``, ``exec``,
  ``__import__``, ``importlib``, ``globals``, ``vars``, ``compile``) are refused.

In a notebook, the top-level functions of the student's cells that the function calls
(by name, transitively) are checked too, and a name bound at the top level to a
refused one (``from numpy import einsum as e``, ``e = np.einsum``) counts as it.

``"numba"``: statically, each function must carry a ``jit``/``njit`` decorator (not
``forceobj=True`` or ``nopython=False``); in the worker (minilottery/grading.py), the
loaded object must be a Numba dispatcher, and after every call it must hold a
nopython compilation for the arguments it was given. The second half runs in the
student's process, so a student who rewrites the worker's protocol could forge it;
the static half cannot be forged.

What ``ast`` cannot see: code reached through attributes of objects the function is
handed, or through the teacher's own modules the function imports by another name.
"""

import ast

WINDOWS = frozenset({"as_strided", "sliding_window_view", "im2col", "col2im", "kernels",
                     "layers", "winograd", "Conv2d", "MaxPool2d", "Dense", "stride_tricks"})
CONTRACTIONS = frozenset({"einsum", "tensordot", "dot", "vdot", "inner", "matmul"})
DYNAMIC = frozenset({"getattr", "eval", "exec", "__import__", "importlib", "globals", "vars",
                     "compile", "locals"})
JIT_DECORATORS = frozenset({"jit", "njit"})
CONSTRAINTS = {"": "none", "loops": "written with Python loops, no vectorised shortcut",
               "numba": "a Numba-compiled (nopython) kernel"}
# The same, spelled out for the student's handout README.
HANDOUT_TEXT = {"loops": "written with Python for/while loops: no einsum, tensordot, dot, matmul "
                         "or @ outside a loop, no as_strided, sliding_window_view, im2col or the "
                         "package's fast kernels",
                "numba": "a Numba kernel: decorated with @njit and compiling in nopython mode"}


def describe(constraint):
    if constraint not in CONSTRAINTS:
        raise ValueError(f"unknown constraint {constraint!r}; known: "
                         f"{', '.join(repr(c) for c in CONSTRAINTS)}")
    return CONSTRAINTS[constraint]


def _name(node):
    """The last name of a reference: ``np.lib.stride_tricks.as_strided`` -> "as_strided"."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _references(node):
    """Every (name, line) a node refers to: names, attribute names, imported names."""
    for child in ast.walk(node):
        if isinstance(child, (ast.Name, ast.Attribute)):
            yield _name(child), child.lineno
        elif isinstance(child, (ast.Import, ast.ImportFrom)):
            if isinstance(child, ast.ImportFrom) and child.module:
                for part in child.module.split("."):
                    yield part, child.lineno
            for alias in child.names:
                for part in alias.name.split("."):
                    yield part, child.lineno


def _tainted(module):
    """{name bound at the top level: the refused name it stands for}."""
    refused = WINDOWS | CONTRACTIONS | DYNAMIC
    tainted = {}
    for statement in module.body:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            for alias in statement.names:
                original = alias.name.split(".")[-1]
                if original in refused and alias.asname:
                    tainted[alias.asname] = original
        elif isinstance(statement, (ast.Assign, ast.AnnAssign)) and statement.value is not None:
            found = [name for name, _ in _references(statement.value) if name in refused]
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for target in targets:
                for child in ast.walk(target):
                    if isinstance(child, ast.Name) and found:
                        tainted[child.id] = found[0]
    return tainted


def _loop_lines(function):
    """The line ranges covered by loop bodies of ``function``, and whether some loop assigns."""
    ranges, works = [], False
    for node in ast.walk(function):
        if isinstance(node, (ast.For, ast.While, ast.AsyncFor)):
            ranges.append((node.body[0].lineno, node.end_lineno))
            works = works or any(isinstance(child, (ast.Assign, ast.AugAssign, ast.AnnAssign))
                                 for statement in node.body for child in ast.walk(statement))
    return ranges, works


def _called_helpers(function, functions):
    """The top-level functions of the same source that ``function`` calls, transitively."""
    seen, todo = [], [function]
    while todo:
        for node in ast.walk(todo.pop()):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in functions and functions[node.func.id] not in seen \
                    and functions[node.func.id] is not function:
                seen.append(functions[node.func.id])
                todo.append(functions[node.func.id])
    return seen


def check_loops(function, functions, tainted, where):
    """The violations of "loops" by ``function`` (an ast.FunctionDef) and its helpers;
    ``where[node]`` names the file (and cell) of a definition."""
    problems = []
    bodies = [function] + _called_helpers(function, functions)
    if not any(_loop_lines(body)[1] for body in bodies):
        problems.append(f"{function.name} has no for or while loop that does the work")
    for body in bodies:
        loops, _ = _loop_lines(body)
        inside = lambda line: any(lo <= line <= hi for lo, hi in loops)   # noqa: E731
        shown = where[body]
        for name, line in _references(body):
            name = tainted.get(name, name)
            if name in WINDOWS or name in DYNAMIC:
                problems.append(f"{shown}, line {line}: {body.name} uses {name}")
            elif name in CONTRACTIONS and not inside(line):
                problems.append(f"{shown}, line {line}: {body.name} calls {name} outside a loop")
        for node in ast.walk(body):
            if isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, ast.MatMult) \
                    and not inside(node.lineno):
                problems.append(f"{shown}, line {node.lineno}: {body.name} uses the @ operator "
                                f"outside a loop")
    return problems


def _is_jit(decorator):
    call = decorator if isinstance(decorator, ast.Call) else None
    if _name(call.func if call else decorator) not in JIT_DECORATORS:
        return False
    for keyword in call.keywords if call else []:
        if (keyword.arg, getattr(keyword.value, "value", None)) in (("forceobj", True),
                                                                     ("nopython", False)):
            return False
    return True


def check_numba(function, shown):
    if any(_is_jit(decorator) for decorator in function.decorator_list):
        return []
    return [f"{shown}, line {function.lineno}: {function.name} is not decorated with "
            f"numba's @njit (or @jit in nopython mode)"]


def _exits(statements):
    """Whether a return or yield occurs in ``statements`` (not counting nested defs)."""
    todo = list(statements)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Return, ast.Yield, ast.YieldFrom)):
            return True
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))
    return False


def _always_raises(function):
    """Whether the function can only raise: still the stub. True when its body holds, at
    the top level, ``raise NotImplementedError(...)`` with no ``return`` or ``yield``
    before it (what follows is unreachable): it can pass no test."""
    for index, node in enumerate(function.body):
        if isinstance(node, ast.Raise) and \
                _name(getattr(node.exc, "func", node.exc)) == "NotImplementedError":
            return not _exits(function.body[:index])
    return False


def violations(constraint, sources, names):
    """The violations of ``constraint`` by the functions ``names`` in the student's
    ``sources``, pairs (Python text, where it is shown) in order: a module is one, a
    notebook one per code cell up to the exercise's cell; the last definition of a name
    counts. Texts that do not
    parse are skipped (the syntax error is reported when the exercise runs). Returns a
    list of messages, empty when the constraint holds."""
    describe(constraint)
    if not constraint:
        return []
    functions, tainted, where = {}, {}, {}
    for text, shown in sources:
        try:
            module = ast.parse(text)
        except SyntaxError:
            continue
        tainted.update(_tainted(module))
        for node in module.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions[node.name], where[node] = node, shown
    problems = []
    for name in names:
        if name not in functions or _always_raises(functions[name]):
            continue     # reported by the exercise's run: "defines no function", the stub's error
        if constraint == "loops":
            problems += check_loops(functions[name], functions, tainted, where)
        else:
            problems += check_numba(functions[name], where[functions[name]])
    return problems


def message(constraint, problems):
    """The one-line verdict of a violated constraint."""
    return (f"constraint {constraint!r} violated ({describe(constraint)}): "
            + "; ".join(dict.fromkeys(problems)))
