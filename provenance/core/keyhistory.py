"""Key history: enrollments and revocations as signed entries of the log.

A `KeyEvent` (an enrollment or a revocation) is serialized once, signed by the key that
authorised it (the admin key derived from the admin credential, or the enrollment
authority's key) over PAE(PAYLOAD_TYPE_KEY_EVENT, event) and appended to the same Merkle
log as the claims, so its time and reason are covered by the log's checkpoints. The
registry rows are an index of this history: `replay` folds the logged events into the
state each device should have, `registry_problems` says how a registry row differs
from it, and `in_force` gives the revocation a verdict uses.

Pure: bytes and values in, values out (the protobuf conversion is in `provenance.wire.convert`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import IntEnum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from provenance.core.claims import Device
from provenance.core.envelope import PAYLOAD_TYPE_KEY_EVENT, pae, verify_payload
from provenance.core.errors import ConfigError, SignatureError
from provenance.core.keys import DeviceKey, key_id

#: HKDF-SHA256 (RFC 5869) salt and info deriving the admin key from the admin credential.
_ADMIN_SALT = b"media-provenance admin credential"
_ADMIN_INFO = b"key-history signing key v1"


class KeyEventKind(IntEnum):
    """What a key event records (the numbers are `provenance.v1.KeyEvent.Kind`)."""

    ENROLLMENT = 1
    REVOCATION = 2


@dataclass(frozen=True)
class KeyEvent:
    """One change to the registry.

    device_id: SHA-256 of the raw public key; effective_at: the enrollment time, or the
    time from which a revoked key is refused (UTC); public_key: the enrolled raw 32-byte
    Ed25519 key (enrollments); reason: why (revocations); authorised_by: ``token``,
    ``certificate`` or ``admin``; backfilled: recorded from an existing registry row when
    a database that predates key history was upgraded.
    """

    kind: KeyEventKind
    device_id: bytes
    effective_at: datetime
    public_key: bytes = b""
    reason: str = ""
    authorised_by: str = ""
    backfilled: bool = False


@dataclass(frozen=True)
class SignedKeyEvent:
    """A serialized `KeyEvent` with the signer's raw public key and Ed25519 signature."""

    event_bytes: bytes
    signer_public_key: bytes
    signature: bytes

    @property
    def event_hash(self) -> bytes:
        """SHA-256 of PAE(PAYLOAD_TYPE_KEY_EVENT, event): the entry's key in the store,
        never equal to a claim's hash (a different domain)."""
        return hashlib.sha256(pae(PAYLOAD_TYPE_KEY_EVENT, self.event_bytes)).digest()


@dataclass(frozen=True)
class LoggedKeyEvent:
    """A key event read back from log leaf ``index``, integrated at ``integrated_at``."""

    index: int
    integrated_at: datetime
    signed: SignedKeyEvent
    event: KeyEvent


@dataclass(frozen=True, slots=True)
class KeyState:
    """What the logged history says of one device: its enrollment (None when only a
    revocation was logged, which the registry never produces) and the revocation in
    force (the earliest time logged, with its reason), with the leaves that say so."""

    device_id: bytes
    public_key: bytes | None = None
    enrolled_at: datetime | None = None
    enrollment_index: int | None = None
    revoked_at: datetime | None = None
    revocation_reason: str = ""
    revocation_index: int | None = None


#: Fewest characters of an admin credential `prov serve` takes: 128 bits as base64url
#: (`secrets.token_urlsafe(16)`). The admin key's public half is in every key-history entry
#: of the public log and HKDF costs nothing to repeat, so a short or guessable credential
#: is found offline (a word list: about 17,000 guesses a second on one core).
MIN_ADMIN_TOKEN_CHARS = 22


