"""`prov device repair`: a damaged or missing ``device.json`` rebuilt from what is still
trustworthy, so the queue it blocked can be logged.

A damaged state file (truncated, not JSON, wrong types: `clients.device._parse_state`)
stops every device command, although each queued claim is signed and complete. Its
fields come back from:

* ``device_id`` and ``public_key``: the key file (decrypted with its passphrase), the
  device id being SHA-256 of the public key (DESIGN.md);
* ``server``: ``--server``, else the text of the damaged file when it still names a
  HOST:PORT (with no state file at all, of the copies a repair set aside); else the
  command asks for ``--server`` (exit 2);
* ``last_sequence``: the highest of every sequence this key signed that can be seen:
  the claims in queue/, set_aside/ and sidecars/ (by name, and by content when the
  claim's signature verifies under the key: damaged bytes, or a claim naming the key
  that it never signed, count for nothing), what the damaged file (or, with none, the
  copies set aside) still says, and the log's record of the key (`GetDevice`, when the
  server answers). A number already signed here or logged is never used again; when the
  log cannot be asked, a claim it holds whose sidecar is elsewhere is not seen, and the
  output says so; a number skipped is a gap the log accepts. The log's number is not
  adopted when it is more than `SEQUENCE_MARGIN` past the highest the folder shows
  (a wrong answer, from a hostile or broken server, would move the numbering towards
  its end, 2^64 - 1, where the key signs nothing more) unless the user says so
  (``accept_log``, `--accept-log-sequence`); the output then says the next number may
  be one the log holds, as when the log cannot be asked. What the damaged file (or a
  copy) says counts by the same rule: within `SEQUENCE_MARGIN` of the highest of the
  claims this key signed and the log's adopted number (`_count_written`; before, a
  damaged digit could take the numbering to 2^64 - 1);
* ``last_claim_hash``: that claim's hash when this folder holds it, else the one the
  damaged file still names for that sequence, else empty (the log's `GetDevice` does not
  give it): the next claim then links to nothing, which the log accepts and shows as a
  break in the device's chain;
* ``log_key`` (the log's verifier key pinned at enrollment): the first the damaged file
  (or, with none, a copy set aside) still holds whole, a key that parses; else none, and
  the next sync pins the key the server answers (trust on first use, as for a device
  enrolled before keys were pinned).

The damaged file is set aside as ``device.json.damaged-TIME`` (never deleted) before the
new one is written; killed in between, no device.json is left and the command run again
finishes, reading that copy (a missing state beside a key is repaired the same way).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import typer

from clients.api import ProvenanceClient
from clients.device import (
    MAX_DEVICE_FILE_BYTES,
    SEQUENCE_MARGIN,
    SIDECAR_SUFFIX,
    DeviceHome,
    DeviceState,
    atomic_write,
    name_sequence,
    read_entries,
    signed_sequence,
    state_bytes,
)
from clients.files import read_bounded
from provenance.cli.options import server_address
from provenance.core.claims import Device
from provenance.core.errors import ConfigError, ProvenanceError
from provenance.core.keys import DeviceKey
from provenance.log.checkpoint import NoteVerifier
from provenance.wire.sidecar import MAX_SIDECAR_BYTES, Sidecar, decode_sidecar

_SERVER_TEXT = re.compile(rb'"server"\s*:\s*"([^"\\]{1,300})"')
_SEQUENCE_TEXT = re.compile(rb'"last_sequence"\s*:\s*"?([0-9]{1,20})"?\s*[,}\n]')
_LOG_KEY_TEXT = re.compile(rb'"log_key"\s*:\s*"([^"\\]{1,300})"')
_HASH_TEXT = re.compile(rb'"last_claim_hash"\s*:\s*"([0-9a-f]{64})"')
#: A second copy `_set_aside` made in one second: ``device.json.damaged-TIME-N``.
_COPY_NUMBER = re.compile(r"(.*Z)-([0-9]{1,9})")


class NothingToRepair(ConfigError):
    """The state file reads and belongs to the key: `prov device repair` changes nothing."""


@dataclass(frozen=True)
class Repaired:
    """What `repair` did: the state written, where the damaged file was set aside (None
    when there was none), where the server came from, where the last sequence came from
    (the sources that reached it, in words), and what the log said or why it could not
    be asked, and whether it answered (when not, the last sequence may be behind a claim
    the log holds), and the last sequence it said when that was not adopted (0 when it
    was, or was not asked), and the entries whose names were not counted, in words."""

    state: DeviceState
    kept: Path | None
    server_from: str
    sequence_from: tuple[str, ...]
    log: str
    log_checked: bool
    log_not_adopted: int = 0
    not_counted: tuple[str, ...] = ()


def is_damaged(home: DeviceHome) -> bool:
    """Whether ``home``'s state file cannot be read as a state (damaged, or missing beside
    the key); whose key a sound one is, is checked once the key is decrypted (`repair`)."""
    try:
        home.state()
    except ConfigError:
        return True
    return False


def leftovers(home: DeviceHome) -> list[tuple[str, bytes]]:
    """What is left of ``home``'s state, each with where it was found, in words: the
    state file's bytes ("the damaged file") when it can be read; when there is no state
    file at all, the copies `prov device repair` set aside as ``device.json.damaged-*``,
    newest first (a repair killed after setting the damaged file aside and before
    writing the new one leaves no state file: before, the repair run again did not read
    the copy, and a last sequence only it held was lost, its numbers signed again)."""
    text = _readable(home.state_path)
    if text is not None:
        return [("the damaged file", text)]
    if os.path.lexists(home.state_path):
        return []
    found = []
    with contextlib.suppress(OSError):
        names = os.listdir(home.root)
        for name in sorted(names, key=_copy_order, reverse=True):
            if name.startswith(f"{home.state_path.name}.damaged-"):
                copy = _readable(home.root / name)
                if copy is not None:
                    found.append((name, copy))
    return found


def _copy_order(name: str) -> tuple[str, int]:
    """Sort key of ``device.json.damaged-TIME[-N]`` names: by time, then by N."""
    numbered = _COPY_NUMBER.fullmatch(name)
    return (numbered.group(1), int(numbered.group(2))) if numbered else (name, 1)


def _readable(path: Path) -> bytes | None:
    """The bytes of the device file ``path``; None when it cannot be read as one."""
    try:
        return read_bounded(path, MAX_DEVICE_FILE_BYTES, "device file")
    except (OSError, ProvenanceError):
        return None


def recovered_server(texts: list[tuple[str, bytes]]) -> tuple[str, str] | None:
    """The HOST:PORT the first of the damaged states ``texts`` (`leftovers`) that names
    one still names as its server, and where it was found; None when none does."""
    for where, text in texts:
        found = _SERVER_TEXT.search(text)
        if found is None:
            continue
        try:
            return server_address(found.group(1).decode("ascii")), where
        except (UnicodeDecodeError, typer.BadParameter):
            continue
    return None


def recovered_log_key(texts: list[tuple[str, bytes]]) -> str:
    """The log key the first of the damaged states ``texts`` (`leftovers`) that holds a
    whole one still pins ("" when none does)."""
    for _, text in texts:
        for found in _LOG_KEY_TEXT.finditer(text):
            try:
                vkey = found.group(1).decode("ascii")
                NoteVerifier.from_vkey(vkey)
            except (UnicodeDecodeError, ProvenanceError):
                continue
            return vkey
    return ""


def repair(
    home: DeviceHome, key: DeviceKey, server: str, server_from: str, accept_log: bool = False
) -> Repaired:
    """Rebuild ``home``'s state for ``key`` (the device key, decrypted) with ``server``
    (said to come from ``server_from``), as the module docstring says (``accept_log``:
    the log's last sequence is adopted however far past the folder's). Hold the folder's
    lock (`DeviceHome.locked`) around it. Raises NothingToRepair when the state file
    reads and is this key's, ConfigError when it reads and is another key's (the key
    file or the state was put back from elsewhere: not guessed at), OSError."""
    key_id = key.key_id.hex()
    try:
        sound = home.state()
    except ConfigError:
        pass
    else:
        if sound.device_id == key_id:
            raise NothingToRepair(f"{home.state_path} is not damaged: nothing to repair")
        raise ConfigError(
            f"{home.state_path} is sound but belongs to device {sound.device_id[:16]}…, and"
            f" the key file {home.key_path} to device {key_id[:16]}…: repair does not choose"
            " between them; put back the matching key file or state"
        )
    seen: dict[str, int] = {}
    last_hash = {0: ""}
    held = [
        (f"{folder.name}/", entry.sidecar)
        for folder in (home.queue_dir, home.set_aside_dir)
        for entry in read_entries(folder)
        if entry.sidecar is not None
    ]
    held += [("sidecars/", kept) for kept in _sidecars(home)]
    for where, sidecar in held:
        seq = signed_sequence(sidecar, key)
        if seq:
            seen[where] = max(seen.get(where, 0), seq)
            last_hash[seq] = sidecar.signed_claim.claim_hash.hex()
    answer = _get_device(server, key)
    far = _count_written(home, seen, last_hash, answer, accept_log)
    far += _count_names(home, seen)
    local = max(seen.values(), default=0)
    log, log_checked, not_adopted = _ask_log(server, answer, seen, last_hash, local, accept_log)
    last = max(seen.values(), default=0)
    state = DeviceState(
        device_id=key_id,
        public_key=key.public_key.hex(),
        server=server,
        last_sequence=last,
        last_claim_hash=last_hash.get(last, ""),
        log_key=recovered_log_key(leftovers(home)),
    )
    kept_at = _set_aside(home)
    atomic_write(home.state_path, state_bytes(state))
    sources = tuple(where for where, seq in seen.items() if seq == last and last)
    return Repaired(state, kept_at, server_from, sources, log, log_checked, not_adopted, far)


def _count_written(
    home: DeviceHome,
    seen: dict[str, int],
    hashes: dict[int, str],
    answer: Device | str,
    accept_log: bool,
) -> tuple[str, ...]:
    """Add to ``seen`` the last sequence each of `leftovers` still names, and to
    ``hashes`` the claim hash it names with it, but only within `SEQUENCE_MARGIN` of the
    highest of the claims this key signed (``seen`` so far) and the log's last sequence
    (``answer``: `GetDevice`'s, or why the log could not be asked) when that is adopted
    (`_ask_log`'s rule, or ``accept_log``): a damaged digit, or garbage that reads as a
    number, moved the numbering as far as 2^64 - 1, where the key signs nothing more.
    Returns those not counted, in words."""
    claimed = max(seen.values(), default=0)
    written = []
    for where, text in leftovers(home):
        said = _SEQUENCE_TEXT.search(text)
        if said is not None and int(said.group(1)) < 2**64:
            named = _HASH_TEXT.search(text)
            written.append((where, int(said.group(1)), named.group(1).decode() if named else ""))
    logged = answer.last_sequence if isinstance(answer, Device) else 0
    shown = max([claimed, *(n for _, n, _ in written)])
    if not accept_log and logged > shown + SEQUENCE_MARGIN:
        logged = 0  # not adopted (`_ask_log` says so): it vouches for nothing
    base = max(claimed, logged)
    far = []
    for where, n, link in written:
        if n > base + SEQUENCE_MARGIN:
            far.append(
                f"{where} says the last sequence is {n}, more than {SEQUENCE_MARGIN:,} past"
                f" the highest of this key's claims in the folder and the log's ({base}):"
                " not counted, as a damaged number would move this device's numbering"
                " towards its end (18446744073709551615); if the log does hold this key's"
                " claims up to it, `prov device repair --accept-log-sequence` moves the"
                " numbering to the log's"
            )
            continue
        seen[where] = max(seen.get(where, 0), n)
        if link:  # the claim it names, when no better source does
            hashes.setdefault(n, link)
    return tuple(far)


def _count_names(home: DeviceHome, seen: dict[str, int]) -> tuple[str, ...]:
    """Add to ``seen`` the highest sequence the file names in queue/, set_aside/ and
    sidecars/ give (a claim may be there whose bytes no longer read), but of a name more
    than `SEQUENCE_MARGIN` past the highest of ``seen`` (the claims this key signed, what
    the damaged file says) only through its content (already in ``seen``): an unreadable
    ``18446744073709551615.json`` moved the numbering to its end. Returns those not
    counted, in words."""
    base = max(seen.values(), default=0)
    limit = base + SEQUENCE_MARGIN
    far = []
    for folder in (home.queue_dir, home.set_aside_dir, home.sidecar_dir):
        with contextlib.suppress(OSError):  # no such folder
            for name in os.listdir(folder):
                seq = name_sequence(name)
                if seq > limit:
                    later = " (the next `prov sign` sets it aside if it cannot be read)"
                    far.append(
                        f"{folder.name}/{name} is named for sequence {seq}, more than"
                        f" {SEQUENCE_MARGIN:,} past the highest this key is known to have"
                        f" signed ({base}): its name is not counted"
                        + (later if folder == home.queue_dir else "")
                    )
                elif seq > seen.get(f"{folder.name}/", 0):
                    seen[f"{folder.name}/"] = seq
    return tuple(far)


def _sidecars(home: DeviceHome) -> list[Sidecar]:
    """The sidecars kept in the device folder's sidecars/ that can be read."""
    found = []
    with contextlib.suppress(OSError):  # no such folder
        for name in os.listdir(home.sidecar_dir):
            if name.endswith(SIDECAR_SUFFIX):
                with contextlib.suppress(OSError, ProvenanceError):
                    data = read_bounded(home.sidecar_dir / name, MAX_SIDECAR_BYTES, "sidecar")
                    found.append(decode_sidecar(data))
    return found


def _get_device(server: str, key: DeviceKey) -> Device | str:
    """The log's record of ``key`` at ``server`` (`GetDevice`), or why it was not asked
    or could not be, in words."""
    if not server:
        return "no server to ask: the log's record of this key was not checked"
    try:
        with ProvenanceClient(server) as client:
            return client.get_device(key.key_id)
    except ProvenanceError as e:
        return (
            f"the log at {server} could not be asked for this key's last sequence ({e}):"
            " a claim it logged whose sidecar is not in this folder is not counted; if the"
            " next claim reuses its number, the log refuses it once and `prov device sync`"
            " moves the numbering past the log's"
        )


def _ask_log(
    server: str,
    answer: Device | str,
    seen: dict[str, int],
    hashes: dict[int, str],
    local: int,
    accept: bool,
) -> tuple[str, bool, int]:
    """Add the log's last sequence (``answer``, `_get_device`'s for ``server``) to
    ``seen`` (as "the log") and its last claim hash, when it gives one, to ``hashes``,
    unless it is more than `SEQUENCE_MARGIN` past ``local`` (the highest the folder
    shows) and not ``accept``; returns what happened, in words, whether the log
    answered, and the number it said when that was not adopted (else 0)."""
    if isinstance(answer, str):
        return answer, False, 0
    device = answer
    said = device.last_sequence
    if said > local + SEQUENCE_MARGIN and not accept:
        return far_log_sequence(server, said, local), True, said
    if said:
        seen["the log"] = said
        if device.last_claim_hash:
            hashes.setdefault(said, device.last_claim_hash.hex())
    return f"the log at {server} holds this key's claims up to sequence {said}", True, 0


def far_log_sequence(server: str, said: int, local: int) -> str:
    """What to say of the log at ``server`` saying this key's last sequence is ``said``,
    more than `SEQUENCE_MARGIN` past ``local``, the highest the device folder shows: not
    adopted, and what the user can do."""
    return (
        f"warning: the log at {server} says it holds this key's claims up to sequence"
        f" {said}, more than {SEQUENCE_MARGIN:,} past the highest this device folder shows"
        f" ({local}): not adopted, as a wrong answer (a broken or hostile server) would move"
        " this device's numbering towards its end (18446744073709551615), where the key"
        " can sign nothing more. If the log does hold this key's claims that far (the key"
        " also signing on another device), run `prov device repair --accept-log-sequence`"
        f" to number the next claim {said + 1}; until then a claim numbered at or below"
        f" {said} may be refused by that log as already used. If it does not, tell its"
        " operator: the log's record of this key is wrong"
    )


def adopt_log_sequence(home: DeviceHome, key: DeviceKey, server: str) -> str:
    """Move the sound state of ``home`` (``key``'s) to the log's last sequence for the
    key at ``server`` when the log's is higher, however far (`--accept-log-sequence`,
    after a repair did not adopt it); returns what was done, in words. Hold the folder's
    lock. Raises ConfigError when the state is not this key's, ProvenanceError when the
    log cannot be asked, OSError."""
    state = home.state()
    if state.device_id != key.key_id.hex():
        raise ConfigError(f"{home.state_path} is not the state of the key {home.key_path}")
    if not server:
        raise ConfigError(
            f"{home.state_path} names no server to ask: give it with --server HOST:PORT"
        )
    with ProvenanceClient(server) as client:
        said = client.get_device(key.key_id).last_sequence
    if said <= state.last_sequence:
        return (
            f"{home.state_path} is not damaged: nothing to repair; the log at {server} holds"
            f" this key's claims up to sequence {said}, not past this device's last"
            f" ({state.last_sequence})"
        )
    atomic_write(
        home.state_path, state_bytes(replace(state, last_sequence=said, last_claim_hash=""))
    )
    end = (
        "this device has used its last sequence number: make a new key (`prov device init"
        " --force`; this device's claims are kept)"
        if said >= 2**64 - 1
        else f"the next claim is numbered {said + 1}"
    )
    return (
        f"{home.state_path}: last sequence moved from {state.last_sequence} to {said}, the"
        f" log's at {server} (--accept-log-sequence); {end}"
    )


def _set_aside(home: DeviceHome) -> Path | None:
    """Rename the state file (whatever it is: a file, a FIFO, a link) to a free
    ``device.json.damaged-TIME`` beside it; returns that name, None when there is none.
    Raises OSError."""
    if not os.path.lexists(home.state_path):
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = home.state_path.with_name(f"{home.state_path.name}.damaged-{stamp}")
    n = 1
    while os.path.lexists(target):
        n += 1
        target = home.state_path.with_name(f"{home.state_path.name}.damaged-{stamp}-{n}")
    os.rename(home.state_path, target)
    return target
