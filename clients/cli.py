"""The ``prov`` command line.

Shape (after sigstore's CLI): ``main(argv=None)`` runs the Typer app with one catch of
`ProvenanceError` that prints a clean message and exits 1; no tracebacks for user
mistakes; ``--json`` for machines. Environment defaults: PROV_SERVER (address),
PROV_HOME (device folder), PROV_PASSPHRASE (device key passphrase, for scripts),
PROV_ADMIN_TOKEN (admin credential).

This module is the app: its root options, the commands and groups it adds (each in a
module of its own), logging, and `main`'s catch. The commands it adds from ``clients/``:

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

import importlib.metadata
import io
import logging
import os
import sys
import time
from typing import Annotated

import typer
from rich.text import Text

from clients import logcmd, witnesscmd
from clients.admincmd import admin_app
from clients.api import CANNOT_REACH
from clients.detectcmd import detect
from clients.devicecmd import device_app
from clients.helptext import TaughtGroup
from clients.report import EXIT_WITNESS_QUORUM
from clients.scan.cli import scan as scan_command
from clients.signcmd import sign
from clients.verifycmd import OneFileCommand, verify
from detector import cli as detector_cli
from provenance.core.errors import (
    ConfigError,
    LogIntegrityError,
    NoWitnessesError,
    ProvenanceError,
    TransportError,
    WitnessQuorumError,
)
from provenance.core.files import os_failure
from provenance.server import cli as server_cli
from provenance.terminal import SafeConsole, protect_typer
from provenance.web import cli as web_cli

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
    cls=TaughtGroup,  # every command's help reflowed and ended with examples
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


app.add_typer(admin_app, name="admin")
app.add_typer(device_app, name="device")
app.add_typer(logcmd.log_app, name="log")
app.add_typer(logcmd.receipt_app, name="receipt")
app.add_typer(witnesscmd.witness_app, name="witness")
app.command("scan")(scan_command)
app.command("serve")(server_cli.serve)
app.command("web")(web_cli.web)
app.command()(sign)
app.command(cls=OneFileCommand)(verify)
app.command()(detect)
app.add_typer(detector_cli.app, name="detector", help="Train and evaluate the advisory detector.")

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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``prov`` console script; returns the exit code.

    Usage errors exit 2 (printed by Typer); our errors, and the machine's (OSError: a
    full disk, a folder gone), print one clean line and exit 1, or 3 for a log integrity
    failure (fork, rollback, edited entries), or 14 when a witness policy is not met.
    """
    _write_names_as_given()
    try:
        configure_logging()
        app(args=argv, prog_name="prov")
    except SystemExit as e:
        if _after_ctrl_c(e):  # Typer turns Ctrl-C into a silent exit 130
            err.print("interrupted")
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except LogIntegrityError as e:
        err.print(Text.assemble(("LOG INTEGRITY FAILURE:", "bold red"), f" {e}"))
        return 3
    except NoWitnessesError as e:  # no policy to meet: what happened, in words
        err.print(Text.assemble(("error:", "red"), f" {e}"))
        return EXIT_WITNESS_QUORUM
    except WitnessQuorumError as e:
        err.print(Text.assemble(("WITNESS POLICY NOT MET:", "bold red"), f" {e}"))
        return EXIT_WITNESS_QUORUM
    except ProvenanceError as e:
        err.print(Text.assemble(("error:", "red"), f" {e}"))
        if isinstance(e, TransportError) and str(e).startswith(CANNOT_REACH):
            slow = e.code == "DEADLINE_EXCEEDED"
            err.print(SLOW_HINT if slow else UNREACHABLE_HINT, highlight=False)
        return 1
    except OSError as e:  # the machine's, not the user's: a full disk, a folder gone
        err.print(Text.assemble(("error:", "red"), f" {os_failure(e)}"))
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
