"""Ctrl-C between units of work, so a command stopped mid-run can say exactly what it did.

A loop over files (`prov sign`) runs inside `StopBetweenFiles`: the first SIGINT only
asks it to stop, and `check`, called before each file, then raises KeyboardInterrupt,
so no file is left half counted (signed and logged but not yet in the summary), and
starts `ctrl_c_deadline`'s deadline as the stop begins. A second SIGINT before then
raises KeyboardInterrupt at once, wherever the loop is.

Every command runs under `ctrl_c_deadline` (`clients.cli.main`): a Ctrl-C that Python's
own handler would have answered still raises KeyboardInterrupt, and if the command has
not returned `CTRL_C_GRACE_S` seconds later, the process ends there, "interrupted", exit
130. A KeyboardInterrupt can be raised where it leaves gRPC stuck for good: CPython runs
a signal's handler between any two bytecodes, also inside ``threading.Condition``'s
``__enter__`` and ``__exit__`` (Python code, which gRPC's Python and Cython call), after
the lock was taken and before it is given back. Seen (in-process loops of `prov
verify`'s call to a socket that never answers, SIGINT right after the connection): raised
in ``__exit__`` within ``Channel.integrated_call``, the call made but the thread that
polls its events never started; raised in ``__enter__`` within the call's ``result``, its
state's lock left taken and that thread waiting for it forever. Either way the channel's
``close`` (on the way out of ``with ProvenanceClient(...)``) waits for that thread for
good: such a `prov verify` hung (once in CI; 4 of 4 loops hung within 7-208 tries here).
tests/sigint_held.py holds the second moment open to reproduce it every time.

A second Ctrl-C while the first one's clean-up runs (inside `ctrl_c_deadline`, once its
deadline is running) ends the process at once: "interrupted again: stopped without
finishing the clean-up", what stays done (`ctrl_c_notes`: `prov scan`'s rows in its
report, and --resume), exit 130. A second SIGTERM (`terminate_as_interrupt`) does the
same with "terminated again (SIGTERM)" and exit 143; a SIGTERM after a Ctrl-C says
"terminated (SIGTERM) while stopping after Ctrl-C", 143, and a Ctrl-C after a SIGTERM
"interrupted (Ctrl-C) while stopping after SIGTERM", 130 (before: "terminated again",
"interrupted again", as if the same signal had come twice). A deadline that a SIGTERM
started ends the process "terminated (SIGTERM)", exit 143 (before: "interrupted", 130,
the Ctrl-C's code, for a scan whose clean-up hung after a ``kill``). A clean-up that may
take a while says so first (`extend_ctrl_c_deadline`'s ``doing``: "Ctrl-C again to stop
at once").
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

# Exit statuses of a command stopped by Ctrl-C (128 + 2) and by SIGTERM (128 + 15, as a
# shell reports a process that SIGTERM ended): `clients.launch` holds them, as it answers
# a signal before anything else of ours is imported.
from clients.launch import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from clients.launch import EXIT_TERMINATED as EXIT_TERMINATED

#: Seconds a command has, after a Ctrl-C answered by KeyboardInterrupt, to return before
#: `ctrl_c_deadline` ends the process ("interrupted", exit 130): a backstop for a command
#: that would otherwise hang for good, so generous: a command's own handling of Ctrl-C
#: (`prov scan`'s rows, `prov sign`'s summary) takes under a second on a quiet machine,
#: and more on a loaded one.
CTRL_C_GRACE_S = 30.0
#: The line `ctrl_c_deadline` ends the process with, as `clients.cli.main` says it.
INTERRUPTED_LINE = b"interrupted\n"
#: What a command stopped by SIGTERM says (`how_stopped`, `ctrl_c_deadline`'s deadline).
TERMINATED = "terminated (SIGTERM)"
#: The first words of the line a second Ctrl-C ends the process with (`ctrl_c_deadline`).
INTERRUPTED_AGAIN = "interrupted again: stopped without finishing the clean-up"
#: The same for a second SIGTERM (`terminate_as_interrupt`).
TERMINATED_AGAIN = "terminated again (SIGTERM): stopped without finishing the clean-up"
#: The same for a SIGTERM while the command stops after a Ctrl-C (exit 143).
TERMINATED_AFTER_CTRL_C = (
    "terminated (SIGTERM) while stopping after Ctrl-C: stopped without finishing the clean-up"
)
#: The same for a Ctrl-C while the command stops after a SIGTERM (exit 130).
INTERRUPTED_AFTER_SIGTERM = (
    "interrupted (Ctrl-C) while stopping after SIGTERM: stopped without finishing the clean-up"
)
#: The hint `extend_ctrl_c_deadline` adds to what a command's clean-up after a Ctrl-C does.
AGAIN_HINT = "Ctrl-C again to stop at once"


def _stop_at_once(line: str, code: int) -> None:
    """End the process now: ``line`` on stderr (one write: safe between any two
    bytecodes, in a signal's handler), exit ``code``; no clean-up, no atexit."""
    os.write(2, line.encode("utf-8", "backslashreplace") + b"\n")
    os._exit(code)


class _Deadline:
    """The thread behind `ctrl_c_deadline`, one for the process, started with the first
    block: blocked on a pipe until the handler writes to it (a write is safe between any
    two bytecodes; starting a thread there is not: the main thread may hold
    ``threading``'s own locks), then ends the process unless the block was left in
    `CTRL_C_GRACE_S` seconds: "interrupted", exit 130, or, when a SIGTERM started it
    (`terminate_as_interrupt`), "terminated (SIGTERM)", exit 143."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()  # not inherited by children (PEP 446)
        self.armed_at: float | None = None  # monotonic time of the Ctrl-C, while armed
        self.cause: int | None = None  # the signal that armed it last (SIGINT, SIGTERM)
        self.grace_s = CTRL_C_GRACE_S
        self.blocks = 0  # `ctrl_c_deadline` and `terminate_as_interrupt` blocks entered
        self.kept = ""  # what stays done when the clean-up is cut short (`ctrl_c_notes`)
        self.say: Callable[[str], None] | None = None  # `ctrl_c_notes`'s ``say``
        self.held = False  # armed by a held signal (`hold_signal`), not yet handed over
        threading.Thread(target=self._watch, name="ctrl-c-deadline", daemon=True).start()

    def arm(self, cause: int) -> None:
        """A Ctrl-C (``cause`` SIGINT) or SIGTERM came: the grace starts now (called in
        the signal's handler); a second one, while armed, ends the process at once, saying
        which came after which (`_second_signal`)."""
        if self.armed_at is not None:
            words, code = _second_signal(self.cause, cause)
            _stop_at_once(self.line(words), code)
        self.cause = cause
        self.armed_at = time.monotonic()
        os.write(self._write, b"!")

    def line(self, words: str) -> str:
        """``words``, then what stays done (`ctrl_c_notes`), if a command said."""
        return f"{words}; {self.kept}" if self.kept else words

    def disarm(self) -> None:
        """The block was left: no deadline now (``cause`` is kept, for `stopped_by`)."""
        self.armed_at = None

    def _watch(self) -> None:
        while os.read(self._read, 64):
            while (at := self.armed_at) is not None:
                left = at + self.grace_s - time.monotonic()
                if left <= 0:
                    if self.cause == signal.SIGTERM:
                        _stop_at_once(self.line(TERMINATED), EXIT_TERMINATED)
                    _stop_at_once(self.line(INTERRUPTED_LINE.decode().strip()), EXIT_INTERRUPTED)
                time.sleep(min(left, 0.1))


def _second_signal(first: int | None, second: int) -> tuple[str, int]:
    """The words a process that got the signal ``second`` (SIGINT, SIGTERM) while it
    stopped after ``first`` ends with, and its exit status, the second signal's:
    `INTERRUPTED_AGAIN` (130) or `TERMINATED_AGAIN` (143) after the same signal,
    `TERMINATED_AFTER_CTRL_C` (143) or `INTERRUPTED_AFTER_SIGTERM` (130) after the other.
    Before, a SIGTERM after a Ctrl-C said "terminated again", and a Ctrl-C after a
    SIGTERM "interrupted again", as if the same signal had come twice."""
    if second == signal.SIGTERM:
        words = TERMINATED_AFTER_CTRL_C if first == signal.SIGINT else TERMINATED_AGAIN
        return words, EXIT_TERMINATED
    words = INTERRUPTED_AFTER_SIGTERM if first == signal.SIGTERM else INTERRUPTED_AGAIN
    return words, EXIT_INTERRUPTED


_deadline: _Deadline | None = None
#: Whether this process ends when its command returns (`ends_with_the_command`).
_process_ends = False


def ends_with_the_command() -> None:
    """Tell this module that the process ends when its command returns: the entry points
    (`clients.launch.main`, ``python -m clients.cli``) call it, never a process that runs
    commands in-process (a test). A command a signal stops then leaves the signals as the
    stop put them until the process ends (`_leaving_by_signal`)."""
    global _process_ends
    _process_ends = True


def _leaving_by_signal(deadline: _Deadline) -> bool:
    """Whether a block of this module is left by a process that ends with its command
    (`ends_with_the_command`) after a signal stopped it (the deadline still armed): the
    block then leaves its handler, the note of what is kept (`ctrl_c_notes`) and the
    deadline in place, so that a second signal until the process ends, also one after the
    command said how it stopped, ends it at once with that signal's words and code
    (`_second_signal`), and a teardown that hangs is ended by the deadline. Were
    Python's handling given back on the way out, a late Ctrl-C would raise
    KeyboardInterrupt wherever the process stood (a traceback, or exit -2 out of
    ``python -m clients.cli``), a late SIGTERM end it by its default action (-15), not
    130 and 143."""
    return _process_ends and deadline.armed_at is not None


def leaving_by_signal() -> bool:
    """Whether a signal stopped the command of this process, which ends with it, and the
    signals are still handled as a second one's (`_leaving_by_signal`): what
    `clients.launch` must then leave in place after the command returned."""
    return _deadline is not None and _leaving_by_signal(_deadline)


def _the_deadline() -> _Deadline:
    """The process's `_Deadline`, started now if none is (main thread, outside a handler)."""
    global _deadline
    if _deadline is None:
        _deadline = _Deadline()
    return _deadline


@contextmanager
def _holding(deadline: _Deadline) -> Iterator[None]:
    """The deadline is wanted while the block runs; when the last such block is left, it
    stands down (a command that carried on after a Ctrl-C, a test run in-process)."""
    if deadline.blocks == 0:
        deadline.cause = None
    deadline.blocks += 1
    try:
        yield
    finally:
        deadline.blocks -= 1
        if deadline.blocks == 0 and not _leaving_by_signal(deadline):
            deadline.disarm()


class _RaiseWithDeadline:
    """`ctrl_c_deadline`'s SIGINT handler: Python's default (KeyboardInterrupt), the
    deadline started first; a second Ctrl-C ends the process at once."""

    def __init__(self, deadline: _Deadline) -> None:
        self.deadline = deadline

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.deadline.arm(signal.SIGINT)  # a second Ctrl-C: the process ends here
        raise KeyboardInterrupt


def raises_keyboard_interrupt(handler: object) -> bool:
    """True for a SIGINT handler that answers with KeyboardInterrupt as Python's default
    does: `signal.default_int_handler`, or the one `ctrl_c_deadline` puts in place."""
    return handler is signal.default_int_handler or isinstance(handler, _RaiseWithDeadline)


def stopped_by() -> int | None:
    """The signal (SIGINT, SIGTERM) that started the last deadline of `ctrl_c_deadline`
    or `terminate_as_interrupt` in this process, or None: `clients.cli.main` says
    "terminated (SIGTERM)" and exits 143 for a SIGTERM's KeyboardInterrupt that no
    command reported."""
    return None if _deadline is None else _deadline.cause


def extend_ctrl_c_deadline(seconds: float, doing: str = "") -> None:
    """A command's own handling of a Ctrl-C that may take up to ``seconds`` (`prov scan`
    stopping its workers: SIGTERM, then SIGKILL after `clients.scan.engines.STOP_GRACE_S`)
    gets them: the running deadline of `ctrl_c_deadline`, if any, then ends the process
    no sooner than `CTRL_C_GRACE_S` after those ``seconds`` from now. ``doing``: what
    the command does meanwhile, said (with `AGAIN_HINT`, `ctrl_c_notes`'s ``say`` or
    stderr) when a Ctrl-C started the deadline (not a SIGTERM: nobody at a terminal)."""
    deadline = _deadline
    if deadline is not None and deadline.armed_at is not None:
        deadline.armed_at = max(deadline.armed_at, time.monotonic() + seconds)
        if doing and deadline.cause == signal.SIGINT:
            hint = f"{doing} ({AGAIN_HINT})"
            if deadline.say is not None:
                deadline.say(hint)
            else:
                os.write(2, hint.encode("utf-8", "backslashreplace") + b"\n")


def hold_signal(signum: int) -> None:
    """A Ctrl-C (``signum`` SIGINT) or SIGTERM came that a command holds for a moment, to
    hand it to its handler afterwards (`clients.scan.engines._interrupt_after`: while the
    pool starts a worker); called in the holding handler. Inside `ctrl_c_deadline` or
    `terminate_as_interrupt` the deadline starts now, as that handler would start it, so
    a moment that never ends (a fork server that never answers) is ended as a hung
    clean-up is ("terminated (SIGTERM)", 143; "interrupted", 130), and a second signal
    meanwhile ends the process at once (`INTERRUPTED_AGAIN`, `TERMINATED_AGAIN`), not
    held for good with no deadline, every further Ctrl-C or SIGTERM held the same way.
    Call `handing_over` before handing it over."""
    deadline = _deadline
    if deadline is not None and deadline.blocks > 0:
        held = deadline.armed_at is None
        deadline.arm(signum)  # already running: a second signal, the process ends here
        deadline.held = held


def handing_over() -> None:
    """The signal `hold_signal` was told of is handed to its handler now, which starts the
    deadline itself: the deadline that `hold_signal` started stands down first, so that
    the handler's start is not taken for a second signal."""
    deadline = _deadline
    if deadline is not None and deadline.held:
        deadline.held = False
        deadline.disarm()


@contextmanager
def ctrl_c_notes(
    kept: str, say: Callable[[str], None] | None = None
) -> Iterator[Callable[[str], None]]:
    """Inside the block, a second Ctrl-C (or SIGTERM) that ends the process at once, or
    the deadline, says ``kept`` after its words: what stays done and how to go on (`prov
    scan`: its rows so far, and --resume); ``say`` writes `extend_ctrl_c_deadline`'s
    hint (`prov scan`: through its console, above its progress line) in place of a bare
    write to stderr. ``kept`` is written by the signal's handler, so its characters that
    could move a terminal's cursor are shown escaped (`provenance.terminal.shown`) here.
    The block is given a function that replaces ``kept`` as what is kept grows (`prov log
    export-tiles --follow`: the size of each checkpoint it wrote). Outside
    `ctrl_c_deadline` and `terminate_as_interrupt` (no deadline) it changes nothing."""
    from provenance.terminal import shown

    deadline = _deadline
    if deadline is None:
        yield lambda _kept: None
        return

    def keep(now: str) -> None:
        deadline.kept = shown(now)

    before = deadline.kept, deadline.say
    deadline.kept, deadline.say = shown(kept), say
    try:
        yield keep
    finally:
        if not _leaving_by_signal(deadline):
            deadline.kept, deadline.say = before


@contextmanager
def ctrl_c_deadline() -> Iterator[None]:
    """Inside the block, a SIGINT that Python's default handler would answer (the block
    starts on the main thread with `signal.default_int_handler` in place) raises
    KeyboardInterrupt as before, and if the block is not left `CTRL_C_GRACE_S` seconds
    later, the process ends: "interrupted" on stderr, exit 130 (see the module docstring:
    a KeyboardInterrupt that left a lock taken hung the command for good); a second
    Ctrl-C meanwhile ends it at once (`INTERRUPTED_AGAIN`, exit 130). Handlers that
    commands put in place inside the block (`StopBetweenFiles`, `prov serve`'s) work as
    before; leaving the block stands the deadline down and gives the handler back (in a
    process that ends with its command, left after a Ctrl-C: both stay, and a SIGTERM at
    its default action gets `_SecondSignal` until the process ends). Elsewhere (another handler, SIGINT ignored, another thread) the block runs as is."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    deadline = _the_deadline()
    on_sigint = _RaiseWithDeadline(deadline)
    signal.signal(signal.SIGINT, on_sigint)
    try:
        with _holding(deadline):
            yield
    finally:
        leaving = _leaving_by_signal(deadline)
        if signal.getsignal(signal.SIGINT) is on_sigint and not leaving:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if leaving and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _SecondSignal(deadline))


class _SecondSignal:
    """SIGTERM's handler from when a command that a Ctrl-C stopped (`prov verify`, `prov
    log audit`: no handler of SIGTERM of their own, its default action) left
    `ctrl_c_deadline` in a process that ends with it (`_leaving_by_signal`) until the
    process ends: a second signal, "terminated (SIGTERM) while stopping after Ctrl-C",
    143 (`_second_signal`), as a late Ctrl-C there ends "interrupted again", 130, not
    the default action: -15, no word."""

    def __init__(self, deadline: _Deadline) -> None:
        self.deadline = deadline

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        words, code = _second_signal(self.deadline.cause, signum)
        _stop_at_once(self.deadline.line(words), code)


class StopBetweenFiles:
    """Context manager deferring the first SIGINT to the next `check` (see the module
    docstring). Off the main thread, where Python delivers no signals, and where SIGINT is
    ignored (a shell script's background job, ``prov sign ... &``, which a Ctrl-C meant for
    the foreground job must leave running, not stop after the file in hand, exit 130), it
    changes nothing and `check` never raises. ``notice``: the line
    written to stderr on the first SIGINT."""

    def __init__(self, notice: str) -> None:
        self._notice = notice.encode() + b"\n"
        self.requested = False
        self._old: Any = None
        self._installed = False

    def __enter__(self) -> StopBetweenFiles:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
        ):
            self._old = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._old)
            self._installed = False

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:  # stop at once: as the handler in place before would
            if isinstance(self._old, _RaiseWithDeadline):
                self._old(signum, frame)  # starts `ctrl_c_deadline`'s deadline
            raise KeyboardInterrupt
        self.requested = True
        os.write(2, self._notice)  # one write: safe between any two bytecodes

    def check(self) -> None:
        """Raise KeyboardInterrupt when a SIGINT came since `__enter__`. Inside
        `ctrl_c_deadline` the stop starts its deadline here, as Python's handling of a
        Ctrl-C does there, so a second Ctrl-C or SIGTERM from now on, also one after the
        command said how it stopped while the process ends, ends it at once with its words
        and code (`_second_signal`), the signals not given back to Python on the way out (a
        late Ctrl-C then a KeyboardInterrupt traceback out of ``python -m clients.cli``, a
        late SIGTERM -15). Not at the first SIGINT:
        the file in hand may take longer than `CTRL_C_GRACE_S` (a timestamp authority's
        wait)."""
        if self.requested:
            old = self._old
            if isinstance(old, _RaiseWithDeadline) and old.deadline.armed_at is None:
                old.deadline.arm(signal.SIGINT)
            raise KeyboardInterrupt


@contextmanager
def terminate_as_interrupt(got: list[int]) -> Iterator[None]:
    """Inside the block, SIGTERM (``kill``, systemd's stop, a scheduler's or ``timeout``'s
    end of the job) stops the command as Ctrl-C does: KeyboardInterrupt, so the command's
    own handling of it applies (`clients.scan.engines`: not while a worker starts), and the
    deadline of `ctrl_c_deadline` runs for it (also when SIGINT is ignored: a command
    started in the background), ending a command whose clean-up hangs "terminated
    (SIGTERM)", exit 143, and at once on a second SIGTERM (`TERMINATED_AGAIN`); under
    another SIGINT handler (`StopBetweenFiles`), this process raises SIGINT at itself.
    ``got`` then holds the signal, so that the command can say "terminated (SIGTERM)" and
    exit `EXIT_TERMINATED`, so that SIGTERM does not end `prov scan` and `prov log
    export-tiles --follow` where they stand, with no word of what was kept, and a scan
    whose clean-up hangs after a SIGTERM does not end "interrupted", exit 130.
    Outside the main thread the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    deadline = _the_deadline()  # its thread started here, not in the handler

    def on_term(signum: int, _frame: FrameType | None) -> None:
        got.append(signum)
        handler = signal.getsignal(signal.SIGINT)
        if isinstance(handler, _RaiseWithDeadline) or handler is signal.SIG_IGN:
            deadline.arm(signal.SIGTERM)  # a second SIGTERM: the process ends here
            raise KeyboardInterrupt
        signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        with _holding(deadline):
            yield
    finally:
        if not _leaving_by_signal(deadline):
            signal.signal(signal.SIGTERM, previous)


def how_stopped(got: list[int]) -> tuple[str, int]:
    """How a command stopped inside `terminate_as_interrupt` (whose ``got`` this is) says
    so, and its exit status: "terminated (SIGTERM)" and 143 after a SIGTERM, else
    "interrupted" and 130 (Ctrl-C)."""
    if got:
        return TERMINATED, EXIT_TERMINATED
    return "interrupted", EXIT_INTERRUPTED
