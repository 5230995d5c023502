"""``prov log ...`` and ``prov receipt ...``: the auditor's and witness's commands."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from clients.api import ProvenanceClient, default_server
from clients.device import atomic_write
from clients.files import read_bounded
from clients.options import ServerOpt, in_existing_folder
from provenance.audit import AuditState, audit_step
from provenance.errors import ConfigError, LogIntegrityError, TransportError
from provenance.log.checkpoint import NoteVerifier, load_log_signer
from provenance.receipt import verify_receipt
from provenance.sidecar import MAX_SIDECAR_BYTES, check_sidecar_key, decode_sidecar

log_app = typer.Typer(
    help="Audit the transparency log (checkpoints, consistency).", no_args_is_help=True
)
receipt_app = typer.Typer(
    help="Check receipts offline with the log's public key.", no_args_is_help=True
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _read_vkey(value: str) -> str:
    """A verifier key given inline or as a path to a file holding it."""
    p = Path(value)
    if p.is_file():
        return p.read_text().strip()
    return value.strip()


@log_app.command("key")
def log_key(
    server: ServerOpt = default_server(),
    key_file: Annotated[
        Path | None,
        typer.Option(
            help="Read the key from the server's log key file instead of asking the server."
        ),
    ] = None,
    origin: Annotated[
        str, typer.Option(help="Log origin, with --key-file.")
    ] = "media-provenance.local/log",
) -> None:
    """Print the log's public verifier key (note format NAME+HASH+KEY)."""
    if key_file is not None:
        print(load_log_signer(key_file, origin).verifier_key())
        return
    with ProvenanceClient(server) as c:
        vkey, _ = c.log_key()
    print(vkey)


def _entries(c: ProvenanceClient, start: int, end: int) -> Iterator[bytes]:
    pos = start
    while pos < end:
        try:
            got, nxt = c.entries(pos, min(1000, end - pos))
        except TransportError as e:
            if e.code == "DATA_LOSS":  # the server itself found its store damaged
                raise LogIntegrityError(str(e)) from e
            raise
        if not got:
            return
        yield from got[: end - pos]
        pos = nxt


@log_app.command("audit")
def audit(
    state: Annotated[
        Path, typer.Option(help="File holding the last checkpoint this auditor accepted.")
    ],
    server: ServerOpt = default_server(),
    log_key: Annotated[
        str | None,
        typer.Option(
            help="Pin the log's verifier key (text or file). Default: the key saved in STATE, else the server's (trust on first use)."
        ),
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full/--incremental",
            help="Re-hash every entry from the start (catches edited or deleted old rows), or only the entries added since the saved checkpoint (faster on big logs).",
        ),
    ] = True,
) -> None:
    """Fetch the newest checkpoint, prove it consistent with the saved one, re-hash the
    entries against it, and save it. Exit 3 on a fork, a rollback, a changed log key, or
    entries edited or deleted behind the log's back; exit 1 when the server is unreachable."""
    in_existing_folder(state, "--state")
    saved = AuditState.from_json(state.read_text()) if state.exists() else None
    with ProvenanceClient(server) as c:
        server_vkey, _ = c.log_key()
        vkey = _read_vkey(log_key) if log_key else (saved.verifier_key if saved else server_vkey)
        if saved is None and log_key is None:
            err.print(f"first audit: trusting the server's log key {server_vkey}")
        if server_vkey != vkey:
            raise LogIntegrityError(
                f"the server now presents log key {server_vkey}, not the trusted {vkey}"
            )
        note = c.checkpoint()
        new_size = int(note.split("\n")[1]) if note.count("\n") >= 2 else 0
        old_size = 0
        proof: list[bytes] = []
        if saved is not None:
            old_size = int(saved.checkpoint.split("\n")[1])
            if 0 < old_size < new_size:
                proof = c.consistency_proof(old_size, new_size)
        start = 0 if (full or saved is None) else old_size
        new_state, cp, checked = audit_step(
            saved, vkey, note, proof, _entries(c, start, new_size), from_start=start == 0
        )
    atomic_write(state, new_state.to_json().encode())
    if saved is None:
        grew = f"has {cp.size} entries"
    elif cp.size == old_size:
        grew = f"unchanged at {cp.size} entries"
    else:
        grew = f"grew from {old_size} to {cp.size}"
    out.print(f"log OK: {grew}; {checked} entries re-hashed; consistent with the saved checkpoint")


@receipt_app.command("verify")
def receipt_verify(
    sidecar: Annotated[
        Path, typer.Argument(help="A FILE.prov sidecar holding a receipt.", exists=True)
    ],
    log_key: Annotated[
        str, typer.Option(help="The log's verifier key (text or a file holding it).")
    ],
) -> None:
    """Verify a sidecar's receipt offline: its public key against the claim's key id and
    signature, then the checkpoint signature, leaf and inclusion proof."""
    try:
        sc = decode_sidecar(read_bounded(sidecar, MAX_SIDECAR_BYTES, "sidecar"))
    except OSError as e:
        raise ConfigError(f"cannot read sidecar {sidecar}: {e.strerror or e}") from e
    if sc.receipt is None:
        raise ConfigError(
            f"{sidecar} has no receipt yet: the claim was not logged (run `prov device sync`)"
        )
    check_sidecar_key(sc)
    cp = verify_receipt(sc.receipt, sc.signed_claim, NoteVerifier.from_vkey(_read_vkey(log_key)))
    out.print(
        f"receipt OK: leaf {sc.receipt.leaf_index} of {cp.size} in log {cp.origin},"
        f" logged {sc.receipt.integrated_at:%Y-%m-%d %H:%M:%S} UTC; claim by device"
        f" {sc.signed_claim.key_id.hex()[:16]}… (signature verified with the sidecar's key)"
    )
