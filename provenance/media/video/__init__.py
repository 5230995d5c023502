"""Video: hard binding over chunks, sandboxed frame sampling and hashing, soft-binding match.

- `binding`: `ChunkedHasher` (streaming SHA-256 + RFC 9162 chunk Merkle root),
  `check_chunk_hashes`, `locate_damage`.
- `decode`: `sample_frames` (FFmpeg in a child process under time and memory limits).
- `match`: `match_video` (vPDQ-style frame matching with time alignment).
- `transcode`: re-encode trusted video (demo and tests make derived copies with it).
- `frames`, `worker`: the decoding that runs inside the child.

Import from the submodules: this package imports nothing itself, so the decoding child
(`python -m provenance.media.video.worker`) sets its memory limit before FFmpeg is loaded.
See docs/video.md.
"""
