"""Byte-for-byte conformance with the C2SP specs the log claims to speak, checked against
the specs' own examples and test vectors, or against values computed here from the spec
text alone (hashlib and cryptography, not our modules), with real servers on real ports.

Specs: github.com/C2SP/C2SP at 5ba5ee830903e91240fc6f9f3a7a9293d49e69c9 (signed-note.md,
tlog-checkpoint.md, tlog-cosignature.md, tlog-tiles.md, tlog-witness.md)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from clients.api import ProvenanceClient
from clients.cli import main as prov_main
from provenance.core.errors import LogError, SignatureError
from provenance.log.checkpoint import NoteVerifier, generate_log_key
from provenance.witness import Witness, parse_cosigner_vkey, verify_cosignature
from tests.conftest import (
    ADMIN_TOKEN,
    ServerProc,
    enroll_key,
    post_checkpoint,
    signed_claim,
    start_web,
    witness_serve,
)

# RFC 6962 2.1: the empty tree's hash is SHA-256 of the empty string
EMPTY_ROOT = hashlib.sha256(b"").digest()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _leaf(entry: bytes) -> bytes:
    """RFC 6962 2.1: MTH({d(0)}) = SHA-256(0x00 || d(0))."""
    return hashlib.sha256(b"\x00" + entry).digest()


def _node(left: bytes, right: bytes) -> bytes:
    """RFC 6962 2.1: SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 2.1 Merkle Tree Hash over leaf hashes (k: the largest power of 2 < n)."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return _node(_mth(leaves[:k]), _mth(leaves[k:]))


def _body(origin: str, size: int, root: bytes, *extensions: str) -> str:
    """tlog-checkpoint "Note text": origin, decimal size, base64 root, extension lines."""
    return "".join(f"{line}\n" for line in (origin, str(size), _b64(root), *extensions))


# --- tlog-witness "add-checkpoint": status codes ------------------------------------


def test_witness_answers_422_where_tlog_witness_says_422(tmp_path: Path) -> None:
    """tlog-witness "add-checkpoint" asks for 422 Unprocessable Entity in three cases the
    witness answered otherwise: "A checkpoint of size zero MUST have the root hash of the
    empty tree ... Otherwise, the witness MUST respond with a 422" (was 400); "If the proof
    is not empty when the old size is zero ... MUST respond with a 422" (was 400); "If the
    old size matches the checkpoint size, the witness MUST check that the root hashes are
    also identical. If they don't match, the witness MUST respond with a 422" (was 409).
    The 409 of a stale old size (with the witness's size) and the 400 of an old size
    above the checkpoint's stay as they were; nothing refused is saved or cosigned."""
    origin = "conformance.test/log"
    log = generate_log_key(tmp_path / "log.pem", origin)
    leaves = [_leaf(b"entry %d" % i) for i in range(3)]
    with witness_serve(tmp_path, log.verifier_key()) as (url, _):
        bogus_empty = log.sign_text(_body(origin, 0, bytes(32)))
        assert post_checkpoint(url, f"old 0\n\n{bogus_empty}")[0] == 422
        three = log.sign_text(_body(origin, 3, _mth(leaves)))
        with_proof = f"old 0\n{_b64(leaves[0])}\n\n{three}"
        assert post_checkpoint(url, with_proof)[0] == 422
        assert not list((tmp_path / "wstate").glob("*.json"))  # nothing saved
        status, text = post_checkpoint(url, f"old 0\n\n{three}")
        assert status == 200 and text.startswith("\u2014 witness.test/w1 "), text
        fork = log.sign_text(_body(origin, 3, _mth([*leaves[:2], _leaf(b"other")])))
        assert post_checkpoint(url, f"old 3\n\n{fork}")[0] == 422
        # unchanged: a stale old size is 409 with the size cosigned, old above size 400
        assert post_checkpoint(url, f"old 0\n\n{fork}") == (409, "3\n")
        assert post_checkpoint(url, f"old 4\n\n{three}")[0] == 400
        assert post_checkpoint(url, f"old 3\n\n{three}")[0] == 200  # still at the tree cosigned


# --- tlog-cosignature: the witness's cosignature line ------------------------------


