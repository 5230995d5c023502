"""What the device remembers between captures (device.json): `DeviceState`, read back
checked field by field and written as text."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields

from provenance.core.errors import ProvenanceError
from provenance.log.checkpoint import NoteVerifier
from provenance.wire.jsontext import json_kind

#: How far past the highest sequence this device can vouch for (its device.json, the
#: claims its key signed that this folder holds) a number it cannot check may go and
#: still be taken as this key's last: the log's answer to `prov device repair`, the name
#: of a queue entry that cannot be read. Past it, the number is a wrong answer or a
#: damaged name rather than a million claims signed elsewhere, and adopting it would
#: move the numbering towards its end (2^64 - 1), where the key can sign nothing more.
SEQUENCE_MARGIN = 1_000_000


#: What a state file that cannot be read (`DeviceHome.state`) says to do.
REPAIR_ADVICE = (
    "`prov device repair` rebuilds it from the device key and the claims this folder"
    " holds (the damaged file is kept aside, nothing queued is lost); `prov device repair"
    " --help` says how"
)


@dataclass(frozen=True)
class DeviceState:
    """What the device remembers between captures (hex strings for bytes)."""

    device_id: str
    public_key: str
    server: str = ""
    last_sequence: int = 0
    last_claim_hash: str = ""
    #: The log's verifier key (the `prov log key` line) pinned at enrollment, or on the
    #: first sync of a device enrolled before keys were pinned; "" when none yet.
    #: Receipts are verified with it, never with a key the server answers.
    log_key: str = ""


_HEX32 = re.compile(r"[0-9a-f]{64}")


def _parse_state(doc: object) -> DeviceState:
    """The `DeviceState` of a parsed ``device.json``, checked as `state_bytes` writes it:
    an object of those fields, the ids and hashes 64 lowercase hex digits (the claim hash
    empty before the first claim), ``device_id`` SHA-256 of ``public_key`` (the claim's
    device id, DESIGN.md), the sequence an integer 0..2^64-1 (a claim's uint64). Raises
    ValueError or TypeError naming the field that is not so: before, a sequence written
    as text or a claim hash that is no hex signed on into a traceback, and ``true`` was
    read as 1."""
    if not isinstance(doc, dict):
        raise TypeError(f"not a JSON object but {json_kind(doc)}")
    known = [f.name for f in fields(DeviceState)]
    unknown = [name for name in doc if name not in known]
    if unknown:  # before: "DeviceState.__init__() got an unexpected keyword argument"
        raise ValueError(f"it has a field this program does not write: {unknown[0]!r}")
    for name in ("device_id", "public_key"):
        if name not in doc:
            raise ValueError(f"it has no {name}")
    state = DeviceState(**doc)
    for name in ("device_id", "public_key", "last_claim_hash"):
        value = getattr(state, name)
        if name == "last_claim_hash" and value == "":  # no claim signed yet
            continue
        if not (isinstance(value, str) and _HEX32.fullmatch(value)):
            raise ValueError(f"{name} {value!r} is not 64 lowercase hex digits")
    if hashlib.sha256(bytes.fromhex(state.public_key)).hexdigest() != state.device_id:
        raise ValueError(f"device_id {state.device_id} is not the SHA-256 of its public_key")
    if not isinstance(state.server, str):
        raise TypeError(f"server {state.server!r} is not text")
    if not isinstance(state.log_key, str):
        raise TypeError(f"log_key {state.log_key!r} is not text")
    if state.log_key:
        try:
            NoteVerifier.from_vkey(state.log_key)
        except ProvenanceError as e:
            raise ValueError(f"log_key: {e}") from e
    seq = state.last_sequence
    if type(seq) is not int or not 0 <= seq < 2**64:
        raise ValueError(f"last_sequence {seq!r} is not a whole number from 0 to 2^64 - 1")
    return state


def state_bytes(state: DeviceState) -> bytes:
    """The ``device.json`` text of ``state``; without ``log_key`` while none is pinned,
    so the file of a device not yet enrolled stays readable by older versions."""
    doc = asdict(state)
    if not state.log_key:
        del doc["log_key"]
    return (json.dumps(doc, indent=2) + "\n").encode()
