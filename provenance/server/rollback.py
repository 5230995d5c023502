"""Noticing a log database restored from an older backup (or otherwise rolled back).

The database alone cannot tell that it went back in time: an older copy is a perfectly
consistent log. So the server remembers, outside the database, the newest checkpoint it
signed: a copy of that signed note in ``LOG_KEY.checkpoint`` beside the log key
(`memo_path`), rewritten atomically after commits by a background thread
(`CheckpointMemo`, so no submission waits for it). At start the database must hold
at least that many leaves, and its tree at that size must have the remembered root;
otherwise the server refuses to start (`check_not_rolled_back`), naming the file: an
operator who knowingly accepts the loss moves it away (auditors and witnesses that saw
the newer checkpoint will still see the fork).

A capture whose sidecar holds a receipt this log signed, for a claim the log no longer
holds, gets the rollback as the first reason of its verdict (`with_lost_receipt`), not
the advice to run ``prov device sync``, which cannot help.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import threading
import time
from dataclasses import replace
from pathlib import Path

from provenance.cli.atomicfile import write_atomically
from provenance.core import merkle
from provenance.core.claims import Receipt, SignedClaim
from provenance.core.errors import ConfigError, LogIntegrityError, ProvenanceError
from provenance.core.verify import (
    UNLOGGED_SIDECAR_REASON,
    VerificationReport,
    is_unlogged_sidecar_reason,
)
from provenance.log.checkpoint import MEMO_SUFFIX as MEMO_SUFFIX  # defined here before
from provenance.log.checkpoint import NoteVerifier, open_checkpoint, remove_key_leftovers
from provenance.log.checkpoint import memo_path as memo_path  # defined here before
from provenance.log.receipt import verify_receipt

log = logging.getLogger(__name__)


def remember_checkpoint(path: Path, note: str) -> None:
    """Replace ``path`` (mode 0644 less the umask) atomically with the signed checkpoint
    ``note`` (`write_atomically`: a new temporary file ``.NAME.<16 hex digits>.tmp``,
    created exclusively, never through a link, fsync, rename; the folder not fsynced).
    A crash leaves the previous (older) copy, which is safe: only a database behind the
    remembered checkpoint is refused; and its temporary file, which
    `remove_memo_leftovers` removes at the next start. Raises ConfigError when the file
    cannot be written."""
    try:
        write_atomically(
            path,
            note.encode(),
            mode=0o644,
            sync_folder=False,  # an older copy is safe; no fsync competing with the log's
            temp_name=lambda: f".{path.name}.{secrets.token_hex(8)}.tmp",
        )
    except OSError as e:
        raise ConfigError(f"cannot write the remembered checkpoint {path}: {e.strerror}") from e


def remove_memo_leftovers(path: Path) -> list[Path]:
    """Remove the temporary copies of the remembered checkpoint ``path`` that writers
    killed mid-way left (``.NAME.<16 hex digits>.tmp``, and ``.NAME.tmp<pid>`` of older
    versions, one per killed process): regular files of this user unchanged for
    `KEY_LEFTOVER_AGE_S` (a live write takes milliseconds), as `remove_key_leftovers`
    checks them; returns those removed."""
    name = re.escape(path.name)
    return remove_key_leftovers(path, names=rf"\.{name}\.(?:[0-9a-f]{{16}}\.tmp|tmp[0-9]+)")


#: Least time between two writes of the remembered checkpoint, in seconds: under a
#: stream of commits the file (written and fsynced) follows a few times a second instead
#: of once per commit, and its fsync no longer competes with the log's own.
MEMO_INTERVAL_S = 0.1


class CheckpointMemo:
    """Keeps `memo_path` up to date off the commit path: `update` hands over the newest
    signed checkpoint and returns at once; a background thread writes the latest one
    (coalescing bursts, at most one write per ``interval_s``), so a commit never waits for
    this file, and wakes the thread only when it waits for one (not once per commit). Lagging is safe (only a database behind the file is refused); `close`
    writes what is pending at once."""

    def __init__(self, path: Path, interval_s: float = MEMO_INTERVAL_S) -> None:
        self.path = path
        for leftover in remove_memo_leftovers(path):
            log.warning(
                "removed %s, a copy of the remembered checkpoint left by a killed start", leftover
            )
        self._interval_s = interval_s
        self._cond = threading.Condition()
        self._pending: tuple[int, str] | None = None
        self._written = 0
        self._closed = False
        self._idle = False  # the thread waits for a checkpoint (not out its interval)
        self._thread = threading.Thread(target=self._run, name="checkpoint-memo", daemon=True)
        self._thread.start()

    def update(self, size: int, note: str) -> None:
        """Remember the checkpoint ``note`` of a tree of ``size`` leaves (newest wins)."""
        with self._cond:
            if size > max(self._written, self._pending[0] if self._pending else 0):
                self._pending = (size, note)
                if self._idle:  # else it is sleeping out its interval and takes it after
                    self._cond.notify()

    def close(self) -> None:
        """Write what is pending and stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        wrote = -math.inf  # time.monotonic() of the last write
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._idle = True
                    self._cond.wait()
                self._idle = False
                rest = wrote + self._interval_s - time.monotonic()
                if rest > 0:  # newer checkpoints arriving meanwhile replace the pending one
                    self._cond.wait_for(lambda: self._closed, rest)
                job, self._pending = self._pending, None
                if job is None:
                    return
            wrote = time.monotonic()
            try:
                remember_checkpoint(self.path, job[1])
                with self._cond:
                    self._written = job[0]
            except ConfigError as e:  # the commit is durable; only the memo lags
                log.warning("%s; a restored database may go unnoticed until it is fixed", e)