def _check_cosignature(text: str, vkey: str, body: str, key_file: Path) -> int:
    """Check a witness's 200 answer ``text`` against tlog-cosignature "Format" and
    "Ed25519 signed message", from the spec text alone: one line ``— <name>
    base64(key id || u64 timestamp || 64-byte Ed25519 signature)``, the key id
    SHA-256(name || "\\n" || 0x04 || public key)[:4], the signature over
    ``cosignature/v1\\ntime <timestamp>\\n`` and the whole checkpoint ``body``; the
    witness's vkey ``<name>+hex(key id)+base64(0x04 || public key)`` (signed-note "Verifier
    keys"). The public key comes from the witness's own key file. Returns the timestamp."""
    private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(private, Ed25519PrivateKey)
    public = private.public_key().public_bytes_raw()
    assert text.endswith("\n") and text.count("\n") == 1, text
    dash, name, blob = text[:-1].split(" ")
    assert dash == "\u2014"
    raw = base64.b64decode(blob, validate=True)
    assert len(raw) == 4 + 8 + 64 and base64.b64encode(raw).decode() == blob
    key_id = hashlib.sha256(name.encode() + b"\n\x04" + public).digest()[:4]
    assert raw[:4] == key_id
    assert vkey == f"{name}+{key_id.hex()}+{_b64(bytes([4]) + public)}"
    timestamp = int.from_bytes(raw[4:12], "big")
    assert 0 < timestamp < 2**63 and abs(timestamp - time.time()) < 600
    message = f"cosignature/v1\ntime {timestamp}\n{body}".encode()
    Ed25519PublicKey.from_public_bytes(public).verify(raw[12:], message)  # raises if not
    return timestamp


def test_witness_cosignature_is_byte_for_byte_tlog_cosignature(tmp_path: Path) -> None:
    """The cosignature line of `prov witness serve` and its printed key, checked field by
    field against tlog-cosignature from the spec text (see `_check_cosignature`)."""
    origin = "conformance.test/log"
    log = generate_log_key(tmp_path / "log.pem", origin)
    body = _body(origin, 2, _mth([_leaf(b"a"), _leaf(b"b")]))
    with witness_serve(tmp_path, log.verifier_key()) as (url, vkey):
        status, text = post_checkpoint(url, f"old 0\n\n{log.sign_text(body)}")
        assert status == 200, text
        _check_cosignature(text, vkey, body, tmp_path / "witness.pem")


def test_witness_cosigns_checkpoints_with_extension_lines(tmp_path: Path) -> None:
    """tlog-checkpoint "Note text": "Any following lines are extension lines, opaque and
    OPTIONAL", and tlog-cosignature "Ed25519 signed message": extension lines "if present
    MUST be included in the cosigned message". The witness refused (400, "unknown
    checkpoint extension lines") any checkpoint with an extension line other than this
    log's own ``time``, so it could witness no other log that uses them. It now cosigns
    them, the lines inside the signed message; the log's own checkpoints are still read
    strictly where they are our log's (receipts, audits)."""
    origin = "conformance.test/log"
    log = generate_log_key(tmp_path / "log.pem", origin)
    body = _body(origin, 1, _leaf(b"a"), "example.com/ext 12", "time 1679315147")
    with witness_serve(tmp_path, log.verifier_key()) as (url, vkey):
        status, text = post_checkpoint(url, f"old 0\n\n{log.sign_text(body)}")
        assert status == 200, text
        _check_cosignature(text, vkey, body, tmp_path / "witness.pem")


def test_witness_takes_16_post_quantum_sized_signatures(tmp_path: Path) -> None:
    """signed-note "Format": verifiers "MUST accept at least up to 16 signatures. Remember
    that post-quantum signatures can be up to nearly 5kB in size." A checkpoint with the
    log's signature and 15 others of 4,900 bytes (ignored: unknown keys) is about 99 kB;
    the witness refused any body over 64 KiB (400). It now reads up to 128 KiB."""
    origin = "conformance.test/log"
    log = generate_log_key(tmp_path / "log.pem", origin)
    body = _body(origin, 1, _leaf(b"a"))
    note = log.sign_text(body)
    for i in range(15):
        note += f"\u2014 pq{i}.example/witness {_b64(os.urandom(4 + 4900))}\n"
    assert len(note.encode()) > 96_000  # 64 KiB is 65,536
    with witness_serve(tmp_path, log.verifier_key()) as (url, vkey):
        status, text = post_checkpoint(url, f"old 0\n\n{note}")
        assert status == 200, text
        _check_cosignature(text, vkey, body, tmp_path / "witness.pem")


