"""``prov device``: this device's key, enrollment and offline queue (init, enroll, show,
sync, repair), on a `DeviceHome`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer

from clients.api import ProvenanceClient, default_server
from clients.device import SEQUENCE_MARGIN, DeviceHome, default_home, read_device_file
from clients.device_repair import (
    NothingToRepair,
    adopt_log_sequence,
    is_damaged,
    leftovers,
    recovered_server,
    repair,
)
from clients.devicecommon import (
    device_passphrase,
    device_server,
    naming_where_the_passphrase_came_from,
    print_sync_problems,
)
from clients.files import read_bounded
from clients.options import (
    DeviceServerOpt,
    HomeOpt,
    ServerOpt,
    UsageError,
    existing,
    server_address,
)
from clients.report import counted
from provenance.core.errors import ProvenanceError
from provenance.core.keys import DeviceKey
from provenance.terminal import SafeConsole, transient_bar

# text that is not ours is never read as markup or emoji codes (`SafeConsole`)
out = SafeConsole(soft_wrap=True)
err = SafeConsole(stderr=True, soft_wrap=True)

device_app = typer.Typer(
    help="This device's key, enrollment and offline queue.", no_args_is_help=True
)


@device_app.command("init")
def device_init(
    home: HomeOpt = default_home(),
    force: Annotated[
        bool,
        typer.Option(
            help="Replace an existing key (its identity is lost; the old device's queue,"
            " set-aside claims, certificate and state move to replaced/DEVICE_ID/ in --home)."
        ),
    ] = False,
) -> None:
    """Create this device's Ed25519 key, encrypted with a passphrase (prompted, or taken
    from PROV_PASSPHRASE for scripts), in --home (default: $PROV_HOME or ~/.prov)."""
    h = DeviceHome(home)
    h.check_init(force)  # before the prompt
    passphrase = device_passphrase(confirm=True)
    with h.locked():  # not while a `prov sign` or `prov device sync` uses the old key
        state, old = h.init(passphrase, force=force)
    out.print(f"device key created in {home}")
    if old is not None:
        queued = len(DeviceHome(old).pending())
        err.print(
            f"the replaced device's state, certificate and claims ({queued} still queued) are"
            f" kept in {old}; `prov device sync --home {old}` submits what it queued",
            highlight=False,
        )
    print(state.device_id)


def _certificate_chain(path: Path) -> str:
    """The PEM text of a `--certificate` FILE. Raises BadParameter (exit 2) when it is a
    FIFO or device, over `provenance.c2pa.authority.MAX_CHAIN_PEM_BYTES` (the most the
    server reads of one), unreadable, or not PEM text holding a certificate; the server
    checks the chain itself."""
    from provenance.c2pa.authority import MAX_CHAIN_PEM_BYTES  # the CLI starts without it

    try:
        data = read_bounded(path, MAX_CHAIN_PEM_BYTES, "certificate chain")
    except OSError as e:
        raise typer.BadParameter(
            f"cannot read {path}: {e.strerror or e}", param_hint="--certificate"
        ) from None
    except ProvenanceError as e:  # a FIFO or device, or too large
        raise typer.BadParameter(str(e), param_hint="--certificate") from None
    text = data.decode("ascii", "replace")
    if "-----BEGIN CERTIFICATE-----" not in text or "\ufffd" in text:
        raise typer.BadParameter(
            f"{path} is not a PEM certificate chain (-----BEGIN CERTIFICATE----- text):"
            " give the chain the server's enrollment authority issued for this key",
            param_hint="--certificate",
        )
    return text


#: What an enrollment token is made of (`secrets.token_urlsafe`, `registry.new_token`).
TOKEN_TEXT = re.compile(r"[A-Za-z0-9_-]+")


@device_app.command("enroll")
def device_enroll(
    token: Annotated[
        str,
        typer.Option(
            help="One-time token from `prov admin enroll-token`. Prefer $PROV_ENROLL_TOKEN:"
            " a command line can be read by every user of the machine (ps) while the"
            " passphrase is asked, and a token read there can be spent first.",
            envvar="PROV_ENROLL_TOKEN",
            show_envvar=True,
        ),
    ] = "",
    certificate: Annotated[
        Path | None,
        typer.Option(
            help="Enroll with an X.509 chain for this key from the server's authority instead of a token.",
            callback=existing,
            dir_okay=False,
        ),
    ] = None,
    server: ServerOpt = default_server(),
    home: HomeOpt = default_home(),
) -> None:
    """Enroll this device's key with the server, using a one-time token (or a
    certificate issued by the server's enrollment authority)."""
    if not token and certificate is None:
        raise UsageError(
            "give --token TOKEN or $PROV_ENROLL_TOKEN (the one-time token `prov admin"
            " enroll-token` prints) or --certificate FILE (a chain from the server's"
            " enrollment authority)"
        )
    if token and not TOKEN_TEXT.fullmatch(token):
        raise typer.BadParameter(
            "an enrollment token is letters, digits, '-' and '_' (the line `prov admin"
            f" enroll-token` prints); this one ({counted(len(token), 'character')}) holds others",
            param_hint="--token",
        )
    chain = _certificate_chain(certificate) if certificate is not None else ""
    h = DeviceHome(home)
    h.require_key()  # before the prompt
    passphrase = device_passphrase()
    # its state is read and written again: not while a `prov sign` numbers a claim
    with h.locked(), ProvenanceClient(server) as c:
        with naming_where_the_passphrase_came_from():
            state = h.enroll(c, token, passphrase, chain)
    extra = f"; certificate saved in {h.cert_path}" if h.cert_path.exists() else ""
    out.print(f"device {state.device_id} enrolled with {server}{extra}")


