"""Signing a capture (`SigningFolder.sign_file`): measured, numbered past every claim
the folder holds, checked by the log's rules, queued, then its sidecar written; a
sidecar already there kept, replaced or queued again."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from clients.device.disk import SIDECAR_SUFFIX, sidecar_path
from clients.device.entries import (
    QueueEntry,
    _entry_of,
    _read_entry,
    name_sequence,
    signed_sequence,
)
from clients.device.keptindex import KeptIndex
from clients.device.logkey import receipt_problem
from clients.device.measuring import ClaimFields, measure
from clients.device.queue import QueueFolder
from clients.device.sidecars import (
    SidecarExistsError,
    SignedFile,
    _backup,
    _binds,
    _free_backup,
    _read_old_sidecar,
    _refusal,
    _stripped_sha256,
)
from clients.device.state import SEQUENCE_MARGIN, DeviceState
from clients.files import read_bounded
from provenance.core.claims import Claim, SignedClaim
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, sign_payload
from provenance.core.errors import ClaimError, ConfigError, ProvenanceError
from provenance.core.keys import DeviceKey
from provenance.core.registry import check_claim_shape
from provenance.media.assets import AssetLimits
from provenance.wire import convert as wire
from provenance.wire.sidecar import MAX_SIDECAR_BYTES, Sidecar, decode_sidecar

APP_VERSION = "prov-cli/0.1"


class SigningFolder(QueueFolder):
    """A device folder that signs files into claims, queued and written as sidecars."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        #: the kept sidecars' bindings, for `_kept_for`
        self._kept_index = KeptIndex(self.sidecar_dir)

    def sign_file(
        self,
        key: DeviceKey,
        path: Path,
        captured_at: datetime | None = None,
        metadata: Mapping[str, str] | None = None,
        limits: AssetLimits = AssetLimits(),
        force: bool = False,
    ) -> SignedFile:
        """Measure ``path``, sign a claim for it, queue it and write ``FILE.prov``.

        An existing ``FILE.prov`` is never lost. When it already describes this content,
        signed by this key, and holds a receipt or is still queued, nothing is signed:
        the result has ``already`` set and that sidecar. A receipt there must verify
        (`receipt_problem`: with the pinned log key); one that does not is not taken as
        logged: without ``force`` the sidecar is copied aside and its claim queued again
        (`_queue_again`, said in ``note``), with ``force`` the file is signed anew. When it is a claim this device
        keeps (queued or set aside, no receipt) it is replaced. Any other readable
        sidecar (one holding a receipt, or another device's claim) raises
        SidecarExistsError before a sequence number is used, unless ``force``: then it
        is first copied to ``FILE.prov.bak`` (``.bak2``, ... when taken), named in
        ``backup``.

        A sidecar that cannot be written beside the file (a name too long for
        ``FILE.prov``, a read-only folder) is kept in the device folder instead, and the
        result says where and why: the claim is signed and queued either way. Raises
        MediaError for files that are not supported media or over a limit, and ClaimError
        for a claim the log would refuse (`provenance.core.registry.check_claim_shape`:
        ``metadata`` over its limit, say), both before a sequence number is used;
        ConfigError when the device is not initialised.
        """
        claim_fields, chunk_hashes = measure(path, limits)
        side_path = sidecar_path(path)
        backup: Path | None = None
        back_up = False  # the old sidecar is copied aside just before it is replaced
        old = _read_old_sidecar(side_path)
        if old is not None:
            same_content = _binds(old, path, claim_fields, limits)
            same = same_content and old.signed_claim.key_id == key.key_id
            queued = _entry_of(old, self.queue_dir)
            damage = receipt_problem(old, self.state().log_key) if same else ""
            if damage and not force:  # not taken as logged: the log's answer decides
                return self._queue_again(key, old, side_path, queued, damage)
            if same and not damage and (old.receipt is not None or queued is not None):
                return SignedFile(old, side_path, queued.file if queued else None, already=True)
            kept = old.receipt is None and (
                queued is not None or _entry_of(old, self.set_aside_dir) is not None
            )
            if not kept:  # the device keeps no copy of it: overwriting would lose it
                if same and old.receipt is None and not force:
                    return self._queue_own(key, old, side_path, same_content)
                if not force:
                    raise SidecarExistsError(_refusal(side_path, old, same_content))
                back_up = True
        for entry in self._queued_for(side_path, key.key_id):
            # a claim of these bytes queued for this sidecar whose sidecar is not there (a
            # `prov sign` killed between queueing it and writing it): written now, and no
            # second claim signed
            assert entry.sidecar is not None
            if _binds(entry.sidecar, path, claim_fields, limits):
                backup = _backup(side_path) if back_up else None
                written, problem = self._write_sidecar(entry.sequence, side_path, entry.sidecar)
                return SignedFile(
                    entry.sidecar, written, entry.file, problem, already=True, backup=backup
                )
        if old is None and not force:  # a logged claim's sidecar kept in sidecars/
            found = self._kept_for(key, path, claim_fields, limits)
            if found is not None:
                return self._write_kept(found, side_path)
        state = self._numbering(self.state(), key)
        seq = state.last_sequence + 1
        if seq >= 2**64:  # a claim's sequence is a uint64: a traceback otherwise
            raise ConfigError(
                f"this device has used its last sequence number ({state.last_sequence}):"
                " make a new key (`prov device init --force`; this device's claims are kept)"
            )
        claim = Claim(
            device_id=key.key_id,
            sequence=seq,
            captured_at=captured_at or datetime.now(UTC),
            prev_claim_hash=bytes.fromhex(state.last_claim_hash),
            metadata={"app": APP_VERSION, **(metadata or {})},
            **claim_fields,
        )
        claim_bytes = wire.encode_claim(claim)
        signed = SignedClaim(
            payload_type=PAYLOAD_TYPE_CLAIM,
            claim_bytes=claim_bytes,
            key_id=key.key_id,
            signature=sign_payload(key, PAYLOAD_TYPE_CLAIM, claim_bytes),
        )
        # the log's own rules, before the sequence number is used: a claim it would refuse
        # (metadata over its limit; sizes or frame times no decoder measures) is not kept
        try:
            check_claim_shape(signed, claim)
        except ClaimError as e:
            raise ClaimError(f"the log would refuse its claim: {e}") from e
        if back_up:  # after the log's rules: a refused claim replaces nothing
            backup = _backup(side_path)
        sidecar = Sidecar(signed, key.public_key, chunk_hashes=chunk_hashes)
        self.save_state(replace(state, last_sequence=seq, last_claim_hash=signed.claim_hash.hex()))
        queue_file = self._enqueue(seq, sidecar, side_path)
        written, problem = self._write_sidecar(seq, side_path, sidecar)
        return SignedFile(sidecar, written, queue_file, problem, backup=backup)

    def _kept_for(
        self, key: DeviceKey, path: Path, claim_fields: ClaimFields, limits: AssetLimits
    ) -> tuple[Path, Sidecar] | None:
        """The sidecar kept in ``sidecars/`` (its ``FILE.prov`` could not be written: a
        full disk, a folder in its place) that holds a logged claim ``key`` signed for the
        bytes of ``path``, and where it is; None when there is none. Only one whose claim's
        signature verifies under ``key`` and whose receipt verifies (`receipt_problem`),
        the newest first. Before, signing the unchanged file again once ``FILE.prov``
        could be written signed and logged a second claim for the same bytes.

        The kept sidecars whose claim may bind the file are found through the folder's
        index (`KeptIndex`: each one's hard-binding SHA-256, checked against the folder's
        listing on each use and written under the folder's lock), then each is read and
        checked in full here: the index narrows the search, it never answers."""
        bindings = self._kept_index.bindings(write=self._holding)
        if not bindings:  # none kept
            return None
        # the file's bytes with a manifest store removed, read once for all kept claims
        stripped = functools.cache(lambda: _stripped_sha256(path, claim_fields, limits))
        digests = {claim_fields["hard_binding"].sha256.hex()}
        if (content := stripped()) is not None:  # an image exported with C2PA since
            digests.add(content.hex())
        names = sorted((n for n, sha in bindings.items() if sha in digests), reverse=True)
        pinned = self.state().log_key if names else ""
        for name in names:
            kept = _read_old_sidecar(self.sidecar_dir / name)
            if (
                kept is not None
                and kept.receipt is not None
                and kept.signed_claim.key_id == key.key_id
                and kept.claim.media_type == claim_fields["media_type"]
                and _binds(kept, path, claim_fields, limits, stripped)
                and signed_sequence(kept, key) == kept.claim.sequence
                and not receipt_problem(kept, pinned)
            ):
                return self.sidecar_dir / name, kept
        return None

    def _write_kept(self, found: tuple[Path, Sidecar], side_path: Path) -> SignedFile:
        """`sign_file`'s answer for a file whose logged claim's sidecar was kept in
        ``sidecars/`` (`_kept_for`): written beside it now (the kept copy stays), nothing
        signed; where it could not be written, said in the note."""
        kept_at, sidecar = found
        written, problem = self._write_sidecar(sidecar.claim.sequence, side_path, sidecar)
        note = (
            f"{problem}; its sidecar stays at {written}"
            if problem
            else f"{side_path.name} written from the sidecar kept at {kept_at}"
        )
        return SignedFile(sidecar, written, None, problem, already=True, note=note)

    def _numbering(self, state: DeviceState, key: DeviceKey) -> DeviceState:
        """``state``, its last sequence moved up to the highest this folder holds a claim
        of (queue/, set_aside/, sidecars/, by their names), and its last claim hash to
        that claim's when its entry can be read, saying so on stderr. A device.json put
        back to an older copy (a backup copied over the folder, which leaves the newer
        entries) numbered the next claim with a queued claim's sequence, and its entry was
        written over that claim's: a signed capture lost.

        A name more than `SEQUENCE_MARGIN` past the state's last sequence counts only
        through a claim ``key`` signed that the file holds (`signed_sequence`, its
        sequence); an unreadable queue entry so named is moved to set_aside/ as it is,
        saying so (`_far_entry`). Before, ``18446744073709551615.json``, empty, moved
        the numbering to its end, and the key could sign nothing more."""
        held = 0
        limit = state.last_sequence + SEQUENCE_MARGIN
        for folder in (self.queue_dir, self.set_aside_dir, self.sidecar_dir):
            with contextlib.suppress(OSError):  # no such folder yet
                for name in os.listdir(folder):
                    seq = name_sequence(name)
                    if seq > limit:
                        seq = self._far_entry(folder / name, seq, state.last_sequence, key)
                    held = max(held, seq)
        if held <= state.last_sequence:
            return state
        last_hash = state.last_claim_hash
        for folder in (self.queue_dir, self.set_aside_dir):
            entry = _read_entry(folder / f"{held:012d}.json")
            if entry.sidecar is not None and entry.sidecar.claim.sequence == held:
                last_hash = entry.sidecar.signed_claim.claim_hash.hex()
                break
        print(
            f"{self.state_path}: its last sequence ({state.last_sequence}) is behind the"
            f" claims this device folder holds (up to #{held}; an older copy put back?):"
            f" the next claim is numbered {held + 1}",
            file=sys.stderr,
        )
        return replace(state, last_sequence=held, last_claim_hash=last_hash)

    def _far_entry(self, path: Path, named: int, last: int, key: DeviceKey) -> int:
        """The sequence of the claim ``key`` signed that ``path`` (named for ``named``,
        more than `SEQUENCE_MARGIN` past ``last``, the state's) holds; 0 when it holds
        none. A queue entry that cannot be read is moved to set_aside/ as it is, saying so
        on stderr: its number is not reserved (one that reads but holds no claim of this
        key's stays queued: `sync` submits it, and sets it aside when refused)."""
        if path.name.endswith(SIDECAR_SUFFIX):
            with contextlib.suppress(OSError, ProvenanceError):
                data = read_bounded(path, MAX_SIDECAR_BYTES, "sidecar")
                return signed_sequence(decode_sidecar(data), key)
            return 0
        entry = _read_entry(path)
        if entry.sidecar is not None:
            return signed_sequence(entry.sidecar, key)
        if path.parent != self.queue_dir:
            return 0
        where = f"{self.queue_dir.name}/{path.name}"
        reason = (
            f"{where} is named for sequence {named}, more than {SEQUENCE_MARGIN:,} past this"
            f" device's last ({last}), and cannot be read ({entry.problem}), so it holds no"
            " claim this key can be shown to have signed: its number is not reserved (it would"
            " move the numbering towards its end, where the key signs nothing more)"
        )
        try:
            moved = self._set_entry_aside(entry, reason)
        except OSError as e:
            print(f"{reason}; it could not be moved aside ({e.strerror or e})", file=sys.stderr)
        else:
            print(f"{reason}; moved to {moved.parent} as it is", file=sys.stderr)
        return 0

    def _queue_own(
        self, key: DeviceKey, old: Sidecar, side_path: Path, same_content: bool
    ) -> SignedFile:
        """`sign_file` of a file whose sidecar ``old`` holds ``key``'s claim for these
        bytes, with no receipt, neither queued nor set aside here (an older copy of the
        sidecar put back, its queue entry lost): the claim is queued again from it and
        submitted, and the log's answer decides (its own receipt when it holds the
        claim; a refusal sets it aside, and the next `prov sign` signs the file anew).
        Nothing new is signed. Before, it was refused, and `--force` signed a second
        claim for the same bytes. Raises SidecarExistsError as before when the claim's
        signature does not verify under ``key``, OSError."""
        seq = old.claim.sequence
        if signed_sequence(old, key) != seq:
            raise SidecarExistsError(_refusal(side_path, old, same_content))
        queue_file = self._enqueue(seq, old, side_path)
        note = (
            f"{side_path.name} holds claim #{seq} of this device for this content with no"
            " receipt, neither queued nor set aside here (an older copy put back, or its"
            " queue entry lost): it is queued again and submitted, the log's answer decides"
        )
        return SignedFile(old, side_path, queue_file, already=True, note=note)

    def _queue_again(
        self,
        key: DeviceKey,
        old: Sidecar,
        side_path: Path,
        queued: QueueEntry | None,
        damage: str,
    ) -> SignedFile:
        """`sign_file` of a file whose sidecar ``old`` holds this key's claim for these
        bytes and a receipt that does not verify (``damage``, `receipt_problem`): the
        claim is not taken as logged. The sidecar is copied aside (``FILE.prov.bak``),
        then written back as the claim without that receipt, the claim queued (``queued``,
        its entry, when it still is; else queued again from the sidecar), so the sync
        that follows gets the log's own receipt when the log holds the claim, logs it
        when it can, or refuses it (set aside, said; the next `prov sign` then signs the
        file anew). Nothing new is signed. Raises SidecarExistsError when the claim's
        signature does not verify under ``key`` (not a claim this device can submit;
        `prov sign --force` signs anew), OSError."""
        seq = old.claim.sequence
        if signed_sequence(old, key) != seq:
            raise SidecarExistsError(
                f"{side_path.name} holds claim #{seq} naming this device's key for this"
                f" content, but {damage}, and the claim's signature does not verify under"
                " the key either: it is left as it is. `prov sign --force` signs the file"
                f" again and first copies the old sidecar to {_free_backup(side_path).name}"
            )
        clean = replace(old, receipt=None, log_verifier_key="")
        backup = _backup(side_path)
        queue_file = queued.file if queued else self._enqueue(seq, clean, side_path)
        written, problem = self._write_sidecar(seq, side_path, clean)
        how = "is still queued" if queued else "is queued again from it"
        note = (
            f"{side_path.name} is not taken as logged: {damage}; older versions wrote such an"
            f" answer as the receipt. Claim #{seq} {how} and submitted: the log's answer"
            " decides"
        )
        return SignedFile(clean, written, queue_file, problem, True, backup, note)
