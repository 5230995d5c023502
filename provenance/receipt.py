"""Offline verification of a log receipt: only the log's public key is needed.

A receipt verifies when its checkpoint carries a valid signature by the log key,
its leaf data (LogEntry) holds exactly the claim in question, and the RFC 9162
inclusion proof links the leaf hash to the checkpoint's root.
"""

from __future__ import annotations

from provenance.claims import Receipt, SignedClaim
from provenance.errors import ProofError
from provenance.log import merkle
from provenance.log.checkpoint import Checkpoint, NoteVerifier, open_checkpoint
from provenance.wire import decode_log_entry


def verify_receipt(receipt: Receipt, signed: SignedClaim, verifier: NoteVerifier) -> Checkpoint:
    """Check ``receipt`` for ``signed``; return the checkpoint it is proven against.

    Raises SignatureError (checkpoint not signed by the log key), LogError (malformed
    checkpoint) or ProofError (the receipt is for another claim, or the inclusion
    proof fails).
    """
    checkpoint = open_checkpoint(receipt.checkpoint, verifier)
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
    return checkpoint