@device_app.command("show")
def device_show(home: HomeOpt = default_home()) -> None:
    """Print this device's id, server, last sequence, and its queue: each queued claim
    with its attempts and last error, and each claim set aside with the reason."""
    h = DeviceHome(home)
    s = h.state()
    queue = h.pending()
    aside = h.set_aside()
    print(
        json.dumps(
            {
                **s.__dict__,
                "queued": len(queue),
                "queue": [e.summary() for e in queue],
                "set_aside": [e.summary() for e in aside],
            },
            indent=2,
        )
    )


@device_app.command("sync")
def device_sync(
    ctx: typer.Context,
    server: DeviceServerOpt = default_server(),
    home: HomeOpt = default_home(),
    retry_set_aside: Annotated[
        bool,
        typer.Option(
            "--retry-set-aside",
            help="First queue again the claims set aside as refused (e.g. after a server fix).",
        ),
    ] = False,
) -> None:
    """Submit the claims queued while the server was unreachable.

    A claim the server refuses for good is set aside (kept, with the reason: see
    `prov device show`) and the others go on; on a transient failure the rest stays
    queued for the next sync. Exit 0 when everything queued was logged, 1 otherwise.
    """
    h = DeviceHome(home)
    h.state()  # no device here (a wrong --home?): say so, not "nothing queued"
    with h.locked():
        if retry_set_aside:
            out.print(f"{h.retry_set_aside()} set-aside claim(s) queued again")
        pending = len(h.pending())
        if not pending:
            aside = len(h.set_aside())
            out.print(
                "nothing queued"
                + (
                    f"; {counted(aside, 'claim')} set aside, refused and not logged, in"
                    f" {h.set_aside_dir} (`prov device show` lists the reasons;"
                    " `prov device sync --retry-set-aside` queues them again once the"
                    " cause is fixed)"
                    if aside
                    else ""
                )
            )
            return
        server = device_server(ctx, server, h)
        with ProvenanceClient(server) as c, transient_bar(err) as bar:
            task = bar.add_task("submitting", total=pending)
            done = h.sync(c, lambda i, n: bar.update(task, completed=i))
    out.print(f"submitted {len(done.logged)} of {pending} queued claim(s) to {server}")
    print_sync_problems(h, done, server)
    if done.refused or done.set_aside or done.unreachable or done.deferred:
        raise typer.Exit(1)


def _repair_server(value: str | None) -> str | None:
    """``--server`` of `prov device repair`: HOST:PORT (`server_address`), or "" for none."""
    return value if not value else server_address(value)


