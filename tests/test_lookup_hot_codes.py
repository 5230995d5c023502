"""Many copies of one PDQ code in the log cost a Lookup near it neither memory nor a crash.

A video claim may carry `MAX_CLAIM_SOFT_BINDINGS` (1,000) frame hashes, and a static
scene (a camera facing a wall, or a device that means harm) gives them all one code: four
such claims, a few seconds of one device's quota, put 4,000 copies of it in the log's
near-duplicate index. Before, a search kept every hit of every query until its end and cut
each query's list to its 16 nearest only then: a Lookup of 4,200 frame hashes near that
code held 4,000 x 4,200 hits, and a real `prov serve` peaked at about 1.7 GB more (ten
times the claims: 16.6 GB, past the machine's memory).
Now each batch of hits is cut as it is found (`provenance.index.mih._nearest`).
A real server, real submissions, its peak memory read from /proc.
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clients.api import ProvenanceClient, Query
from provenance.core.binding import PerceptualHash
from provenance.core.claims import MAX_CLAIM_SOFT_BINDINGS, Claim, HardBinding
from provenance.core.errors import DeadlineError, TransportError
from provenance.core.keys import DeviceKey
from provenance.core.verify import FileFacts
from provenance.media.assets import AssetLimits, inspect_image
from provenance.server.pipeline import VerificationPipeline
from provenance.server.rpc import lookup_parts
from provenance.server.service import NEAR_SEARCHED, _in_order, _near_choice, _round_robin
from tests.conftest import (
    ADMIN_TOKEN,
    SAMPLES,
    ServerProc,
    enroll_key,
    sign_claim,
    start_server,
)
from tests.inproc import InProc
from tests.test_claim_bounds import video_claim

#: Claims of a static scene logged, each of `MAX_CLAIM_SOFT_BINDINGS` (1,000) frames.
CLAIMS = 4
#: The one code every frame of the planted claim has, and every looked-up frame.
HOT = bytes([0xA5] * 32)
#: Frames a Lookup query of a video searches at most (`service.MAX_QUERY_FRAMES`).
FRAMES = 600
#: MiB a server's peak resident memory may grow by across the Lookup (before: about 1,700).
MAX_GROWTH_MIB = 400


def _peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def _static_video_claim(key: DeviceKey, seq: int, frames: int) -> Claim:
    """A video claim whose ``frames`` sampled frames (1 a second) all hash to `HOT`."""
    return video_claim(
        key,
        seq,
        soft_bindings=tuple(PerceptualHash("pdq", HOT, 100, float(i)) for i in range(frames)),
        duration_seconds=float(frames),
    )


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_lookup_near_a_code_logged_thousands_of_times_stays_small(server: ServerProc) -> None:
    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN) as c:
        key = enroll_key(c)
        for seq in range(1, CLAIMS + 1):
            c.submit(sign_claim(key, _static_video_claim(key, seq, MAX_CLAIM_SOFT_BINDINGS)))
        frames = tuple(PerceptualHash("pdq", HOT, 100, float(i)) for i in range(FRAMES))
        queries = [
            Query(f"clip{i}", os.urandom(32), frames, media_type="video/mp4") for i in range(7)
        ]
        before = _peak_rss_mib(server.proc.pid)
        answers = c.lookup(queries)
        growth = _peak_rss_mib(server.proc.pid) - before
    assert [ref for ref, _ in answers] == [q.ref for q in queries]
    # every clip is found near the static videos (7 x 600 frame hashes, 4,000 codes each)
    assert all(r.status.name == "DERIVED" for _, r in answers), [r.status for _, r in answers]
    assert growth < MAX_GROWTH_MIB, f"the server's peak memory grew {growth:.0f} MiB"
    assert server.proc.poll() is None


def test_a_lookup_of_long_videos_stops_at_its_budget_between_files(tmp_path: Path) -> None:
    """A Lookup's time budget (--lookup-seconds) is checked between parts of at most
    `LOOKUP_PART_HASHES` hashes, not only of `LOOKUP_PART_FILES` files: 27 clips of 600
    frames near 40,000 copies of one code are one part of 32 files, about 30 s of work on
    this machine class, and before the budget of 2 s was first looked at after all of it
    (the caller's own 30 s deadline came first: "cannot reach the server"). Now the call
    is answered DEADLINE_EXCEEDED in the server's words after a file or two."""
    srv = start_server(tmp_path / "prov.db", "--lookup-seconds", "2")
    try:
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN, timeout=120) as c:
            key = enroll_key(c)
            for seq in range(1, 41):
                c.submit(sign_claim(key, _static_video_claim(key, seq, MAX_CLAIM_SOFT_BINDINGS)))
            frames = tuple(PerceptualHash("pdq", HOT, 100, float(i)) for i in range(FRAMES))
            one = Query("first", os.urandom(32), frames[:10], media_type="video/mp4")
            c.lookup([one])  # the index's tables are built for the 40,000 codes
            queries = [
                Query(f"clip{i}", os.urandom(32), frames, media_type="video/mp4") for i in range(27)
            ]
            with pytest.raises(TransportError) as got:
                c.lookup(queries)
    finally:
        srv.stop()
    assert got.value.code == "DEADLINE_EXCEEDED", got.value
    assert "the Lookup ran out of time after answering" in str(got.value), got.value
    assert "of 27 files" in str(got.value), got.value


