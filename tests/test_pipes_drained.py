"""No test, bench or script starts a child with a pipe nobody reads while the child runs.

A pipe holds 64 KiB on Linux: a child (a server, above all, which logs for as long as it
runs) that writes more to a pipe nobody reads stops at its next write, for good, and the
test waits for calls it never answers (tests/drain.py). Each `subprocess.Popen` given
``stdout=PIPE`` or ``stderr=PIPE`` in tests/, bench/ and scripts/ must therefore

- have those streams drained in the same function (or coroutine) by a call given that
  very child: ``drain(Popen(...))``, or ``p = Popen(...)`` then ``drain(p)``
  (`tests.drain.drain`, `drain_stdout`, `drain_stderr`, or through
  `tests.conftest.cli_process`, which drains both); a drain of another child, or a
  child started in a coroutine, no longer passes for it, or
- be ``communicate``d by the very next statement (read to its end, as
  `subprocess.run` does), or
- carry a ``# pipes:`` comment inside the call saying why its pipe cannot fill (a child
  that writes a line or two, each read by the test).

This reads the source: it cannot see what a child writes, so a ``# pipes:`` comment is a
claim a reviewer checks; nor tell a long-lived server from a short command (the command
line is often built elsewhere, `cli_process` starts both), so it asks this of every
child. A server started with an unread pipe, the case that hung tests, no longer goes
unnoticed."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The calls that drain a child's stdout, and its stderr.
_DRAINS = {"stdout": {"drain", "drain_stdout"}, "stderr": {"drain", "drain_stderr"}}
MARKER = "# pipes:"


def _name(func: ast.expr) -> str:
    """The called name: ``f`` of ``f(...)`` and of ``x.f(...)``."""
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _piped(call: ast.Call) -> set[str]:
    """The streams (stdout, stderr) that the Popen ``call`` pipes."""
    return {
        str(k.arg)
        for k in call.keywords
        if k.arg in _DRAINS and isinstance(k.value, ast.Attribute | ast.Name)
        if _name(k.value) == "PIPE"
    }


def _calls(node: ast.AST) -> set[str]:
    return {_name(n.func) for n in ast.walk(node) if isinstance(n, ast.Call)}


#: Where a child's drain is looked for: the function (or coroutine, or lambda) that starts it.
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _drains_of(popen: ast.Call, scope: ast.AST, parents: dict[ast.AST, ast.AST]) -> set[str]:
    """The names of the drain calls in ``scope`` that drain the child ``popen`` starts: a
    call around ``popen`` itself (``drain(Popen(...))``), or one given what ``popen``
    was assigned to (``p = Popen(...)``, ``with Popen(...) as p``, then ``drain(p)``).
    A drain of another child does not count."""
    around = set()
    node: ast.AST = popen
    while node in parents and not isinstance(node, ast.stmt):
        node = parents[node]
        if isinstance(node, ast.Call):
            around.add(_name(node.func))
    parent = parents.get(popen)
    target: ast.expr | None = None
    if isinstance(parent, ast.Assign) and len(parent.targets) == 1:
        target = parent.targets[0]
    elif isinstance(parent, ast.AnnAssign | ast.NamedExpr):
        target = parent.target
    elif isinstance(parent, ast.withitem):
        target = parent.optional_vars
    if target is None:
        return around
    handle = ast.unparse(target)
    return around | {
        _name(n.func)
        for n in ast.walk(scope)
        if isinstance(n, ast.Call) and n.args and ast.unparse(n.args[0]) == handle
    }


def _next_statement(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> ast.stmt | None:
    """The statement that runs after the one holding ``node`` (leaving blocks outward)."""
    while node in parents:
        parent = parents[node]
        if isinstance(node, ast.stmt):
            for field in ("body", "orelse", "finalbody", "handlers"):
                block = getattr(parent, field, None)
                if isinstance(block, list) and node in block:
                    after: list[ast.stmt] = block[block.index(node) + 1 :]
                    if after:
                        return after[0]
                    break
        node = parent
    return None


def _communicates(statement: ast.stmt) -> bool:
    """Whether ``statement`` reads a child to its end first thing: a ``communicate`` call,
    or a ``try`` or ``with`` block that starts with one."""
    if isinstance(statement, ast.Try | ast.With):
        return _communicates(statement.body[0])
    return isinstance(statement, ast.Assign | ast.Expr) and "communicate" in _calls(statement)


def undrained(path: Path) -> list[int]:
    """Lines of ``path`` where a Popen pipes a stream that nothing reads while it runs."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source, filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and _name(call.func) == "Popen"):
            continue
        piped = _piped(call)
        end = call.end_lineno or call.lineno
        if not piped or any(MARKER in line for line in lines[call.lineno - 1 : end]):
            continue
        scope: ast.AST = call
        while scope in parents and not isinstance(scope, _SCOPES):
            scope = parents[scope]
        drained = _drains_of(call, scope, parents)
        if all(_DRAINS[stream] & drained for stream in piped):
            continue
        after = _next_statement(call, parents)
        if after is not None and _communicates(after):
            continue
        found.append(call.lineno)
    return found