# --- tlog-tiles: what /tlog/ serves ---------------------------------------------------


def _entries(bundle: bytes) -> list[bytes]:
    """tlog-tiles "Log entries": "sequences of big-endian uint16 length-prefixed log
    entries"."""
    out, pos = [], 0
    while pos < len(bundle):
        length = int.from_bytes(bundle[pos : pos + 2], "big")
        out.append(bundle[pos + 2 : pos + 2 + length])
        assert len(out[-1]) == length, "a truncated entry"
        pos += 2 + length
    return out


def _get(url: str) -> tuple[bytes, str, str]:
    """GET ``url`` without compression: (body, Content-Type, Cache-Control)."""
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read(), r.headers["Content-Type"], r.headers["Cache-Control"]


def test_partial_tiles_of_every_checkpoint_the_log_signed_are_served(
    tmp_path: Path, server: ServerProc
) -> None:
    """tlog-tiles "Partial Tiles": "Logs MUST serve partial tiles corresponding to tree
    sizes for which a checkpoint was produced". The log signs a checkpoint per batch and
    hands it out in receipts, but `prov log export-tiles` writes the partial tiles of the
    size it exports only, so a client holding a receipt's checkpoint of a smaller size got
    404 for its partial tile and entry bundle from `prov web --tiles-dir`. Each is now
    served, cut from the wider tile; checked from the spec alone: the bundle's uint16
    big-endian entries hash (RFC 6962, 0x00 prefix) to the tile's hashes, whose Merkle
    Tree Hash is the root line of the checkpoint the receipt carries."""
    out = tmp_path / "tiles"
    checkpoints = {}
    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN) as client:
        key = enroll_key(client)
        prev = b""
        for seq in range(1, 6):
            signed = signed_claim(key, seq, prev=prev)
            receipt, _ = client.submit(signed)
            prev = signed.claim_hash
            size = int(receipt.checkpoint.split("\n")[1])
            checkpoints[size] = receipt.checkpoint
    export = ["log", "export-tiles", str(out), "--db", str(server.db)]
    assert prov_main(export) == 0
    exported = int((out / "checkpoint").read_text().split("\n")[1])
    assert exported == 6 and len([s for s in checkpoints if s < exported]) >= 3
    web = start_web(server.address, "--tiles-dir", str(out))
    try:
        for size, note in sorted(checkpoints.items()):
            suffix = "" if size == 256 else f".p/{size}"
            tile, ctype, cache = _get(f"{web.address}/tlog/tile/0/000{suffix}")
            assert ctype == "application/octet-stream" and "max-age" in cache
            bundle, ctype, _ = _get(f"{web.address}/tlog/tile/entries/000{suffix}")
            assert ctype == "application/octet-stream"
            entries = _entries(bundle)
            assert len(entries) == size and len(tile) == 32 * size
            leaves = [_leaf(e) for e in entries]
            assert b"".join(leaves) == tile
            assert _b64(_mth(leaves)) == note.split("\n")[2], size
    finally:
        web.stop()


def test_a_partial_tile_is_cut_from_the_full_tile_once_the_partial_is_gone(
    tmp_path: Path,
) -> None:
    """The export deletes a partial tile once the full one is written (tlog-tiles: "MAY
    delete any partial tile once the corresponding full tile is either available"); a
    partial tile of a checkpoint below it is still served, from the full tile's first
    hashes and entries. A file that is not a whole tile is no source: 500, the server's
    file being damaged (a 404, as before, told a client the log lacks the tile)."""
    entries = [b"entry %d" % i * (i % 7) for i in range(256)]
    (tmp_path / "tile/0").mkdir(parents=True)
    (tmp_path / "tile/entries").mkdir(parents=True)
    (tmp_path / "tile/0/000").write_bytes(b"".join(_leaf(e) for e in entries))
    bundle = b"".join(len(e).to_bytes(2, "big") + e for e in entries)
    (tmp_path / "tile/entries/000").write_bytes(bundle)
    (tmp_path / "tile/0/001").write_bytes(bytes(8191))  # a damaged full tile
    web = start_web("127.0.0.1:1", "--tiles-dir", str(tmp_path))
    try:
        base = f"{web.address}/tlog/tile"
        for width in (1, 5, 255):
            tile, _, cache = _get(f"{base}/0/000.p/{width}")
            assert tile == b"".join(_leaf(e) for e in entries[:width])
            assert cache == "public, max-age=60"
            assert _entries(_get(f"{base}/entries/000.p/{width}")[0]) == entries[:width]
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{base}/0/001.p/3")
        assert e.value.code == 500 and b"damaged" in e.value.read()
    finally:
        web.stop()