def test_lookup_parts_hold_few_files_or_few_hashes() -> None:
    assert lookup_parts([]) == []
    assert lookup_parts([8] * 70) == [(0, 32), (32, 64), (64, 70)]
    assert lookup_parts([600] * 3) == [(0, 1), (1, 2), (2, 3)]
    assert lookup_parts([5000, 1]) == [(0, 1), (1, 2)]
    assert lookup_parts([1000, 24, 1]) == [(0, 2), (2, 3)]
    # photos and videos mixed: a video joins photos while the part holds 1,024 hashes at
    # most; a video of 4,096 frames is a part alone; a part ends exactly at 1,024 hashes
    mixed = [8] * 40 + [600] + [8] * 10 + [4096] + [8]
    assert lookup_parts(mixed) == [(0, 32), (32, 51), (51, 52), (52, 53)]
    assert lookup_parts([1024, 1024, 0, 0]) == [(0, 1), (1, 4)]
    assert lookup_parts([512, 512, 1]) == [(0, 2), (2, 3)]


@pytest.mark.parametrize("claims", [3, 9, 20])
def test_one_entrys_copies_of_a_photos_code_do_not_hide_an_honest_near_copy(
    server: ServerProc, claims: int
) -> None:
    """A hostile device logs three static-scene video claims whose 1,000 frames all have a
    public photo's PDQ code, then its key is revoked from before them; an honest device
    logged a near copy of the photo (6 bits away). A Lookup of the photo finds the honest
    entry: DERIVED from it. Before, the index's 16 answers were 16 copies of the hostile
    first claim (one log entry), the honest entry never reached the verdict, and the
    photo read REVOKED_KEY ('a copy of it proves nothing'). One device's many claims
    do not hide it either: with 9 hostile claims the 8 near candidates were 8 of them,
    with 17 (20 here) the index's 16 answers were too (REVOKED_KEY); now a device's
    claims (those its key's revocation covers, apart) hold at most
    `service.NEAR_PER_DEVICE` places of each."""
    near = bytes([HOT[0] ^ 0x3F]) + HOT[1:]  # 6 bits away
    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN) as c:
        hostile, honest = enroll_key(c, "hostile"), enroll_key(c, "honest")
        honest_leaf = c.submit(sign_claim(honest, _photo(honest, 1, near)))[0].leaf_index
        for seq in range(1, claims + 1):
            c.submit(
                sign_claim(hostile, _static_video_claim(hostile, seq, MAX_CLAIM_SOFT_BINDINGS))
            )
        c.revoke(hostile.key_id, "planted copies", datetime.now(UTC) - timedelta(hours=1))
        [(_, report)] = c.lookup(
            [Query("photo", os.urandom(32), (PerceptualHash("pdq", HOT, 100),), "image/jpeg")]
        )
    assert_derived_from(report, honest_leaf, 6)


