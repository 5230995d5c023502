"""Hard bindings (streamed SHA-256) and PDQ soft bindings against reference hashes."""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from provenance.core.binding import (
    PDQ_MATCH_THRESHOLD,
    PDQ_MIN_QUALITY,
    PerceptualHash,
    Sha256Stream,
    hamming,
    pdq_hash,
    pdq_hashes,
    pdq_match,
    perceptual_hash,
)
from provenance.core.errors import BindingError

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
PHASH = FIXTURES / "phash"
C2PA = FIXTURES / "c2pa"

with (PHASH / "README.tsv").open(newline="") as f:
    ROWS = list(csv.DictReader(f, delimiter="\t"))
# Rows whose pdqhash+Pillow column is a hash (not "-"): one per distinct image file.
PYPI_HASHES = {
    row["file"]: (row["pdqhash_0.2.8+Pillow13_hex"], int(row["pdqhash_quality"]))
    for row in ROWS
    if len(row["pdqhash_0.2.8+Pillow13_hex"]) == 64
}
REFERENCE_ROWS = [
    row for row in ROWS if row["implementation"].startswith(("cpp-reference", "java-reference"))
]


@functools.cache
def rgb_of(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 pixels of a fixture, decoded as pdqhash's README does (Pillow RGB)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@functools.cache
def pdq_of(relative: str) -> PerceptualHash:
    return pdq_hash(rgb_of(PHASH / relative))


def test_sha256_stream_nist_vector_and_size() -> None:
    stream = Sha256Stream()
    for piece in (b"a", b"", b"bc"):
        stream.update(piece)
    assert stream.digest().hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert stream.size == 3


def test_sha256_stream_digest_can_be_taken_midway() -> None:
    stream = Sha256Stream()
    stream.update(b"abc")
    stream.digest()
    stream.update(b"dbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")
    # FIPS 180-2 example "abcdbcd...nopq" (56 bytes).
    assert stream.digest().hex() == (
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    )
    assert stream.size == 56


def _streamed(data: bytes, chunk_size: int) -> tuple[bytes, int]:
    """(SHA-256, size) of ``data`` fed to a Sha256Stream ``chunk_size`` bytes at a time, as
    a caller reading a file does (the core opens no file: tests/test_layers.py)."""
    stream = Sha256Stream()
    view = memoryview(data)
    for at in range(0, len(data), chunk_size):
        stream.update(view[at : at + chunk_size])
    return stream.digest(), stream.size


@pytest.mark.parametrize("chunk_size", [1, 1000, 4096, 1 << 20])
def test_sha256_stream_in_chunks_matches_fixture_manifest(chunk_size: int) -> None:
    # MANIFEST.tsv records size and SHA-256 of every C2PA fixture.
    data = (C2PA / "generated" / "gen_ed25519_capture.jpg").read_bytes()
    digest, size = _streamed(data, chunk_size)
    assert size == 43180
    assert digest.hex() == "166b5d74b44208031832963a3ca396cae82f85fd02048657c78b5a3f332c2c51"


def test_sha256_stream_of_a_large_buffer() -> None:
    data = np.random.default_rng(7).bytes(3 * (1 << 20) + 17)
    assert _streamed(data, 1 << 20) == (hashlib.sha256(data).digest(), len(data))
    assert _streamed(data, 65536) == (hashlib.sha256(data).digest(), len(data))


def test_sha256_stream_of_nothing() -> None:
    digest, size = _streamed(b"", 4096)
    assert size == 0
    assert digest.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize("relative", sorted(PYPI_HASHES))
def test_pdq_equals_pdqhash_pillow_column(relative: str) -> None:
    expected_hex, expected_quality = PYPI_HASHES[relative]
    result = pdq_of(relative)
    assert result.algorithm == "pdq"
    assert result.hex == expected_hex
    assert result.quality == expected_quality


@pytest.mark.parametrize(
    "row",
    REFERENCE_ROWS,
    ids=[f"{r['implementation'].split('(')[0]}-{Path(r['file']).stem}" for r in REFERENCE_ROWS],
)
def test_pdq_is_close_to_cpp_and_java_references(row: dict[str, str]) -> None:
    ours = pdq_of(row["file"])
    distance = hamming(ours.hash, bytes.fromhex(row["expected_pdq_hex"]))
    assert distance == int(row["hamming_to_expected"])
    # ThreatExchange pdq/README.md: within 10 bits of the C++ reference at quality >= 80.
    assert distance <= 10
    assert ours.quality >= 80


def test_reference_rows_cover_cpp_and_java() -> None:
    assert len(REFERENCE_ROWS) == 16
    assert len(PYPI_HASHES) == 36


def test_reencoded_and_resized_copy_stays_within_threshold() -> None:
    original = rgb_of(PHASH / "pdq" / "dih" / "bridge-1-original.jpg")
    buffer = io.BytesIO()
    Image.fromarray(original).resize((640, 402), Image.Resampling.BICUBIC).save(
        buffer, "JPEG", quality=60
    )
    buffer.seek(0)
    with Image.open(buffer) as im:
        copy = pdq_hash(np.asarray(im.convert("RGB")))
    distance = hamming(pdq_hash(original).hash, copy.hash)
    assert distance <= 16
    assert pdq_match(pdq_hash(original), copy)


def test_signed_capture_and_its_stripped_reencode_match() -> None:
    # gen_reencoded_stripped.jpg is gen_ed25519_capture.jpg re-encoded by Pillow at q=80.
    capture = pdq_hash(rgb_of(C2PA / "generated" / "gen_ed25519_capture.jpg"))
    reencoded = pdq_hash(rgb_of(C2PA / "generated" / "gen_reencoded_stripped.jpg"))
    assert hamming(capture.hash, reencoded.hash) <= PDQ_MATCH_THRESHOLD
    assert pdq_match(capture, reencoded)


def test_unrelated_image_is_far() -> None:
    # README.tsv: Hamming(bridge-1-original, pen-and-coaster) = 138 in Java and pdqhash.
    bridge = pdq_of("pdq/dih/bridge-1-original.jpg")
    pen = pdq_of("pdq/misc-images/pen-and-coaster.png")
    assert hamming(bridge.hash, pen.hash) == 138
    assert not pdq_match(bridge, pen)


def test_threshold_is_inclusive() -> None:
    base = pdq_of("pdq/dih/bridge-1-original.jpg")
    value = int.from_bytes(base.hash, "big")

    def flipped(n: int) -> PerceptualHash:
        mask = (1 << n) - 1
        return PerceptualHash("pdq", (value ^ mask).to_bytes(32, "big"), base.quality)

    assert PDQ_MATCH_THRESHOLD == 31
    assert pdq_match(base, flipped(31))
    assert not pdq_match(base, flipped(32))


def test_low_quality_hashes_never_match() -> None:
    # small.jpg is a smooth gradient: quality 0 in pdqhash.
    flat = pdq_of("pdq/misc-images/small.jpg")
    assert flat.quality == 0 < PDQ_MIN_QUALITY
    assert not pdq_match(flat, flat)
    good = pdq_of("pdq/dih/bridge-1-original.jpg")
    assert not pdq_match(good, PerceptualHash("pdq", good.hash, PDQ_MIN_QUALITY - 1))
    assert pdq_match(good, PerceptualHash("pdq", good.hash, PDQ_MIN_QUALITY))
    # the bound is inclusive on either side of the comparison
    assert pdq_match(PerceptualHash("pdq", good.hash, PDQ_MIN_QUALITY), good)
    assert not pdq_match(PerceptualHash("pdq", good.hash, PDQ_MIN_QUALITY - 1), good)


def test_pdq_hash_of_frame_keeps_timestamp() -> None:
    rgb = rgb_of(PHASH / "pdq" / "misc-images" / "wee.jpg")
    assert pdq_hash(rgb, timestamp_seconds=2.5).timestamp_seconds == 2.5
    assert pdq_hash(rgb).timestamp_seconds == 0.0  # a still image


def test_pdq_hash_accepts_non_contiguous_views() -> None:
    rgb = rgb_of(PHASH / "pdq" / "dih" / "bridge-1-original.jpg")
    view = rgb[:, ::-1]
    assert pdq_hash(view).hash == pdq_hash(np.ascontiguousarray(view)).hash
    # A left-right mirror: what the PDQ fixtures call bridge-6-flipy (a separate JPEG).
    assert hamming(pdq_hash(view).hash, pdq_of("pdq/dih/bridge-6-flipy.jpg").hash) <= 10


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((8, 8), np.uint8),
        np.zeros((8, 8, 4), np.uint8),
        np.zeros((8, 8, 3), np.float32),
    ],
    ids=["gray", "rgba", "float"],
)
def test_pdq_hash_refuses_wrong_arrays(array: np.ndarray) -> None:
    with pytest.raises(BindingError, match=r"^expected an \(H, W, 3\) uint8 RGB array, got shape"):
        pdq_hash(array)