# --- signed-note: keys and names ------------------------------------------------------

# signed-note "Verifier keys", "Example": this key verifies this note.
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppz"
    "i2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)


def test_the_signed_note_spec_example_verifies() -> None:
    """The example of signed-note "Verifier keys": the vkey parses to the name, the key
    id is SHA-256(name || 0x0A || 0x01 || key)[:4] (computed here), and the note opens to
    its text; one changed byte of the text fails."""
    verifier = NoteVerifier.from_vkey(SPEC_VKEY)
    public = base64.b64decode(SPEC_VKEY.split("+", 2)[2])
    assert public[0] == 0x01 and len(public) == 33
    key_id = hashlib.sha256(b"example.com/foo\n" + public).digest()[:4]
    assert key_id.hex() == "530d903a" == verifier.key_id.hex()
    assert verifier.open(SPEC_NOTE) == "This is an example message.\n"
    with pytest.raises(SignatureError):
        verifier.open(SPEC_NOTE.replace("example message", "example messagE"))


@pytest.mark.parametrize("name", ["witness example/w1", "witness.example/\u00a0w1", ""])
def test_a_cosigner_key_whose_name_breaks_the_name_rules_is_refused(name: str) -> None:
    """signed-note "Format": "Key names MUST be non-empty and MUST NOT contain any Unicode
    spaces or plus (U+002B) characters." A cosigner vkey (``prov serve --witness``,
    ``--witness`` of the verifiers) with a space in its name, and the right key id for it,
    was taken; its cosignature lines can never be read (a space ends the name in a
    signature line). Now a LogError, as a log's verifier key was."""
    public = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    key_id = hashlib.sha256(name.encode() + b"\n\x04" + public).digest()[:4]
    vkey = f"{name}+{key_id.hex()}+{_b64(bytes([4]) + public)}"
    with pytest.raises(LogError, match="name"):
        parse_cosigner_vkey(vkey)


# --- tlog-witness "Monitor Retrieval Mechanism" ------------------------------------------


def test_witness_serves_the_checkpoint_it_cosigned_to_monitors(tmp_path: Path) -> None:
    """tlog-witness "Monitor Retrieval Mechanism": "A witness SHOULD serve a recent
    checkpoint for each log it cosigned" at ``GET <monitoring prefix>/<origin
    hash>/checkpoint`` (SHA-256 of the origin, lowercase hex); it "MUST include the
    cosignature(s) from the witness's key(s) that were returned from add-checkpoint and
    the cosignature from the log key(s) that the witness verified"; "If the witness has
    never cosigned a checkpoint for that log, it MUST respond with a 404". The witness
    served no such path (404 for every log). Checked here: 404 before any cosignature,
    then the body, the log's line (verified with its public key) and the very line
    add-checkpoint returned; a line by an unknown key in the request is not repeated."""
    origin = "conformance.test/log"
    log = generate_log_key(tmp_path / "log.pem", origin)
    origin_hash = hashlib.sha256(origin.encode()).hexdigest()
    body = _body(origin, 1, _leaf(b"a"))
    note = log.sign_text(body)
    stranger = f"\u2014 other.example/w9 {_b64(os.urandom(4 + 72))}\n"
    with witness_serve(tmp_path, log.verifier_key()) as (url, vkey):
        for path in (origin_hash, origin_hash.upper(), "00" * 32):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"{url}/{path}/checkpoint", timeout=30)
            assert e.value.code == 404
        status, line = post_checkpoint(url, f"old 0\n\n{note}{stranger}")
        assert status == 200, line
        served, ctype, _ = _get(f"{url}/{origin_hash}/checkpoint")
        assert ctype.startswith("text/plain")
        text, signatures = served.decode().split("\n\n")
        assert text + "\n" == body
        log_line, own_line, end = signatures.split("\n")
        assert (own_line + "\n", end) == (line, "")
        assert log_line == note.split("\n\n")[1].rstrip("\n")
        _check_cosignature(line, vkey, body, tmp_path / "witness.pem")
        name, blob = log_line.split(" ")[1:]
        raw = base64.b64decode(blob)
        private = serialization.load_pem_private_key(
            (tmp_path / "log.pem").read_bytes(), password=None
        )
        assert isinstance(private, Ed25519PrivateKey)
        public = private.public_key().public_bytes_raw()
        assert (
            name == origin
            and raw[:4] == hashlib.sha256(b"%s\n\x01%s" % (name.encode(), public)).digest()[:4]
        )
        Ed25519PublicKey.from_public_bytes(public).verify(raw[4:], body.encode())
        # a state saved by an older version holds no line: a cosignature made now
        (state,) = (tmp_path / "wstate").glob("*.json")
        doc = json.loads(state.read_text())
        del doc["cosignature"]
        state.write_text(json.dumps(doc))
        served, _, _ = _get(f"{url}/{origin_hash}/checkpoint")
        fresh = served.decode().split("\n\n")[1].split("\n")[1] + "\n"
        _check_cosignature(fresh, vkey, body, tmp_path / "witness.pem")


