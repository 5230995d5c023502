"""`make web`: the verification page over a database holding the demo's signed captures.

Starts `prov serve --http` (the gRPC service and the web page in one process) on a fresh
database in ``.web-demo/``, signs the demo's photos and video with a newly enrolled
device (`clients.demo.prepare`), prints the page's address and the files to try, and
runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import shutil
import signal
import sys
import threading
from pathlib import Path

import typer

from clients.demo import DemoFiles, prepare, relay_server_lines, start_server
from clients.options import check_can_listen, check_listen_form, listen_address, listens_clash
from provenance.core.errors import ConfigError
from provenance.store.sqlite import held_by_a_server

ROOT = Path(__file__).resolve().parent.parent
#: Marker file that makes a folder ours to replace on the next run.
MARKER = ".prov-web-demo"


def _refuse_if_running(work: Path) -> None:
    """Refuse (SystemExit, exit 1) a folder whose database a running server (an earlier
    `make web`) still holds: checked before the addresses can be listened on (after
    their form), so a second `make web` in the same folder is told that, not only that
    the gRPC port is taken (by that one). A lock file that is no regular file (a FIFO)
    or cannot be opened ends it too, saying so."""
    try:
        held = held_by_a_server(work / "provenance.db")
    except ConfigError as e:
        raise SystemExit(f"make web: {e}") from e
    if held:
        raise SystemExit(
            f"make web: another `make web` (or `prov serve`) is running on {work}"
            f" (its database lock {work / 'provenance.db.lock'} is held); stop it first"
            " (Ctrl-C), or run this one elsewhere:"
            f" {_python()} -m clients.webdemo --dir DIR --listen HOST:PORT"
            " --grpc-listen HOST:PORT"
        )


def _fresh(work: Path) -> None:
    """Empty ``work`` if an earlier run made it; refuse to touch any other folder, or
    one whose database a running server (an earlier `make web`) still holds."""
    if work.exists():
        if not (work / MARKER).exists():
            raise SystemExit(
                f"make web: {work} exists and was not made by `make web`; move it away"
            )
        _refuse_if_running(work)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / MARKER).write_text("made by `make web`; replaced on the next run\n")


def _python() -> str:
    """This interpreter as a person types it: `.venv/bin/python` for the repository's own
    venv (`make` runs here), else its full path (the system's python lacks the packages)."""
    exe = Path(sys.executable)
    return str(exe.relative_to(ROOT)) if exe.is_relative_to(ROOT) else str(exe)


#: The service's gRPC address: `prov`'s own default server (no PROV_SERVER needed), the
#: same on every run (before, a port drawn afresh each run made every `export
#: PROV_SERVER=...` typed in another shell stale on the next `make web`).
GRPC_DEFAULT = "127.0.0.1:50051"


def shell_hint(address: str, token_file: Path) -> str:
    """How to use the demo's server from another shell: `prov` needs its gRPC address
    named (`PROV_SERVER`) unless it is `prov`'s default, and the admin commands need its
    admin token, drawn afresh each run and kept in ``token_file`` (`PROV_ADMIN_TOKEN`)."""
    return (
        "  from another shell in this folder: source .venv/bin/activate;"
        f" export PROV_SERVER={address}; then\n"
        "    prov verify FILE   prov scan FOLDER --report scan.jsonl"
        "   prov log audit --state audit.json\n"
        "  for the admin commands (prov admin enroll-token, prov admin revoke):"
        f" export PROV_ADMIN_TOKEN=$(cat {shlex.quote(str(token_file))})\n"
    )


def _keep_admin_token(work: Path) -> Path:
    """Draw the server's admin token into ``$PROV_ADMIN_TOKEN`` (the server and the demo's
    own enrollment read it there) and keep it in ``work/admin-token``, readable by its
    owner alone, so that the admin commands can be tried from another shell."""
    token = secrets.token_urlsafe(24)
    os.environ["PROV_ADMIN_TOKEN"] = token
    path = work / "admin-token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return path


def drop_list(files: DemoFiles) -> str:
    """The files to drop on the page, one a line with its verdict in a column (padded to
    the longest path: the signed original lies in captures/, the copies in newsroom/)."""
    rows = (
        (files.hopper, "SIGNED_ORIGINAL"),
        (files.derived, "DERIVED"),
        (files.tampered, "TAMPERED, with its .prov sidecar"),
        (files.unsigned, "UNSIGNED"),
        (files.generated, "UNSIGNED, the detector's score"),
        (files.small_video, "DERIVED video, with its time range"),
    )
    width = max(len(str(path)) for path, _ in rows)
    return "".join(f"    {str(path).ljust(width)}  ({what})\n" for path, what in rows)


def _check_listen(
    parser: argparse.ArgumentParser,
    listen: str,
    set_by: str,
    option: str = "--listen",
    *,
    form_only: bool = False,
) -> None:
    """Refuse an address the server would refuse, before the previous run's folder is
    emptied (exit 2 for one that is not HOST:PORT, 1 for one this machine cannot listen
    on, such as a port already taken), as `prov serve` refuses it. ``option``: the flag
    that gave it (--listen, --grpc-listen); ``set_by``: the make variable that gave it
    (``WEB``, ``GRPC``), which the message then names, without argparse's usage line
    (before: "usage: make web [-h] [--listen LISTEN] ..." and "argument --listen" for
    `make web WEB=::1:8096`); empty when the option was given. The gRPC address's host
    must also read as gRPC reads it (``GRPC=0:50051`` is refused, exit 2). ``form_only``:
    only what needs neither the resolver nor the machine (`check_listen_form`), checked
    before the folder's running server (`_refuse_if_running`): a malformed address is a
    usage error of this command line, said first (`make web WEB=foo` beside a running
    one says so, not only that it runs)."""
    check = check_listen_form if form_only else check_can_listen
    try:
        check(listen, option, grpc=option == "--grpc-listen")
    except typer.BadParameter as e:
        if not set_by:
            parser.error(f"argument {option}: {e.message}")
        setting = f"{set_by}={listen}"
        message = (
            e.message.replace(repr(listen), setting, 1)
            if repr(listen) in e.message
            else f"{setting}: {e.message}"
        )
        print(f"make web: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    except ConfigError as e:
        hint = f"; set another address with {f'{set_by}=' if set_by else f'{option} '}HOST:PORT"
        raise SystemExit(f"make web: {e}{hint}") from e


def _check_apart(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse one address for the page and the service (`make web GRPC=127.0.0.1:8080`),
    exit 2, before the last run's folder is emptied: before, the server refused the pair
    only after that, and make web said "demo: the server did not start". Port 0 (each
    server a free port of its own) is no clash; a name and an address it resolves to
    (WEB=localhost:8080 GRPC=127.0.0.1:8080), or every interface (0.0.0.0) and one
    address, are one (`listens_clash`)."""
    web = listen_address(args.listen, "--listen")
    grpc = listen_address(args.grpc_listen, "--grpc-listen")
    if not listens_clash(web, grpc):
        return
    shown = [
        f"{set_by}={value}" if set_by else f"{option} {value}"
        for value, set_by, option in (
            (args.listen, args.listen_set_by, "--listen"),
            (args.grpc_listen, args.grpc_listen_set_by, "--grpc-listen"),
        )
    ]
    print(
        f"make web: error: {shown[0]} and {shown[1]} name one address; the page and the"
        " gRPC service each need a port of their own",
        file=sys.stderr,
    )
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    # A job started in the background by a non-interactive shell (`(make web &)`) begins
    # with SIGINT ignored, and Python then installs no handler of its own: Ctrl-C or a
    # SIGINT would never stop this program. Restore Python's handler, so SIGINT always
    # raises KeyboardInterrupt here; the server started below inherits the default action.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser(prog="make web", description=__doc__)
    parser.add_argument(
        "--listen",
        default="127.0.0.1:8080",
        help="the web page's HTTP address HOST:PORT (default: %(default)s)",
    )
    parser.add_argument(
        "--grpc-listen",
        default=GRPC_DEFAULT,
        help="the gRPC service's address HOST:PORT, the same on every run (default: %(default)s,"
        " where `prov` looks when PROV_SERVER is not set); a port already taken is refused",
    )
    parser.add_argument("--dir", type=Path, default=ROOT / ".web-demo", help="working folder")
    parser.add_argument("--no-detector", action="store_true", help="skip loading the detector")
    # the make variable that set --listen (the Makefile passes WEB): errors name it, not
    # an option the person never typed
    parser.add_argument("--listen-set-by", default="", help=argparse.SUPPRESS)
    parser.add_argument("--grpc-listen-set-by", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    work = args.dir.resolve()
    _check_listen(parser, args.listen, args.listen_set_by, form_only=True)
    _check_listen(
        parser, args.grpc_listen, args.grpc_listen_set_by, "--grpc-listen", form_only=True
    )
    _refuse_if_running(work)
    _check_listen(parser, args.listen, args.listen_set_by)
    _check_listen(parser, args.grpc_listen, args.grpc_listen_set_by, "--grpc-listen")
    _check_apart(parser, args)
    _fresh(work)
    token_file = _keep_admin_token(work)
    os.environ["PROV_HOME"] = str(work / "device")
    os.environ["PROV_PASSPHRASE"] = "demo passphrase, use a prompt in real life"
    extra = ["--http", args.listen] + (["--no-detector"] if args.no_detector else [])
    print(
        f"# working in {work}\n# 1. the server and its web page, with an embedded SQLite database"
    )
    server, address = start_server(work / "provenance.db", *extra, listen=args.grpc_listen)
    relay: threading.Thread | None = None
    os.environ["PROV_SERVER"] = address
    try:
        assert server.stdout is not None
        url = log_key = ""
        for line in server.stdout:  # the server's start-up lines, after "listening on"
            print(f"  [server] {line.rstrip()}", flush=True)
            if line.startswith("log key: "):
                log_key = line.split()[-1]
            if line.startswith("web on "):
                url = line.split()[-1]
                break
        relay = relay_server_lines(server)  # the rest, "[server] " before each line too
        if not url:
            raise SystemExit("make web: the web page did not start (see the error above)")
        files = prepare(work)
        print(
            f"\nThe verification page is at {url}\n"
            f"  drop any of these on it:\n{drop_list(files)}"
            f"  log explorer: {url}/log   API: {url}/api   gRPC: {address}\n"
            f"{shell_hint(address, token_file)}"
            f"  log key (`prov receipt verify FILE.prov --log-key KEY`; `prov log key --server"
            f" {address}` prints it again): {log_key}\n"
            "Ctrl-C stops the server.",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
        if relay is not None:
            relay.join(timeout=10)  # its last lines ("shutting down") first
        print("server stopped")


if __name__ == "__main__":
    main()