def rocket_codes() -> tuple[Path, bytes, bytes]:
    """rocket.jpg, its PDQ code, and a code 6 bits from it (a near copy's)."""
    photo = SAMPLES / "rocket.jpg"
    data = photo.read_bytes()
    code = inspect_image(hashlib.sha256(data).digest(), data, AssetLimits()).soft.hash
    return photo, code, bytes([code[0] ^ 0x3F]) + code[1:]


def assert_derived_from(report: Any, leaf: int, distance: int | None = None) -> None:
    """``report`` (a client's VerificationReport) is DERIVED from log entry ``leaf``, at
    ``distance`` bits when given."""
    assert report.status.name == "DERIVED", report.reasons
    assert report.evidence.claim is not None
    assert report.evidence.claim.receipt is not None
    assert report.evidence.claim.receipt.leaf_index == leaf, report.reasons
    if distance is not None:
        assert report.evidence.pdq_distance == distance


def _photo(key: DeviceKey, sequence: int, code: bytes) -> Claim:
    """A photo claim of ``key`` whose one PDQ hash is ``code``."""
    return Claim(
        device_id=key.key_id,
        sequence=sequence,
        captured_at=datetime.now(UTC),
        media_type="image/jpeg",
        size_bytes=10,
        hard_binding=HardBinding(sha256=os.urandom(32)),
        soft_bindings=(PerceptualHash("pdq", code, 100),),
        width=4,
        height=3,
    )


def test_a_stolen_keys_later_claims_do_not_hide_its_devices_earlier_capture(
    server: ServerProc,
) -> None:
    """A device logs a photo; its key is stolen, the thief logs 4 claims carrying the code
    of a circulating copy of that photo (6 bits from it), and the key is revoked from
    between the two. A Lookup of the copy finds the device's own earlier capture: DERIVED
    from it (`provenance.core.verify._decide_near` prefers a capture its key's revocation
    does not cover). A per-device cap of 4 near places, tried this session (h-device50,
    reverted), failed this: the thief's 4 nearer claims took the device's places and the
    copy read REVOKED_KEY (h-revdev50)."""
    copy = bytes([HOT[0] ^ 0x3F]) + HOT[1:]  # 6 bits from the photo
    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN) as c:
        key = enroll_key(c, "stolen")
        genuine = c.submit(sign_claim(key, _photo(key, 1, HOT)))[0].leaf_index
        stolen_from = datetime.now(UTC)  # after the capture was logged, before the thief's
        for seq in range(2, 6):
            c.submit(sign_claim(key, _photo(key, seq, copy)))
        c.revoke(key.key_id, "stolen", stolen_from)
        [(_, report)] = c.lookup(
            [Query("copy", os.urandom(32), (PerceptualHash("pdq", copy, 100),), "image/jpeg")]
        )
    assert_derived_from(report, genuine, 6)


