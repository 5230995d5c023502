"""The web process as a monitor of the log it shows.

The explorer and the log API take the log's end from the checkpoint the service presents
as its latest (`provenance.web.logviews.latest_checkpoint`), checked with the log key. A
hostile service, or a relay in front of it, can present an older checkpoint the log
genuinely signed, to end a listing early or show an older log: its signature checks. So
the web remembers, per log key (the note verifier key that signed it), the newest
checkpoint it has verified, and holds each latest checkpoint it reads to it, as a log
monitor does (RFC 9162 section 8.3): a smaller one is a rollback, one of the same size
with another root a fork, and a larger one must be proven to extend the remembered one
by the service's consistency proof (RFC 9162 2.1.4.2, `provenance.core.merkle`), asked
once per new size (the memory then moves to it, under a lock, so requests at once ask
one proof). Each failure is a ServerEvidenceError: 502, in a reader's words. An answer
is held to what the page knew when it asked (`seen`): one overtaken on its way by a newer
one another request read at once is no rollback, but must be proven part of it (not a 502
for an honest service whose log grew under requests at once).

The cosigned checkpoint the service presents (`provenance.web.logviews.cosigned_view`) is
a checkpoint its log signed too, and is held to the memory as well (`hold_cosigned`):
another root at the remembered size, or a smaller one not proven part of it, is a fork,
proven once per cosigned checkpoint.

Only reads of the latest and the cosigned checkpoints are held to the memory: a
consistency proof between two sizes asked for, or an inclusion proof at a past size, is
a legitimate read of an older tree, not an older state of the log.

The memory lives in this process alone, per gRPC client (one per web app,
`provenance.web.app.create_app`), and is not persisted: it starts empty and resets on
restart, so the first checkpoint a web process reads is taken on its signature alone
(trust on first use), as before. Without ``prov web --log-key``, the key is the one the
service presents, so a service presenting a key of its own starts a memory of its own;
pin the key to close that. At most `MAX_KEYS` keys are remembered per client, the least
recently used forgotten first.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from clients.api import ProvenanceClient
from provenance.core import merkle
from provenance.core.errors import LogError, ServerEvidenceError, TransportError
from provenance.log.checkpoint import Checkpoint

#: Most log keys remembered per client: a service presenting a new key of its own again
#: and again must not grow the memory without bound.
MAX_KEYS = 64

#: gRPC status codes of a consistency proof the service refuses to give (its answer, not
#: a failure to reach it): the newer checkpoint is then not proven (502).
_REFUSALS = ("INVALID_ARGUMENT", "OUT_OF_RANGE", "FAILED_PRECONDITION", "NOT_FOUND")

#: Cosigned checkpoints remembered as held per log key (`hold_cosigned`): a view reads the
#: cosigned checkpoint as it starts and holds it after the latest, so one that read it
#: before the service's cosigned checkpoint changed may hold the older one after a view
#: holding the newer; with only the last remembered, each such turn would ask both
#: proofs again.
COSIGNED_KEPT = 4


#: (tree size, root hash of 32 bytes) of a checkpoint verified (`seen`).
Seen = tuple[int, bytes]


@dataclass
class _Held:
    """The newest checkpoint verified under one log key (None: none yet), one tuple so
    that `seen`, reading it without ``lock``, never reads one's size with another's
    root; ``lock`` held while one is compared with it; ``cosigned``: the cosigned
    checkpoints last held to it (`hold_cosigned`), ``cosigned_lock`` held meanwhile."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    newest: Seen | None = None
    #: the last `COSIGNED_KEPT` cosigned checkpoints held to it (`hold_cosigned`), the
    #: newest last, and the lock held while one is: each proven once, not once a view
    cosigned_lock: threading.Lock = field(default_factory=threading.Lock)
    cosigned: tuple[Seen, ...] = ()


_MEMORY: weakref.WeakKeyDictionary[ProvenanceClient, OrderedDict[str, _Held]] = (
    weakref.WeakKeyDictionary()
)
_MEMORY_LOCK = threading.Lock()


def _held(client: ProvenanceClient, vkey: str) -> _Held:
    """The memory of ``client`` for the log key ``vkey``, made empty when there is none
    (the least recently used key forgotten past `MAX_KEYS`)."""
    with _MEMORY_LOCK:
        keys = _MEMORY.setdefault(client, OrderedDict())
        held = keys.get(vkey)
        if held is None:
            held = keys[vkey] = _Held()
            while len(keys) > MAX_KEYS:
                keys.popitem(last=False)
        else:
            keys.move_to_end(vkey)
        return held


def seen(client: ProvenanceClient, vkey: str) -> Seen | None:
    """The newest checkpoint under ``vkey`` that ``client``'s web has verified, None when
    it has verified none. Taken just before the service is asked for its latest
    checkpoint, and given to `hold` or `hold_empty` with the answer: what the page knew
    when it asked, which the answer must not be older than (a newer one remembered
    since, by a request at once, may have been read after it)."""
    with _MEMORY_LOCK:
        held = _MEMORY.get(client, OrderedDict()).get(vkey)
    return None if held is None else held.newest