@pytest.mark.parametrize("shape", [(0, 8, 3), (8, 0, 3)], ids=["no-rows", "no-columns"])
def test_pdq_hash_refuses_empty_images(shape: tuple[int, int, int]) -> None:
    with pytest.raises(
        BindingError, match=re.escape(f"cannot hash an empty image of shape {shape}")
    ):
        pdq_hash(np.zeros(shape, np.uint8))


def test_pdq_hash_of_one_pixel_wide_image() -> None:
    # the smallest non-empty images hash (to a flat, quality-0 hash), they are not refused
    for shape in ((8, 1, 3), (1, 8, 3), (1, 1, 3)):
        assert pdq_hash(np.full(shape, 7, np.uint8)).quality == 0


@pytest.mark.parametrize(
    "fields",
    [
        ("pdq", bytes(range(32)), 100, 1.5),
        ("pdq", bytes(32), 0, 0.0),
        ("pdq", bytes(31), 100, 0.0),
        ("phash", bytes(32), 100, 0.0),
        ("pdq", bytes(32), 101, 0.0),
        ("pdq", bytes(32), -1, 0.0),
        ("pdq", bytes(32), 100, float("nan")),
        ("pdq", bytes(32), 100, float("inf")),
        ("pdq", bytes(32), 100, -0.5),
    ],
)
def test_perceptual_hash_builds_what_the_constructor_builds(
    fields: tuple[str, bytes, int, float],
) -> None:
    """The server's fast path (`perceptual_hash`) gives an equal object (same hash, repr,
    pickle) or the constructor's BindingError, message for message."""
    try:
        want = PerceptualHash(*fields)
    except BindingError as e:
        with pytest.raises(BindingError) as got:
            perceptual_hash(*fields)
        assert str(got.value) == str(e)
        return
    got_hash = perceptual_hash(*fields)
    assert type(got_hash) is PerceptualHash
    assert got_hash == want and hash(got_hash) == hash(want) and repr(got_hash) == repr(want)
    assert vars(got_hash) == vars(want)
    assert pickle.loads(pickle.dumps(got_hash)) == want
    with pytest.raises(AttributeError):  # still frozen
        got_hash.quality = 1  # type: ignore[misc]


