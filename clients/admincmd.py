"""``prov admin``: the operator's commands (an enrollment token, the enrollment
authority, revoking a device key), calling the server with $PROV_ADMIN_TOKEN."""

from __future__ import annotations

import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from clients.api import ProvenanceClient, default_server
from clients.options import ServerOpt, UsageError, nonempty_path
from provenance.cli.passphrase import CA_PASSPHRASE_ENV, read_passphrase
from provenance.core.errors import ClaimError, ConfigError
from provenance.core.files import file_kind
from provenance.core.keyhistory import check_admin_token_text
from provenance.core.keys import KEY_ID_BYTES
from provenance.core.registry import MAX_TOKEN_TTL, check_label
from provenance.core.timecheck import check_revocation_reason
from provenance.core.timetext import utc_text
from provenance.terminal import SafeConsole, shown, shown_line

# text that is not ours is never read as markup or emoji codes (`SafeConsole`)
out = SafeConsole(soft_wrap=True)
err = SafeConsole(stderr=True, soft_wrap=True)

admin_app = typer.Typer(
    help="Operator commands (enroll-token and revoke need $PROV_ADMIN_TOKEN).",
    no_args_is_help=True,
)


#: `prov admin revoke` of a key already revoked no later than asked: nothing changed.
EXIT_ALREADY_REVOKED = 3


def _admin_client(server: str) -> ProvenanceClient:
    """A client whose admin calls carry $PROV_ADMIN_TOKEN. Raises UsageError (exit 2,
    before any call) when it is unset or empty."""
    token = os.environ.get("PROV_ADMIN_TOKEN")
    if not token:
        raise UsageError(
            "this is an admin command: set the environment variable PROV_ADMIN_TOKEN to the"
            " server's admin token (the one `prov serve` was started with, from its own"
            " $PROV_ADMIN_TOKEN or its --admin-token-file FILE)"
        )
    try:
        check_admin_token_text(token)
    except ConfigError as e:
        raise UsageError(f"PROV_ADMIN_TOKEN: {e}") from None
    return ProvenanceClient(server, admin_token=token)


#: Largest `prov admin enroll-token --ttl` (`MAX_TOKEN_TTL`, 30 days; the server refuses
#: more, INVALID_ARGUMENT).
MAX_TOKEN_TTL_S = int(MAX_TOKEN_TTL.total_seconds())


@admin_app.command("enroll-token")
def enroll_token(
    server: ServerOpt = default_server(),
    ttl: Annotated[
        int,
        typer.Option(
            help="Seconds the token stays valid (0: server default, 24 h; at most 30 days).",
            min=0,
            max=MAX_TOKEN_TTL_S,
        ),
    ] = 0,
    label: Annotated[str, typer.Option(help="A name for the device, kept in the registry.")] = "",
) -> None:
    """Make a one-time enrollment token and print it (only the token, on stdout)."""
    try:  # the server refuses it too; said here before any request, as a usage error
        check_label(label)
    except ClaimError as e:
        raise typer.BadParameter(str(e), param_hint="--label") from e
    with _admin_client(server) as c:
        token, expires = c.create_enrollment_token(ttl, label)
    err.print(f"token valid until {expires:%Y-%m-%d %H:%M:%S} UTC; it can be used once")
    print(shown(token))  # the server's answer


ca_app = typer.Typer(
    help="The enrollment authority that certifies device keys (for C2PA).", no_args_is_help=True
)
admin_app.add_typer(ca_app, name="ca")


@ca_app.command("init")
def ca_init(
    dir: Annotated[
        Path,
        typer.Option(
            "--dir", help="Folder to create the authority in (key mode 0600).", parser=nonempty_path
        ),
    ],
    name: Annotated[
        str, typer.Option(help="Common name of the root certificate.")
    ] = "Media Provenance Enrollment CA",
    organization: Annotated[
        str, typer.Option(help="Organization of the root certificate.")
    ] = "Media Provenance",
    passphrase_file: Annotated[
        Path | None,
        typer.Option(
            help="File holding the passphrase that encrypts the authority key (default:"
            " $PROV_CA_PASSPHRASE, else prompted). `prov serve --ca` then needs it too.",
            dir_okay=False,
        ),
    ] = None,
    no_passphrase: Annotated[
        bool,
        typer.Option(
            "--no-passphrase",
            help="Write the authority key unencrypted (anyone who reads the file can"
            " certify devices): for tests and throwaway authorities.",
        ),
    ] = False,
) -> None:
    """Create an Ed25519 root CA on this machine; run the server with `--ca DIR` to
    issue a certificate to every device it enrolls from then on (a device enrolled before
    has none and its key cannot enroll again: `prov sign --c2pa` needs a new key). Prints
    the root certificate, which verifiers configure as a C2PA trust anchor.

    The key is encrypted with a passphrase (PKCS#8, PBKDF2-HMAC-SHA256 at 600,000
    iterations, AES-256), read from --passphrase-file, else $PROV_CA_PASSPHRASE, else
    typed twice at a prompt; `prov serve --ca DIR` asks for it the same way
    (--ca-passphrase-file, $PROV_CA_PASSPHRASE, a prompt)."""
    from provenance.c2pa.authority import KEY_FILE, init_authority

    if no_passphrase and passphrase_file is not None:
        raise UsageError("--no-passphrase and --passphrase-file contradict each other: give one")
    if dir.exists() and not dir.is_dir():  # a file, a FIFO: not "an authority already exists"
        mode = dir.stat().st_mode
        kind = "a file" if stat.S_ISREG(mode) else file_kind(mode)
        raise typer.BadParameter(
            f"{dir} is {kind}, not a folder; name the folder to create the authority in"
            " (created if missing)",
            param_hint="--dir",
        )
    if (dir / KEY_FILE).exists():  # before asking for a passphrase that would not be used
        raise ConfigError(f"an authority already exists in {dir}")
    passphrase = (
        None
        if no_passphrase
        else read_passphrase(
            env=CA_PASSPHRASE_ENV,
            what="the authority key",
            prompt="Authority key passphrase",
            file=passphrase_file,
            file_flag="--passphrase-file",
            confirm=True,
        )
    )
    auth = init_authority(
        dir, now=datetime.now(UTC), name=name, organization=organization, passphrase=passphrase
    )
    err.print(
        f"enrollment authority created in {dir}"
        + ("" if passphrase else " (its key is not encrypted)")
    )
    print(auth.certificate_pem.decode(), end="")