def hold(
    client: ProvenanceClient,
    vkey: str,
    cp: Checkpoint,
    left: Callable[[], float | None],
    before: Seen | None,
) -> None:
    """Hold ``cp``, the latest checkpoint the service at ``client`` presented, its
    signature already checked with ``vkey``, to the newest one verified before under
    that key, and remember it when it holds (module docstring). ``before``: `seen` just
    before the service was asked: a ``cp`` older than the one remembered now but not
    than ``before`` was read while another request, at once, read a newer one (an
    honest service's answer overtaken on its way): it is proven to be part of the one
    remembered (the service's consistency proof; none when it is ``before``), and the
    memory stays (before the fix, a 502 for an honest service). ``left()``: the seconds
    left for the wait for the memory and the consistency proof (None: the client's
    timeout for each; past it, TransportError DEADLINE_EXCEEDED). Raises
    ServerEvidenceError (502) for a checkpoint older than ``before`` (a rollback),
    another root at the same size, or one the consistency proof does not tie to the
    one remembered (refused, or not verifying: a fork); TransportError when the service
    does not answer the proof."""
    held = _held(client, vkey)
    newest = held.newest
    if newest is None or cp.size >= newest[0]:
        newest = _move(client, held, cp, left)
        if newest is None:
            return
    # older than the memory, which only grows and which this one does not move: proven
    # without the lock, so requests overtaken at once do not queue behind each other
    _overtaken(client, before, newest, cp, left)


def _move(
    client: ProvenanceClient,
    held: _Held,
    cp: Checkpoint,
    left: Callable[[], float | None],
    what: str = "a signed checkpoint",
) -> Seen | None:
    """Under ``held``'s lock (waited for within ``left()``), hold ``cp`` to the newest
    checkpoint remembered and remember it (`_compare`, ``what`` it is), then None; or,
    when the memory has moved past ``cp`` meanwhile, leave it and return the newest one
    (`hold`)."""
    _acquire(client, held.lock, left)
    try:
        newest = held.newest
        if newest is not None and cp.size < newest[0]:
            return newest
        if newest is not None:
            _compare(client, newest, cp, left, what)
        held.newest = (cp.size, cp.root_hash)
        return None
    finally:
        held.lock.release()


def _acquire(
    client: ProvenanceClient, lock: threading.Lock, left: Callable[[], float | None]
) -> None:
    """Take ``lock``, held by a request proving a checkpoint, waiting for it within
    ``left()`` (None: the client's timeout); past it, TransportError DEADLINE_EXCEEDED."""
    wait = left()
    if not lock.acquire(timeout=client.timeout if wait is None else wait):
        left()  # past the budget: its own DEADLINE_EXCEEDED, naming the whole of it
        waited = client.timeout if wait is None else wait
        raise TransportError(
            f"the server at {client.address} had not answered within {waited:g} s (the"
            " log's consistency proof another request asked for)",
            "DEADLINE_EXCEEDED",
            waited_s=waited,
        )


def hold_cosigned(
    client: ProvenanceClient, vkey: str, cp: Checkpoint, left: Callable[[], float | None]
) -> None:
    """Hold ``cp``, the cosigned checkpoint the service at ``client`` presented (a
    checkpoint of its log too: its log signature already checked with ``vkey``), to the
    newest one verified under that key, as `hold` holds a latest one: one larger is
    proven to extend it and remembered; one of its size must be that tree; one smaller
    (an honest service's cosigned checkpoint lags its latest) must be proven part of it
    by the service's consistency proof; one of 0 entries must have the empty tree's
    root. Held once per cosigned checkpoint (the memory only moves along consistency
    proofs, so one proven part of it stays part of every later one; the last
    `COSIGNED_KEPT` remembered), under a lock of its own waited for within ``left()``,
    so that views at once ask one proof. Raises ServerEvidenceError (502) for another
    tree at the remembered size, one not proven consistent with it, or one of 0 entries
    with another root (a fork); TransportError when the service does not answer the
    proof or ``left()`` runs out."""
    if cp.size == 0 and cp.root_hash != merkle.EMPTY_ROOT:
        raise _refused(
            client,
            f"showed a cosigned checkpoint of 0 entries whose root hash is"
            f" {cp.root_hash.hex()}, not the empty tree's ({merkle.EMPTY_ROOT.hex()}): no"
            " log of 0 entries has it (a fork: the log was rewritten)",
        )
    held = _held(client, vkey)
    seen_now = (cp.size, cp.root_hash)
    if seen_now in held.cosigned:
        return
    _acquire(client, held.cosigned_lock, left)
    try:
        if seen_now in held.cosigned:
            return  # held by a view at once
        newest = held.newest
        if newest is None or cp.size >= newest[0]:
            newest = _move(client, held, cp, left, "a cosigned checkpoint")
        if newest is not None and cp.size and seen_now != newest:
            did = (
                f"showed a cosigned checkpoint of {cp.size} entries that it did not prove"
                f" is part of the {newest[0]}"
            )
            _prove(client, seen_now, newest, left, did)
        held.cosigned = (*held.cosigned, seen_now)[-COSIGNED_KEPT:]
    finally:
        held.cosigned_lock.release()