def test_perceptual_hash_defaults_to_time_zero_as_the_constructor() -> None:
    assert vars(perceptual_hash("pdq", bytes(32), 100)) == vars(
        PerceptualHash("pdq", bytes(32), 100)
    )


@pytest.mark.parametrize("quality", [0, 57, 100])
@pytest.mark.parametrize("count", [0, 1, 8])
def test_pdq_hashes_builds_what_the_constructor_builds(quality: int, count: int) -> None:
    """A Lookup's packed hashes (`pdq_hashes`) give the objects the constructor gives, in
    order, still frozen."""
    packed = bytes(range(256))[: 32 * count]
    got = pdq_hashes(packed, quality)
    want = tuple(
        PerceptualHash("pdq", packed[k : k + 32], quality) for k in range(0, len(packed), 32)
    )
    assert got == want and [vars(h) for h in got] == [vars(h) for h in want]
    assert all(type(h) is PerceptualHash for h in got)
    assert pickle.loads(pickle.dumps(got)) == want
    if got:
        with pytest.raises(AttributeError):
            got[0].quality = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("size", "quality", "message"),
    [
        (31, 90, "packed PDQ hashes are 32 bytes each, got 31 bytes"),
        (257, 90, "packed PDQ hashes are 32 bytes each, got 257 bytes"),
        (32, 101, "PDQ quality must be in 0..100, got 101"),
        (32, -1, "PDQ quality must be in 0..100, got -1"),
    ],
)
def test_pdq_hashes_refuses_a_partial_hash_and_a_quality_out_of_range(
    size: int, quality: int, message: str
) -> None:
    with pytest.raises(BindingError) as e:
        pdq_hashes(bytes(size), quality)
    assert str(e.value) == message


def test_hamming() -> None:
    assert hamming(b"\x00\x00", b"\xff\x01") == 9
    assert hamming(b"", b"") == 0
    with pytest.raises(BindingError, match="1 and 2 bytes"):
        hamming(b"\x00", b"\x00\x00")


def test_perceptual_hash_validation() -> None:
    ok = PerceptualHash("pdq", bytes(range(32)), 100, 1.5)
    assert ok.hex == bytes(range(32)).hex()
    with pytest.raises(BindingError, match="32 bytes"):
        PerceptualHash("pdq", bytes(31), 100)
    with pytest.raises(BindingError, match="algorithm"):
        PerceptualHash("phash", bytes(32), 100)
    with pytest.raises(BindingError, match="quality"):
        PerceptualHash("pdq", bytes(32), 101)
    with pytest.raises(BindingError, match="timestamp"):
        PerceptualHash("pdq", bytes(32), 100, float("nan"))
    with pytest.raises(BindingError, match="timestamp"):
        PerceptualHash("pdq", bytes(32), 100, -0.5)
    with pytest.raises(BindingError, match="quality"):
        PerceptualHash("pdq", bytes(32), -1)
    assert PerceptualHash("pdq", bytes(32), 0, 0.0).quality == 0  # both bounds inclusive
