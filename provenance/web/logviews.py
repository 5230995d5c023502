"""The public log as JSON-able views, fetched from the service and checked here.

Each function asks the service over gRPC (`ProvenanceClient`) and checks what it can
with the log's key, as an independent client would: the checkpoint's signature
(C2SP signed note), an entry's inclusion proof against that checkpoint (RFC 9162
2.1.3.2), a consistency proof against a root the caller supplies (RFC 9162 2.1.4.2).
The API answers these dicts as JSON; the explorer pages render them.
"""

from __future__ import annotations

import base64
import copy
import re
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clients.api import ProvenanceClient, Query, page_problem
from clients.report import claim_to_json, device_to_json
from provenance.core import merkle
from provenance.core.errors import (
    ClaimError,
    LogError,
    ServerEvidenceError,
    SignatureError,
    TransportError,
)
from provenance.core.keyhistory import SignedKeyEvent, signer_id, verify_key_event
from provenance.core.timetext import utc_iso
from provenance.log.checkpoint import Checkpoint, NoteVerifier, open_checkpoint, split_note
from provenance.web import logmonitor
from provenance.web.errors import WebError, quoted
from provenance.wire import convert as wire

HASH_HEX = 64
#: Most digits accepted in an index or size (2^63 has 19).
MAX_DIGITS = 20
_DIGITS = re.compile(rf"[0-9]{{1,{MAX_DIGITS}}}")
#: Canonical decimal, as C2SP checkpoints and tlog-tiles write numbers: one spelling per
#: number, so one entry has one URL.
_CANONICAL = re.compile(rf"0|[1-9][0-9]{{0,{MAX_DIGITS - 1}}}")
_HEX = re.compile(rf"[0-9a-fA-F]{{{HASH_HEX}}}")


def is_number(text: str) -> bool:
    """Whether ``text`` is 1 to `MAX_DIGITS` ASCII digits (no signs, spaces or other
    scripts' digits, which `str.isdigit` accepts)."""
    return _DIGITS.fullmatch(text) is not None


def parse_hash(text: object, what: str) -> bytes:
    """32 bytes from 64 hex digits; raises WebError (400) naming ``what`` and the text
    given (`quoted`)."""
    if not isinstance(text, str):
        raise WebError(f"{what} must be a string of 64 hex digits")
    text = text.strip()
    if len(text) != HASH_HEX:
        raise WebError(
            f"{what} must be 64 hex digits, got {len(text)}"
            f" character{'' if len(text) == 1 else 's'}: {quoted(text)}"
        )
    if not _HEX.fullmatch(text):
        raise WebError(f"{what} must be 64 hex digits (0-9, a-f); got {quoted(text)}")
    return bytes.fromhex(text)


def parse_index(
    text: str | None, what: str = "index", least: int = 0, most: int | None = None
) -> int:
    """An integer from ``least`` to ``most`` (default: below 2^63) written in canonical
    decimal: ASCII digits, no leading zero (but "0" itself), sign, spaces or underscores,
    all of which `int` takes ("01", " 1 ", "1_0", "+1"). Raises WebError (400) naming
    ``what``, the range and the text given (`quoted`), saying it is missing when ``text``
    is None (a required query parameter left out)."""
    allowed = f"from {least} below 2^63" if most is None else f"from {least} to {most}"
    if text is None:
        raise WebError(f"{what} is missing: give a whole number {allowed}")
    if not _CANONICAL.fullmatch(text):
        raise WebError(
            f"{what} must be a whole number {allowed} in decimal digits 0-9,"
            f" without leading zeros, sign or spaces; got {quoted(text)}"
        )
    if not least <= int(text) <= (2**63 - 1 if most is None else most):
        raise WebError(f"{what} must be a whole number {allowed}; got {quoted(text)}")
    return int(text)


def _iso(cp: Checkpoint) -> str | None:
    return None if cp.timestamp is None else cp.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ")


#: The log key (verifier key, origin) each gRPC client was last told (`log_key`): a
#: service's key never changes while it runs, and every page read it again before, one
#: of the two log reads of a checkpoint that the service meters per client
#: (--log-reads-per-minute).
_KEYS: weakref.WeakKeyDictionary[ProvenanceClient, tuple[str, str]] = weakref.WeakKeyDictionary()
_KEYS_LOCK = threading.Lock()


def log_key(
    client: ProvenanceClient, fresh: bool = False, timeout: float | None = None
) -> tuple[str, str]:
    """(note verifier key ``name+id+key``, origin) of the service's log, as it last said
    (GetLogKey); asked again with ``fresh`` or when not yet asked, the call given
    ``timeout`` seconds (None: the client's). Raises TransportError."""
    with _KEYS_LOCK:
        known = None if fresh else _KEYS.get(client)
    if known is not None:
        return known
    key = client.log_key(timeout=timeout)
    with _KEYS_LOCK:
        _KEYS[client] = key
    return key


