"""Video soft-binding match on the vPDQ reference hashes of real footage (every frame of the
ThreatExchange test videos at 30 fps): a claim's 1 Hz sample against queries cut from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from provenance.core import video_match as match_module
from provenance.core.binding import PerceptualHash
from provenance.core.errors import BindingError
from provenance.core.video_match import MIN_COVERAGE, match_video

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
VPDQ = FIXTURES / "phash" / "video" / "vpdq-expected"


def _frames(
    name: str, step: int = 1, start: int = 0, stop: int | None = None, shift: float = 0.0
) -> list[PerceptualHash]:
    """Every step-th reference hash of frames [start, stop), times shifted back by shift s."""
    rows = (VPDQ / f"{name}.txt").read_text().split()[start:stop:step]
    out = []
    for row in rows:
        _, quality, hex_hash, seconds = row.split(",")
        out.append(
            PerceptualHash(
                "pdq", bytes.fromhex(hex_hash), int(quality), max(0.0, float(seconds) - shift)
            )
        )
    return out


@pytest.fixture(scope="module")
def claim() -> list[PerceptualHash]:
    """The claim of pattern-hd-no-bar (6.9 s): frames at 0, 1, ..., 6 s."""
    return _frames("pattern-hd-no-bar", step=30)


def test_every_frame_of_the_original_covers_the_claim(claim: list[PerceptualHash]) -> None:
    m = match_video(_frames("pattern-hd-no-bar"), claim)
    assert m.matched
    assert (m.coverage, m.window_frames, m.aligned_frames) == (1.0, 7, 7)
    assert (m.offset_seconds, m.original_start_s, m.original_end_s) == (0.0, 0.0, 6.0)
    assert m.median_distance == 0.0
    # vPDQ's shares: every claimed frame is found, but most query frames lie between them.
    assert m.matched_share_original == 1.0
    assert m.query_frames == 205  # one frame has quality below 50
    assert m.query_matched_frames == 32  # frames near the claimed instants
    assert m.matched_share_query == pytest.approx(32 / 205)


@pytest.mark.parametrize(
    ("first_frame", "offset", "covered"),
    [(60, 2.0, (2.0, 4.0)), (65, 65 / 30, (3.0, 4.0)), (80, 80 / 30, (3.0, 4.0))],
)
def test_a_clip_cut_anywhere_is_placed_in_the_original(
    claim: list[PerceptualHash], first_frame: int, offset: float, covered: tuple[float, float]
) -> None:
    clip = _frames("pattern-hd-no-bar", start=first_frame, stop=150, shift=first_frame / 30)
    m = match_video(clip, claim)
    assert m.matched and m.coverage == 1.0
    assert m.offset_seconds == pytest.approx(offset, abs=0.002)
    assert (m.original_start_s, m.original_end_s) == covered
    assert m.matched_share_original == m.aligned_frames / 7


def test_sparse_samples_cut_between_claimed_instants_do_not_match(
    claim: list[PerceptualHash],
) -> None:
    """Why queries are hashed at every frame: at 1 Hz, a clip cut 1/6 s after a claimed
    instant shares no frame with the claim, and handheld frames 5 frames apart are far."""
    sparse = _frames("pattern-hd-no-bar", step=30, start=65, stop=150, shift=65 / 30)
    m = match_video(sparse, claim)
    assert not m.matched
    assert m.aligned_frames == 0 and m.offset_seconds is None and m.original_start_s is None


def test_unrelated_footage_does_not_match(claim: list[PerceptualHash]) -> None:
    m = match_video(_frames("doorknob-hd-no-bar"), claim)
    assert not m.matched
    assert (m.coverage, m.query_matched_frames, m.original_matched_frames) == (0.0, 0, 0)
    assert m.query_frames == 60  # 60 of the 120 frames fade to black: quality < 50


def test_quality_filter_drops_flat_frames_on_both_sides() -> None:
    door = _frames("doorknob-hd-no-bar")
    m = match_video(door, _frames("doorknob-hd-no-bar", step=30))
    assert m.original_frames == 2  # the 1 Hz samples at 2 s and 3 s are near-black
    assert m.matched and m.window_frames == 2
    everything = match_video(door, _frames("doorknob-hd-no-bar", step=30), min_quality=0)
    assert everything.original_frames == 4 and everything.query_frames == 120


def test_threshold_is_inclusive(claim: list[PerceptualHash]) -> None:
    def flipped(h: PerceptualHash, bits: int) -> PerceptualHash:
        value = int.from_bytes(h.hash, "big") ^ ((1 << bits) - 1)
        return PerceptualHash("pdq", value.to_bytes(32, "big"), h.quality, h.timestamp_seconds)

    at = match_video([flipped(h, 31) for h in claim], claim)
    assert at.matched and at.median_distance == 31.0
    past = match_video([flipped(h, 32) for h in claim], claim)
    assert not past.matched and past.aligned_frames == 0


def test_coverage_decides(claim: list[PerceptualHash]) -> None:
    """A query whose first half is the original and second half other footage covers
    about half of its window."""
    half = _frames("pattern-hd-no-bar", stop=105)
    other = [
        PerceptualHash("pdq", h.hash, h.quality, 3.5 + i / 30)
        for i, h in enumerate(_frames("pattern-hd-no-bar", start=0, stop=105)[::-1])
    ]
    m = match_video(half + other, claim)
    assert (m.window_frames, m.aligned_frames) == (7, 4)
    assert m.matched == (4 / 7 >= MIN_COVERAGE)
    assert not match_video(half + other, claim, min_coverage=0.6).matched


def test_blocks_give_the_same_answer(
    claim: list[PerceptualHash], monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = _frames("pattern-hd-no-bar", start=65, stop=150, shift=65 / 30)
    whole = match_video(clip, claim)
    monkeypatch.setattr(match_module, "_BLOCK_PAIRS", 10)
    assert match_video(clip, claim) == whole


def test_empty_and_malformed_inputs(claim: list[PerceptualHash]) -> None:
    m = match_video([], claim)
    assert not m.matched and m.query_frames == 0 and m.window_frames == 0
    assert not match_video(claim, []).matched
    bad = PerceptualHash.__new__(PerceptualHash)
    object.__setattr__(bad, "hash", b"\x00" * 31)
    object.__setattr__(bad, "quality", 100)
    object.__setattr__(bad, "timestamp_seconds", 0.0)
    with pytest.raises(BindingError, match="32 bytes"):
        match_video([bad], claim)
