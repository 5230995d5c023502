"""The decoding child under a tight memory limit: short of memory it says so, never that
the file is broken and never by dying (`provenance.media.video.worker`).

Found in CI: a 4K video under a 1.1 GB limit ended, about 1 time in 100, with "the
decoder process died (exit status 1)": the hashing thread's first matrix product had
OpenBLAS map its 64 MiB buffer under the cap, and OpenBLAS, failing to, calls exit(1).
Limits a few MiB above what the loaded decoder maps hit the same mappings every time
(and a hashing thread that could not start, read as a broken file)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from provenance.core.errors import DecoderMemoryError, MediaError
from provenance.media.video.decode import sample_frames
from tests.conftest import write_video


def _loaded_decoder_bytes(path: Path) -> int:
    """What the child maps before it decodes, as its refusal of a 1-byte limit says."""
    with pytest.raises(MediaError) as refused:
        sample_frames(path, max_memory_bytes=1)
    found = re.search(r"the loaded decoder alone maps (\d+) bytes", str(refused.value))
    assert found, refused.value
    return int(found.group(1))


def test_a_child_short_of_memory_says_so_at_every_limit(tmp_path: Path) -> None:
    """From a few MiB to 200 MiB above what the loaded decoder maps, in 8 MiB steps: each
    decode of a small video either hashes all 4 frames or is refused as out of memory."""
    path = tmp_path / "small.mp4"
    rng = np.random.default_rng(1)
    write_video(path, (rng.integers(0, 256, (240, 320, 3), np.uint8) for _ in range(4)))
    loaded = _loaded_decoder_bytes(path)
    outcomes: dict[int, str] = {}
    for extra_mib in range(8, 201, 8):
        try:
            sampled = sample_frames(path, max_memory_bytes=loaded + (extra_mib << 20))
        except DecoderMemoryError:
            outcomes[extra_mib] = "out of memory"
        except MediaError as e:  # anything else is the fault this test is about
            outcomes[extra_mib] = f"{type(e).__name__}: {e}"
        else:
            outcomes[extra_mib] = f"{len(sampled.frames)} frames"
    wrong = {
        mib: seen for mib, seen in outcomes.items() if seen not in ("out of memory", "4 frames")
    }
    assert not wrong, outcomes
    assert outcomes[200] == "4 frames", outcomes