def latest_checkpoint(
    client: ProvenanceClient, timeout: float | None = None, pinned: str | None = None
) -> tuple[Checkpoint, str, str]:
    """(checkpoint, signed note, verifier key): the newest checkpoint, its signature
    checked with the log key the service presents (`log_key`: the one it said before;
    when the note does not check with that, the service is asked again, since a
    restarted service may have another key, and the note checked with its answer), or,
    with ``pinned`` (the verifier key NAME+ID+KEY pinned with ``prov web --log-key``),
    with that key alone, its name the origin, as a receipt is checked with it
    (`clients.cited.check_evidence`): the service is not asked for its key (the
    presented key used under a pin too, a service presenting a key of its own would
    show any checkpoint it signed with it).
    The checkpoint is then held to the newest one verified before under its key
    (`provenance.web.logmonitor.hold`: this process a monitor of the log, so an
    older checkpoint the log signed, replayed, cannot end a listing early),
    the one known as the service was asked (`logmonitor.seen`): an answer overtaken by
    a newer one another request read at once is no rollback (not a 502);
    without ``pinned``, "the log is empty" after entries asks the key again, a new key
    being a new log, empty (not a 502 until its first entry).
    ``timeout``: seconds for its calls together, each given the time left (None: each
    the client's timeout, the wait for the memory's lock and its proof one together);
    past it, TransportError DEADLINE_EXCEEDED (``waited_s`` the
    ``timeout``). Raises WebError NOT_FOUND for an empty log, ServerEvidenceError (502)
    for a note that does not verify with either key, or with ``pinned``
    (`_unsigned_checkpoint`), for one older than a checkpoint verified before, another
    tree of its size, or a newer one not proven to extend it, or for an empty log after
    a checkpoint of entries (`logmonitor`), TransportError."""
    left = _time_left(client, timeout)
    vkey, origin = (pinned, None) if pinned is not None else log_key(client, timeout=left())
    before = logmonitor.seen(client, vkey)  # what the page knew as it asked
    try:
        note = client.checkpoint(timeout=left())
    except TransportError as e:
        if e.code == "OUT_OF_RANGE":
            if pinned is None and before is not None and before[0]:
                # the key asked again, as for a note it does not check: a service started
                # on a new log (its own key) is empty, no rollback of the old one
                if (now := log_key(client, fresh=True, timeout=left())) != (vkey, origin):
                    before = logmonitor.seen(client, now[0])
            logmonitor.hold_empty(client, before)
            raise WebError("the log is empty: nothing has been logged yet", "NOT_FOUND") from e
        raise
    try:
        cp = open_checkpoint(note, NoteVerifier.from_vkey(vkey), origin=origin)
    except (SignatureError, LogError) as e:
        cp, problem = None, e
    if cp is None and pinned is None:
        if (now := log_key(client, fresh=True, timeout=left())) != (vkey, origin):
            vkey, origin = now
            before = logmonitor.seen(client, vkey)
            try:
                cp = open_checkpoint(note, NoteVerifier.from_vkey(vkey), origin=origin)
            except (SignatureError, LogError) as e:
                problem = e
    if cp is None:
        raise _unsigned_checkpoint(client, problem, pinned)
    # the wait for the memory and its proof together get one timeout when no budget is
    # given (with each a whole one, a request waiting behind a stalled proof, then
    # asking its own, would be held for two)
    held = left if timeout is not None else _time_left(client, client.timeout)
    logmonitor.hold(client, vkey, cp, held, before)
    return cp, note, vkey


def _unsigned_checkpoint(
    client: ProvenanceClient, problem: Exception, pinned: str | None = None
) -> ServerEvidenceError:
    """The error of a checkpoint the service sent that does not verify with the log key
    it presents, or with ``pinned`` (`latest_checkpoint`; ``problem``:
    `open_checkpoint`'s error): 502, its size and root not trusted, the pinned key
    named, not a 500 INTERNAL with the bare "note signature by ... does not verify",
    as if the page itself were broken."""
    key = (
        "the log key it presents"
        if pinned is None
        else f"the log key pinned with --log-key ({pinned})"
    )
    said = (
        f"sent a checkpoint that does not verify with {key} ({problem});"
        " nothing it says of the log's size or root is taken; try again, or tell this"
        " page's operator"
    )
    return ServerEvidenceError(
        f"the service at {client.address} {said}",
        public=f"the provenance service behind this page {said}",
    )