@admin_app.command("revoke")
def revoke(
    device_id: Annotated[str, typer.Argument(help="Device id (hex key id) to revoke.")],
    reason: Annotated[str, typer.Option(help="Why (key compromised, device lost, ...). Required.")],
    server: ServerOpt = default_server(),
    since: Annotated[
        str | None,
        typer.Option(help="When the key stopped being trustworthy (ISO 8601, UTC). Default: now."),
    ] = None,
) -> None:
    """Revoke a device key. Claims logged at or after --since report REVOKED_KEY.

    Revoking an already revoked key keeps the earlier time and its reason: a --since
    before it moves the revocation earlier (exit 0); otherwise nothing changes, and
    the command says "already revoked at T (reason R); nothing changed" and exits 3.
    The same --since and reason as a revocation already logged is a retry (after a lost
    answer, say): it is answered as that entry, "revoked ... at T", exit 0.

    Exit codes: 0 revoked (or moved earlier, or a retry); 3 already revoked, nothing changed;
    1 the server could not be reached or refused; 2 usage errors.
    """
    try:
        dev = bytes.fromhex(device_id)
    except ValueError:
        dev = b""
    if len(dev) != KEY_ID_BYTES:
        raise typer.BadParameter(
            f"a device id is {2 * KEY_ID_BYTES} hex digits (`prov device show` prints"
            f" it), got {device_id!r}",
            param_hint="DEVICE_ID",
        )
    if not reason.strip():  # the server refuses it too; said before any request
        raise typer.BadParameter(
            "a revocation needs a reason (key compromised, device lost, ...): it is logged",
            param_hint="--reason",
        )
    try:  # the server refuses it too; said here before any request, as a usage error
        check_revocation_reason(reason)
    except ClaimError as e:
        raise typer.BadParameter(str(e), param_hint="--reason") from e
    when = None
    if since:
        when = _revocation_time(since)
        if when > datetime.now(UTC):
            raise typer.BadParameter(
                f"{since} is in the future; a revocation takes effect now or earlier",
                param_hint="--since",
            )
    with _admin_client(server) as c:
        # always the authenticated call, never a read first: a wrong admin token must be
        # told as such, not as "already revoked". The server's Revoke is idempotent:
        # already_revoked when the key stands revoked no later than asked (nothing logged)
        d, unchanged = c.revoke(dev, reason, when)
    assert d.revoked_at is not None
    at = utc_text(d.revoked_at)
    # on one line: a reason logged before line feeds were refused may hold one
    why = shown_line(d.revocation_reason)
    if unchanged:  # the earlier revocation stands
        out.print(
            f"{d.device_id.hex()} was already revoked at {at} (reason: {why}); nothing changed",
            highlight=False,
        )
        raise typer.Exit(EXIT_ALREADY_REVOKED)
    out.print(f"revoked {d.device_id.hex()} at {at}: {why}", highlight=False)


def _revocation_time(since: str) -> datetime:
    """`prov admin revoke --since` text as an aware UTC datetime: ISO 8601, UTC unless an
    offset is given; a date alone ("2026-11-28", "2026-11-28+05:00") is its midnight
    (Python 3.11 reads the sign before an offset as the date/time separator, so
    "0001-01-01+05:00" would be 05:00 UTC). Raises typer.BadParameter (exit 2, before
    any call) for other text, and for a time outside 0001-01-01..9999-12-31 once in UTC."""
    text = since.strip().replace("Z", "+00:00").replace("z", "+00:00")
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}([+-]\d{2}:?\d{2})?", text):
        text = text[:10] + "T00:00:00" + text[10:]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"an ISO 8601 time such as 2026-11-28T09:00:00Z is needed, got {since!r}",
            param_hint="--since",
        ) from None
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    try:
        return when.astimezone(UTC)
    except OverflowError:
        raise typer.BadParameter(
            f"{since} is outside the times a log holds (0001-01-01 to 9999-12-31) once"
            " converted to UTC",
            param_hint="--since",
        ) from None
