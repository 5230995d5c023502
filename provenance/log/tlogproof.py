"""Receipts in the C2SP tlog-proof format (c2sp.org/tlog-proof, "Format").

A proof is text lines separated by U+000A::

    c2sp.org/tlog-proof@v1
    extra <base64 of the leaf data>
    index <leaf index, decimal>
    <base64 inclusion proof hash, one per line, leaf's sibling first>

    <the signed checkpoint, verbatim>

The spec's optional ``extra`` line carries "additional data necessary to reconstruct
the record hash"; ours is always present and holds the leaf data (our LogEntry: the
signed claim and the log's integration time), so a proof holds exactly what a receipt
does and `decode_tlog_proof` gives back the `Receipt` that `provenance.log.receipt.
verify_receipt` checks. The extra data is never trusted as such: the verifier hashes it
as the leaf (RFC 9162 2.1.1) and proves its inclusion under the signed checkpoint
(RFC 9162 2.1.3.2). Witness cosignatures on the checkpoint (c2sp.org/tlog-cosignature)
are kept verbatim and ignored by the log-key check. The sidecar keeps its own form.
"""

from __future__ import annotations

import base64
import re

from provenance.core import merkle
from provenance.core.claims import Receipt
from provenance.core.errors import ClaimError, LogError
from provenance.log.checkpoint import b64decode_strict
from provenance.wire.convert import decode_log_entry

HEADER = "c2sp.org/tlog-proof@v1"
"""First line of every tlog-proof."""

FILE_SUFFIX = ".tlog-proof"
"""File extension the spec recommends."""

MAX_PROOF_BYTES = 1 << 20
"""Largest tlog-proof read (a receipt is a few KiB; the checkpoint may carry cosignatures)."""

_INDEX_RE = re.compile(r"0|[1-9][0-9]{0,19}")  # bounded: int() refuses 4,300 digits
_EXTRA = "extra "
_INDEX = "index "


def encode_tlog_proof(receipt: Receipt) -> str:
    """The receipt as a tlog-proof (see module docstring); UTF-8 text ending in a newline."""
    lines = [
        HEADER,
        _EXTRA + base64.b64encode(receipt.log_entry).decode("ascii"),
        _INDEX + str(receipt.leaf_index),
        *(base64.b64encode(h).decode("ascii") for h in receipt.inclusion_proof),
        "",
    ]
    return "\n".join(lines) + "\n" + receipt.checkpoint


#: The byte order mark some editors (Windows Notepad before 2019) put before UTF-8 text.
_BOM = "\ufeff"


def is_tlog_proof(data: bytes) -> bool:
    """Whether ``data`` starts with the tlog-proof header line (ended by LF, or by CR or
    CRLF, or after a UTF-8 byte order mark: a proof an editor converted, which
    `decode_tlog_proof` refuses by name rather than it being read as something else)."""
    return data.removeprefix(_BOM.encode()).startswith(
        ((HEADER + "\n").encode(), (HEADER + "\r").encode())
    )


def decode_tlog_proof(text: str) -> Receipt:
    """Parse a tlog-proof written by `encode_tlog_proof` (or any tlog-proof of our log).

    Returns the receipt it holds, not yet verified (use `verify_receipt`). Raises LogError
    naming what is malformed: the header, a missing ``extra`` line (our leaf data), the
    index, a proof line that is not one base64 SHA-256 hash, the blank line, or leaf data
    that is not one of our log entries; a byte order mark, and CRLF or CR line endings on
    any line, by name (the format's lines end with LF, U+000A, the checkpoint holds no
    other control character, and its signature covers it: a proof converted by an editor
    or git's autocrlf is not read as if it were the text that was signed).
    """
    if len(text) > MAX_PROOF_BYTES:
        raise LogError(f"a tlog-proof is at most {MAX_PROOF_BYTES} bytes")
    if text.startswith(_BOM):
        raise LogError(
            "the tlog-proof starts with a byte order mark (U+FEFF), as some editors save"
            " UTF-8; the tlog-proof format starts with its header line: remove the mark"
            " (three bytes EF BB BF) and verify again"
        )
    if "\r" in text:
        ends = "uses CRLF" if "\r\n" in text else "has carriage returns (U+000D) for"
        raise LogError(
            f"the tlog-proof {ends} line endings; the tlog-proof format needs LF (U+000A),"
            " as its checkpoint was signed with them: convert it back (dos2unix FILE, or"
            " git with core.autocrlf off) and verify again"
        )
    if text.partition("\n")[0] != HEADER:  # first: another file is told what it lacks
        raise LogError(f"not a tlog-proof: the first line is not {HEADER!r}")
    head, sep, checkpoint = text.partition("\n\n")
    if not sep:
        raise LogError("tlog-proof has no blank line before its checkpoint")
    lines = head.split("\n")
    if len(lines) < 3 or not lines[1].startswith(_EXTRA):
        raise LogError(
            "tlog-proof has no 'extra' line: this log's proofs carry the leaf data there,"
            " without which the leaf hash cannot be reconstructed"
        )
    log_entry = b64decode_strict(lines[1][len(_EXTRA) :], "tlog-proof extra data")
    if not lines[2].startswith(_INDEX) or not _INDEX_RE.fullmatch(lines[2][len(_INDEX) :]):
        raise LogError(
            "tlog-proof's third line is not 'index N' (ASCII decimal, no leading zeros, at"
            " most 20 digits)"
        )
    index = int(lines[2][len(_INDEX) :])
    if index >= 2**63:
        raise LogError(f"tlog-proof index {index} is out of range")
    proof = []
    for n, line in enumerate(lines[3:], 1):
        value = b64decode_strict(line, f"tlog-proof proof line {n}")
        if len(value) != merkle.HASH_SIZE:
            raise LogError(f"tlog-proof proof line {n} is {len(value)} bytes, not a SHA-256 hash")
        proof.append(value)
    try:
        _, integrated_at = decode_log_entry(log_entry)
    except ClaimError as e:
        raise LogError(f"tlog-proof extra data is not a log entry of this log: {e}") from e
    return Receipt(index, integrated_at, checkpoint, tuple(proof), log_entry)