def hold_empty(client: ProvenanceClient, before: Seen | None) -> None:
    """Raise ServerEvidenceError (502, a rollback) when the service at ``client`` says
    its log is empty though a checkpoint of entries was verified before it was asked
    (``before``: `seen` then; one verified since, by a request at once, may have been
    read after the log's first entry: before the fix, a 502 for an honest service)."""
    if before is not None and before[0]:
        raise _refused(
            client,
            f"showed an older state of the log than it showed before: it says the log is"
            f" empty, after a signed checkpoint of {before[0]} entries that this page checked",
        )


def _older(client: ProvenanceClient, size: int, cp: Checkpoint) -> ServerEvidenceError:
    """The 502 of ``cp``, older than a checkpoint of ``size`` entries verified before."""
    return _refused(
        client,
        f"showed an older state of the log than it showed before: a signed checkpoint"
        f" of {cp.size} entries, after one of {size} entries that this page checked (a"
        " log only grows)",
    )


def held_back(client: ProvenanceClient, latest: Checkpoint, cosigned: int) -> ServerEvidenceError:
    """The 502 of ``latest``, the checkpoint the service at ``client`` presented as its
    latest, smaller than the ``cosigned`` entries of the cosigned checkpoint it presented
    just before (its log signature checked): the latest was held back (a rollback)."""
    return _refused(
        client,
        f"showed an older state of the log than it showed before: a signed checkpoint"
        f" of {latest.size} entries as its latest, after a cosigned one of {cosigned}"
        " entries that this page checked (a log only grows)",
    )


def _overtaken(
    client: ProvenanceClient,
    before: Seen | None,
    newest: Seen,
    cp: Checkpoint,
    left: Callable[[], float | None],
) -> None:
    """Raise unless ``cp``, older than the ``newest`` remembered, is not older than
    ``before`` (what the page knew when it asked) and is part of ``newest`` (`hold`)."""
    if before is not None and cp.size < before[0]:
        raise _older(client, before[0], cp)
    if before == (cp.size, cp.root_hash) or cp.size == 0:
        return  # ``before`` was proven part of ``newest``; the empty tree is of every one
    did = f"showed a log of {cp.size} entries that it did not prove is part of the {newest[0]}"
    _prove(client, (cp.size, cp.root_hash), newest, left, did)


def _compare(
    client: ProvenanceClient,
    held: Seen,
    cp: Checkpoint,
    left: Callable[[], float | None],
    what: str = "a signed checkpoint",
) -> None:
    """Raise unless ``cp`` (``what`` it is, for the error), not smaller than the
    ``held`` remembered, is that tree, or is proven by the service's consistency proof
    to extend it (`hold`)."""
    size, root = held
    if cp.size == size:
        if cp.root_hash != root:
            raise _refused(
                client,
                f"showed two different logs of {size} entries: {what} whose"
                f" root hash is {cp.root_hash.hex()}, after one whose root hash was"
                f" {root.hex()} (a fork: the log was rewritten)",
            )
        return
    if size == 0:  # every tree extends the empty one: nothing to prove
        return
    shown = "a log" if what == "a signed checkpoint" else what
    did = f"showed {shown} of {cp.size} entries that it did not prove grows out of the {size}"
    _prove(client, held, (cp.size, cp.root_hash), left, did)


def _prove(
    client: ProvenanceClient, old: Seen, new: Seen, left: Callable[[], float | None], did: str
) -> None:
    """Ask the service its consistency proof from the tree ``old`` to ``new`` (sizes
    from 1, ``old`` the smaller) and check it; raise ServerEvidenceError (502) saying
    ``did`` and why when it refuses or the proof does not verify, TransportError when
    it does not answer."""
    try:
        proof = client.consistency_proof(old[0], new[0], timeout=left())
    except TransportError as e:
        if e.code not in _REFUSALS:
            raise
        raise _refused(
            client,
            f"{did} entries it showed before: it refused the consistency proof ({e})",
            f"{did} entries it showed before: it refused the consistency proof",
        ) from e
    try:
        merkle.verify_consistency(old[0], new[0], proof, old[1], new[1])
    except LogError as e:
        raise _refused(
            client,
            f"{did} entries it showed before: its consistency proof does not verify ({e});"
            " the log may have been rewritten (a fork)",
        ) from e


def _refused(client: ProvenanceClient, said: str, public: str | None = None) -> ServerEvidenceError:
    """The 502 of a checkpoint the memory refused: ``said`` (``public``: the same
    without the service's words, when they differ) what the service did."""
    rest = "; nothing it says of the log is shown from it; try again, or tell this page's operator"
    return ServerEvidenceError(
        f"the service at {client.address} {said}{rest}",
        public=f"the provenance service behind this page {public or said}{rest}",
    )
