"""The ``prov`` console script's entry point: Ctrl-C at any moment of a run, its start-up
included, prints one line and exits 130, never a traceback.

`clients.cli` imports Typer and Rich only (``prov --help`` loads no command); then
`clients.cli.import_command` imports the one command that runs, with what its module
needs at its top: for most commands gRPC, cryptography and the product's core (about a
second, more on a busy machine; `prov log` loads gRPC, the device code and the server's
store only in the subcommands that use them), all before ``main`` can catch anything:
a console script that imports them first (``from clients.cli import main``) printed a
KeyboardInterrupt traceback when Ctrl-C came in that second, and one that came while
Python's import machinery ran a callback was only printed as "Exception ignored" and the
command ran on. Here, stdlib only, SIGINT is answered by "interrupted" and exit 130 at
once while those modules load (`clients.cli.import_command`; nothing is done yet, so
nothing is left half done); then Python's handler is given back and `clients.cli.main`
handles Ctrl-C as it always did. After the command has returned, a Ctrl-C during the interpreter's teardown
ends the process with the command's own exit code: the command finished, its output was
flushed, and its result stands; unless a signal stopped the command (`prov log
export-tiles --follow`, `prov scan`: `clients.interrupt.leaving_by_signal`), when a
second Ctrl-C or SIGTERM ends it as during the stop ("interrupted again", 130;
"terminated again (SIGTERM)", 143).

SIGTERM while those modules load says "terminated (SIGTERM)" and exits 143 at once, as
does one before `prov serve` or `prov scan` (`SIGTERM_AT_START`) has put its own handling
of it in place; every other command then gets SIGTERM's default action back. After the
command has returned, a SIGTERM during the teardown ends the process with the command's
own exit code, as a Ctrl-C does (not the default action, -15, for a scan whose report
was complete). ``python -m clients.cli`` ends the same way
(`run_to_the_end`: no KeyboardInterrupt traceback for a late Ctrl-C there, no -15 for
a late SIGTERM). Once the exit handlers have run, Python gives up its own signal handlers
while it frees its modules (0.1-0.45 s of every command, measured on a busy 2-core
machine): there a late SIGINT or SIGTERM is ignored (`guard_the_teardown`), so the
process still ends with the command's code. A process started with SIGTERM not at its
default keeps that disposition.

A process started with SIGINT ignored (a shell's background job) or with a handler of its
own (a caller embedding the CLI) keeps it: nothing here changes it; a late SIGTERM still
ends it with the command's own exit code (not -15). Not covered: the
interpreter's own start, before any of this code runs (``python -c pass`` takes 20-30 ms
on a busy 2-core machine), where a SIGINT kills the process (exit status 130 in a shell,
nothing printed) or interrupts Python's ``site`` import ("Fatal Python error"); and, after
a signal stopped the command (`clients.interrupt.leaving_by_signal`), the teardown past
the exit handlers, where a second signal ends the process by its default action (-2,
-15) rather than with its words.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

#: Exit status of a command stopped by Ctrl-C (128 + SIGINT), as `clients.cli` uses.
EXIT_INTERRUPTED = 130
#: The line a Ctrl-C prints, as `clients.cli.main` prints it.
INTERRUPTED_LINE = b"interrupted\n"
#: Exit status of a command stopped by SIGTERM (128 + SIGTERM), as `clients.interrupt`.
EXIT_TERMINATED = 143
#: The line a SIGTERM while the command loads prints.
TERMINATED_LINE = b"terminated (SIGTERM)\n"
#: Commands that stop cleanly on SIGTERM from their start (`prov serve`: its start's
#: files removed; `prov scan`: "terminated (SIGTERM)", exit 143): until their own handler
#: is in place, a SIGTERM exits 143 at once, as while the modules load. Every other
#: command gets the default action back once its module is loaded: a Python handler runs
#: only between bytecodes of the main thread, and one blocked in a C call (a gRPC wait)
#: would not end on ``kill`` until it returned.
SIGTERM_AT_START = ("serve", "scan")


def _terminate_at_once(signum: int, frame: FrameType | None) -> None:
    """SIGTERM while `clients.cli` and the command's module load, and for the commands
    of `SIGTERM_AT_START` until their own handling of it is in place: say so and exit
    143 now (nothing has been made yet that needs a clean-up)."""
    os.write(2, TERMINATED_LINE)
    os._exit(EXIT_TERMINATED)


def _stop_at_once(signum: int, frame: FrameType | None) -> None:
    """SIGINT while `clients.cli` loads: say so and exit 130 now (one write, no cleanup:
    nothing has been started that needs one)."""
    os.write(2, INTERRUPTED_LINE)
    os._exit(EXIT_INTERRUPTED)


class _EndWith:
    """SIGINT (and SIGTERM) handler after the command returned: end the process with its
    exit code."""

    def __init__(self, code: int) -> None:
        self.code = code

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        os._exit(self.code)


#: Longest time, in seconds, the interpreter's teardown may take once `guard_the_teardown`
#: ignores SIGINT and SIGTERM: past it, SIGALRM's default action ends the process (exit
#: status 142 in a shell), as SIGTERM no longer can there.
TEARDOWN_WAIT_S = 30


def _ignore_late_signals() -> None:
    """`guard_the_teardown`'s exit handler: SIGINT and SIGTERM, where `run_to_the_end` has
    them end the process with the command's exit code (`_EndWith`), ignored from here to
    the process's end, and `TEARDOWN_WAIT_S` set on SIGALRM."""
    ignored = False
    for signum in (signal.SIGINT, signal.SIGTERM):
        if isinstance(signal.getsignal(signum), _EndWith):
            signal.signal(signum, signal.SIG_IGN)
            ignored = True
    if ignored:
        signal.alarm(TEARDOWN_WAIT_S)


