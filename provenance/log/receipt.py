"""Log receipts: rebuilt from the log's store, and verified offline with only the log's
public key.

A receipt is not stored whole: `build_receipt` puts it together from the leaf's entry,
the first signed checkpoint whose tree holds the leaf (the one the writer issued it with,
kept in the checkpoints table) and the inclusion proof from the stored Merkle nodes, so
it is the same receipt, byte for byte, on every call.

A receipt verifies when its checkpoint carries a valid signature by the log key,
its leaf data (LogEntry) holds exactly the claim in question, and the RFC 9162
inclusion proof links the leaf hash to the checkpoint's root.
"""

from __future__ import annotations

from datetime import datetime

from provenance.core import merkle
from provenance.core.claims import Receipt, SignedClaim
from provenance.core.errors import LogIntegrityError, ProofError, ProvenanceError, StorageError
from provenance.log.checkpoint import Checkpoint, NoteVerifier, open_checkpoint
from provenance.wire.convert import decode_log_entry


def build_receipt(
    index: int,
    entry: bytes,
    integrated_at: datetime,
    covering: tuple[int, str] | None,
    get_nodes: merkle.NodeReader,
) -> Receipt:
    """The receipt of leaf ``index`` (its leaf data ``entry``, integrated at
    ``integrated_at``) against ``covering``, the (tree size, signed note) of the first
    checkpoint whose tree holds the leaf (`Store.checkpoint_covering`); the inclusion
    proof (RFC 9162 2.1.3) is read through ``get_nodes``.

    Raises LogIntegrityError when no checkpoint covers the leaf or a node is missing
    (the store was edited), and passes on the StorageError of a store that cannot be
    read now. The note is not verified here (`verify_receipt` does).
    """
    if covering is None or covering[0] <= index:
        raise LogIntegrityError(
            f"no signed checkpoint covers log entry {index}: the log database is damaged"
        )
    size, note = covering
    try:
        proof = merkle.inclusion_proof(index, size, get_nodes)
    except StorageError:  # the store failing is not its damage; its error says so itself
        raise
    except ProvenanceError as e:
        said = f"the inclusion proof of log entry {index} cannot be read"
        raise LogIntegrityError(
            f"{said}: {e}",
            public=f"{said}: the log database is damaged; the server's operator can read why"
            " in its log",
        ) from e
    return Receipt(
        leaf_index=index,
        integrated_at=integrated_at,
        checkpoint=note,
        inclusion_proof=tuple(proof),
        log_entry=entry,
    )


def verify_receipt(receipt: Receipt, signed: SignedClaim, verifier: NoteVerifier) -> Checkpoint:
    """Check ``receipt`` for ``signed``; return the checkpoint it is proven against.

    Raises SignatureError (checkpoint not signed by the log key), LogError (malformed
    checkpoint) or ProofError (the receipt is for another claim, or the inclusion
    proof fails).
    """
    checkpoint = open_checkpoint(receipt.checkpoint, verifier)
    prove_receipt(receipt, signed, checkpoint)
    return checkpoint


def prove_receipt(receipt: Receipt, signed: SignedClaim, checkpoint: Checkpoint) -> None:
    """The part of `verify_receipt` after the checkpoint's signature: ``receipt``'s log
    entry holds ``signed`` and its inclusion proof leads to the root of ``checkpoint``
    (opened from ``receipt.checkpoint`` by the caller, `open_checkpoint`: a caller that
    checks many receipts of one checkpoint checks its signature once). Raises
    ProofError (another claim, another integration time, a leaf outside the tree, a
    failed proof) or LogError (a malformed log entry)."""
    logged, integrated_at = decode_log_entry(receipt.log_entry)
    if logged != signed:
        raise ProofError("the receipt's log entry holds a different claim than this sidecar")
    if integrated_at != receipt.integrated_at:
        raise ProofError("the receipt's integration time differs from its log entry's")
    if receipt.leaf_index >= checkpoint.size:
        raise ProofError(
            f"leaf {receipt.leaf_index} is outside the checkpoint's tree of size {checkpoint.size}"
        )
    merkle.verify_inclusion(
        receipt.leaf_index,
        checkpoint.size,
        merkle.leaf_hash(receipt.log_entry),
        list(receipt.inclusion_proof),
        checkpoint.root_hash,
    )
