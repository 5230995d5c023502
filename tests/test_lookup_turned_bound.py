"""A video's Lookup under a `prov serve --max-lookup-hashes` set below its default.

Each sampled frame carries 7 turned hashes (`LookupQuery.video_turned`, the rotations and
mirror images a turned copy is found by), and every hash searched counts against the
bound. A video of F frames is 8 x F hashes with them: under a bound between F and 8 x F,
the Lookup was refused whole (RESOURCE_EXHAUSTED), although its frames alone fit and no
split of the call could ever have made it fit. Now its frames are searched without their
turns, and the report says so, naming the bound to set for them. A call whose frames
alone pass the bound is still refused, naming what to send or to raise."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.api import ProvenanceClient, Query
from clients.device.measuring import measure
from clients.scan.hashing import Measured
from clients.scan.worker import query
from provenance.core.binding import PDQ_ALGORITHM, PerceptualHash
from provenance.core.claims import Verdict
from provenance.core.errors import TransportError
from provenance.media.video.decode import sample_frames, video_turns
from tests.conftest import ADMIN_TOKEN, ServerProc, enroll_key, start_server
from tests.inproc import make_claim, sign

VIDEO = Path("/work/shared/fixtures/phash/video/pattern-sd-grey-bar.mp4")
#: the bound the server runs with: the video's 7 frames fit, with their 49 turns they do not
BOUND = 20


@pytest.fixture(scope="module")
def low_bound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    srv = start_server(
        tmp_path_factory.mktemp("turned-bound") / "p.db", "--max-lookup-hashes", str(BOUND)
    )
    try:
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN, timeout=60) as client:
            key = enroll_key(client)
            fields, _ = measure(VIDEO)
            client.submit(sign(key, make_claim(key, 1, **fields)))
        yield srv
    finally:
        srv.stop()


def _query(ref: str) -> Query:
    """The video's Lookup query as `prov scan` sends it (its frames and their 7 turns),
    under another SHA-256: a copy, found by its frames."""
    info = sample_frames(str(VIDEO), dihedral=True)
    frames = tuple(f.pdq for f in info.frames)
    turned = b"".join(h.hash for h in video_turns(info))
    assert len(frames) == 7 and len(turned) == 7 * 32 * len(frames)
    return Query(ref, os.urandom(32), frames, "video/mp4", video_turned=turned)


def test_a_videos_lookup_whose_turns_pass_the_bound_is_answered_saying_so(
    low_bound: ServerProc,
) -> None:
    with ProvenanceClient(low_bound.address, timeout=60) as client:
        answers = client.lookup([_query("a"), _query("b")])
    assert [ref for ref, _ in answers] == ["a", "b"]
    for _, report in answers:
        assert report.status is Verdict.DERIVED, report.reasons
        notes = [r for r in report.reasons if "--max-lookup-hashes" in r]
        assert notes == [
            f"note: the 49 rotated and mirrored hashes of its 7 frames (video_turned) were"
            f" not searched: with them it is 56 perceptual hashes, over this server's"
            f" --max-lookup-hashes of {BOUND}, so a copy displayed turned is not found by this"
            " lookup (the server's operator can set --max-lookup-hashes 56 or more)"
        ], report.reasons


def test_a_call_whose_frames_alone_pass_the_bound_is_refused_naming_it(
    low_bound: ServerProc,
) -> None:
    with (
        ProvenanceClient(low_bound.address, timeout=60) as client,
        pytest.raises(TransportError) as e,
    ):
        client.lookup([_query("a"), _query("b"), _query("c")])
    assert e.value.code == "RESOURCE_EXHAUSTED"
    assert (
        f"21 perceptual hashes in one Lookup (not counting the 147 rotated and mirrored"
        f" hashes of video frames, video_turned, which are left out when they do not fit);"
        f" the limit is {BOUND} (--max-lookup-hashes): send fewer per call"
    ) in str(e.value), e.value


#: frames of a long video whose 7 turns each pass the default --max-lookup-hashes (16,384)
LONG_FRAMES = 2100


def _long_video() -> Measured:
    """A scan's measurement of a video of `LONG_FRAMES` sampled frames (random hashes):
    with its turns, 8 x 2,100 = 16,800 hashes, over the default bound, under 16,800."""
    frames = tuple(
        PerceptualHash(PDQ_ALGORITHM, os.urandom(32), 100, float(t)) for t in range(LONG_FRAMES)
    )
    turned = os.urandom(7 * 32 * LONG_FRAMES)
    return Measured(
        "long.mp4", 1, os.urandom(32), "video/mp4", frames, "media", video_turned=turned
    )


def test_a_scan_sends_the_turns_its_server_can_search(tmp_path: Path) -> None:
    """`prov scan` decided whether to send a video's turned hashes by the default bound
    (8 x frames <= 16,384), not by its server's: under a server run with a higher
    --max-lookup-hashes a long video's turned copy could not be found by its hashes.
    Now the turns are always sent: a server whose bound they pass searches the frames
    alone and says so in the report, naming the bound (`_turns_left_out`), and one whose
    bound they fit searches them."""
    q = query(_long_video())
    assert len(q.video_turned) == 7 * 32 * LONG_FRAMES
    high = start_server(tmp_path / "high.db", "--max-lookup-hashes", str(8 * LONG_FRAMES))
    default = start_server(tmp_path / "default.db")
    try:
        for srv, left_out in ((high, False), (default, True)):
            with ProvenanceClient(srv.address, timeout=120) as client:
                ((_, report),) = client.lookup([q])
            notes = [r for r in report.reasons if "(video_turned) were not searched" in r]
            assert bool(notes) is left_out, (srv.address, report.reasons)
            if left_out:
                assert "--max-lookup-hashes 16,800 or more" in notes[0], notes
    finally:
        high.stop()
        default.stop()