_guarded = False


def guard_the_teardown() -> None:
    """Register `_ignore_late_signals` as an exit handler, once, before the command's
    modules load and register theirs, so that it runs after them (``atexit`` runs the
    last registered first). Once the exit handlers have run, Python puts back the default
    action of every signal it handles and then frees its modules; a late Ctrl-C or
    SIGTERM there would kill a command that has finished (-2, -15, nothing said) instead
    of ending it with its own exit code. An ignored signal stays ignored through that
    teardown. Called by `main` and by ``python -m clients.cli``, first; a second call
    changes nothing (the handler registered first stays, and runs last)."""
    global _guarded
    if not _guarded:
        _guarded = True
        atexit.register(_ignore_late_signals)


def quiet_grpc_core() -> None:
    """Set GRPC_VERBOSITY to ERROR unless it is set (``GRPC_VERBOSITY=debug prov ...``
    still traces), before gRPC is loaded: its C core otherwise writes INFO lines of its
    own format to stderr, such as ``I1208 01:24:51.234647 3000 chttp2_transport.cc:1403]
    ipv4:127.0.0.1:50051: Got goaway [2] ...`` into `prov serve --http`'s and `prov
    web`'s log each time the service closed the page's idle connection. Its errors are
    still written. Called by `main` and by ``python -m clients.cli``; the variable
    reaches the processes they start."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def _flush_standard_streams() -> None:
    """Flush stdout and stderr, so that a later `os._exit` loses none of the command's
    output; a stream that cannot be flushed (a closed pipe) is left to Python's exit."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


def main() -> int:
    """Run ``prov`` with the command line of this process (see the module docstring);
    returns the exit code."""
    guard_the_teardown()
    quiet_grpc_core()
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        from clients.cli import main as run_as_is
        from clients.interrupt import ends_with_the_command

        ends_with_the_command()
        term_default = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        return run_to_the_end(run_as_is, term_default, int_default=False)
    signal.signal(signal.SIGINT, _stop_at_once)
    term_default = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    if term_default:
        signal.signal(signal.SIGTERM, _terminate_at_once)
    from clients.cli import import_command
    from clients.cli import main as run
    from clients.interrupt import ends_with_the_command

    ends_with_the_command()
    import_command(sys.argv[1:])  # the seconds of imports: the command's module

    def handled_as_always() -> int:
        """`clients.cli.main` with Python's SIGINT handler back (and SIGTERM's default
        action, but for `SIGTERM_AT_START`), inside `run_to_the_end`'s catch."""
        if term_default and sys.argv[1:2] not in [[c] for c in SIGTERM_AT_START]:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return run()

    return run_to_the_end(handled_as_always, term_default)


def run_to_the_end(run: Callable[[], int], term_default: bool, int_default: bool = True) -> int:
    """``run()`` (`clients.cli.main`), whose exit code it returns, in a process that ends
    with it: a KeyboardInterrupt that escapes it (before or after its own catch) is
    "interrupted", 130. Then, as the process ends, a SIGINT when ``int_default`` (SIGINT
    was at Python's handler when the process started, not ignored as in a shell's
    background job), and a SIGTERM when ``term_default`` (SIGTERM was at its default),
    ends it at once with that code (the command's output flushed first), unless a signal
    stopped the command (`clients.interrupt.leaving_by_signal`: a second one ends it as
    during the stop). `main` and ``python -m clients.cli`` both end so."""
    from clients.interrupt import leaving_by_signal

    try:
        code = run()
    except KeyboardInterrupt:  # before or after `clients.cli.main`'s own catch
        os.write(2, INTERRUPTED_LINE)
        code = EXIT_INTERRUPTED
    _flush_standard_streams()
    if leaving_by_signal():  # a second signal ends it as during the stop, 130 or 143
        return code
    if int_default:
        signal.signal(signal.SIGINT, _EndWith(code))
    if term_default:  # the command is done: SIGTERM ends it with its code, as SIGINT
        signal.signal(signal.SIGTERM, _EndWith(code))
    return code