def test_planted_turns_of_a_photos_code_win_no_votes_over_a_nearer_copy(
    server: ServerProc,
) -> None:
    """Two devices log 4 claims each that carry a code 10 bits from a photo's PDQ hash and
    one 10 bits from each of its 7 turned hashes; an honest device logged a copy 6 bits
    away. A Lookup of the photo with its 8 hashes (``pdq_dihedral``) finds the honest
    copy: DERIVED at distance 6. Before, each of the 8 hashes was a vote, the 8 planted
    claims (8 votes each) took the 8 near candidates ahead of the honest one (1 vote), and
    the photo read DERIVED from a planted claim at distance 10. Now a photo's hashes are
    one vote (a video's frame and its turns likewise), and the nearest leads."""
    rng = np.random.default_rng(5)
    hashes = [HOT] + [rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(7)]

    def off(code: bytes, bits: int) -> bytes:  # ``code`` with its lowest ``bits`` bits flipped
        return (int.from_bytes(code) ^ ((1 << bits) - 1)).to_bytes(32)

    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN) as c:
        honest = enroll_key(c, "honest")
        photo = _photo(honest, 1, off(HOT, 6))
        honest_leaf = c.submit(sign_claim(honest, photo))[0].leaf_index
        for name in ("planter1", "planter2"):
            key = enroll_key(c, name)
            frames = tuple(
                PerceptualHash("pdq", off(h, 10), 100, float(i)) for i, h in enumerate(hashes)
            )
            for seq in range(1, 5):
                c.submit(
                    sign_claim(
                        key, video_claim(key, seq, soft_bindings=frames, duration_seconds=8.0)
                    )
                )
        [(_, report)] = c.lookup(
            [
                Query(
                    "photo",
                    os.urandom(32),
                    media_type="image/jpeg",
                    pdq_dihedral=b"".join(hashes),
                    pdq_quality=100,
                )
            ]
        )
    assert_derived_from(report, honest_leaf, 6)


def test_one_devices_claims_logged_before_a_restart_do_not_hide_an_honest_copy(
    any_db: Path | str,
) -> None:
    """VerifyFile and Lookup of a real photo: an honest device logged a copy of it (6 bits
    from its PDQ hash), a hostile device 20 claims carrying its exact code, and the hostile
    key is revoked from before them. Both find the honest entry, DERIVED from it, on the
    append path and after a restart (the server reads whose each leaf is only for the
    leaves a search hits, not for the whole log at start). Before, the 20 hostile
    entries took the index's 16 places and the file read REVOKED_KEY."""
    photo, code, near = rocket_codes()
    srv = start_server(any_db)
    try:
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            hostile, honest = enroll_key(c, "hostile"), enroll_key(c, "honest")
            honest_leaf = c.submit(sign_claim(honest, _photo(honest, 1, near)))[0].leaf_index
            for seq in range(1, 21):
                c.submit(sign_claim(hostile, _photo(hostile, seq, code)))
            c.revoke(hostile.key_id, "planted copies", datetime.now(UTC) - timedelta(hours=1))
            reports = [c.verify_file(photo)]
        srv.stop()
        srv = start_server(any_db)
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            reports.append(c.verify_file(photo))
            reports += [
                r
                for _, r in c.lookup(
                    [
                        Query(
                            "photo",
                            os.urandom(32),
                            (PerceptualHash("pdq", code, 100),),
                            "image/jpeg",
                        )
                    ]
                )
            ]
    finally:
        srv.stop()
    for report in reports:
        assert_derived_from(report, honest_leaf, 6)


@pytest.mark.parametrize("devices", [2, 3])
def test_a_few_hostile_devices_claims_do_not_hide_an_honest_copy(
    tmp_path: Path, devices: int
) -> None:
    """VerifyFile and Lookup of a real photo: an honest device logged a copy of it (6 bits
    from its PDQ hash); ``devices`` hostile devices (2 or 3) log 5 claims each carrying its
    exact code, and their keys are revoked from before them. Both find the honest entry,
    DERIVED from it, on the append path and after a restart. Before, each device held its
    `service.NEAR_PER_DEVICE` (4) of the 8 near candidates, nearest first: two devices
    took all 8, the honest copy never reached the verdict and the photo read REVOKED_KEY.
    Now each group's best entry comes before any group's second (index places and
    candidates alike): hiding the honest copy takes 8 groups ahead of it."""
    photo, code, near = rocket_codes()
    query = Query("photo", os.urandom(32), (PerceptualHash("pdq", code, 100),), "image/jpeg")
    db = tmp_path / "prov.db"
    srv = start_server(db)
    try:
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            honest = enroll_key(c, "honest")
            honest_leaf = c.submit(sign_claim(honest, _photo(honest, 1, near)))[0].leaf_index
            for n in range(devices):
                hostile = enroll_key(c, f"hostile{n}")
                for seq in range(1, 6):
                    c.submit(sign_claim(hostile, _photo(hostile, seq, code)))
                c.revoke(hostile.key_id, "planted copies", datetime.now(UTC) - timedelta(hours=1))
            reports = [c.verify_file(photo), c.lookup([query])[0][1]]
        srv.stop()
        srv = start_server(db)
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            reports += [c.verify_file(photo), c.lookup([query])[0][1]]
    finally:
        srv.stop()
    for report in reports:
        assert_derived_from(report, honest_leaf, 6)