def _time_left(client: ProvenanceClient, timeout: float | None) -> Callable[[], float | None]:
    """A function giving, at each call, the seconds left of ``timeout`` from now (None:
    no budget, each call the client's own timeout); once none are left it raises
    TransportError DEADLINE_EXCEEDED, ``waited_s`` the ``timeout``, as a call past its
    deadline does (a call given 0 would get the client's whole timeout)."""
    if timeout is None:
        return lambda: None
    deadline = time.monotonic() + timeout

    def left() -> float:
        now = deadline - time.monotonic()
        if now <= 0:
            raise TransportError(
                f"the server at {client.address} had not answered within {timeout:g} s",
                "DEADLINE_EXCEEDED",
                waited_s=timeout,
            )
        return now

    return left


def checkpoint_view(client: ProvenanceClient, pinned: str | None = None) -> dict[str, Any]:
    """``{"origin", "size", "root_hash", "time", "checkpoint", "log_key",
    "signature_verified", "cosigned"}``: the newest signed checkpoint (C2SP note text)
    and the key that signed it (note verifier key ``name+id+key``): ``pinned``, when
    given (`latest_checkpoint`); ``cosigned``: the newest checkpoint the service's
    witnesses cosigned (`cosigned_view`), read before the latest (`cosigned_note`, kept
    `COSIGNED_KEEP_S`), so that an honest service's is never the larger; an error of
    that read is raised only after the latest's, which come first."""
    try:
        said: tuple[str, int] | None = cosigned_note(client)
        failed: Exception | None = None
    except (TransportError, ServerEvidenceError) as e:
        said, failed = None, e
    cp, note, vkey = latest_checkpoint(client, pinned=pinned)
    if failed is not None:
        raise failed
    return {
        "origin": cp.origin,
        "size": cp.size,
        "root_hash": cp.root_hash.hex(),
        "time": _iso(cp),
        "checkpoint": note,
        "log_key": vkey,
        "signature_verified": True,
        "cosigned": cosigned_view(client, said, vkey, cp, pinned),
    }


#: Seconds a service's cosigned checkpoint is kept per gRPC client (`cosigned_note`): it
#: changes when witnesses cosign a new checkpoint, seconds apart at most, and asking it
#: again every view of the checkpoint would be one service log read of the two
#: (`/api/v1/checkpoint`) or three (`/log`) a view takes.
COSIGNED_KEEP_S = 5.0

#: (monotonic time it is kept until, `cosigned_note`'s answer) per gRPC client.
_COSIGNED: weakref.WeakKeyDictionary[ProvenanceClient, tuple[float, tuple[str, int] | None]] = (
    weakref.WeakKeyDictionary()
)
#: The service's cosigned checkpoint being asked now, per gRPC client (`cosigned_note`).
_ASKING: weakref.WeakKeyDictionary[ProvenanceClient, _Asking] = weakref.WeakKeyDictionary()
_COSIGNED_LOCK = threading.Lock()


@dataclass
class _Asking:
    """One call asking a service its cosigned checkpoint, shared by the requests that
    find none kept while it runs (`cosigned_note`): ``done`` set once it has ended, with
    its answer (``said``) or its error (``error``)."""

    done: threading.Event = field(default_factory=threading.Event)
    said: tuple[str, int] | None = None
    error: BaseException | None = None


def cosigned_note(client: ProvenanceClient) -> tuple[str, int] | None:
    """(the newest checkpoint the service's witness quorum cosigned, "" when none yet;
    its quorum), as GetCheckpoint with ``cosigned`` answers it; None when the service
    requests no cosignatures (FAILED_PRECONDITION: no witnesses). Asked once per
    `COSIGNED_KEEP_S` seconds per client, the answer kept (not checked here: see
    `cosigned_view`, which forgets one that fails, `forget_cosigned`), and once at a
    time: requests finding none kept while one call asks it wait for that call's answer
    or error (single flight), within the client's timeout, as long as a call
    of their own would take at most. Raises TransportError (DEADLINE_EXCEEDED, the
    service not having answered the call waited for within it), ServerEvidenceError,
    neither kept."""
    now = time.monotonic()
    with _COSIGNED_LOCK:
        kept = _COSIGNED.get(client)
        if kept is not None and now < kept[0]:
            return kept[1]
        asking = _ASKING.get(client)
        if asking is None:
            mine = _ASKING[client] = _Asking()
    if asking is not None:
        return _await_cosigned(client, asking)
    try:
        mine.said = _ask_cosigned(client)
    except BaseException as e:
        mine.error = e
        raise
    else:
        with _COSIGNED_LOCK:
            _COSIGNED[client] = (now + COSIGNED_KEEP_S, mine.said)
        return mine.said
    finally:
        with _COSIGNED_LOCK:
            if _ASKING.get(client) is mine:
                del _ASKING[client]
        mine.done.set()


