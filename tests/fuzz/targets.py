"""Fuzz targets: one per parser that reads untrusted bytes.

Each target takes arbitrary bytes, feeds them to one parser the way the product does,
and checks what the parser promises. A `ProvenanceError` is the documented answer to
bad input and counts as success; any other exception is a bug (the harness reports it
as a crash and the input becomes a regression test in tests/test_fuzz_regressions.py).
Some targets also check a round trip (what parses re-encodes to stable bytes).

The keys and objects below are fixed (seeded), so the seeds built by `seeds.py` carry
signatures and receipts these targets accept, and the fuzzer reaches past the
signature checks from them.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from python_multipart.multipart import MultipartParser

from clients.scan.sources import (
    EntryItem,
    FileItem,
    HashedItem,
    RefusedItem,
    ScanLimits,
    iter_items,
)
from provenance.c2pa.container import strip_manifest_store
from provenance.core import merkle
from provenance.core.claims import Claim, HardBinding, Receipt, SignedClaim
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, sign_payload
from provenance.core.errors import ProvenanceError
from provenance.core.keys import DeviceKey
from provenance.core.registry import check_claim_shape
from provenance.log.checkpoint import Checkpoint, LogSigner, NoteVerifier, open_checkpoint
from provenance.log.receipt import verify_receipt
from provenance.media.assets import AssetLimits
from provenance.media.image import SNIFF_BYTES, decode_image, sniff_media_type
from provenance.media.inspect import InspectConfig, Upload, inspect_upload
from provenance.web.errors import WebError
from provenance.web.formparts import Preamble
from provenance.web.upload import _Form, _write
from provenance.wire import convert as wire
from provenance.wire.sidecar import decode_sidecar, encode_sidecar

#: Origin (note key name) of the fixed log key.
LOG_ORIGIN = "fuzz.example/log"
#: The fixed device key and log key (deterministic, so seeds stay valid across runs).
DEVICE_KEY = DeviceKey.from_private_bytes(hashlib.sha256(b"fuzz device key").digest())
LOG_SIGNER = LogSigner(
    Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"fuzz log key").digest()), LOG_ORIGIN
)
LOG_VERIFIER = NoteVerifier(LOG_ORIGIN, LOG_SIGNER.public_key)
WHEN = datetime(2026, 11, 29, 12, 0, 0, 250000, tzinfo=UTC)


def sample_signed_claim(sequence: int = 1, media_type: str = "image/jpeg") -> SignedClaim:
    """A validly signed claim of the fixed device key for a made-up capture."""
    claim = Claim(
        device_id=DEVICE_KEY.key_id,
        sequence=sequence,
        captured_at=WHEN,
        media_type=media_type,
        size_bytes=1234,
        hard_binding=HardBinding(hashlib.sha256(b"capture %d" % sequence).digest()),
        width=64,
        height=48,
        prev_claim_hash=hashlib.sha256(b"previous").digest() if sequence > 1 else b"",
        metadata={"app": "fuzz/1"},
    )
    data = wire.encode_claim(claim)
    return SignedClaim(
        PAYLOAD_TYPE_CLAIM,
        data,
        DEVICE_KEY.key_id,
        sign_payload(DEVICE_KEY, PAYLOAD_TYPE_CLAIM, data),
    )


def sample_receipt(signed: SignedClaim, leaves: int = 5, index: int = 3) -> Receipt:
    """A receipt for ``signed`` as leaf ``index`` of a log of ``leaves`` entries."""
    tree = merkle.MemoryTree()
    entry = wire.encode_log_entry(signed, WHEN)
    for i in range(leaves):
        tree.append(entry if i == index else b"other entry %d" % i)
    note = LOG_SIGNER.sign(Checkpoint(LOG_ORIGIN, leaves, tree.root(), WHEN))
    proof = merkle.inclusion_proof(index, leaves, tree.get_nodes)
    return Receipt(index, WHEN, note, tuple(proof), entry)


SIGNED = sample_signed_claim()


# ---------------------------------------------------------------- targets


def fuzz_sidecar(data: bytes) -> None:
    """`decode_sidecar`, the claim inside, its receipt, and the round trip (what decodes
    re-encodes to bytes that decode and re-encode to the same bytes)."""
    sidecar = decode_sidecar(data)
    encoded = encode_sidecar(sidecar)
    if encode_sidecar(decode_sidecar(encoded)) != encoded:
        raise AssertionError(f"sidecar round trip changed it: {sidecar!r}")
    claim = sidecar.claim
    check_claim_shape(sidecar.signed_claim, claim)
    if sidecar.receipt is not None:
        verifier = (
            NoteVerifier.from_vkey(sidecar.log_verifier_key)
            if sidecar.log_verifier_key
            else LOG_VERIFIER
        )
        verify_receipt(sidecar.receipt, sidecar.signed_claim, verifier)


def fuzz_wire(data: bytes) -> None:
    """Claim, log entry and receipt decoding (the first byte picks one), with the claim
    shape rules, the receipt's offline verification, and re-encoding round trips."""
    if not data:
        return
    kind, body = data[0] % 3, data[1:]
    if kind == 0:
        claim = wire.decode_claim(body)
        encoded = wire.encode_claim(claim)
        if wire.encode_claim(wire.decode_claim(encoded)) != encoded:
            raise AssertionError(f"claim round trip changed it: {claim!r}")
        check_claim_shape(SignedClaim(PAYLOAD_TYPE_CLAIM, body, claim.device_id, b""), claim)
    elif kind == 1:
        encoded = wire.encode_log_entry(*wire.decode_log_entry(body))
        if wire.encode_log_entry(*wire.decode_log_entry(encoded)) != encoded:
            raise AssertionError("log entry round trip changed it")
    else:
        receipt = wire.decode_receipt(body)
        encoded = wire.encode_receipt(receipt)
        if wire.encode_receipt(wire.decode_receipt(encoded)) != encoded:
            raise AssertionError(f"receipt round trip changed it: {receipt!r}")
        verify_receipt(receipt, SIGNED, LOG_VERIFIER)