def _clip_and_copy(
    rng: np.random.Generator,
) -> tuple[list[bytes], tuple[PerceptualHash, ...], tuple[PerceptualHash, ...]]:
    """A clip's 20 random frame codes, its frames (1 a second), and a copy's frames (each
    6 bits away, in time)."""
    codes = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(20)]
    clip = tuple(PerceptualHash("pdq", h, 100, float(i)) for i, h in enumerate(codes))
    copy = tuple(
        PerceptualHash("pdq", bytes([h[0] ^ 0x3F]) + h[1:], 100, float(i))
        for i, h in enumerate(codes)
    )
    return codes, clip, copy


def test_video_claims_with_every_frame_out_of_time_do_not_hide_an_honest_copy(
    server: ServerProc,
) -> None:
    """Two devices log 5 video claims each whose 20 frames carry the exact codes of a
    clip's 20 sampled frames, shuffled in time (each claim collects every frame's vote but
    none lines up with the clip); an honest device logged a copy of the clip (each frame
    6 bits away, in time). A Lookup of the clip finds the honest copy: DERIVED from it.
    Before, the 10 shuffled claims (20 votes each, at distance 0) took all 8 near
    candidates, none matched in time, and the clip read UNSIGNED."""
    rng = np.random.default_rng(11)
    codes, clip, copy = _clip_and_copy(rng)
    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN) as c:
        honest = enroll_key(c, "honest")
        honest_leaf = c.submit(
            sign_claim(honest, video_claim(honest, 1, soft_bindings=copy, duration_seconds=20.0))
        )[0].leaf_index
        for name in ("shuffler1", "shuffler2"):
            key = enroll_key(c, name)
            for seq in range(1, 6):
                order = rng.permutation(len(codes))
                frames = tuple(
                    PerceptualHash("pdq", codes[j], 100, float(i)) for i, j in enumerate(order)
                )
                c.submit(
                    sign_claim(
                        key, video_claim(key, seq, soft_bindings=frames, duration_seconds=20.0)
                    )
                )
        [(_, report)] = c.lookup([Query("clip", os.urandom(32), clip, media_type="video/mp4")])
    assert_derived_from(report, honest_leaf)


def test_a_devices_clip_second_by_votes_is_not_hidden_by_seven_devices_with_one_vote_each(
    server: ServerProc,
) -> None:
    """A device logged a claim whose 20 frames carry a clip's 20 codes out of time (its
    own loop footage, or a thief's under its key before the revocation's time: every vote,
    distance 0) and then a copy of the clip (each frame 6 bits away, in time): the copy is
    that device's second by votes. Seven other devices log one video claim each with a
    single one of the clip's codes (1 vote each, ranked far behind the copy). A Lookup of
    the clip is DERIVED from the copy, as before the round-robin (the copy ranked 2nd of
    the 9). With the round-robin alone, every group's first (8 of them, however few their
    votes) came before any group's second: the copy was left out and the clip read
    DERIVED from one of the one-frame claims ("seconds 0.0-0.0 ... 5% of this file's")."""
    rng = np.random.default_rng(12)
    codes, clip, copy = _clip_and_copy(rng)
    shuffled = tuple(
        PerceptualHash("pdq", codes[j], 100, float(i))
        for i, j in enumerate(rng.permutation(len(codes)))
    )
    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN) as c:
        device = enroll_key(c, "looping")
        c.submit(
            sign_claim(
                device, video_claim(device, 1, soft_bindings=shuffled, duration_seconds=20.0)
            )
        )
        copy_leaf = c.submit(
            sign_claim(device, video_claim(device, 2, soft_bindings=copy, duration_seconds=20.0))
        )[0].leaf_index
        for n in range(7):
            key = enroll_key(c, f"one-vote{n}")
            one = (PerceptualHash("pdq", codes[n], 100, 0.0),)
            c.submit(sign_claim(key, video_claim(key, 1, soft_bindings=one, duration_seconds=1.0)))
        [(_, report)] = c.lookup([Query("clip", os.urandom(32), clip, media_type="video/mp4")])
    assert_derived_from(report, copy_leaf)