def test_exported_log_is_byte_for_byte_tlog_tiles(tmp_path: Path, server: ServerProc) -> None:
    """A real log of 300 entries exported and served by `prov web --tiles-dir`, read as a
    tlog-tiles client would, from the spec alone: ``checkpoint`` as ``text/plain;
    charset=utf-8`` cached a few seconds at most; the full level-0 tile ``tile/0/000``
    (8,192 bytes, long-lived cache) and the partial ``tile/0/001.p/44``, each the leaf
    hashes SHA-256(0x00 || entry) of the entries in ``tile/entries/...`` (uint16
    big-endian lengths); the level-1 tile ``tile/1/000.p/1`` holding the Merkle Tree
    Hash of the full level-0 tile; the checkpoint's lines origin, decimal size and base64
    of the MTH of all 300 leaves, signed by the log's key."""
    out = tmp_path / "tiles"
    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN) as client:
        key = enroll_key(client)
        prev = b""
        for seq in range(1, 300):  # 300 entries with the enrollment
            signed = signed_claim(key, seq, prev=prev)
            client.submit(signed)
            prev = signed.claim_hash
        vkey, origin = client.log_key()
    assert prov_main(["log", "export-tiles", str(out), "--db", str(server.db)]) == 0
    web = start_web(server.address, "--tiles-dir", str(out))
    try:
        base = f"{web.address}/tlog"
        note, ctype, cache = _get(f"{base}/checkpoint")
        assert ctype == "text/plain; charset=utf-8"
        assert int(cache.split("max-age=")[1].split(",")[0]) <= 10
        full, ctype, cache = _get(f"{base}/tile/0/000")
        assert ctype == "application/octet-stream" and len(full) == 8192
        assert "immutable" in cache and int(cache.split("max-age=")[1].split(",")[0]) >= 86400
        partial = _get(f"{base}/tile/0/001.p/44")[0]
        entries = _entries(_get(f"{base}/tile/entries/000")[0])
        entries += _entries(_get(f"{base}/tile/entries/001.p/44")[0])
        leaves = [_leaf(e) for e in entries]
        assert len(entries) == 300 and full + partial == b"".join(leaves)
        assert _get(f"{base}/tile/1/000.p/1")[0] == _mth(leaves[:256])
        text, signature = note.decode().split("\n\n")
        lines = text.split("\n")
        assert lines[:3] == [origin, "300", _b64(_mth(leaves))]
        name, blob = signature.rstrip("\n").split(" ")[1:]
        raw = base64.b64decode(blob)
        public = base64.b64decode(vkey.split("+", 2)[2])
        assert name == origin and public[0] == 0x01
        assert raw[:4] == hashlib.sha256(name.encode() + b"\n" + public).digest()[:4]
        assert vkey.split("+", 2)[1] == raw[:4].hex()
        Ed25519PublicKey.from_public_bytes(public[1:]).verify(raw[4:], (text + "\n").encode())
    finally:
        web.stop()