def _ask_cosigned(client: ProvenanceClient) -> tuple[str, int] | None:
    """The service's answer for `cosigned_note`, one call."""
    try:
        note, quorum, _ = client.cosigned_checkpoint()
    except TransportError as e:
        if e.code != "FAILED_PRECONDITION":
            raise
        return None
    return note, quorum


def _await_cosigned(client: ProvenanceClient, asking: _Asking) -> tuple[str, int] | None:
    """The answer of ``asking``, another request's call for `cosigned_note`, waited for
    within the client's timeout: its error raised again (a copy: each request's own),
    TransportError DEADLINE_EXCEEDED when it has not ended by then."""
    if not asking.done.wait(client.timeout):
        raise TransportError(
            f"the server at {client.address} had not answered within {client.timeout:g} s"
            " (the cosigned checkpoint another request asked for)",
            "DEADLINE_EXCEEDED",
            waited_s=client.timeout,
        )
    if asking.error is not None:
        raise copy.copy(asking.error)
    return asking.said


def forget_cosigned(client: ProvenanceClient) -> None:
    """Forget the cosigned checkpoint kept for ``client`` (`cosigned_note`): the next
    view asks the service again."""
    with _COSIGNED_LOCK:
        _COSIGNED.pop(client, None)


def cosigned_view(
    client: ProvenanceClient,
    said: tuple[str, int] | None,
    vkey: str,
    latest: Checkpoint,
    pinned: str | None = None,
) -> dict[str, Any] | None:
    """The newest checkpoint the service's witness quorum cosigned, ``said`` by
    `cosigned_note` (note, quorum), as ``{"checkpoint", "size", "quorum",
    "unverified_names"}``; None when the service requests no cosignatures (``said``
    None), ``checkpoint`` and ``size`` None when none has cosigned yet. Its log signature
    is checked with ``vkey`` (``latest``'s origin its first line); the witnesses' are
    not: this page has no witness keys (``prov web`` takes none), so
    ``unverified_names`` are the names of the note's other signature lines as it carries
    them, in order, each once, not checked. One larger than ``latest``'s, read before
    it, means the latest was held back (`logmonitor.held_back`); else it is held to the
    checkpoint the page remembers (`logmonitor.hold_cosigned`: another tree of its size,
    or one not proven part of it by the service's consistency proof, asked once per
    cosigned checkpoint, is a fork), that proof and the wait for another view's of it given one
    client timeout together. Raises ServerEvidenceError (502) for a note that does not
    verify with ``vkey`` (`_unsigned_checkpoint`), is larger than ``latest`` or does not
    hold (`logmonitor`), TransportError when the service does not answer the proof, the
    note then forgotten (`forget_cosigned`: an error is not kept)."""
    if said is None:
        return None
    note, quorum = said
    if not note:
        return {"checkpoint": None, "size": None, "quorum": quorum, "unverified_names": []}
    verifier = NoteVerifier.from_vkey(vkey)
    try:
        cp = open_checkpoint(note, verifier, origin=latest.origin)
        lines = split_note(note)[1]
    except (SignatureError, LogError) as e:
        forget_cosigned(client)
        raise _unsigned_checkpoint(client, e, pinned) from e
    if cp.size > latest.size:
        forget_cosigned(client)
        raise logmonitor.held_back(client, latest, cp.size)
    try:
        logmonitor.hold_cosigned(client, vkey, cp, _time_left(client, client.timeout))
    except (ServerEvidenceError, TransportError):
        forget_cosigned(client)
        raise
    names = [s.name for s in lines if (s.name, s.key_id) != (verifier.name, verifier.key_id)]
    return {
        "checkpoint": note,
        "size": cp.size,
        "quorum": quorum,
        "unverified_names": list(dict.fromkeys(names)),
    }