def test_a_parts_search_still_learning_whose_its_hits_are_stops_at_the_deadline(
    inproc: InProc,
) -> None:
    """One device logged more claims at `HOT` than a search asks for (`NEAR_SEARCHED`)
    before a restart, so the first search near `HOT` learns whose they are in rounds, each
    a search again (`ProvenanceService._search_grouped`; 20,000 such claims and a clip of
    600 frames near them: 15.7 s in one part of a Lookup, where --lookup-seconds was only
    looked at between parts). With its deadline already past, the part's lookup raises
    DeadlineError after the first round (the Lookup answers DEADLINE_EXCEEDED, 'the Lookup
    ran out of time after answering ...'); a file that needs no second round is answered
    at the same past deadline, and with no deadline the same file is found (DERIVED)."""
    dev = inproc.enroll()
    for _ in range(NEAR_SEARCHED + 6):
        inproc.submit(dev.next_claim(soft_bindings=(PerceptualHash("pdq", HOT, 100),)))
    inproc.reopen()  # whose each leaf is is not known after a restart
    near = FileFacts(os.urandom(32), 10, "image/jpeg", (PerceptualHash("pdq", HOT, 100),))
    far = FileFacts(os.urandom(32), 10, "image/jpeg", (PerceptualHash("pdq", bytes(32), 100),))
    lookups = VerificationPipeline(inproc.service)
    [answered] = lookups.lookup_many([far], deadline=time.monotonic())
    assert not isinstance(answered, Exception) and answered.status.name == "UNSIGNED"
    with pytest.raises(DeadlineError) as got:
        lookups.lookup_many([near], deadline=time.monotonic())
    assert "ran out of time before its round 2" in str(got.value), got.value
    [found] = lookups.lookup_many([near])
    assert not isinstance(found, Exception) and found.status.name == "DERIVED", found


def test_places_go_round_robin_over_groups_before_depth() -> None:
    """`_round_robin` (items' groups in order of preference): every group's first item
    before any group's second, groups in the order of their first, at most 4 of one; the
    picks come back in preference order. An item ranked 9th behind 7 groups of 1-4
    nearer items still gets one of 8 places; behind 8 groups it does not."""
    assert _round_robin([], 8) == []
    assert _round_robin([5] * 10, 8) == [0, 1, 2, 3]  # one group: at most 4
    assert _round_robin([1, 1, 1, 1, 2, 2, 2, 2, 3], 8) == [0, 1, 2, 3, 4, 5, 6, 8]
    seven = [g for g in range(7) for _ in range(4)]
    assert len(seven) in _round_robin([*seven, 99], 8)  # the honest item, 29th, is in
    eight = [g for g in range(8) for _ in range(4)]
    assert len(eight) not in _round_robin([*eight, 99], 8)
    # a video's candidates also take these: the first 8 in order, at most 4 of a group
    assert _in_order([1, 1, *range(2, 9)], 8) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert _in_order([5] * 6 + [6], 8) == [0, 1, 2, 3, 6]
    # `_near_choice`: a photo's candidates are the round-robin's, a video's both (up to 16)
    groups = [1, 1, *range(2, 9)]
    assert _near_choice(groups, 8, False) == _round_robin(groups, 8) == [0, *range(2, 9)]
    assert _near_choice(groups, 8, True) == list(range(9))
