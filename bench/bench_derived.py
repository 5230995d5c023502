"""What `clients.derived.check_derived` adds to `prov verify`: the client's own PDQ hashes
of a file the server called a near copy (DERIVED, or a near REVOKED_KEY) of a signed
capture, checked against the cited claim's soft binding.

1. A 12 MP JPEG (4000 x 3000, quality 90, the rocket sample upscaled, with
   grain: 2.7 MB): read, decoded for
   PDQ at a reduced DCT scale and hashed 8 ways, as the server does; timed against the
   SHA-256 of the file the upload already computes.
2. The fixture video (clients/samples/fabric_pattern.mp4, 6.9 s, 360x640, 7 frames at 1 Hz): its 1 Hz
   frames decoded in the sandboxed child and matched (an honest DERIVED), and, for a claim
   of other frames, the dense pass after them (what a refused answer costs).
3. Any other verdict (SIGNED_ORIGINAL here): no check, no read.

Median of 5 runs each, after one untimed run, written to out/bench/derived.json. Usage:
PYTHONPATH=. python bench/bench_derived.py
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image

# bench/results.py, next to this script
from results import Ratio, median_seconds, no_options, sha256_file, upload_plus_check, write_results

from clients.derived import check_derived
from provenance.core.binding import PDQ_ALGORITHM, PerceptualHash, perceptual_hash
from provenance.core.claims import Verdict
from provenance.core.errors import ServerEvidenceError
from provenance.media.assets import AssetLimits, image_pdq
from provenance.media.video.decode import sample_frames

SAMPLES = Path(__file__).resolve().parents[1] / "clients" / "samples"


def _report(status: Verdict, media_type: str, soft: tuple[PerceptualHash, ...]) -> Any:
    """A report of ``status`` citing a claim of ``media_type`` whose soft binding is ``soft``
    (the fields `check_derived` reads)."""
    claim = SimpleNamespace(
        soft_bindings=soft, media_type=media_type, device_id=bytes(32), sequence=1
    )
    return SimpleNamespace(
        status=status,
        evidence=SimpleNamespace(
            claim=SimpleNamespace(claim=claim), hash_match=False, pdq_distance=5
        ),
    )


def _refused(report: Any, sha: bytes, path: Path) -> None:
    try:
        check_derived(report, sha, path, "bench")
    except ServerEvidenceError:
        return
    raise AssertionError("a claim of other frames was not refused")


def main() -> None:
    no_options(__doc__)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        jpeg = Path(tmp) / "12mp.jpg"
        big = np.asarray(Image.open(SAMPLES / "rocket.jpg").convert("RGB").resize((4000, 3000)))
        grain = np.random.default_rng(0).normal(0, 6, big.shape)  # a camera's noise and size
        out = io.BytesIO()
        Image.fromarray(np.clip(big + grain, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
        jpeg.write_bytes(out.getvalue())
        hashes, quality = image_pdq(jpeg.read_bytes(), AssetLimits())
        own = (perceptual_hash(PDQ_ALGORITHM, hashes[0], quality),)
        sha = sha256_file(jpeg)
        upload = median_seconds(lambda: sha256_file(jpeg), 5)
        derived = _report(Verdict.DERIVED, "image/jpeg", own)
        check = median_seconds(lambda: check_derived(derived, sha, jpeg, "bench"), 5)
        signed = _report(Verdict.SIGNED_ORIGINAL, "image/jpeg", own)
        other = median_seconds(lambda: check_derived(signed, sha, jpeg, "bench"), 1001)
        decode = median_seconds(lambda: image_pdq(jpeg.read_bytes(), AssetLimits()), 5)
        mb = len(out.getvalue()) / 1e6
        print(
            f"12 MP JPEG ({mb:.1f} MB): the upload's SHA-256 {upload * 1e3:.1f} ms;"
            f" check_derived of a DERIVED answer {check * 1e3:.0f} ms (the server's own"
            f" read, decode and 8 PDQs of it, image_pdq: {decode * 1e3:.0f} ms); of a"
            f" SIGNED_ORIGINAL answer {other * 1e6:.2f} us"
        )
        rows.append(_row("12 MP JPEG, DERIVED", mb, upload, check))

        video = SAMPLES / "fabric_pattern.mp4"
        claim = tuple(f.pdq for f in sample_frames(video).frames)
        vsha = sha256_file(video)
        vmb = video.stat().st_size / 1e6
        upload = median_seconds(lambda: sha256_file(video), 5)
        honest = _report(Verdict.DERIVED, "video/mp4", claim)
        check = median_seconds(lambda: check_derived(honest, vsha, video, "bench"), 5)
        # a claim of other frames: the frames of the 12 MP photo, one a second
        others = tuple(
            perceptual_hash(PDQ_ALGORITHM, hashes[k % 8], quality, float(k)) for k in range(7)
        )
        refused = median_seconds(
            lambda: _refused(_report(Verdict.DERIVED, "video/mp4", others), vsha, video), 5
        )
        print(
            f"fabric_pattern.mp4 ({vmb:.2f} MB): the upload's SHA-256 {upload * 1e3:.2f} ms;"
            f" check_derived of an honest DERIVED answer {check * 1e3:.0f} ms; of a refused"
            f" one (1 Hz, then the dense pass) {refused * 1e3:.0f} ms"
        )
        rows.append(_row("fabric_pattern.mp4, DERIVED", vmb, upload, check))
        rows.append(_row("fabric_pattern.mp4, refused", vmb, upload, refused))
    write_results("derived", rows, note="client-side PDQ check of a near copy's verdict")


def _row(name: str, mb: float, upload: float, check: float) -> Ratio:
    """The upload's hashing plus the check against the hashing alone, MB/s."""
    return upload_plus_check("check_derived", name, mb, "MB/s", upload, check)


if __name__ == "__main__":
    main()
