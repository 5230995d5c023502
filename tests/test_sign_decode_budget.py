"""A capture signed on a device whose pixels the server will not decode under its
default decode budget (`provenance.media.budget`): `prov sign` still makes its PDQ hash
(a smaller or baseline JPEG copy is then matched as derived) and says what the server
will do with the file; `prov verify` of the exact file is SIGNED_ORIGINAL by its SHA-256
with a note, and of a copy as large as it says the copy could not be compared with
signed captures. Through the real CLI against a real `prov serve` (h-sign50)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import Cli

pytestmark = pytest.mark.slow  # each test starts a `prov serve` process


def _textured(width: int, height: int) -> Image.Image:
    """A picture of random 100-pixel blocks, blurred: PDQ tells copies of it apart."""
    rng = np.random.default_rng(7)
    small = rng.integers(0, 256, (height // 100, width // 100, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)


def test_a_capture_the_server_will_not_decode_is_signed_with_a_note(
    enrolled: Cli, tmp_path: Path
) -> None:
    # 6000x4300 at 16 bytes a pixel: about 393 MiB, over the default 384 MiB
    pic = _textured(6000, 4300)
    photo = tmp_path / "IMG_0001.png"
    pic.save(photo, "PNG", compress_level=1)
    same_size = tmp_path / "copy.png"
    pic.putpixel((0, 0), (1, 2, 3))
    pic.save(same_size, "PNG", compress_level=6)
    as_jpeg = tmp_path / "copy.jpg"
    pic.save(as_jpeg, "JPEG", quality=85)

    rc, out, err = enrolled("sign", str(photo))
    assert rc == 0 and "logged at leaf 1" in out, (out, err)
    said = " ".join(err.split())  # Rich wraps at 80 columns
    assert "over the server's default decode budget" in said, said
    assert "image is 6000x4300: decoding it needs about 393 MiB" in said, said
    assert "this exact file is matched by its SHA-256" in said, said
    assert "a copy is matched as derived only where the server can decode it" in said, said

    rc, out, err = enrolled("verify", "--no-detect", str(photo))
    said = " ".join(out.split())
    assert rc == 0 and "SIGNED_ORIGINAL" in said, (out, err)
    assert "the pixels were not decoded, so no perceptual hash" in said, said

    rc, out, err = enrolled("verify", "--no-detect", str(as_jpeg))
    assert "DERIVED" in out, (out, err)  # the device's PDQ hash, a JPEG at a smaller scale

    rc, out, err = enrolled("verify", "--no-detect", str(same_size))
    said = " ".join(err.split())
    assert rc == 1 and "RESOURCE_EXHAUSTED" in said, (out, err)
    assert "no signed capture holds these exact bytes" in said, said
    assert "not compared with signed captures as a re-encoded copy" in said, said
    assert "image is 6000x4300: decoding it needs about 393 MiB" in said, said


def test_a_capture_within_the_budget_is_signed_without_the_note(
    enrolled: Cli, tmp_path: Path
) -> None:
    photo = tmp_path / "IMG_0002.png"
    _textured(2000, 1500).save(photo, "PNG", compress_level=1)
    rc, out, err = enrolled("sign", str(photo))
    assert rc == 0 and "logged at leaf 1" in out, (out, err)
    assert "decode budget" not in err, err
