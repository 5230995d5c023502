"""A long video's sparser claim, end to end: signed as `prov sign` measures it, logged by
a real service on a real SQLite file, and a re-encoded copy verified as a verifier
hashes it. Real video files (written with libx264), no stand-ins."""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
import numpy as np
import pytest

import clients.device.measuring as measuring
import clients.device.signing as signing
from provenance.core.claims import Verdict
from provenance.core.verify import FileFacts
from provenance.core.video_match import QUERY_RATE_HZ
from provenance.media.video.decode import sample_frames
from provenance.media.video.transcode import transcode
from provenance.wire import convert as wire
from tests.conftest import SAMPLES, Cli, write_video
from tests.inproc import InProc


def _long_video(folder: Path) -> Path:
    """A 1,201-second MP4 in ``folder``: frames of the real sample clip, one a second."""
    with av.open(str(SAMPLES / "fabric_pattern.mp4")) as clip:  # real footage, 206 frames
        source = [f.to_ndarray(format="rgb24", width=90, height=160) for f in clip.decode(video=0)]
    path = folder / "long.mp4"
    write_video(path, (source[(i * 7) % len(source)] for i in range(1201)))
    return path


def test_a_copy_of_a_sparsely_sampled_video_is_derived_and_says_the_sampling(
    inproc: InProc, tmp_path: Path
) -> None:
    """A 1,201-second video is signed with every 2nd 1 Hz sample (0.5 Hz, the claim's
    frame_sample_rate). Its re-encode at half the size is still DERIVED from it, and
    the reason says how sparsely the original was sampled (the video: frames of the
    real sample clip, one a second): it said "100% of its sampled
    frames" as for a 1 Hz claim, though a clip shorter than 2 s may hold none of them."""
    original = _long_video(tmp_path)
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


def test_a_long_video_signed_by_the_previous_prov_sign_is_refused_with_a_way_out(
    enrolled: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The previous `prov sign` put every 1 Hz sample of a 1,201 s video in its claim
    (it had no MAX_CLAIM_SOFT_BINDINGS; the constant is set to its old bound, 4,096, to
    sign as it did). The server now refuses that claim; the refusal, and a verification
    of the file with its sidecar, said nothing of what to do, and the verdict even said
    to submit it with `prov device sync`, which can never log it. Both now say to sign
    the file again, and signing it again (the current `prov sign`) logs it."""
    video = _long_video(tmp_path)
    with monkeypatch.context() as old:
        old.setattr(measuring, "MAX_CLAIM_SOFT_BINDINGS", 4096)
        # nor did it check a claim by the log's rules before queueing it
        old.setattr(signing, "check_claim_shape", lambda signed, claim: None)
        rc, _, err = enrolled("sign", str(video))
    said = " ".join(err.split())
    assert rc == 1 and "refused by the server: claim has 1201 soft bindings" in said, err
    assert "sign it again" in said, err
    rc, out, _ = enrolled("verify", str(video))
    said = " ".join(out.split())
    assert rc != 0 and "UNSIGNED" in said, out
    assert "the log refuses it" in said and "sign the file again" in said, out
    assert "submit it with" not in said, out
    rc, out, err = enrolled("sign", str(video))
    assert rc == 0 and "logged at leaf" in out, err
    rc, out, _ = enrolled("verify", str(video))
    assert rc == 0 and "SIGNED_ORIGINAL" in out, out


def test_a_video_longer_than_any_claim_samples_is_refused_saying_so(
    enrolled: Cli, tmp_path: Path
) -> None:
    """A video of more than 4,096 one-second samples (68 minutes) is neither signed nor
    verified; `prov sign` said only 'more than 4096 frames would be sampled at 1.0 Hz'
    and a verification 'the file looks like video/mp4 but is not a decodable video',
    which it is. Both now say the video is longer than 4,096 s. A real 4,200 s video
    (16x16 pixels, one frame a second), a real server."""

    def grey(i: int) -> np.ndarray:
        pixels = np.full((16, 16, 3), (i * 37) % 256, dtype=np.uint8)
        pixels[: i % 16] = 255 - pixels[0, 0]
        return pixels

    video = tmp_path / "very_long.mp4"
    write_video(video, map(grey, range(4200)))
    rc, _, err = enrolled("sign", str(video))
    said = " ".join(err.split())
    assert rc == 1 and "not signed" in said and "a video longer than 4,096 s" in said, err
    rc, out, err = enrolled("verify", str(video))
    said = " ".join((out + err).split())
    assert rc == 1 and "a video longer than 4,096 s" in said, (out, err)
    assert "not a decodable video" not in said, (out, err)
