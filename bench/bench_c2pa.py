"""Verification time of a signed capture: our path against c2pa-python's reader.

Each capture (a 1-megapixel JPEG, a 1-megapixel PNG, a 3 s 640x480 MP4) is signed
twice over, as the product does it: a claim over the capture's SHA-256 signed with the
device key, then a C2PA manifest embedded with the same key. Then, on the embedded
file, we time
  ours:     content_sha256 (manifest store removed) + decode the claim + compare the
            hash + strict Ed25519 verification of the claim signature;
  c2pa:     c2pa.Reader in this process (parse, hash, COSE signature, chain);
  c2pa+iso: the same read through `read_c2pa`'s worker pool (adds the pipe round trip),
and print the median of each and the ratios. Run: .venv/bin/python bench/bench_c2pa.py
"""

from __future__ import annotations

import io
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import c2pa
import cv2
import numpy as np
from PIL import Image
from results import Ratio, median_seconds, no_options, write_results  # bench/results.py

from provenance.c2pa import C2paTrust, ReaderPool, content_sha256, read_c2pa, reader_settings
from provenance.c2pa.authority import init_authority, issue_device_certificate
from provenance.c2pa.writer import embed_manifest
from provenance.core.claims import Claim, HardBinding, SignedClaim
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, sign_payload, verify_payload
from provenance.core.keys import DeviceKey
from provenance.wire.convert import decode_claim, encode_claim

REPEATS = 30


def make_media(directory: Path) -> list[tuple[Path, str]]:
    """Real-looking captures: smooth gradients plus noise, so codecs do real work."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:1024, 0:1024]
    rgb = np.stack([x // 4, y // 4, (x + y) // 8], axis=-1).astype(np.int16)
    rgb = np.clip(rgb + rng.integers(-12, 13, rgb.shape), 0, 255).astype(np.uint8)
    jpeg, png, mp4 = directory / "c.jpg", directory / "c.png", directory / "c.mp4"
    Image.fromarray(rgb).save(jpeg, quality=90)
    Image.fromarray(rgb).save(png)
    writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter.fourcc(*"mp4v"), 30, (640, 480))
    frame = cv2.resize(rgb, (640, 480))
    for i in range(90):
        writer.write(np.roll(frame, 3 * i, axis=1))
    writer.release()
    return [(jpeg, "image/jpeg"), (png, "image/png"), (mp4, "video/mp4")]


def main() -> int:
    now = datetime.now(UTC)
    key = DeviceKey.generate()
    with tempfile.TemporaryDirectory() as tmp, ReaderPool() as pool:
        root = Path(tmp)
        authority = init_authority(root / "ca", now=now)
        chain = issue_device_certificate(authority, key.public_key, key.key_id.hex(), now=now)
        trust = C2paTrust(authority.certificate_pem)
        context = c2pa.Context.from_dict(reader_settings(trust))
        print(
            f"c2pa-python {c2pa.__version__} (c2pa-rs {c2pa.sdk_version()}), "
            f"median of {REPEATS} runs"
        )
        print(
            f"{'file':<10}{'bytes':>10}{'ours ms':>10}{'c2pa ms':>10}{'c2pa+iso ms':>13}"
            f"{'c2pa/ours':>11}{'iso/ours':>10}"
        )
        rows: list[Ratio] = []
        for src, media_type in make_media(root):
            data = src.read_bytes()
            claim = Claim(
                device_id=key.key_id,
                sequence=1,
                captured_at=now,
                media_type=media_type,
                size_bytes=len(data),
                hard_binding=HardBinding(sha256=content_sha256(data, media_type)),
            )
            claim_bytes = encode_claim(claim)
            signed = SignedClaim(
                PAYLOAD_TYPE_CLAIM,
                claim_bytes,
                key.key_id,
                sign_payload(key, PAYLOAD_TYPE_CLAIM, claim_bytes),
            )
            dst = root / f"signed{src.suffix}"
            embed_manifest(src, dst, media_type, key, chain, {"claim": "x"}, None)
            exported = dst.read_bytes()

            def ours(
                exported: bytes = exported,
                media_type: str = media_type,
                signed: SignedClaim = signed,
            ) -> None:
                logged = decode_claim(signed.claim_bytes).hard_binding.sha256
                if content_sha256(exported, media_type) != logged:
                    raise AssertionError("binding mismatch")
                verify_payload(
                    key.public_key, signed.payload_type, signed.claim_bytes, signed.signature
                )

            def native(exported: bytes = exported, media_type: str = media_type) -> None:
                with c2pa.Reader(media_type, io.BytesIO(exported), context=context) as r:
                    if r.get_validation_state() != "Trusted":
                        raise AssertionError(r.get_validation_state())

            def isolated(dst: Path = dst, media_type: str = media_type) -> None:
                if read_c2pa(dst, media_type, trust, pool=pool).validation_state != "Trusted":
                    raise AssertionError("not trusted")

            t_ours = median_seconds(ours, REPEATS)
            t_native = median_seconds(native, REPEATS)
            t_iso = median_seconds(isolated, REPEATS)
            print(
                f"{src.suffix[1:]:<10}{len(exported):>10}{t_ours * 1e3:>10.2f}"
                f"{t_native * 1e3:>10.2f}{t_iso * 1e3:>13.2f}"
                f"{t_native / t_ours:>11.1f}{t_iso / t_ours:>10.1f}"
            )
            rows.append(
                Ratio(
                    f"verify signed {src.suffix[1:]}: ours",
                    1 / t_ours,
                    "c2pa-python reader",
                    1 / t_native,
                    "files/s",
                )
            )
    write_results("c2pa", rows)
    return 0


if __name__ == "__main__":
    no_options(__doc__)
    sys.exit(main())
