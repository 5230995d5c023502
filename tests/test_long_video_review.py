"""A long video's sparser claim, end to end: signed as `prov sign` measures it, logged by
a real service on a real SQLite file, and a re-encoded copy verified as a verifier
hashes it. Real video files (written with libx264), no stand-ins."""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
from conftest import SAMPLES, write_video
from inproc import InProc

from provenance.core.claims import Verdict
from provenance.core.verify import FileFacts
from provenance.core.video_match import QUERY_RATE_HZ
from provenance.media.video.decode import sample_frames
from provenance.media.video.transcode import transcode
from provenance.wire import convert as wire


def test_a_copy_of_a_sparsely_sampled_video_is_derived_and_says_the_sampling(
    inproc: InProc, tmp_path: Path
) -> None:
    """A 1,201-second video is signed with every 2nd 1 Hz sample (0.5 Hz, the claim's
    frame_sample_rate). Its re-encode at half the size is still DERIVED from it, and
    the reason says how sparsely the original was sampled (the video: frames of the
    real sample clip, one a second): it said "100% of its sampled
    frames" as for a 1 Hz claim, though a clip shorter than 2 s may hold none of them."""
    with av.open(str(SAMPLES / "fabric_pattern.mp4")) as clip:  # real footage, 206 frames
        source = [f.to_ndarray(format="rgb24", width=90, height=160) for f in clip.decode(video=0)]
    frames = (source[(i * 7) % len(source)] for i in range(1201))  # one a second
    original = tmp_path / "long.mp4"
    write_video(original, frames, crf=18)
    dev = inproc.enroll()
    signed = dev.claim_for_file(original)
    claim = wire.decode_claim(signed.claim_bytes)
    assert (len(claim.soft_bindings), claim.frame_sample_rate) == (601, 0.5)
    inproc.submit(signed)
    copy = tmp_path / "copy.mp4"
    transcode(original, copy, width=72, height=128, crf=30, encoder_options={"preset": "ultrafast"})
    data = copy.read_bytes()
    query = tuple(f.pdq for f in sample_frames(copy, rate_hz=QUERY_RATE_HZ).frames)
    report = inproc.service.verify(
        FileFacts(hashlib.sha256(data).digest(), len(data), "video/mp4", query)
    )
    assert report.status is Verdict.DERIVED, report.reasons
    assert "of its frames, sampled one every 2 s, in that stretch" in report.reasons[0], report