def _cosigned_by_hand() -> tuple[str, bytes, str, str, str]:
    """A witness's (name, key id, vkey), a log's signed note of size 1 and the witness's
    valid cosignature line on it, all computed here from the tlog-cosignature and
    signed-note text (key id: SHA-256(name || 0x0A || type || key)[:4])."""
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes_raw()
    name = "witness.example/w1"
    key_id = hashlib.sha256(name.encode() + b"\n\x04" + public).digest()[:4]
    vkey = f"{name}+{key_id.hex()}+{_b64(bytes([4]) + public)}"
    log = Ed25519PrivateKey.generate()
    log_public = log.public_key().public_bytes_raw()
    origin = "example.com/log"
    body = _body(origin, 1, _leaf(b"a"))
    log_id = hashlib.sha256(origin.encode() + b"\n\x01" + log_public).digest()[:4]
    note = f"{body}\n\u2014 {origin} {_b64(log_id + log.sign(body.encode()))}\n"
    timestamp = 1_700_000_000
    signed = private.sign(f"cosignature/v1\ntime {timestamp}\n{body}".encode())
    good = f"\u2014 {name} {_b64(key_id + timestamp.to_bytes(8, 'big') + signed)}\n"
    return name, key_id, vkey, note, good


@pytest.mark.parametrize("length", [1, 8 + 63, 8 + 65, 8 + 2420])
def test_a_known_cosigners_line_of_the_wrong_length_rejects_the_note(length: int) -> None:
    """signed-note "Signatures": "If the key name and ID match a known key, verifiers MUST
    verify the signature. If a signature from a known key fails to verify, clients SHOULD
    reject the whole note." tlog-cosignature "Format": the key id of an Ed25519
    cosignature (type byte 0x04) fixes its signature as a ``timestamped_signature``, 8 +
    64 bytes. A line with the witness's name and key id and any other length is one that
    cannot verify. Before, `verify_cosignature` skipped such a line as if it were another
    key's and took a valid line after it; the log's own key (`NoteVerifier.open`) already
    rejected the note. Values computed here from the spec text."""
    name, key_id, vkey, note, good = _cosigned_by_hand()
    assert verify_cosignature(note + good, vkey).name == name
    odd = f"\u2014 {name} {_b64(key_id + os.urandom(length))}\n"
    with pytest.raises(SignatureError, match="does not verify"):
        verify_cosignature(note + odd + good, vkey)
    # a line of another key id (an ML-DSA-44 key of the same name: type byte 0x06) is
    # another key's, ignored
    other_id = hashlib.sha256(name.encode() + b"\n\x06" + os.urandom(1312)).digest()[:4]
    other = f"\u2014 {name} {_b64(other_id + os.urandom(8 + 2420))}\n"
    assert verify_cosignature(note + other + good, vkey).name == name


def test_a_known_cosigners_failing_line_after_a_valid_one_rejects_the_note() -> None:
    """signed-note "Signatures": "If a signature from a known key fails to verify, clients
    SHOULD reject the whole note", whichever line comes first. Before,
    `verify_cosignature` returned at the witness's first valid line, so a valid line
    followed by a second line of its name and key id that fails (a wrong signature, or
    not 72 bytes) was taken; the same lines in the other order were refused. Go's note
    package refuses a second signature of a known key too. Values from the spec text."""
    name, key_id, vkey, note, good = _cosigned_by_hand()
    assert verify_cosignature(note + good, vkey).name == name
    for bad in (key_id + os.urandom(8 + 64), key_id + os.urandom(8 + 63)):
        with pytest.raises(SignatureError, match="does not verify"):
            verify_cosignature(note + good + f"\u2014 {name} {_b64(bad)}\n", vkey)