def test_no_child_is_started_with_a_pipe_left_unread() -> None:
    found = {
        str(p.relative_to(ROOT)): lines
        for folder in ("tests", "bench", "scripts")
        for p in sorted((ROOT / folder).rglob("*.py"))
        if (lines := undrained(p))
    }
    assert found == {}


def test_the_check_sees_an_unread_pipe(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import subprocess\nfrom subprocess import PIPE\n"
        "def server():\n"  # a server whose log is piped and left: seen (line 4)
        "    p = subprocess.Popen(['prov', 'serve'], stdout=subprocess.PIPE,\n"
        "                         stderr=subprocess.PIPE, text=True)\n"
        "    return read_line(p, 'listening on ')\n"
        "def half():\n"  # stdout drained, stderr not: seen (line 8)
        "    p = subprocess.Popen(['prov'], stdout=PIPE, stderr=PIPE)\n"
        "    drain_stdout(p)\n"
        "def drained():\n"
        "    p = subprocess.Popen(['prov'], stdout=PIPE, stderr=PIPE)\n"
        "    drain(p)\n"
        "def run():\n"
        "    p = subprocess.Popen(['prov'], stdout=PIPE, stderr=PIPE)\n"
        "    out, err = p.communicate(timeout=5)\n"
        "def later():\n"  # communicated, but only after a wait: seen (line 17)
        "    p = subprocess.Popen(['prov'], stderr=PIPE)\n"
        "    time.sleep(60)\n"
        "    p.communicate()\n"
        "def said():\n"
        "    p = subprocess.Popen(['prov'], stdout=PIPE)  # pipes: one line, read\n"
        "def quiet():\n"
        "    p = subprocess.Popen(['prov'], stdout=subprocess.DEVNULL)\n"
        "def read_after_use():\n"  # communicated only once the test is done: seen (line 25)
        "    p = subprocess.Popen(['prov', 'serve'], stderr=PIPE)\n"
        "    try:\n"
        "        call(read_line(p, 'listening on '))\n"
        "    finally:\n"
        "        p.communicate()\n"
        "def run_guarded():\n"
        "    p = subprocess.Popen(['prov'], stderr=PIPE)\n"
        "    try:\n"
        "        p.communicate(timeout=5)\n"
        "    finally:\n"
        "        p.kill()\n"
        "async def in_async():\n"  # a coroutine's child, drained nowhere: seen (line 37)
        "    p = subprocess.Popen(['prov'], stderr=PIPE)\n"
        "def another_drained():\n"  # the drain is of b: a is seen (line 39)
        "    a = subprocess.Popen(['prov'], stderr=PIPE)\n"
        "    b = subprocess.Popen(['prov'], stderr=PIPE)\n"
        "    drain(b)\n"
        "def wrapped():\n"
        "    return drain(subprocess.Popen(['prov'], stdout=PIPE, stderr=PIPE))\n"
        "def with_block():\n"
        "    with subprocess.Popen(['prov'], stderr=PIPE) as p:\n"
        "        log = drain_stderr(p)\n"
    )
    assert undrained(sample) == [4, 8, 17, 25, 37, 39]