def check_not_rolled_back(
    path: Path, verifier: NoteVerifier, size: int, get_nodes: merkle.NodeReader
) -> int:
    """Compare the database's tree (``size`` leaves, nodes read with ``get_nodes``) with
    the checkpoint remembered in ``path``; return the remembered size (0 when there is
    no file yet).

    Raises LogIntegrityError when the file is not a checkpoint signed by this log's key,
    when the database holds fewer leaves than it, or when the database's tree at its
    size has another root (a fork after a restore).
    """
    try:
        note = path.read_text()
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as e:
        raise LogIntegrityError(f"cannot read the remembered checkpoint {path}: {e}") from e
    try:
        cp = open_checkpoint(note, verifier)
    except ProvenanceError as e:
        raise LogIntegrityError(
            f"{path} is not a checkpoint signed by this log's key ({e}); move it away if it"
            " belongs to another log"
        ) from e
    accept = f"to accept the loss knowingly, move {path} away and start again"
    if cp.size > size:
        raise LogIntegrityError(
            f"the database holds {size} leaves but this server signed a checkpoint of"
            f" {cp.size} leaves (remembered in {path}): the database was restored from an"
            " older backup or rolled back, and captures logged since hold receipts the log"
            f" no longer has. Restore the newest database; {accept} (auditors and"
            " witnesses holding the newer checkpoint will see the fork)"
        )
    if merkle.root(cp.size, get_nodes) != cp.root_hash:
        raise LogIntegrityError(
            f"the database's tree at size {cp.size} differs from the checkpoint this"
            f" server signed (remembered in {path}): the log was rolled back and rewritten"
            f" (a fork). Restore the newest database; {accept}"
        )
    return cp.size


def with_lost_receipt(
    report: VerificationReport,
    sidecar: SignedClaim,
    receipt: Receipt,
    verifier: NoteVerifier,
    tree_size: int,
) -> VerificationReport:
    """``report`` for a sidecar claim the log does not hold, given the sidecar's
    ``receipt``: when this log's key signed that receipt, the log lost an entry it had
    acknowledged, and the first reason says so, in place of the advice to submit the
    claim again or to sign the file again (the status is kept: the log no longer
    vouches for the claim; the receipt still verifies offline). A receipt that does not
    verify is noted and not used; in place of the advice to submit the claim (`prov
    device sync`, which has nothing queued for a claim another log holds), the reason
    says so and how it is checked. Reports resting on a logged claim are returned as is.
    """
    c = report.evidence.claim
    if c is None or c.in_log or c.signed_claim != sidecar:
        return report
    try:
        cp = verify_receipt(receipt, sidecar, verifier)
    except ProvenanceError as e:
        if UNLOGGED_SIDECAR_REASON not in report.reasons:
            note = (
                f"note: the sidecar's receipt does not verify with this log's key ({e}); not used"
            )
            return replace(report, reasons=(*report.reasons, note))
        # a claim logged by another log (this address's log replaced): `prov device sync`
        # has nothing queued to submit, so its advice is replaced by what does check it
        other = (
            "the sidecar's signature is valid and matches the bytes, but the claim is not in"
            f" this log, and the sidecar's receipt does not verify with this log's key ({e}):"
            " another log's receipt (one this address served before), or a damaged one;"
            " not used. `prov receipt verify FILE.prov --log-key KEY` checks it offline"
            " with the key of the log that issued it; its signer can sign the file again"
            " for this log"
        )
        reasons = tuple(other if r == UNLOGGED_SIDECAR_REASON else r for r in report.reasons)
        return replace(report, reasons=reasons)
    where = (
        f"its leaf {receipt.leaf_index} is past the log's current size {tree_size}"
        if receipt.leaf_index >= tree_size
        else f"its leaf {receipt.leaf_index} now holds another entry"
    )
    reason = (
        f"LOG ROLLBACK: this log signed a receipt for this claim (leaf {receipt.leaf_index}"
        f" of {cp.size}, logged {receipt.integrated_at:%Y-%m-%d %H:%M:%S} UTC) but no longer"
        f" holds it: {where}. The log's database was restored from an older backup or"
        " rolled back; `prov device sync` cannot fix this: tell the log's operator (the"
        " receipt still verifies offline with `prov receipt verify`)"
    )
    # the rollback replaces the advice of a claim merely missing from the log ("run `prov
    # device sync`") and that of one the log refuses today ("sign the file again"): an
    # older server logged this one, and only the log's operator can bring it back
    rest = tuple(r for r in report.reasons if not is_unlogged_sidecar_reason(r))
    ev = replace(report.evidence, claim=replace(c, receipt=receipt, receipt_verified=True))
    return replace(report, reasons=(reason, *rest), evidence=ev)