def entry_view(
    client: ProvenanceClient,
    index: int,
    pinned: str | None = None,
    found: tuple[bytes, bytes] | None = None,
) -> dict[str, Any]:
    """One log entry: its leaf hash, the server's integration time, the signed claim's
    fields and signature, the device's registry record (None when unknown) and an
    inclusion proof into the newest checkpoint, checked here (with ``pinned``, the key
    it must verify with: `latest_checkpoint`). Raises WebError NOT_FOUND past the end
    of the log. ``found``: (file SHA-256, claim SHA-256) when the entry is shown as the
    one a search by file hash found (`find_by_sha256`): the entry read must be that
    claim, binding that file, else ServerEvidenceError (502, `check_found_entry`)."""
    cp, note, _ = latest_checkpoint(client, pinned=pinned)
    if index >= cp.size:
        raise WebError(
            f"no entry {index}: the log has {cp.size} entries (0 to {cp.size - 1})", "NOT_FOUND"
        )
    entries, _ = client.entries(index, 1)
    if found is not None:
        check_found_entry(client, found[0], index, found[1], entries[0] if entries else None)
    if not entries:
        raise WebError(f"no entry {index} in the log", "NOT_FOUND")
    data = entries[0]
    signed, integrated_at = wire.decode_entry(data)
    leaf = merkle.leaf_hash(data)
    _, size, proof, _ = client.inclusion_proof(cp.size, leaf_index=index)
    try:
        merkle.verify_inclusion(index, size, leaf, proof, cp.root_hash)
        included, problem = True, None
    except LogError as e:
        included, problem = False, str(e)
    if isinstance(signed, SignedKeyEvent):
        event = key_event_to_json(signed)
        claim_view = None
        device_id = bytes.fromhex(event["device_id"])
    else:
        claim = wire.decode_claim(signed.claim_bytes)
        event = None
        claim_view = {
            **claim_to_json(claim),
            "claim_sha256": signed.claim_hash.hex(),
            "prev_claim_sha256": claim.prev_claim_hash.hex() or None,
            "payload_type": signed.payload_type,
            "signature": base64.b64encode(signed.signature).decode(),
            "soft_bindings": len(claim.soft_bindings),
        }
        device_id = signed.key_id
    return {
        "index": index,
        "leaf_hash": leaf.hex(),
        "integrated_at": utc_iso(integrated_at),
        "claim": claim_view,
        "key_event": event,
        "device": device_view(client, device_id, missing_ok=True),
        "inclusion": {
            "tree_size": size,
            "root_hash": cp.root_hash.hex(),
            "proof": [p.hex() for p in proof],
            "verified": included,
            "problem": problem,
            "checkpoint": note,
        },
    }


def find_by_sha256(client: ProvenanceClient, sha256: bytes) -> list[tuple[int, bytes]]:
    """(log index, claim SHA-256) of each capture whose claim binds exactly these file
    bytes (``sha256``, 32 bytes), by the service's lookup; empty when none.

    The answer is checked as ``POST /api/v1/lookup`` checks one
    (`provenance.web.api.check_lookup_cited`: a verdict resting on a claim's hard binding
    cites a claim binding ``sha256``; a verdict an honest service gives a lookup); one
    saying the bytes match (``hash_match``) must cite a claim binding ``sha256``. The
    entry at the cited claim's leaf index is not read here: the caller reads it once, as
    it shows it, and checks that it is that claim (`entry_view`'s ``found``,
    `check_found_entry`), as the API and the explorer's search page do (not
    read here, then read again unchecked by the entry's page it redirects to). Taken
    unchecked, the answer would let a hostile service send the search to any entry,
    shown as the capture of these bytes.
    Raises ServerEvidenceError (502, `_search_refused`), TransportError."""
    from provenance.web.api import check_lookup_cited  # api imports this module

    queries = [Query("find", sha256)]
    found = client.lookup(queries)
    try:
        check_lookup_cited(queries, found, client.address, lambda i, q: "its lookup")
    except ServerEvidenceError as e:
        raise _search_refused(client, sha256, str(e), e.public) from e
    [(_, report)] = found
    cited = report.evidence.claim
    if not report.evidence.hash_match or cited is None or cited.receipt is None:
        return []
    bound = cited.claim.hard_binding.sha256
    if bound != sha256:
        said = f"it said these bytes match a claim, but cited one binding SHA-256 {bound.hex()}"
        raise _search_refused(client, sha256, said, said)
    return [(cited.receipt.leaf_index, cited.signed_claim.claim_hash)]