@device_app.command("repair")
def device_repair(
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="The server this device enrolled with, HOST:PORT, when the damaged file no"
            " longer names it ('' for none: a device never enrolled). Not read from"
            " $PROV_SERVER: it is recorded as the device's own.",
            show_default=False,
            callback=_repair_server,
        ),
    ] = None,
    accept_log_sequence: Annotated[
        bool,
        typer.Option(
            "--accept-log-sequence",
            help="Take the log's last sequence for this key however far past the highest"
            f" this folder shows (without it, one more than {SEQUENCE_MARGIN:,} past is not"
            " adopted: a wrong answer would move the numbering towards its end, where the"
            " key signs nothing more). Also moves a sound device.json's numbering up to the"
            " log's.",
        ),
    ] = False,
    home: HomeOpt = default_home(),
) -> None:
    """Rebuild a damaged or missing device.json (the device's id, server, last sequence
    and last claim hash), which stops every device command although the queued claims are
    signed and complete; `prov device sync` then logs them.

    From what is still trustworthy: the device id and public key from the key file
    (passphrase prompted, or $PROV_PASSPHRASE); the server from --server, else from what
    is left of the damaged file, or with no device.json of the copies a repair set aside
    (when none names it: exit 2, give --server); the last sequence as the highest this
    key signed that can be seen: the claims in queue/, set_aside/ and sidecars/ (by
    content only when signed by this key), what the damaged file still says, and the
    log's record of the key when the server answers, unless it is more than
    1,000,000 past the highest the folder shows and --accept-log-sequence is not given
    (said, with what to do); what the damaged file says by the same rule, within
    1,000,000 of the highest of those claims and the log's number. A number already signed is never used again (when the log
    cannot be asked, or its number is not adopted, one it logged may be: the output says
    so).
    The damaged file is kept as device.json.damaged-TIME beside it, never deleted. A sound
    device.json of this key is left as it is, one of another key too (said, exit 1). Exit
    0 when rebuilt or nothing needed it, 1 when it could not be (a wrong passphrase, no
    key), 2 for a usage error.
    """
    h = DeviceHome(home)
    h.require_key()  # before the prompt
    server_from = "--server"
    if server is None and not is_damaged(h):
        # a sound state is this key's (nothing to do, or the log's number to adopt) or
        # another's
        server = h.state().server if accept_log_sequence else ""
    elif server is None:
        recovered = recovered_server(leftovers(h))
        if recovered is None:
            raise UsageError(
                f"the server this device enrolled with could not be recovered from"
                f" {h.state_path}: give it with --server HOST:PORT (the address `prov device"
                " enroll` was given; --server '' when the device never enrolled)"
            )
        server, where = recovered
        server_from = f"what is left of {where}" if where == "the damaged file" else where
    with naming_where_the_passphrase_came_from():
        key = DeviceKey.from_encrypted_pem(read_device_file(h.key_path), device_passphrase())
    with h.locked():
        try:
            done = repair(h, key, server, server_from, accept_log_sequence)
        except NothingToRepair as e:
            said = adopt_log_sequence(h, key, server) if accept_log_sequence else str(e)
            out.print(said, highlight=False)
            return
    state = done.state
    sources = ", ".join(done.sequence_from) or "no claim of this key found"
    last = state.last_sequence
    if last >= 2**64 - 1:  # a claim's sequence is a uint64
        after = (
            "this device has used its last sequence number: make a new key (`prov device"
            " init --force`; this device's claims are kept)"
        )
    elif done.log_not_adopted:
        after = (
            f"the next claim is numbered {last + 1}; the log's last sequence was not adopted,"
            " so that number may be one the log already holds (see below)"
        )
    elif done.log_checked:
        after = f"a number already signed is never reused: the next claim is numbered {last + 1}"
    else:  # a claim logged whose sidecar is elsewhere may hold the next number
        after = (
            f"the next claim is numbered {last + 1}; the log was not asked, so that number"
            " may be one the log already holds (see below)"
        )
    out.print(
        f"{h.state_path} rebuilt for device {state.device_id}: server"
        f" {state.server or '(none)'} (from {done.server_from}), last sequence"
        f" {last} (the highest seen: {sources}); {after}",
        highlight=False,
    )
    out.print(done.log, highlight=False)
    if not state.log_key and state.server:
        out.print(
            "no pinned log key could be recovered: the next `prov sign` or `prov device sync`"
            " pins the one the server answers, as at enrollment (trust on first use)",
            highlight=False,
        )
    for far in done.not_counted:
        out.print(f"note: {far}", highlight=False)
    if done.kept is not None:
        out.print(f"the damaged file is kept as {done.kept}", highlight=False)
    queued = len(h.pending())
    if queued and state.server:
        out.print(f"`prov device sync` submits the {queued} queued claim(s)", highlight=False)
    elif queued:  # no server recorded: sync would call the default, which never enrolled it
        out.print(
            f"the {queued} queued claim(s) stay queued: this device has no server (it never"
            " enrolled); enroll it first (`prov device enroll --token TOKEN --server"
            " HOST:PORT`), then `prov device sync` submits them",
            highlight=False,
        )