def fuzz_checkpoint(data: bytes) -> None:
    """Checkpoint bodies (canonical: what parses re-serializes to the same text), signed
    notes opened with the fixed log key, and verifier key strings."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # notes reach the parser as protobuf strings: always valid UTF-8
    try:
        checkpoint = Checkpoint.parse_body(text)
    except ProvenanceError:
        pass
    else:
        if checkpoint.body().decode() != text:
            raise AssertionError(f"checkpoint {text!r} parses but is not canonical")
    try:
        open_checkpoint(text, LOG_VERIFIER)
    except ProvenanceError:
        pass
    verifier = NoteVerifier.from_vkey(text)
    material = base64.b64encode(b"\x01" + verifier.public_key).decode()
    if f"{verifier.name}+{verifier.key_id.hex()}+{material}" != text:
        raise AssertionError(f"verifier key {text!r} parses but is not canonical")


_STRIP_TYPES = ("image/jpeg", "image/png", "video/mp4")


def fuzz_c2pa_strip(data: bytes) -> None:
    """`strip_manifest_store` for JPEG, PNG and BMFF (the first byte picks the type);
    stripping is idempotent and never grows a file."""
    if not data:
        return
    media_type, body = _STRIP_TYPES[data[0] % 3], data[1:]
    out = strip_manifest_store(body, media_type)
    if len(out) > len(body):
        raise AssertionError("stripping the manifest store made the file larger")
    if strip_manifest_store(out, media_type) != out:
        raise AssertionError("stripping is not idempotent")


#: Small limits, so every input decodes quickly.
FUZZ_ASSET_LIMITS = AssetLimits(max_bytes=1 << 20, max_image_bytes=1 << 20, max_pixels=1 << 18)


def fuzz_media(data: bytes) -> None:
    """Sniffing, still-image decoding under a pixel limit, and the server's inspection of
    an upload (images only: video goes to a decoder process)."""
    media_type = sniff_media_type(data[:SNIFF_BYTES])
    if media_type is not None and media_type.startswith("video/"):
        return
    try:
        image = decode_image(data, max_pixels=FUZZ_ASSET_LIMITS.max_pixels)
    except ProvenanceError:
        pass
    else:
        if image.media_type != media_type:
            raise AssertionError(f"decoded as {image.media_type}, sniffed as {media_type}")
    with Upload(max_bytes=FUZZ_ASSET_LIMITS.max_bytes) as upload:
        upload.write(data)
        inspect_upload(upload, InspectConfig(limits=FUZZ_ASSET_LIMITS), lenient=len(data) % 2 == 0)


#: Small limits, so a bomb is refused after little work.
FUZZ_SCAN_LIMITS = ScanLimits(
    assets=FUZZ_ASSET_LIMITS,
    max_entries=64,
    max_total_bytes=4 << 20,
    ratio_min_bytes=64 << 10,
    max_nested_bytes=1 << 20,
)
# a memory-backed folder where there is one: the input file is rewritten on every run
_ARCHIVE_DIR = Path(
    tempfile.mkdtemp(
        prefix="prov-fuzz-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    )
)
atexit.register(shutil.rmtree, _ARCHIVE_DIR, True)


def fuzz_archive(data: bytes) -> None:
    """The scanner's archive reader on a file holding ``data`` (zip, tar, compressed tar):
    it must yield items and never raise; a refused entry is an item with a reason; no two
    items share a ref (a shared ref would hide one of them from the scan's report)."""
    path = _ARCHIVE_DIR / "input.zip"
    path.write_bytes(data)
    refs: set[str] = set()
    for item in iter_items([os.fspath(path)], FUZZ_SCAN_LIMITS):
        if item.ref in refs:
            raise AssertionError(f"two items share the ref {item.ref!r}")
        refs.add(item.ref)
        if not isinstance(item, FileItem | EntryItem | HashedItem | RefusedItem):
            raise AssertionError(f"unexpected item {item!r}")
        if isinstance(item, RefusedItem) and not item.error:
            raise AssertionError(f"refused without a reason: {item!r}")
        if (
            isinstance(item, EntryItem | HashedItem)
            and item.size > FUZZ_SCAN_LIMITS.max_total_bytes
        ):
            raise AssertionError(f"entry over the byte limit: {item.ref}")


#: The boundary of the forms fuzzed (as seeds.py writes them), and a small preamble
#: bound and file limit, so inputs reach them.
FORM_BOUNDARY = b"XyZ"
FORM_PREAMBLE = 256
FORM_MAX_FILE = 1024
# python-multipart writes a warning for each malformed form (the page answers it 400)
logging.getLogger("python_multipart.multipart").setLevel(logging.ERROR)


def _parse_form(body: bytes, piece: int) -> tuple[object, ...]:
    """``body`` through the web's `Preamble`, python-multipart's parser and its `_Form`
    callbacks, in pieces of ``piece`` bytes, as `Relayer.verify_form` feeds them: the
    form seen (file name, file bytes, fields), or the code of the WebError refusing it
    (its message may name the offset python-multipart stopped at, which differs)."""
    form = _Form(FORM_MAX_FILE)
    parser = MultipartParser(FORM_BOUNDARY, form.callbacks())
    preamble = Preamble(FORM_BOUNDARY, FORM_PREAMBLE)
    try:
        for at in range(0, len(body), piece):
            _write(parser, preamble.feed(body[at : at + piece]))
        _write(parser, preamble.finish())
        parser.finalize()
    except WebError as e:
        return ("refused", e.code)
    fields = sorted((name, bytes(value)) for name, value in form.fields.items())
    return ("parsed", form.ended, form.file_seen, form.filename, bytes(form.held), fields)


def fuzz_multipart(data: bytes) -> None:
    """The web page's multipart form parsing (`_parse_form`) of the body ``data[1:]``:
    only WebError refuses a form, and fed in pieces of 1-16 bytes (``data[0]``) the body
    gives the same form, or a refusal with the same code, as in one piece (a piece's
    edge once hid a preamble's end from `Preamble`)."""
    if not data:
        return
    body = data[1:]
    whole = _parse_form(body, max(1, len(body)))
    pieces = _parse_form(body, data[0] % 16 + 1)
    if whole != pieces:
        raise AssertionError(f"in one piece {whole!r}, in pieces of {data[0] % 16 + 1} {pieces!r}")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "sidecar": fuzz_sidecar,
    "wire": fuzz_wire,
    "checkpoint": fuzz_checkpoint,
    "c2pa_strip": fuzz_c2pa_strip,
    "media": fuzz_media,
    "archive": fuzz_archive,
    "multipart": fuzz_multipart,
}


def run_target(name: str, data: bytes) -> None:
    """Run one target; the project's own errors are the documented answer to bad input."""
    try:
        TARGETS[name](data)
    except ProvenanceError:
        pass


__all__ = ["TARGETS", "run_target", "sample_receipt", "sample_signed_claim"]