def check_found_entry(
    client: ProvenanceClient, sha256: bytes, index: int, claim_hash: bytes, data: bytes | None
) -> None:
    """Raise ServerEvidenceError (502, `_search_refused`) unless ``data`` (the leaf data
    the service sent as entry ``index``; None: it sent none) is the log entry of the
    claim of SHA-256 ``claim_hash`` (32 bytes) that the search for the file SHA-256
    ``sha256`` found (`find_by_sha256`), and that claim binds ``sha256``: the entry a
    search shows is the claim its lookup cited, not another at that index."""
    if data is None:
        said = f"it cited the claim of log entry {index}, but sent no entry {index}"
        raise _search_refused(client, sha256, said, said)
    try:
        signed, _ = wire.decode_entry(data)
        claim = (
            None if isinstance(signed, SignedKeyEvent) else wire.decode_claim(signed.claim_bytes)
        )
    except ClaimError as e:
        said = f"it sent a log entry {index} that cannot be read ({e})"
        raise _search_refused(client, sha256, said, said) from e
    if isinstance(signed, SignedKeyEvent) or claim is None:
        what = "a device key event"
    elif signed.claim_hash != claim_hash or claim.hard_binding.sha256 != sha256:
        what = (
            f"another claim (device {claim.device_id.hex()[:16]}, sequence"
            f" {claim.sequence}, binding SHA-256 {claim.hard_binding.sha256.hex()})"
        )
    else:
        return
    said = f"it cited the claim of log entry {index}, but sent as entry {index} {what}"
    raise _search_refused(client, sha256, said, said)


def _search_refused(
    client: ProvenanceClient, sha256: bytes, said: str, public: str
) -> ServerEvidenceError:
    """The error of a search by file hash (`find_by_sha256`) whose answer was refused:
    ``said`` (``public``: the same without the service's address) what was wrong; 502,
    no entry shown."""
    what = (
        f"answered the search for the file SHA-256 {sha256.hex()} as an honest service never"
        " does, so no entry is shown for it"
    )
    rest = "; try again, or tell this page's operator"
    return ServerEvidenceError(
        f"the service at {client.address} {what}: {said}{rest}",
        public=f"the provenance service behind this page {what}: {public}{rest}",
    )


def device_view(
    client: ProvenanceClient, device_id: bytes, missing_ok: bool = False
) -> dict[str, Any] | None:
    """A device's registry record: id, public key, label, enrollment, revocation
    (time and reason), last sequence. NOT_FOUND (WebError) for an unknown id, or None
    with ``missing_ok``."""
    try:
        d = client.get_device(device_id)
    except TransportError as e:
        if e.code != "NOT_FOUND":
            raise
        if missing_ok:
            return None
        raise WebError(f"no enrolled device has the id {device_id.hex()}", "NOT_FOUND") from e
    return {
        "device_id": d.device_id.hex(),
        "public_key": d.public_key.hex(),
        **device_to_json(d),
        "revoked": d.revoked,
        "last_sequence": d.last_sequence,
    }


def inclusion_view(
    client: ProvenanceClient, index: int, tree_size: int, pinned: str | None = None
) -> dict[str, Any]:
    """An inclusion proof of entry ``index`` in the tree of ``tree_size`` leaves. 0: the
    newest checkpoint's size, that checkpoint read, checked and held to the newest one
    this page verified (`latest_checkpoint`, with ``pinned``: a rollback or fork is
    ServerEvidenceError, 502; the service's own "latest" size is not taken
    unchecked), the proof asked at its size and checked against its root:
    ``root_hash`` and ``verified`` (``problem`` when it does not verify), as an entry's
    (`entry_view`); an explicit size has no root known here (``verified`` None).
    Raises TransportError."""
    cp = latest_checkpoint(client, pinned=pinned)[0] if tree_size == 0 else None
    idx, size, proof, leaf = client.inclusion_proof(
        tree_size or (cp.size if cp else 0), leaf_index=index
    )
    view: dict[str, Any] = {
        "leaf_index": idx,
        "tree_size": size,
        "leaf_hash": leaf.hex(),
        "proof": [p.hex() for p in proof],
        "verified": None,
        "problem": None,
    }
    if cp is not None:
        view["root_hash"] = cp.root_hash.hex()
        try:
            if (idx, size) != (index, cp.size):
                raise LogError(
                    f"the proof is of entry {idx} in a tree of {size} entries, not of entry"
                    f" {index} in the checkpoint's {cp.size}"
                )
            merkle.verify_inclusion(idx, size, leaf, proof, cp.root_hash)
            view["verified"] = True
        except LogError as e:
            view["verified"], view["problem"] = False, str(e)
    return view


