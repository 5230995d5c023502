"""The ``prov`` command line.

Shape (after sigstore's CLI): ``main(argv=None)`` runs the Typer app with one catch of
`ProvenanceError` that prints a clean message and exits 1; no tracebacks for user
mistakes; ``--json`` for machines. Environment defaults: PROV_SERVER (address),
PROV_HOME (device folder), PROV_PASSPHRASE (device key passphrase, for scripts),
PROV_ADMIN_TOKEN (admin credential).

This module is the app: its root options, the commands and groups it adds (each in a
module of its own, imported only when that command runs: `COMMANDS`), logging, and
`main`'s catch. The commands it adds from ``clients/``:

    admincmd      prov admin (enroll-token, ca init, revoke)
    devicecmd     prov device (init, enroll, show, sync, repair)
    signcmd       prov sign
    verifycmd     prov verify
    detectcmd     prov detect
    logcmd        prov log, prov receipt
    witnesscmd    prov witness
    scan.cli      prov scan

and `devicecommon`, what prov sign and prov device share.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import io
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import typer
from rich.text import Text
from typer.core import TyperCommand

from clients.helptext import TaughtGroup, teach
from clients.interrupt import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    TERMINATED,
    ctrl_c_deadline,
    stopped_by,
)
from provenance.core.errors import (
    ConfigError,
    LogIntegrityError,
    NoWitnessesError,
    ProvenanceError,
    ServerEvidenceError,
    TransportError,
    WitnessQuorumError,
)
from provenance.core.files import os_failure
from provenance.terminal import SafeConsole, protect_typer


class Lazy(NamedTuple):
    """A `prov` command imported when it runs: ``attr`` of ``module``, a Typer app (a
    group) or a command function, and the one line `prov --help` lists it with."""

    module: str
    attr: str
    summary: str
    cls: str | None = None  #: the Click command class, an attribute of ``module``
    help: str | None = None  #: a group's help, where ``add_typer`` gave it


#: Every `prov` command, in the order `prov --help` lists them. Each summary is the first
#: sentence of its command's help (`clients.helptext.first_sentence`), copied so that the
#: listing imports no command: tests/test_cli_lazy.py holds each to its command's help.
COMMANDS: dict[str, Lazy] = {
    "scan": Lazy(
        "clients.scan.cli",
        "scan",
        "Scan folders and archives: which files are signed originals, derived from"
        " signed captures, or unsigned.",
    ),
    "serve": Lazy(
        "provenance.server.cli",
        "serve",
        "Run the gRPC server until SIGINT/SIGTERM, on a SQLite file (one server) or a"
        " PostgreSQL database (several servers, one log; see docs/deploy.md).",
    ),
    "web": Lazy(
        "provenance.web.cli",
        "web",
        "Serve the verification page, the public log explorer and the JSON API (/api/v1/,"
        " /openapi.json, C2PA soft binding resolution) over HTTP, as a client of the gRPC"
        " service at --server.",
    ),
    "sign": Lazy(
        "clients.signcmd",
        "sign",
        "Sign captures: write FILE.prov beside each and submit it to the log.",
    ),
    "verify": Lazy(
        "clients.verifycmd",
        "verify",
        "Verify a file against the log and print the report.",
        cls="OneFileCommand",
    ),
    "detect": Lazy(
        "clients.detectcmd",
        "detect",
        "The detector's advisory score for generated images (and video frames), without"
        " a provenance verdict.",
    ),
    "admin": Lazy(
        "clients.admincmd",
        "admin_app",
        "Operator commands (enroll-token and revoke need $PROV_ADMIN_TOKEN).",
    ),
    "device": Lazy(
        "clients.devicecmd", "device_app", "This device's key, enrollment and offline queue."
    ),
    "log": Lazy(
        "clients.logcmd",
        "log_app",
        "The transparency log: its verifier key, audits (consistency, re-hashed entries,"
        " key history) and C2SP tlog-tiles export.",
    ),
    "receipt": Lazy(
        "clients.logcmd",
        "receipt_app",
        "A sidecar's log receipt: verify it offline with the log's public key, export it"
        " as a C2SP tlog-proof, refresh it to the newest witness-cosigned checkpoint.",
    ),
    "witness": Lazy(
        "clients.witnesscmd",
        "witness_app",
        "Witness a log: cosign its checkpoints after checking consistency (C2SP tlog-witness).",
    ),
    "detector": Lazy(
        "detector.cli",
        "app",
        "Train and evaluate the advisory detector.",
        help="Train and evaluate the advisory detector.",
    ),
}


def import_command(argv: list[str]) -> None:
    """Import the module of the command ``argv`` names first (``prov verify ...``: the
    verifier's), if any, without building it: `clients.launch` does so while its own
    Ctrl-C handler is in place, so a Ctrl-C during those imports says "interrupted"
    (a KeyboardInterrupt raised in an import lock's callback is only printed as
    "Exception ignored" by Python, and the command ran on)."""
    spec = COMMANDS.get(argv[0]) if argv else None
    if spec is not None:
        importlib.import_module(spec.module)


def load_command(name: str) -> Any:
    """The Click command `prov NAME` runs, built by Typer from its module (imported now)
    as ``prov``'s own app would build it, its help taught (`teach`). Raises KeyError for
    a name not in `COMMANDS`."""
    spec = COMMANDS[name]
    module = importlib.import_module(spec.module)
    target = getattr(module, spec.attr)
    holder = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    holder.callback()(_root)
    if isinstance(target, typer.Typer):
        extra: dict[str, Any] = {} if spec.help is None else {"help": spec.help}
        holder.add_typer(target, name=name, **extra)
    else:
        cls = getattr(module, spec.cls) if spec.cls else None
        holder.command(name, cls=cls)(target)
    group = typer.main.get_command(holder)
    command = group.commands[name]  # type: ignore[attr-defined]
    teach(command, name)
    return command


def command_tree() -> Any:
    """``prov``'s Click group with every command in `COMMANDS` loaded, for whatever walks
    the whole tree (tests/test_help.py, scripts/help_golden.py); ``prov`` itself loads only
    the command it runs."""
    root = typer.main.get_command(app)
    for name in COMMANDS:
        root.commands[name] = load_command(name)  # type: ignore[attr-defined]
    return root


class LazyGroup(TaughtGroup):
    """The ``prov`` group, whose commands are imported on dispatch (`COMMANDS`): ``prov
    verify`` loads the verifier, not the server, the detector or the scan engines, and
    ``prov --help`` lists every command by its summary without importing any."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            if ctx.meta.get(_LISTING):  # prov --help: the summary, nothing imported
                return TyperCommand(cmd_name, short_help=COMMANDS[cmd_name].summary)
            self.commands[cmd_name] = load_command(cmd_name)
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """Typer's, with "Did you mean 'verify'?" after "No such command 'verfy'.": Typer
        suggests only among the commands a group holds, and this one holds none until one
        runs, so the names come from `COMMANDS`. A name that is no command fails the
        context (a usage error, exit 2)."""
        name = args[0] if args else ""
        if name and name not in COMMANDS and not name.startswith("-"):
            matches = difflib.get_close_matches(name, list(COMMANDS))
            if matches and not ctx.resilient_parsing:
                names = ", ".join(repr(match) for match in matches)
                ctx.fail(f"No such command {name!r}. Did you mean {names}?")
        return super().resolve_command(ctx, args)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        ctx.meta[_WORDS] = list(args)  # every word after `prov`, for `dash_file`
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        """Click's, with a hint under "No such option: -d" when the word Click read as
        that option names an existing file (``prov sign -dash.jpg``): how to give it as a
        file. Raises UsageError (exit 2) then, else what Click raises."""
        try:
            return super().invoke(ctx)
        except Exception as e:  # Click's NoSuchOption, which Typer keeps private (its own test)
            if type(e).__name__ != "NoSuchOption":
                raise
            name = dash_file(str(getattr(e, "option_name", "")), ctx.meta.get(_WORDS, []))
            if name is None:
                raise
            from provenance.cli.options import UsageError

            said = e.format_message()  # type: ignore[attr-defined]
            raise UsageError(
                f"{said}\na file named {name}? put `--` before it or write ./{name}",
                ctx=getattr(e, "ctx", None),
            ) from None

    def format_help(self, ctx: Any, formatter: Any) -> None:
        ctx.meta[_LISTING] = True
        try:
            super().format_help(ctx, formatter)
        finally:
            ctx.meta[_LISTING] = False


#: `Context.meta` key: set while ``prov --help`` prints (`LazyGroup.format_help`).
_LISTING = "clients.cli.listing"
#: `Context.meta` key: the words given after ``prov`` (`LazyGroup.parse_args`).
_WORDS = "clients.cli.words"


def dash_file(option: str, words: list[str]) -> str | None:
    """The word of ``words`` (the command line after ``prov``, up to a ``--``) that Click
    read as the unknown ``option`` and that names an existing file or folder: "-dash.jpg"
    for "-d" (a short option is one letter of a word), "--long.jpg" for itself; None
    when no such word names one."""
    for word in words:
        if word == "--":
            return None
        if option.startswith("--"):
            same = word == option or word.startswith(f"{option}=")
        else:
            same = word.startswith("-") and not word.startswith("--") and option[1:] in word[1:]
        if same and Path(word).exists():
            return word
    return None


app = typer.Typer(
    name="prov",
    help=(
        "Media provenance: devices sign captures with Ed25519 keys, a server logs each claim"
        " in an append-only Merkle log, and anyone verifies a file against it.\n\n"
        "Cryptography decides the verdict; the detector only advises."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=LazyGroup,  # commands imported on dispatch; help reflowed, with examples
)


def _version(value: bool) -> None:
    """``--version``: print the installed package's version and stop."""
    if value:
        try:
            number = importlib.metadata.version("media-provenance")
        except importlib.metadata.PackageNotFoundError:  # run from a checkout not installed
            number = "unknown (not installed: `make env` installs it)"
        print(f"prov {number}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Options of `prov` itself (the commands have their own)."""


# text that is not ours is never read as markup or emoji codes (`SafeConsole`); a styled
# label is given as Text
err = SafeConsole(stderr=True, soft_wrap=True)
protect_typer()  # Typer's usage errors name files too

#: Said under "cannot reach the server at HOST:PORT (...)" (`clients.api`).
UNREACHABLE_HINT = (
    "hint: no server answers there. Start one with `prov serve --db FILE` (it prints"
    " 'listening on HOST:PORT'), or give the address of a running one with --server"
    " HOST:PORT or $PROV_SERVER"
)
#: Said instead when an HTTP/1 server answered the connection (gRPC's "Failed parsing
#: HTTP/2 ..."): the web page's port given as --server, say, which `make web` prints first.
NOT_GRPC_HINT = (
    "hint: an HTTP server answers there, not the gRPC service (the web page of `make web`"
    " or `prov web`, or a witness?). --server and $PROV_SERVER take the gRPC address:"
    " `prov serve` prints it in its 'listening on HOST:PORT' line, `make web` in its"
    " 'gRPC: HOST:PORT'"
)
#: Said instead when the peer's first bytes were no HTTP/2 and no HTTP/1 status line
#: (gRPC's "Failed parsing HTTP/2" alone): Python's http.server answers the HTTP/2
#: preface with a bare HTML page, an SSH server with its banner; which, gRPC cannot say.
NOT_HTTP2_HINT = (
    "hint: a server answers there, but not in gRPC (the web page of `make web` or `prov"
    " web`, a witness, or another service?). --server and $PROV_SERVER take the gRPC"
    " address: `prov serve` prints it in its 'listening on HOST:PORT' line, `make web` in"
    " its 'gRPC: HOST:PORT'"
)
#: Said instead when the peer took the connection and sent nothing back (gRPC's "timed
#: out before receiving SETTINGS frame"): a `prov serve` stopped with Ctrl-Z or hung (its
#: kernel still completes connections), or a service that waits for its client to speak
#: first (TLS): "no server answers there. Start one" would send its user to start a second.
SILENT_HINT = (
    "hint: something there took the connection but sent nothing back: a server stopped"
    " (Ctrl-Z) or hung, or a service that is not gRPC (one waiting for TLS, say). Check"
    " the process listening there; --server and $PROV_SERVER take the gRPC address that"
    " `prov serve` prints in its 'listening on HOST:PORT' line"
)
#: What gRPC's message holds when the peer answered in HTTP/1 (grpc core's chttp2
#: transport; it says "Failed parsing HTTP/2" of any first bytes that are no HTTP/2,
#: "got frame type 45" of an SSH banner, so that alone names no HTTP server).
_HTTP1_PEER = "Trying to connect an http1.x server"
_NOT_HTTP2 = "Failed parsing HTTP/2"
#: What gRPC's message holds when the peer took the connection and wrote nothing.
_SILENT = "timed out before receiving SETTINGS frame"
#: What gRPC's message holds when the host name of --server did not resolve (its native
#: resolver: "errors resolving HOST:PORT: ... Domain name not found"; c-ares: "DNS
#: resolution failed for HOST:PORT").
_NOT_RESOLVED = ("errors resolving ", "DNS resolution failed")


def no_such_host_hint(address: str) -> str:
    """Said instead of `UNREACHABLE_HINT` when the host of ``address`` (HOST:PORT) did not
    resolve: starting a server would not help."""
    host = address.rpartition(":")[0]
    return (
        f"hint: the host name {host} does not resolve (misspelt, or not known to this"
        " machine's resolver): check it in --server or $PROV_SERVER, or give an IP"
        " address, e.g. 127.0.0.1:50051"
    )


#: Said instead when the call found no answer in its time (DEADLINE_EXCEEDED): a server
#: may be there, busy or waiting for its database (another process holding SQLite's
#: write lock), so "no server answers there" would send its user to start a second one.
SLOW_HINT = (
    "hint: nothing answered in time. A server may be there but busy, or waiting for its"
    " database (a backup or another program holding the SQLite file's write lock): try"
    " again shortly. Else start one with `prov serve --db FILE`, or give the address of a"
    " running one with --server HOST:PORT or $PROV_SERVER"
)


LOG_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"
"""How log records read on stderr: UTC time to the millisecond, level, logger, message."""


def configure_logging() -> None:
    """Send log records to stderr as `LOG_FORMAT` (this program's loggers, ``provenance``,
    ``clients`` and ``detector``, from INFO or ``$PROV_LOG_LEVEL``; other libraries' from
    WARNING). Called once, by `main`; a no-op when the root logger already has handlers
    (an embedding program's, or pytest's). Raises ConfigError for an unknown level."""
    name = os.environ.get("PROV_LOG_LEVEL", "INFO").upper()
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise ConfigError(f"PROV_LOG_LEVEL={name!r} is not DEBUG, INFO, WARNING, ERROR or CRITICAL")
    if logging.getLogger().handlers:
        return
    formatter = logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    for ours in ("provenance", "clients", "detector"):
        logging.getLogger(ours).setLevel(level)
    # grpc logs an answer it cannot parse with a traceback before the call fails INTERNAL,
    # which the client then says in one line (`clients.api`); nothing else is logged there
    logging.getLogger("grpc._common").setLevel(logging.CRITICAL)


def _after_ctrl_c(e: BaseException) -> bool:
    """True when ``e`` was raised while handling a KeyboardInterrupt that nothing reported
    (Typer answers Ctrl-C with ``Exit(130)`` raised from it, then ``SystemExit(130)``,
    printing nothing); False once a handler raised ``from None`` after saying so itself."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return False


def _write_names_as_given() -> None:
    """Let the process's own stdout and stderr write a file name that is not UTF-8 as its
    bytes: Python holds each such byte as a lone surrogate (U+DC80-U+DCFF), which a
    'strict' stream (the default under en_US.UTF-8 and most desktop locales; C.UTF-8
    already escapes) refuses with UnicodeEncodeError, a traceback in place of a report.
    Streams a caller replaced (a test's capture) are left as they are."""
    for stream in (sys.stdout, sys.stderr):
        if (
            stream is not None
            and stream in (sys.__stdout__, sys.__stderr__)
            and isinstance(stream, io.TextIOWrapper)
            and stream.errors == "strict"
        ):
            stream.reconfigure(errors="surrogateescape")


def _cannot_reach() -> str:
    """How `clients.api` begins "cannot reach the server" (imported only once an error
    is being reported, so that commands that never call the server do not load gRPC)."""
    from clients.api import CANNOT_REACH

    return CANNOT_REACH


def _exit_witness_quorum() -> int:
    """`clients.report.EXIT_WITNESS_QUORUM`, imported when a witness policy failed."""
    from clients.report import EXIT_WITNESS_QUORUM

    return EXIT_WITNESS_QUORUM


def _how_interrupted() -> tuple[str, int]:
    """What a command stopped by a KeyboardInterrupt it did not report says, and its exit
    status: "terminated (SIGTERM)" and 143 when a SIGTERM raised it (`prov scan`, `prov
    log export-tiles`: `clients.interrupt.terminate_as_interrupt`), else "interrupted"
    and 130 (Ctrl-C). Before, "interrupted" and 130 for both."""
    if stopped_by() == signal.SIGTERM:
        return TERMINATED, EXIT_TERMINATED
    return "interrupted", EXIT_INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``prov`` console script; returns the exit code.

    Usage errors exit 2 (printed by Typer); our errors, and the machine's (OSError: a
    full disk, a folder gone), print one clean line and exit 1, or 3 for a log integrity
    failure (fork, rollback, edited entries) or a verdict citing a claim of other bytes
    (ServerEvidenceError), or 14 when a witness policy is not met. Ctrl-C: "interrupted",
    130; a command that has not returned `clients.interrupt.CTRL_C_GRACE_S` seconds after
    it ends the process so, and a second Ctrl-C meanwhile at once ("interrupted again",
    `clients.interrupt.ctrl_c_deadline`). SIGTERM, for the commands that handle it
    (`clients.interrupt.terminate_as_interrupt`): the same with "terminated (SIGTERM)",
    143.
    """
    _write_names_as_given()
    try:
        configure_logging()
        with ctrl_c_deadline():  # a Ctrl-C ends the command within seconds, whatever it hit
            app(args=argv, prog_name="prov")
    except SystemExit as e:
        if _after_ctrl_c(e):  # Typer turns Ctrl-C into a silent exit 130
            word, code = _how_interrupted()
            err.print(word)
            return code
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except ServerEvidenceError as e:  # a verdict citing a claim of other bytes
        err.print(Text.assemble(("SERVER EVIDENCE REFUSED:", "bold red"), f" {e}"))
        return 3
    except LogIntegrityError as e:
        err.print(Text.assemble(("LOG INTEGRITY FAILURE:", "bold red"), f" {e}"))
        return 3
    except NoWitnessesError as e:  # no policy to meet: what happened, in words
        err.print(Text.assemble(("error:", "red"), f" {e}"))
        return _exit_witness_quorum()
    except WitnessQuorumError as e:
        err.print(Text.assemble(("WITNESS POLICY NOT MET:", "bold red"), f" {e}"))
        return _exit_witness_quorum()
    except ProvenanceError as e:
        err.print(Text.assemble(("error:", "red"), f" {e}"))
        if isinstance(e, TransportError) and str(e).startswith(_cannot_reach()):
            if e.code == "DEADLINE_EXCEEDED":
                hint = SLOW_HINT
            elif _HTTP1_PEER in str(e):
                hint = NOT_GRPC_HINT
            elif _NOT_HTTP2 in str(e):
                hint = NOT_HTTP2_HINT
            elif _SILENT in str(e):
                hint = SILENT_HINT
            elif any(said in str(e) for said in _NOT_RESOLVED):
                at = str(e).removeprefix(f"{_cannot_reach()} at ")
                hint = no_such_host_hint(at.partition(" (")[0])
            else:
                hint = UNREACHABLE_HINT
            err.print(hint, highlight=False)
        return 1
    except OSError as e:  # the machine's, not the user's: a full disk, a folder gone
        err.print(Text.assemble(("error:", "red"), f" {os_failure(e)}"))
        return 1
    except KeyboardInterrupt:
        word, code = _how_interrupted()
        err.print(word)
        return code
    return 0


if __name__ == "__main__":  # python -m clients.cli: a late signal ends it as `prov`'s
    from clients.interrupt import ends_with_the_command
    from clients.launch import guard_the_teardown, quiet_grpc_core, run_to_the_end

    guard_the_teardown()
    quiet_grpc_core()
    ends_with_the_command()
    sys.exit(  # SIGINT ignored or handled by the caller: left as it is
        run_to_the_end(
            main,
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL,
            signal.getsignal(signal.SIGINT) is signal.default_int_handler,
        )
    )