def check_admin_token_text(admin_token: str) -> None:
    """Raises ConfigError (naming no part of it) unless ``admin_token`` is made of visible
    ASCII characters (``!`` to ``~``): it travels as a gRPC metadata value, which takes
    no other, so a server holding another could never be called."""
    if not all("!" <= c <= "~" for c in admin_token):
        raise ConfigError(
            "the admin token holds a character that is not visible ASCII (a space, a"
            " control character, a letter with an accent, a byte that is not UTF-8): gRPC"
            " cannot carry it; use letters, digits and punctuation, as"
            " secrets.token_urlsafe(32) makes"
        )


def check_admin_token(admin_token: str) -> None:
    """Raises ConfigError (naming no part of it) when ``admin_token`` is shorter than
    `MIN_ADMIN_TOKEN_CHARS` or fails `check_admin_token_text`."""
    check_admin_token_text(admin_token)
    if len(admin_token) < MIN_ADMIN_TOKEN_CHARS:
        raise ConfigError(
            f"the admin token is {len(admin_token)}"
            f" character{'' if len(admin_token) == 1 else 's'}; at least"
            f" {MIN_ADMIN_TOKEN_CHARS} are needed: the admin key is derived from it and its"
            " public half is in every enrollment and revocation of the public log, so a"
            " short one can be guessed offline. Make one with: python3 -c 'import secrets;"
            " print(secrets.token_urlsafe(32))'"
        )


def admin_key(admin_token: str) -> DeviceKey:
    """The Ed25519 admin key: HKDF-SHA256 (RFC 5869) of the admin credential, so every
    server holding the same credential signs key history with the same key, and nobody
    without it can. Its strength is the credential's."""
    seed = HKDF(hashes.SHA256(), 32, _ADMIN_SALT, _ADMIN_INFO).derive(admin_token.encode())
    return DeviceKey.from_private_bytes(seed)


@dataclass(frozen=True)
class KeySigner:
    """An authorising key: its raw Ed25519 public key and a function signing raw bytes
    (a `DeviceKey`'s, the enrollment authority's or the log signer's ``sign``)."""

    public_key: bytes
    sign: Callable[[bytes], bytes]

    @classmethod
    def of(cls, key: DeviceKey) -> KeySigner:
        return cls(key.public_key, key.sign)


def sign_key_event(signer: KeySigner, event_bytes: bytes) -> SignedKeyEvent:
    """Sign serialized KeyEvent bytes over PAE(PAYLOAD_TYPE_KEY_EVENT, event)."""
    return SignedKeyEvent(
        event_bytes, signer.public_key, signer.sign(pae(PAYLOAD_TYPE_KEY_EVENT, event_bytes))
    )


def verify_key_event(signed: SignedKeyEvent) -> None:
    """Raises SignatureError unless the signature verifies strictly under the signer key
    the entry names (who that signer is, is the auditor's policy: `signer_id`)."""
    try:
        verify_payload(
            signed.signer_public_key, PAYLOAD_TYPE_KEY_EVENT, signed.event_bytes, signed.signature
        )
    except SignatureError as e:
        raise SignatureError(f"the key-history entry's signature does not verify: {e}") from e


def signer_id(signed: SignedKeyEvent) -> str:
    """The signer's key id (hex SHA-256 of its raw public key), for reports."""
    return key_id(signed.signer_public_key).hex()


def replay(events: Iterable[LoggedKeyEvent]) -> dict[bytes, KeyState]:
    """Fold logged key events, in log order, into each device's `KeyState` (`fold`)."""
    out: dict[bytes, KeyState] = {}
    for le in events:
        fold(out, le.index, le.event)
    return out


def fold(states: dict[bytes, KeyState], index: int, ev: KeyEvent) -> KeyState:
    """Fold the key event ``ev`` of log leaf ``index`` into ``states`` (device id to
    `KeyState`, the events of the leaves before it folded already, in log order) and
    return its device's new state. An audit folds each event as it reads it, holding one
    state per device, not every event (`provenance.log.audit.KeyHistoryReader`).

    The first enrollment of a device counts (the registry refuses a second); revocations
    merge as the registry merges them (`provenance.core.registry.merged_revocation`): the
    earliest time wins, with the reason given with it."""
    st = states.get(ev.device_id) or KeyState(ev.device_id)
    if ev.kind is KeyEventKind.ENROLLMENT:
        if st.enrollment_index is None:
            st = replace(
                st, public_key=ev.public_key, enrolled_at=ev.effective_at, enrollment_index=index
            )
    elif st.revoked_at is None or ev.effective_at < st.revoked_at:
        st = replace(
            st, revoked_at=ev.effective_at, revocation_reason=ev.reason, revocation_index=index
        )
    states[st.device_id] = st
    return st