def consistency_view(
    client: ProvenanceClient,
    first: int,
    second: int,
    first_root: bytes | None,
    pinned: str | None = None,
) -> dict[str, Any]:
    """A consistency proof between tree sizes ``first`` and ``second`` (0: the newest).
    With ``first_root`` (the root the caller trusts for size ``first``) and ``second``
    the newest size, the proof is checked against the signed checkpoint's root (with
    ``pinned``, the key it must verify with: `latest_checkpoint`).

    Raises WebError (400) naming the parameter when no proof runs between the sizes:
    ``first`` 0 (every tree extends the empty one: RFC 9162 defines no proof from it),
    either size past the log's, or ``second`` below ``first``."""
    if first < 1:
        raise WebError(
            "first must be at least 1: a consistency proof starts from a tree of at least"
            " one entry (every tree extends the empty one, so from size 0 there is nothing"
            " to prove)"
        )
    cp, _, _ = latest_checkpoint(client, pinned=pinned)
    if second > cp.size:
        raise WebError(
            f"second ({second}) is past the log's size ({cp.size}): it holds no tree of"
            f" {second} entries yet (leave second out for the latest)"
        )
    f, s = first, second or cp.size
    if f > s:
        if not second:
            raise WebError(
                f"first ({f}) is past the log's size ({s}): it holds no tree of {f} entries yet"
            )
        raise WebError(
            f"second ({s}) is below first ({f}): a proof runs from the smaller tree to the"
            " larger one"
        )
    proof = client.consistency_proof(f, s)
    view: dict[str, Any] = {
        "first_size": f,
        "second_size": s,
        "proof": [p.hex() for p in proof],
        "verified": None,
        "problem": None,
    }
    if first_root is not None and s == cp.size:
        try:
            merkle.verify_consistency(f, s, proof, first_root, cp.root_hash)
            view["verified"] = True
        except LogError as e:
            view["verified"], view["problem"] = False, str(e)
        view["second_root"] = cp.root_hash.hex()
    return view


#: Most entries one listing returns.
MAX_LISTING = 100


def entries_view(
    client: ProvenanceClient,
    start: int,
    count: int,
    size: int | None = None,
    pinned: str | None = None,
) -> list[dict[str, Any]]:
    """Entries ``start`` .. ``start + count - 1`` (fewer only at the end of the log;
    ``count`` capped at `MAX_LISTING`) in log order, each as ``{"index", "leaf_hash",
    "integrated_at", "device_id", "media_type", "captured_at", "sha256"}`` (times as
    `provenance.core.timetext.utc_iso` writes them, as `entry_view` and
    ``prov verify --json`` do), read a
    GetEntries page at a time, each page from where the one before said the next starts
    (the service cuts a page to fit its 8 MiB reply: 100 video claims logged before the
    64 KiB entry bound, up to 213 KB each, come in three pages). Before, only the first
    page was read, and a listing cut to its first 39 entries looked like the log's end,
    while the explorer's link to older entries passed over the rest. Raises
    ServerEvidenceError (502) when a page holds more entries than asked for or its
    ``next`` is not where the page ends (`clients.api.page_problem`: the service's
    paging is broken or hostile), TransportError from the service: DEADLINE_EXCEEDED
    (504) when its pages together take longer than the client's timeout (``prov web
    --service-timeout``), each page's call given the time left. Before, each page had
    the whole timeout: a service sending one entry a page held a listing (a web worker
    thread) for 100 timeouts, 33 minutes of 20 s.

    An empty page is the log's end only at or past its size: ``size`` (entries in a
    signed checkpoint the caller read before the listing), else the newest signed
    checkpoint's (with ``pinned``, the key it must verify with: `latest_checkpoint`),
    read once an empty page comes (`_log_size`, within the time left of
    the listing's timeout, not a whole timeout more), that
    page then asked for again (entries logged between the two calls come in it). An
    empty page before the size is a ServerEvidenceError (502: the service lost entries
    or its paging is broken), not the listing's end, silently cut. So is one
    past index 0 of a log the service then says is empty (not the end).
    A checkpoint of a size short of the entries sent is taken as the end: with several
    servers over one PostgreSQL, one whose database does not answer serves the older
    checkpoint it holds (`StoreReads`), while another served the newer entries; but one
    older than a checkpoint this process verified before is a 502 (a rollback,
    `latest_checkpoint`), so a service replaying an old checkpoint cannot cut a listing
    short after the page saw more."""
    count = max(0, min(count, MAX_LISTING))
    out: list[dict[str, Any]] = []
    pos = start
    deadline = time.monotonic() + client.timeout
    while len(out) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _listing_too_slow(client, start, count, len(out))
        asked = count - len(out)
        try:
            data, nxt = client.entries(pos, asked, timeout=left)
        except TransportError as e:
            if e.waited_s is None:
                raise
            raise _listing_too_slow(client, start, count, len(out)) from e
        if not data:
            if size is None:  # is this the log's end? ask its size, then the page again
                try:  # within the listing's timeout: before, a whole one more
                    known = _log_size(client, deadline - time.monotonic(), pinned)
                except TransportError as e:
                    if e.waited_s is None:
                        raise
                    raise _listing_too_slow(client, start, count, len(out)) from e
                if known is None:  # "the log is empty": its end only at index 0
                    if pos > 0:
                        raise _ended_early(client, pos, None)
                    break
                size = known
                if pos < size:
                    continue
            if pos < size:
                raise _ended_early(client, pos, size)
            break  # the end of the log
        if (problem := page_problem(pos, asked, len(data), nxt)) is not None:
            raise ServerEvidenceError(
                f"the service at {client.address} {problem}; {PAGING_REFUSED}",
                public=f"the provenance service behind this page {problem}; {PAGING_REFUSED}",
            )
        out += [_entry_row(i, e) for i, e in enumerate(data, pos)]
        pos = nxt
    return out