def test_a_witness_whose_clock_went_back_never_dates_a_larger_tree_earlier(
    tmp_path: Path,
) -> None:
    """tlog-cosignature "Ed25519 signed message": "a v1 cosignature is a statement that,
    as of the specified time, the consistent tree head with the largest size the cosigner
    has observed for the log [...] has the specified root hash." A witness whose clock
    was set back (an NTP step, a restored VM) cosigned size 2 at t=1,000 after size 1 at
    t=5,000: two statements that cannot both hold (as of 5,000 the largest it had seen
    would be 1, yet it had seen 2 by 1,000). Now a cosignature of a larger tree is dated
    at least a second after the last one it returned for the log (a replay of the same
    tree included), one of the same tree no earlier than it, and never 0 (tlog-witness: "the timestamp MUST NOT be zero").
    A real `Witness` on a state folder; its clock is the one it is given."""
    origin = "conformance.test/log"
    log = generate_log_key(tmp_path / "log.pem", origin)
    signer = generate_log_key(tmp_path / "witness.pem", "witness.test/w1")
    now = [5_000.0]
    witness = Witness(
        signer,
        [log.verifier_key()],
        tmp_path / "wstate",
        clock=lambda: datetime.fromtimestamp(now[0], UTC),
    )
    leaves = [_leaf(b"a"), _leaf(b"b"), _leaf(b"c")]

    def add(old: int, size: int, proof: list[bytes]) -> int:
        body = _body(origin, size, _mth(leaves[:size]))
        head = "".join(f"{line}\n" for line in (f"old {old}", *map(_b64, proof)))
        answer = witness.add_checkpoint(f"{head}\n{log.sign_text(body)}".encode())
        assert answer.status == 200, answer
        raw = base64.b64decode(answer.body.rstrip("\n").split(" ")[2])
        timestamp = int.from_bytes(raw[4:12], "big")
        message = f"cosignature/v1\ntime {timestamp}\n{body}".encode()
        Ed25519PublicKey.from_public_bytes(signer.public_key).verify(raw[12:], message)
        return timestamp

    try:
        assert add(0, 1, []) == 5_000
        now[0] = 1_000.0  # set back
        assert add(1, 2, [leaves[1]]) == 5_001  # RFC 9162 2.1.4.1: from 1 to 2, MTH(D[1:2])
        assert add(2, 2, []) == 5_001  # the same tree again: not before it
        now[0] = 7_000.0
        assert add(2, 2, []) == 7_000  # a replay, dated now (and not saved)
        now[0] = 1_000.0
        assert add(2, 3, [leaves[2]]) == 7_001  # from 2 to 3: MTH(D[2:3])
        # a witness restarted on its folder keeps the floor
        witness.close()
        now[0] = 0.0
        witness = Witness(
            signer,
            [log.verifier_key()],
            tmp_path / "wstate",
            clock=lambda: datetime.fromtimestamp(now[0], UTC),
        )
        assert add(3, 3, []) == 7_001
    finally:
        witness.close()


def test_a_witness_whose_clock_was_far_ahead_dates_by_its_clock_again(tmp_path: Path) -> None:
    """tlog-cosignature "Format": the timestamp "is the time at which the cosignature was
    generated", and "verifiers MAY reject cosignatures with timestamps in the future".
    A witness whose clock once said year 2200 (then set right) saved a cosignature of
    that time; carried forward, every later cosignature of the log was dated 2200 and a
    second, by a process restarted on the folder too, for as long as the state lived: a
    witness such verifiers refuse for 174 years, and nothing in its log said why. Now
    a time more than `MAX_CARRY_S` ahead of the clock is not carried (the clock's is
    used) and the witness logs that it was ahead. A real `prov witness serve` on a state
    folder a `Witness` with that clock wrote."""
    from provenance.witness import MAX_CARRY_S

    origin = "conformance.test/log"
    log = generate_log_key(tmp_path / "log.pem", origin)
    signer = generate_log_key(tmp_path / "witness.pem", "witness.test/w1")
    leaves = [_leaf(b"a"), _leaf(b"b")]
    ahead = 7_258_118_400  # 2200-01-01
    witness = Witness(
        signer,
        [log.verifier_key()],
        tmp_path / "wstate",
        clock=lambda: datetime.fromtimestamp(ahead, UTC),
    )
    try:
        note = log.sign_text(_body(origin, 1, _mth(leaves[:1])))
        assert witness.add_checkpoint(f"old 0\n\n{note}".encode()).status == 200
    finally:
        witness.close()
    stderr: list[str] = []
    with witness_serve(tmp_path, log.verifier_key(), stderr) as (url, _):
        note = log.sign_text(_body(origin, 2, _mth(leaves)))
        request = urllib.request.Request(
            f"{url}/add-checkpoint",
            data=f"old 1\n{_b64(leaves[1])}\n\n{note}".encode(),
            method="POST",
        )
        before = int(time.time())
        with urllib.request.urlopen(request, timeout=30) as answer:
            line = answer.read().decode()
        after = time.time()
    raw = base64.b64decode(line.rstrip("\n").split(" ")[2])
    timestamp = int.from_bytes(raw[4:12], "big")
    assert before <= timestamp <= after, (timestamp, ahead)  # 7258118401 before
    assert MAX_CARRY_S < ahead - after
    assert "ahead of this witness's clock" in stderr[0], stderr[0][-2000:]
