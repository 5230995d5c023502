"""Receipts with witness cosignatures, on the client side.

A receipt is issued as soon as its batch is durable, with the checkpoint the log signed
for that batch: the server never makes a submission wait for witnesses. The server then
asks its witnesses to cosign (`provenance.witness.client`) and keeps the newest
checkpoint its quorum cosigned. `cosigned_receipt` brings a receipt up to that
checkpoint: the same leaf and leaf data, the cosigned note (the log's signature plus the
witnesses' cosignature lines) and an inclusion proof to its tree, everything verified
here with the log key, and the old and new checkpoints proven consistent
(``prov receipt refresh`` writes the result into the sidecar; ``prov verify --witness``
does the same for the receipt of the matched claim). `provenance.witness.check_quorum`
then checks a k-of-n witness policy on it (c2sp.org/tlog-cosignature). With
``--witness-url``, the witnesses are also asked themselves for the checkpoint they last
cosigned (`witnessed_checkpoints`), and each receipt proven of one log with it
(`check_witnessed`): a server cannot hide a fork behind an old cosigned checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from clients.api import ProvenanceClient
from clients.cited import logged_receipt, receipt_named
from clients.options import UsageError
from provenance.core import merkle
from provenance.core.claims import Receipt, SignedClaim
from provenance.core.errors import (
    LogError,
    LogIntegrityError,
    NoWitnessesError,
    ProvenanceError,
    ServerEvidenceError,
    SignatureError,
    TransportError,
    WitnessError,
    WitnessQuorumError,
)
from provenance.core.verify import ClaimEvidence, VerificationReport
from provenance.log.checkpoint import Checkpoint, NoteVerifier, open_checkpoint
from provenance.log.receipt import verify_receipt
from provenance.terminal import clipped_line
from provenance.wire.sidecar import Sidecar
from provenance.witness import (
    Cosignature,
    WitnessStatus,
    check_policy,
    check_quorum,
    parse_cosigner_vkey,
)
from provenance.witness.client import names_a_file, read_key_text


def policy_key(value: str) -> str:
    """A ``--witness`` value of ``prov verify``/``prov receipt verify``: the witness's
    cosigner key ``NAME+ID+KEY`` (inline or a file), optionally as ``NAME=NAME+ID+KEY``
    (the name must then be the key's). Raises LogError when the key is malformed or names another
    witness. The name is the witness operator's: taken as c2sp.org/signed-note allows (a
    control or invisible character in it is shown escaped)."""
    head, sep, rest = value.partition("=")
    named = bool(sep and rest and "+" not in head and not names_a_file(Path(value)))
    vkey = read_key_text(rest if named else value)
    name, _ = parse_cosigner_vkey(vkey)
    if named and head != name:
        raise LogError(
            f"--witness {head}=...: that key belongs to the witness named {name}, not {head}"
        )
    return vkey


def policy_keys(values: list[str]) -> list[str]:
    """The ``--witness`` values of a command as cosigner keys (`policy_key`). Raises
    UsageError (exit 2) when two are of one public key (`check_policy`: one witness
    would count twice), LogError when one is malformed."""
    keys = [policy_key(v) for v in values]
    try:
        check_policy(keys)
    except LogError as e:
        raise UsageError(f"--witness: {e}") from None
    return keys


def needs_policy(witness_urls: list[str] | None, policy: list[str]) -> None:
    """Raise UsageError (exit 2) when ``--witness-url`` is given without ``--witness``
    (``policy`` empty): a witness's checkpoint is only taken with a cosignature by a key
    the user names."""
    if witness_urls and not policy:
        raise UsageError(
            "--witness-url needs --witness KEY: the checkpoint a witness serves is taken"
            " only with a valid cosignature by a key --witness names (give the cosigner key"
            " `prov witness serve` prints for that witness)"
        )


#: Characters of a witness's name, URL and problem that a message repeats from a
#: server's answer (each escaped and cut: `clipped_line`), and the most witnesses it
#: lists: a server's GetCheckpoint may name any number of witnesses of any length (up to
#: its 8 MiB reply), and before, each was repeated whole (3 MB for one of a megabyte of
#: name, URL and problem). Our server's are within these: a key name is at most 256
#: bytes, a URL 1,024 characters, a problem 300 characters of the witness's answer after
#: at most about 200 of its own, and a policy's witnesses a handful (a quorum at most 15).
SHOWN_NAME_CHARS = 100
SHOWN_URL_CHARS = 200
SHOWN_PROBLEM_CHARS = 600
SHOWN_WITNESSES = 16


def cosigner_names(note: str) -> list[str]:
    """The names on a checkpoint note's signature lines other than the log's own (its
    origin): the witnesses whose cosignature lines it carries, unverified, each as a
    message may show it (escaped, cut to `SHOWN_NAME_CHARS`: `clipped_line`)."""
    origin = note.split("\n", 1)[0]
    block = note[note.rfind("\n\n") + 2 :] if "\n\n" in note else ""
    names = [line[2:].split(" ", 1)[0] for line in block.splitlines() if line.startswith("\u2014 ")]
    return [clipped_line(n, SHOWN_NAME_CHARS) for n in names if n != origin]


def describe(statuses: list[WitnessStatus]) -> str:
    """One line on the witnesses of a server's policy, who each is and how it is doing:
    the first `SHOWN_WITNESSES`, then how many more; each field as the server sent it,
    escaped and cut (`SHOWN_NAME_CHARS`, `SHOWN_URL_CHARS`, `SHOWN_PROBLEM_CHARS`)."""
    said = "; ".join(
        f"witness {clipped_line(w.name, SHOWN_NAME_CHARS)} ({clipped_line(w.url, SHOWN_URL_CHARS)}) "
        + (
            clipped_line(w.problem, SHOWN_PROBLEM_CHARS)
            or (f"cosigned up to size {w.size}" if w.size else "has cosigned nothing")
        )
        for w in statuses[:SHOWN_WITNESSES]
    )
    more = len(statuses) - SHOWN_WITNESSES
    return said + (f"; and {more:,} more witnesses" if more > 0 else "")


#: The server's newest cosigned checkpoint as `ProvenanceClient.cosigned_checkpoint`
#: answers it: (note, "" when none yet; the server's quorum; each witness's status).
Cosigned = tuple[str, int, list[WitnessStatus]]


def newest_cosigned(c: ProvenanceClient) -> Cosigned:
    """`ProvenanceClient.cosigned_checkpoint` of ``c``. Raises NoWitnessesError when the
    server requests no cosignatures (has no witnesses), TransportError otherwise."""
    try:
        return c.cosigned_checkpoint()
    except TransportError as e:
        if e.code != "FAILED_PRECONDITION":
            raise
        raise NoWitnessesError(f"no witness cosignatures to check: {e}") from e


def cosigned_receipt(
    c: ProvenanceClient,
    receipt: Receipt,
    signed: SignedClaim,
    verifier: NoteVerifier,
    newest: Cosigned | None = None,
) -> Receipt:
    """``receipt`` (for ``signed``) proven against the newest checkpoint the server's
    witness quorum cosigned; the receipt itself when its checkpoint is that one (its
    inclusion proof then checked too: unchecked, a TAMPERED answer's receipt, which
    `clients.cited.EvidenceChecker` does not prove, would meet the policy for any
    proof).
    ``newest``: that checkpoint as the server gave it already (`newest_cosigned`), so
    that many receipts are held to one checkpoint, asked for once; None: asked here.

    Raises WitnessQuorumError when the server has no cosigned checkpoint covering the leaf
    (naming each witness and why: unreachable, or a refusal such as a fork), or
    NoWitnessesError when it requests no cosignatures (has no witnesses);
    ServerEvidenceError (exit 3) when its cosigned checkpoint or inclusion proof does not
    verify with the log key (the server named, not exit 1 with the bare reason);
    LogIntegrityError (exit 3) when the two checkpoints are not of one append-only
    log (`_one_log`), checked before a leaf is called not yet cosigned too (so a receipt
    of a log forked before the witnesses last cosigned is no WitnessQuorumError, "try
    again once they cosign", nor an "also" claim "not yet cosigned").
    """
    note, quorum, statuses = newest if newest is not None else newest_cosigned(c)
    try:
        cosigned = open_checkpoint(note, verifier) if note else None
    except (SignatureError, LogError) as e:
        raise _refused(c.address, "its newest cosigned checkpoint", verifier, e) from e
    size = cosigned.size if cosigned is not None else 0
    if cosigned is None or size <= receipt.leaf_index:
        if cosigned is not None:  # a fork is not "not yet cosigned"
            _one_log(c, open_checkpoint(receipt.checkpoint, verifier), cosigned)
        have = f"the newest covers {size} entries" if note else "there is none yet"
        raise WitnessQuorumError(
            f"no checkpoint cosigned by the server's quorum of {quorum} witnesses covers leaf"
            f" {receipt.leaf_index} ({have}; a leaf logged since the witnesses last cosigned"
            " is covered once they cosign again, as the server asks them to after each"
            " batch: try again once they cosign, or, if one below is unreachable or"
            f" refusing, ask the log's operator): {describe(statuses)}"
        )
    if note == receipt.checkpoint:  # proven here too, not taken as it is
        new = receipt
    else:
        _, _, proof, _ = c.inclusion_proof(size, leaf_index=receipt.leaf_index)
        new = replace(receipt, checkpoint=note, inclusion_proof=tuple(proof))
    try:
        verify_receipt(new, signed, verifier)
    except (SignatureError, LogError) as e:
        what = f"the inclusion proof of leaf {receipt.leaf_index} in its cosigned checkpoint"
        raise _refused(c.address, f"{what} of {size} entries", verifier, e) from e
    if new is not receipt:
        _one_log(c, open_checkpoint(receipt.checkpoint, verifier), cosigned)
    return new


def _one_log(
    c: ProvenanceClient, old: Checkpoint, cosigned: Checkpoint, witness_url: str = ""
) -> None:
    """Prove the receipt's checkpoint ``old`` and the server's newest cosigned checkpoint
    ``cosigned`` (both opened with the log key already) of one append-only log (or,
    with ``witness_url``, the checkpoint the witness at that URL served as the one it
    last cosigned, `witnessed_checkpoints`, named so in the messages): equal
    roots when of one size, none when the smaller is of size 0 (the empty tree's root:
    every tree extends it; a proof from size 0 is not asked for, which the server
    refuses), else the consistency proof between them (RFC 9162 2.1.4.2)
    that the server of ``c`` sends. Raises LogIntegrityError (exit 3) naming both sizes
    and the server when they are not: a fork of the log, or a wrong proof (with
    ``witness_url``, also when the server refuses the proof as past its log, OUT_OF_RANGE:
    its log is shorter than the larger of the witness's tree and the receipt's, both
    signed with its key);
    TransportError when the server does not answer."""
    other = f"the one the witness at {witness_url} cosigned" if witness_url else "the cosigned one"
    said = (
        f"the receipt's checkpoint ({old.size} entries) and {other}"
        f" ({cosigned.size}) are not proven of one append-only log"
    )
    if old.size == cosigned.size:
        if old.root_hash != cosigned.root_hash:
            both = (
                f"one sent by the server at {c.address}, the other cosigned by the witness at"
                f" {witness_url}"
                if witness_url
                else f"both sent by the server at {c.address}"
            )
            raise LogIntegrityError(
                f"{said}: the log signed two different trees of size {old.size}, {both} (a fork)"
            )
        return
    first, second = sorted((old, cosigned), key=lambda cp: cp.size)
    if first.size == 0:  # every tree extends the empty one: nothing to ask
        if first.root_hash != merkle.EMPTY_ROOT:
            sender = (
                f"the witness at {witness_url}"
                if witness_url and first is cosigned
                else f"the server at {c.address}"
            )
            raise LogIntegrityError(
                f"{said}: the log signed a tree of size 0 whose root is not the empty tree's"
                f" (SHA-256 of nothing), sent by {sender}: a tree that cannot be"
            )
        return
    try:
        proof = c.consistency_proof(first.size, second.size)
    except TransportError as e:
        if not (witness_url and e.code == "OUT_OF_RANGE"):
            raise
        # the larger tree is the witness's or the receipt's, each signed by the log's key:
        # a log that cannot reach it was rolled back or forked (not "could not be
        # checked", exit 1)
        larger = (
            "the witness cosigned"
            if second is cosigned
            else f"the receipt's checkpoint it signed ({second.size})"
        )
        raise LogIntegrityError(
            f"{said}: the server at {c.address} cannot prove it ({e}): its log holds fewer"
            f" entries than {larger}: a fork of the log, or a rollback"
        ) from e
    try:
        merkle.verify_consistency(first.size, second.size, proof, first.root_hash, second.root_hash)
    except LogError as e:
        raise LogIntegrityError(
            f"{said}: the consistency proof the server at {c.address} sent does not verify"
            f" ({e}): a fork of the log, or a wrong proof (`prov log audit` of the log"
            " tells them apart)"
        ) from e


@dataclass(frozen=True)
class WitnessView:
    """What a witness asked directly (``--witness-url``) holds of the log: ``checkpoint``,
    the newest it cosigned, as served at ``url`` (`witnessed_checkpoints`: the log's
    signature and a policy witness's cosignature verified)."""

    url: str
    checkpoint: Checkpoint


def witnessed_checkpoints(
    urls: list[str], policy: list[str], verifier: NoteVerifier
) -> list[WitnessView]:
    """The checkpoint each witness at ``urls`` (`provenance.witness.client.parse_witness_url`
    prefixes) last cosigned of the log of ``verifier`` (its key name the log's origin),
    fetched from the witness itself (`fetch_cosigned_checkpoints`: all at once, each
    bounded in time and size; taken in the order of ``urls``), each verified with the
    log key and carrying a valid cosignature by one of ``policy`` (cosigner keys). The witnesses are asked so that a server cannot hide a
    fork behind an old cosigned checkpoint of its own choosing: `check_witnessed` proves a
    receipt's checkpoint of one log with each. Raises WitnessQuorumError (exit 14, the
    log cannot be checked against that witness: naming its URL and why) when one cannot
    be reached, answers no checkpoint (404: it never cosigned one of this log), or serves
    one that does not verify with the log key or carries no cosignature of ``policy``."""
    from provenance.witness.client import fetch_cosigned_checkpoints

    key = f"{verifier.name}+{verifier.key_id.hex()}"
    views: list[WitnessView] = []
    for url, note in fetch_cosigned_checkpoints(urls, verifier.name):
        if isinstance(note, WitnessError):
            why = f"its checkpoint cannot be fetched: {note}"
            raise WitnessQuorumError(_unconfirmed(url, why)) from note
        try:
            checkpoint = open_checkpoint(note, verifier)
        except (SignatureError, LogError) as e:
            why = f"the checkpoint it serves does not verify with the log key {key}: {e}"
            raise WitnessQuorumError(_unconfirmed(url, why)) from e
        try:
            check_quorum(note, policy, 1)
        except (WitnessQuorumError, LogError) as e:
            why = (
                "the checkpoint it serves carries no valid cosignature by a --witness key"
                f" ({e}); give the URL of a witness whose key --witness names"
            )
            raise WitnessQuorumError(_unconfirmed(url, why)) from e
        views.append(WitnessView(url, checkpoint))
    return views


def _unconfirmed(url: str, why: str) -> str:
    """The message of a ``--witness-url`` that the log cannot be checked against."""
    return (
        f"--witness-url {url}: the log cannot be checked against this witness, so a fork"
        f" cannot be ruled out: {why}"
    )


def check_witnessed(c: ProvenanceClient, checkpoint: Checkpoint, views: list[WitnessView]) -> None:
    """Prove a receipt's ``checkpoint`` (opened with the log key) of one append-only log
    with the checkpoint each witness of ``views`` cosigned (`witnessed_checkpoints`),
    with the consistency proofs the server of ``c`` sends (`_one_log`). Raises
    LogIntegrityError (exit 3) naming the witness's URL, both sizes and the server when
    one is not: the log forked, and the receipt is of a branch the witness did not
    cosign (or the server sent a wrong proof); TransportError when the server does not
    answer. Witnesses holding one checkpoint (the usual case: each cosigned the log's
    newest) are proven with it once, the first naming it."""
    proven: set[tuple[int, bytes]] = set()
    for view in views:
        tree = (view.checkpoint.size, view.checkpoint.root_hash)
        if tree not in proven:
            _one_log(c, checkpoint, view.checkpoint, view.url)
            proven.add(tree)


def _refused(
    server: str, what: str, verifier: NoteVerifier, e: ProvenanceError
) -> ServerEvidenceError:
    """The ServerEvidenceError of ``what`` the server at ``server`` (HOST:PORT) sent not
    verifying with the log key of ``verifier`` (``e`` says why)."""
    key = f"{verifier.name}+{verifier.key_id.hex()}"
    said = f"{what} does not verify with the log key {key}: {e}"
    return ServerEvidenceError(
        f"the server at {server} answered a witness-cosigned receipt that cannot be used: {said}",
        public=f"the server answered a witness-cosigned receipt that cannot be used: {said}",
    )


@dataclass(frozen=True)
class WitnessCheck:
    """The witness policy checked on the receipt of a verified file's logged claim:
    ``cosignatures`` found (policy order), on the checkpoint of ``tree_size`` entries that
    includes ``leaf_index``; ``error`` says why the policy is not met ("" when it is);
    ``leaf_index`` is None when no logged claim matched (nothing to check); ``also``: how
    many claims listed as also signed had their receipts meet the policy too;
    ``also_cosigned``: for each of them (``evidence.other_claims`` order), True when its
    receipt met the policy, False when its genuine receipt is in no checkpoint the
    policy's witnesses cosigned yet (logged since they last cosigned, or while one is
    down), None when it has no receipt; ``pending``: those not yet cosigned, each named
    (device, sequence, leaf). The policy (``error``) rests on the cited claim's receipt
    alone (were an "also" claim not yet cosigned to fail it, anyone signing a copy of a
    cosigned photo while a witness was down would make its check fail)."""

    quorum: int
    witnesses: int
    cosignatures: tuple[Cosignature, ...] = ()
    leaf_index: int | None = None
    tree_size: int = 0
    error: str = ""
    also: int = 0
    also_cosigned: tuple[bool | None, ...] = ()
    pending: tuple[str, ...] = ()

    def text(self) -> str:
        """One line for people: the cited claim's receipt (the policy, met or not), then
        what was checked of the claims listed as also signed: the receipts that met the
        policy too, and each one not yet cosigned, named (also on a POLICY NOT MET line,
        and a verdict citing no logged claim does not say "nothing to check" though they
        were checked)."""
        later = "".join(
            f"; the claim listed as also signed ({named}) is not yet cosigned by the"
            " witnesses: its receipt is proven with the log key only, the log's word until"
            " they cosign it (logged since they last cosigned; verify again once they do)"
            for named in self.pending
        )
        if self.error:
            met = self._also_met("the receipt of", " meets the policy")
            return (
                f"witnesses: POLICY NOT MET ({self.quorum} of {self.witnesses}):"
                f" {self.error}{met}{later}"
            )
        if self.leaf_index is None:
            if not self.also_cosigned:
                return "witnesses: nothing to check (no logged claim matched the file)"
            met = self._also_met(
                "the receipt of",
                f" is in a checkpoint cosigned by the policy's quorum ({self.quorum} of"
                f" {self.witnesses} witnesses)",
            )
            return f"witnesses: the verdict cites no logged claim{met}{later}"
        names = ", ".join(
            f"{c.name} at {c.timestamp:%Y-%m-%d %H:%M:%S} UTC" for c in self.cosignatures
        )  # never "none" once met: --witness-quorum 0 is a usage error
        also = self._also_met("so is the receipt of", "")
        return (
            f"witnesses: leaf {self.leaf_index} is in a checkpoint of {self.tree_size} entries"
            f" cosigned by {len(self.cosignatures)} of {self.witnesses} witnesses (quorum"
            f" {self.quorum}): {names or 'none'}{also}{later}"
        )

    def _also_met(self, lead: str, tail: str) -> str:
        """The clause on the "also" claims whose receipts met the policy, as "; LEAD the
        claim listed as also signed TAIL" (or "N of the M claims", "each of the N
        claims"); "" when none did."""
        if not self.also:
            return ""
        if self.pending:
            listed = self.also + len(self.pending)
            return f"; {lead} {self.also} of the {listed} claims listed as also signed{tail}"
        if self.also > 1:
            return f"; {lead} each of the {self.also} claims listed as also signed{tail}"
        return f"; {lead} the claim listed as also signed{tail}"

    def to_json(self) -> dict[str, Any]:
        """JSON-able: quorum, policy size, leaf, tree size, who cosigned and when, error."""
        return {
            "quorum": self.quorum,
            "witnesses": self.witnesses,
            "met": not self.error and self.leaf_index is not None,
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size or None,
            "cosigned_by": [
                {"name": c.name, "time": c.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ")}
                for c in self.cosignatures
            ],
            "error": self.error or None,
        }


def check_witnesses(
    c: ProvenanceClient,
    report: VerificationReport,
    sidecar: Sidecar | None,
    policy: list[str],
    quorum: int,
    vkey: str | None = None,
    witness_urls: list[str] | None = None,
) -> WitnessCheck:
    """Check the witness ``policy`` (cosigner keys, ``quorum`` of them) on the receipt of
    the claim ``report`` rests on, and on the receipt of each claim it lists as also
    signed (``evidence.other_claims``, whatever the verdict, not only the cited claim's): the
    sidecar's own receipt when it is for that claim and already cosigned, else the receipt
    brought up to the server's newest cosigned checkpoint
    (`cosigned_receipt`). The returned check describes the cited claim's receipt. Every
    receipt is first proven with the log key (`clients.cited.EvidenceChecker`): ``vkey``
    when pinned (`prov verify --log-key`), else the server's own.

    The policy (``error``) is decided by the cited claim's receipt alone: not met is a
    value, as a receipt not yet cosigned (an honest claim logged since the witnesses last
    cosigned) is one. An "also" claim whose proven receipt no cosigned checkpoint meeting
    the policy holds yet is no failure (were it to fail the policy, exit 14, anyone
    with an enrolled device signing a copy of a cosigned photo while a witness was down
    would make `prov verify --witness` of it fail): it is marked
    (``also_cosigned`` False, named in ``pending``). Raises ServerEvidenceError (exit 3, naming the
    server and which claim) when a receipt, the server's cosigned checkpoint or a proof
    into it does not verify with the log key, or an "also" claim comes without a
    receipt; LogIntegrityError (exit 3, naming the claim, cited or "also") when a
    receipt's
    checkpoint and the cosigned one are not of one append-only log (a fork: also for a
    receipt not yet cosigned); SignatureError, ProofError or LogError when the
    sidecar's receipt does not.

    ``witness_urls`` (``--witness-url``): witnesses asked directly for the checkpoint they
    last cosigned (`witnessed_checkpoints`, once, before any receipt's policy is
    checked), with which each receipt's own checkpoint must be proven of one log
    (`check_witnessed`): LogIntegrityError (exit 3, naming the witness and the claim)
    when one is not, also for a receipt not yet cosigned. A witness whose checkpoint
    cannot be fetched or checked is the policy not met (``error`` naming its URL, the
    "also" claims then unchecked, so that `prov verify --json` still gives its report).
    They decide no
    quorum: the cosignatures counted are those on the checkpoint the server proves the
    receipt in, as without them.
    """
    from clients.cited import EvidenceChecker

    ev = logged_receipt(report, c.address, "--witness")
    others = report.evidence.other_claims
    if (ev is None or ev.receipt is None) and not others:
        return WitnessCheck(quorum, len(policy))
    key = vkey if vkey is not None else c.log_key()[0]
    EvidenceChecker(key, "--log-key" if vkey is not None else "--witness").check(report, c.address)
    verifier = NoteVerifier.from_vkey(key)
    main = WitnessCheck(quorum, len(policy))
    try:
        views = witnessed_checkpoints(witness_urls or [], policy, verifier)
    except WitnessQuorumError as e:  # not met, as a policy is, not raised
        leaf = ev.receipt.leaf_index if ev is not None and ev.receipt is not None else None
        return replace(main, leaf_index=leaf, error=str(e))
    newest = _Newest(c)  # every receipt held to one cosigned checkpoint, asked for once
    if ev is not None and ev.receipt is not None:
        leaf = ev.receipt.leaf_index
        try:
            check_witnessed(c, open_checkpoint(ev.receipt.checkpoint, verifier), views)
            signed, size = _policy_met(newest, ev, ev.receipt, sidecar, policy, quorum, verifier)
        except WitnessQuorumError as e:
            main = replace(main, leaf_index=leaf, error=str(e))
        except ServerEvidenceError:
            raise
        except LogIntegrityError as e:  # a fork: which receipt, as for an "also" claim
            cites = f"the receipt of the claim it cites ({receipt_named(ev, ev.receipt)})"
            raise LogIntegrityError(f"{e} ({cites})") from e
        else:
            main = replace(main, cosignatures=tuple(signed), leaf_index=leaf, tree_size=size)
    cosigned: list[bool | None] = []
    pending: list[str] = []
    for other in others:
        if other.receipt is None:  # refused by EvidenceChecker: an honest server logs them
            cosigned.append(None)
            continue
        named = receipt_named(other, other.receipt)
        which = f"the receipt of another claim it lists as also signed ({named})"
        try:
            check_witnessed(c, open_checkpoint(other.receipt.checkpoint, verifier), views)
            _policy_met(newest, other, other.receipt, sidecar, policy, quorum, verifier)
        except WitnessQuorumError:  # its receipt is genuine (proven above): not cosigned yet
            cosigned.append(False)
            pending.append(named)
        except ServerEvidenceError as e:
            raise ServerEvidenceError(f"{e} ({which})", public=f"{e.public} ({which})") from e
        except LogIntegrityError as e:  # not of one log with the cosigned checkpoint
            raise LogIntegrityError(f"{e} ({which})") from e
        else:
            cosigned.append(True)
    return replace(
        main, also=cosigned.count(True), also_cosigned=tuple(cosigned), pending=tuple(pending)
    )


class _Newest:
    """The newest cosigned checkpoint of the server of ``c`` (`newest_cosigned`), asked
    for on first use and then kept, for the receipts of one `check_witnesses`."""

    def __init__(self, c: ProvenanceClient) -> None:
        self.c = c
        self._got: Cosigned | None = None

    def get(self) -> Cosigned:
        """The checkpoint, asked for the first time only; raises as `newest_cosigned`."""
        if self._got is None:
            self._got = newest_cosigned(self.c)
        return self._got


def _policy_met(
    newest: _Newest,
    ev: ClaimEvidence,
    receipt: Receipt,
    sidecar: Sidecar | None,
    policy: list[str],
    quorum: int,
    verifier: NoteVerifier,
) -> tuple[list[Cosignature], int]:
    """The cosignatures of ``policy`` (``quorum`` of them at least) on the checkpoint that
    proves ``receipt``, the receipt of the claim of ``ev`` (proven with ``verifier``
    already), and that checkpoint's tree size: the sidecar's own receipt when it is of
    that claim and already cosigned, else ``receipt`` brought up to the server's newest
    cosigned checkpoint (`cosigned_receipt`), which ``newest`` holds for all the receipts
    of one check. Raises WitnessQuorumError when the policy is not met, and what
    `cosigned_receipt` raises."""
    if (
        sidecar is not None
        and sidecar.receipt is not None
        and sidecar.signed_claim == ev.signed_claim
    ):
        try:
            signed = check_quorum(sidecar.receipt.checkpoint, policy, quorum)
        except WitnessQuorumError:
            pass
        else:
            return signed, verify_receipt(sidecar.receipt, ev.signed_claim, verifier).size
    receipt = cosigned_receipt(newest.c, receipt, ev.signed_claim, verifier, newest.get())
    signed = check_quorum(receipt.checkpoint, policy, quorum)
    return signed, open_checkpoint(receipt.checkpoint, verifier).size