def _log_size(client: ProvenanceClient, timeout: float, pinned: str | None) -> int | None:
    """Entries in the newest signed checkpoint of the service's log (`latest_checkpoint`,
    its calls given ``timeout`` seconds together, checked with ``pinned`` when given),
    None when it says it has none yet (an empty log). Raises as `latest_checkpoint`
    does, but for an empty log."""
    try:
        return latest_checkpoint(client, timeout, pinned)[0].size
    except WebError as e:
        if e.code != "NOT_FOUND":
            raise
        return None


def _ended_early(client: ProvenanceClient, pos: int, size: int | None) -> ServerEvidenceError:
    """The error of a listing (`entries_view`) the service answered with no entries from
    index ``pos``, though the log's signed checkpoint holds ``size`` (more), or, ``size``
    None, though it then said its log is empty (and so has no index ``pos`` - 1, where
    its entries would end: taken as the log's end, no signed checkpoint would be
    needed to cut the listing): 502."""
    though = (
        "though it says the log is empty"
        if size is None
        else f"though the log's signed checkpoint holds {size}"
    )
    said = (
        f"ended the log early: it sent no entries from index {pos}, {though}; it has lost"
        " entries or its paging is broken, so no listing is shown from it; try again, or"
        " tell this page's operator"
    )
    return ServerEvidenceError(
        f"the service at {client.address} {said}",
        public=f"the provenance service behind this page {said}",
    )


def _listing_too_slow(
    client: ProvenanceClient, start: int, count: int, held: int
) -> TransportError:
    """The error of a listing (`entries_view`) of ``count`` entries from ``start`` whose
    pages had brought ``held`` when the client's timeout ran out: DEADLINE_EXCEEDED, 504,
    the visitor told the seconds waited, not the service's address."""
    return TransportError(
        f"the server at {client.address} had not sent the {count} entries from index"
        f" {start} asked for within {client.timeout:g} s (--service-timeout) over its"
        f" GetEntries pages: {held} came",
        "DEADLINE_EXCEEDED",
        waited_s=client.timeout,
    )


#: What a listing refused for its pages' ``next`` says after what the service did
#: (`entries_view`), as `prov log audit` refuses such pages.
PAGING_REFUSED = (
    "its paging is broken or hostile, so no listing is shown from it; try again, or tell"
    " this page's operator"
)


def _entry_row(index: int, entry: bytes) -> dict[str, Any]:
    """A listing's row (`entries_view`) of the log entry ``entry`` at ``index``."""
    signed, integrated_at = wire.decode_entry(entry)
    row = {
        "index": index,
        "leaf_hash": merkle.leaf_hash(entry).hex(),
        "integrated_at": utc_iso(integrated_at),
    }
    if isinstance(signed, SignedKeyEvent):
        ev = key_event_to_json(signed)
        return row | {
            "device_id": ev["device_id"],
            "media_type": f"key history: {ev['kind']}",
            "captured_at": ev["effective_at"],
            "sha256": None,
        }
    claim = claim_to_json(wire.decode_claim(signed.claim_bytes))
    return row | {k: claim[k] for k in ("device_id", "media_type", "captured_at", "sha256")}


def key_event_to_json(signed: SignedKeyEvent) -> dict[str, Any]:
    """A key-history entry as ``{"kind": "enrollment"|"revocation", "device_id",
    "effective_at", "public_key", "reason", "authorised_by", "backfilled", "signer_id",
    "signature_verified"}`` (hex keys, ISO 8601 UTC times)."""
    event = wire.decode_key_event(signed.event_bytes)
    try:
        verify_key_event(signed)
        verified = True
    except SignatureError:
        verified = False
    return {
        "kind": event.kind.name.lower(),
        "device_id": event.device_id.hex(),
        "effective_at": utc_iso(event.effective_at),
        "public_key": event.public_key.hex() or None,
        "reason": event.reason or None,
        "authorised_by": event.authorised_by,
        "backfilled": event.backfilled,
        "signer_id": signer_id(signed),
        "signature_verified": verified,
    }