def _at(when: datetime | None) -> str:
    return "none" if when is None else when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _same(a: datetime | None, b: datetime | None) -> bool:
    """Equal to the microsecond (the stores keep microseconds)."""
    if a is None or b is None:
        return a is b
    return abs((a - b).total_seconds()) < 1e-6


def registry_problems(state: KeyState | None, row: Device | None) -> list[str]:
    """How a registry row differs from the logged history of its device: each problem as
    one sentence naming the log entry; [] when they agree. ``row`` None: no row."""
    if state is None and row is None:
        return []
    dev = (state.device_id if state is not None else row.device_id if row else b"").hex()
    if state is None:
        assert row is not None
        return [f"device {dev}: the registry has a row but the log has no enrollment for it"]
    if row is None:
        if state.enrollment_index is None:
            return [f"device {dev}: a revocation is logged for a device never enrolled"]
        return [
            f"device {dev}: enrolled in log entry {state.enrollment_index}, but the registry"
            " row is gone (deleted behind the log's back)"
        ]
    out: list[str] = []
    if state.enrollment_index is None:
        out.append(f"device {dev}: the registry has a row but the log has no enrollment for it")
    else:
        if state.public_key != row.public_key:
            out.append(
                f"device {dev}: the registry's public key differs from the one enrolled in log"
                f" entry {state.enrollment_index}"
            )
        if not _same(state.enrolled_at, row.enrolled_at):
            out.append(
                f"device {dev}: the registry says enrolled at {_at(row.enrolled_at)}, log entry"
                f" {state.enrollment_index} says {_at(state.enrolled_at)}"
            )
    if state.revoked_at is not None and row.revoked_at is None:
        out.append(
            f"device {dev}: revoked from {_at(state.revoked_at)} ({state.revocation_reason!r})"
            f" in log entry {state.revocation_index}, but the registry row says not revoked:"
            " the revocation was deleted behind the log's back"
        )
    elif state.revoked_at is None and row.revoked_at is not None:
        out.append(
            f"device {dev}: the registry says revoked from {_at(row.revoked_at)}, but no"
            " revocation is logged: the row was edited behind the log's back"
        )
    elif state.revoked_at is not None:
        if not _same(state.revoked_at, row.revoked_at):
            out.append(
                f"device {dev}: the registry says revoked from {_at(row.revoked_at)}, log entry"
                f" {state.revocation_index} says {_at(state.revoked_at)}: the revocation time"
                " was edited behind the log's back"
            )
        if state.revocation_reason != row.revocation_reason:
            out.append(
                f"device {dev}: the registry's revocation reason {row.revocation_reason!r}"
                f" differs from {state.revocation_reason!r} in log entry"
                f" {state.revocation_index}"
            )
    return out


def in_force(row: Device, state: KeyState | None) -> Device:
    """The device a verdict uses: the registry row with the revocation the log holds.

    An edit of the row can never make a verdict more lenient: the earlier of the row's
    and the log's revocation times counts (with its reason), so a back-dated, later or
    deleted revocation in the table changes nothing while the log holds it, and the
    enrollment time is the log's when one is logged."""
    if state is None:
        return row
    out = row
    if state.enrolled_at is not None:
        out = replace(out, enrolled_at=state.enrolled_at)
    if state.revoked_at is not None and (
        row.revoked_at is None or state.revoked_at < row.revoked_at
    ):
        out = replace(out, revoked_at=state.revoked_at, revocation_reason=state.revocation_reason)
    return out
