"""Inspecting an uploaded file: bytes buffered as they stream in, then everything the
verdict needs measured on them (hashes, media type, pixels, Content Credentials).

`Upload` hashes as the bytes stream in and keeps them only for a decoder: small images
in memory, video and large images in a temporary file (memory-backed where possible);
bytes of no known media type are dropped after their first SNIFF_BYTES, so memory stays
flat for uploads of hundreds of MB and nothing reaches the disk. `inspect_upload` runs after the last
chunk: sniff the type, read any C2PA manifest (in a worker process, remote fetching
off), compute the manifest-stripped content hash (and, for a video checked with its
sidecar's chunk list, the stripped bytes' chunk hashes), and decode images for PDQ.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import IO, Any

from provenance.c2pa.container import STRIPPABLE_TYPES, strip_and_locate
from provenance.c2pa.pool import ReaderPool
from provenance.c2pa.reader import C2paLimits, C2paTrust, read_c2pa
from provenance.c2pa.result import failed
from provenance.c2pa.signing_time import SigningTimePolicy
from provenance.core.callstop import CallStop
from provenance.core.claims import MAX_SOFT_BINDINGS
from provenance.core.errors import (
    DecodeBudgetError,
    DecoderCrashError,
    DecoderMemoryError,
    MediaError,
    MediaTooLargeError,
    ProvenanceError,
)
from provenance.core.hash_threads import BACKLOG_BYTES, BackgroundFeed, BackgroundSha256
from provenance.core.verify import FileFacts
from provenance.core.video_binding import MAX_VIDEO_CHUNK, ChunkLeaves, hash_chunked
from provenance.core.video_match import QUERY_RATE_HZ
from provenance.media.assets import (
    AssetLimits,
    ImageAsset,
    check_image_size,
    check_size,
    inspect_image,
)
from provenance.media.image import SNIFF_BYTES, UNSUPPORTED_FORMAT, sniff_media_type
from provenance.media.video.decode import (
    DEFAULT_MAX_MEMORY_BYTES,
    DEFAULT_RATE_HZ,
    DecodeClock,
    Redecode,
    VideoInfo,
    sample_frames,
    video_turns,
)
from provenance.wire.contract import MAX_CLAIM_CHUNK_HASHES

#: Uploads up to this size stay in memory, in bytes.
INLINE_BYTES = 32 * 1024 * 1024
#: A memory-backed folder for uploads a decoder reads from a path (None: there is none).
MEMORY_DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
#: Most bytes of uploads in MEMORY_DIR at once, per process (by their announced sizes).
MEMORY_SPILL_BYTES = 512 * 1024 * 1024
_memory_lock = threading.Lock()
_memory_spilled = 0  # bytes reserved in MEMORY_DIR now
#: Media types whose C2PA manifest store the reader is asked about.
C2PA_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/heic",
        "image/avif",
        "image/tiff",
        "video/mp4",
        "video/quicktime",
    }
)


def chunks_fit(size: int, chunk_size: int) -> bool:
    """Whether a file of ``size`` bytes cut into ``chunk_size``-byte chunks (at least 1)
    has at most `MAX_CLAIM_CHUNK_HASHES` chunks, ceil(size / chunk_size): the most a
    claim's list can hold, so a file of more can match no list and its chunks are not
    hashed (a claim asking for 1-byte chunks would cost a hash per byte)."""
    return -(-size // max(1, chunk_size)) <= MAX_CLAIM_CHUNK_HASHES


class Upload:
    """A file arriving in pieces: SHA-256, size and (optionally) chunk hashes computed as
    it streams; its bytes kept only when a decoder will read them.

    The first SNIFF_BYTES decide: bytes of no recognised media type are hashed and
    dropped (only the first SNIFF_BYTES stay), so an upload of them needs no memory
    beyond one message and no disk. Images stay in memory (`data`; the image limit
    bounds them); video, which its decoder reads from a path, goes to a temporary file,
    as do images past ``inline_bytes``: memory-backed (MEMORY_DIR) while the announced
    sizes of all such files in the process stay within MEMORY_SPILL_BYTES, on disk beyond.
    ``expected_bytes`` is the size the client announced (0: unknown, so never
    memory-backed); set it before the first write.

    The SHA-256 runs on a helper thread (`provenance.core.hash_threads.BackgroundSha256`),
    so `write` returns while the bytes hash and the next message can arrive meanwhile;
    `sha256` waits for it. With `hash_chunks`, the chunk leaves are hashed the same way on
    a second helper (`BackgroundFeed`), so a video upload never hashes on the caller's
    thread (the event loop of `prov serve`) either.
    """

    def __init__(
        self, max_bytes: int, inline_bytes: int = INLINE_BYTES, expected_bytes: int = 0
    ) -> None:
        self.max_bytes = max_bytes
        self._inline = inline_bytes
        self.expected_bytes = expected_bytes
        self._digest = BackgroundSha256()
        self._size = 0
        self._chunks: BackgroundFeed | None = None
        self._leaves: ChunkLeaves | None = None
        self._buf: IO[bytes] | None = io.BytesIO()  # None: the bytes are not kept
        self._head = b""
        self._file: Any = None
        self._sniffed = False
        self._reserved = 0  # bytes of MEMORY_SPILL_BYTES this upload holds

    def hash_chunks(self, chunk_size: int) -> None:
        """Also compute chunk leaf hashes of ``chunk_size`` bytes as the data streams in
        (call before the first write; for a video whose claim names its chunk size), while
        the file's chunks fit a claim's list (`chunks_fit`: not at all when
        ``expected_bytes`` does not, and none once the bytes written pass it, so
        `chunk_hashes` is then empty). Raises MediaError after a write."""
        if self._size:
            raise MediaError("chunk hashing must be asked for before the upload's first byte")
        if not chunks_fit(self.expected_bytes, chunk_size):
            return
        self._leaves = ChunkLeaves(chunk_size)
        self._chunks = BackgroundFeed(self._leaves.update)

    @property
    def chunk_size(self) -> int:
        """The chunk size `hash_chunks` was given, in bytes (0 when it was not called)."""
        return 0 if self._leaves is None else self._leaves.chunk_size

    @property
    def chunk_hashes(self) -> tuple[bytes, ...]:
        """Leaf hashes of the chunks (empty unless `hash_chunks` was called; waits for the
        hashing thread)."""
        if self._chunks is None or self._leaves is None:
            return ()
        self._chunks.drain()
        return self._leaves.finalize()[0]

    @property
    def kept(self) -> bool:
        """Whether the bytes are kept (False once they proved to be no known media)."""
        return self._buf is not None

    @property
    def hashing_behind(self) -> bool:
        """Whether the SHA-256 is half of BACKLOG_BYTES or more behind the bytes written, so
        that a `write` could soon wait for it (likewise the chunk leaves): an asyncio caller
        then awaits a future that `when_hashed` settles rather than blocking its event
        loop in `write`."""
        behind = max(self._digest.behind, self._chunks.behind if self._chunks else 0)
        return behind >= BACKLOG_BYTES // 2

    def when_hashed(self, wake: Callable[[], object]) -> None:
        """Call ``wake()`` as soon as at most a quarter of BACKLOG_BYTES written wait to be
        hashed (SHA-256 and chunk leaves), or the hashing failed (the next `write` or
        `sha256` raises it): at once on this thread when that is so now, else on a hashing
        thread, so ``wake`` must be quick and thread-safe and may be called twice (asyncio:
        `loop.call_soon_threadsafe` settling a future). No `write` until it was called.
        The hashing keeps the rest to do while the caller goes on receiving, and no
        thread waits (a drain in a thread would cost a hand-off more per wait, and leave
        the hashing thread idle from the drain to the next write)."""
        backlog = BACKLOG_BYTES // 4
        chunks = self._chunks
        if chunks is None:
            self._digest.call_within(backlog, wake)
        else:
            self._digest.call_within(backlog, lambda: chunks.call_within(backlog, wake))

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` (bytes and views of bytes are held as they are, anything else is
        copied first); raises MediaTooLargeError past ``max_bytes``."""
        if not (type(data) is bytes or (type(data) is memoryview and type(data.obj) is bytes)):
            data = bytes(data)  # the hashing thread reads it later: it must not change
        self._size += len(data)
        self._digest.update(data)
        if self._chunks is not None and not chunks_fit(self._size, self.chunk_size):
            self._chunks = self._leaves = None  # no list can match: what was fed is dropped
        if self._chunks is not None:
            self._chunks.update(data)
        if self._size > self.max_bytes:
            raise MediaTooLargeError(f"upload exceeds the limit of {self.max_bytes} bytes")
        if self._buf is None:
            return
        self._buf.write(data)
        if not self._sniffed and self._size >= SNIFF_BYTES:
            self._sniff()
        if self._file is None and self._buf is not None and self._size > self._inline:
            self.spill()

    def _sniff(self) -> None:
        """Decide from the first SNIFF_BYTES what to keep (see the class docstring)."""
        self._sniffed = True
        head = self.head(SNIFF_BYTES)
        kind = sniff_media_type(head)
        if kind is None:
            self._head = head
            self._buf = None
        elif kind.startswith("video/"):
            self.spill()

    @property
    def size(self) -> int:
        return self._size

    @property
    def sha256(self) -> bytes:
        """SHA-256 of every byte written (waits for the hashing thread)."""
        return self._digest.digest()

    def _kept(self) -> IO[bytes]:
        if self._buf is None:
            raise MediaError(
                "the upload's bytes were not kept: they are no recognised image or video"
            )
        return self._buf

    def head(self, n: int = SNIFF_BYTES) -> bytes:
        """The first ``n`` bytes (at most SNIFF_BYTES once the bytes were dropped)."""
        if self._buf is None:
            return self._head[:n]
        self._buf.seek(0)
        out = self._buf.read(n)
        self._buf.seek(0, os.SEEK_END)
        return out

    def data(self) -> bytes:
        """All bytes (for images and manifest stripping; callers bound the size first).
        Raises MediaError when the bytes were not kept."""
        buf = self._kept()
        buf.seek(0)
        out = buf.read()
        buf.seek(0, os.SEEK_END)
        return out

    def path(self) -> str | None:
        """A filesystem path to the bytes when they are in a temporary file, else None."""
        if self._file is None:
            return None
        self._file.flush()
        return str(self._file.name)

    def spill(self) -> str:
        """Move the bytes to a temporary file (if they are in memory) and return its path,
        for decoders that read files. Raises MediaError when the bytes were not kept."""
        buf = self._kept()
        if self._file is None:
            self._file = tempfile.NamedTemporaryFile(
                prefix="prov-upload-", delete=True, dir=self._spill_dir()
            )
            assert isinstance(buf, io.BytesIO)  # in memory until the first spill
            self._file.write(buf.getbuffer())
            self._buf = self._file
        path = self.path()
        assert path is not None
        return path

    def _spill_dir(self) -> str | None:
        """MEMORY_DIR when this upload's announced size fits what is left of
        MEMORY_SPILL_BYTES (reserving it), else None (the default temporary folder)."""
        global _memory_spilled
        want = self.expected_bytes
        if not (MEMORY_DIR and 0 < want):
            return None
        with _memory_lock:
            if _memory_spilled + want > MEMORY_SPILL_BYTES:
                return None
            _memory_spilled += want
        self._reserved = want
        return MEMORY_DIR

    def close(self) -> None:
        global _memory_spilled
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._reserved:
            with _memory_lock:
                _memory_spilled -= self._reserved
            self._reserved = 0

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class InspectConfig:
    """Limits, the Content Credentials reader (None: C2PA not read) and the signing-time
    policy its results are judged by (None: the reader's current-time verdict), and video
    decoding: wall-clock limit of all the decodes of one video that one request starts
    (seconds, `DecodeClock`), address-space limit of each decoding child (bytes) and the
    most frames hashed in the dense pass. ``min_chunk_bytes``: the smallest chunk size of
    a claim's chunked binding whose chunks are hashed to name damaged byte ranges (`prov
    serve --min-chunk-kb`; `embedded_chunk_facts`)."""

    limits: AssetLimits = AssetLimits()
    c2pa_pool: ReaderPool | None = None
    c2pa_trust: C2paTrust | None = None
    c2pa_limits: C2paLimits = field(default_factory=C2paLimits)
    c2pa_signing_time: SigningTimePolicy | None = None
    video_timeout_s: float = 120.0
    video_max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES
    dense_max_frames: int = 1800
    dense_max_pixels: int = 300_000_000
    min_chunk_bytes: int = 64 * 1024


@dataclass(frozen=True)
class Inspection:
    """What was measured: facts for the verdict, decoded image, C2PA block (a dict),
    and for video the sampled frames (`VideoInfo`) and, when pixels were asked for
    (`inspect_upload` ``video_pixels``) and did not fit in the decoder's memory, why
    (``video_pixels_error``; "" otherwise), and the `DecodeClock` its decodes drew on,
    which any further decode of the video for the same request draws on too."""

    facts: FileFacts
    image: ImageAsset | None = None
    c2pa: dict[str, Any] | None = None
    video: VideoInfo | None = None
    video_pixels_error: str = ""
    decoding: DecodeClock | None = field(default=None, compare=False)


def _c2pa(
    upload: Upload, base: FileFacts, cfg: InspectConfig
) -> tuple[dict[str, Any] | None, FileFacts]:
    """(C2PA block, ``base`` with what its manifest store removed gives: the content
    SHA-256 and size and, when the upload hashed chunks, the chunk hashes and the runs removed)."""
    media_type = base.media_type
    if cfg.c2pa_pool is None or media_type not in C2PA_TYPES:
        return None, base
    path = upload.path()
    try:
        result = read_c2pa(
            path if path is not None else upload.data(),
            media_type,
            cfg.c2pa_trust,
            cfg.c2pa_limits,
            pool=cfg.c2pa_pool,
            signing_time=cfg.c2pa_signing_time,
        )
    except ProvenanceError as e:  # optional evidence: the verdict goes on without it
        why = e.public  # the report is the caller's: no server path in it
        return failed(
            "Unavailable", f"the Content Credentials were not read: {why}"
        ).to_dict(), base
    block = result.to_dict()
    if not (
        result.present
        and media_type in STRIPPABLE_TYPES
        and upload.size <= cfg.limits.max_image_bytes
    ):
        return block, base
    try:
        stripped = strip_and_locate(upload.data(), media_type)
    except ProvenanceError as e:
        block["content_hash_error"] = str(e)
        return block, base
    content_size = len(stripped.data)
    if not (stripped.removed and upload.chunk_size):
        return block, replace(
            base,
            content_sha256=hashlib.sha256(stripped.data).digest(),
            content_size=content_size,
        )
    digest = hash_chunked(stripped.data, upload.chunk_size)  # the chunks the claim signed
    return block, replace(
        base,
        content_sha256=digest.sha256,
        content_size=content_size,
        content_chunk_hashes=digest.chunk_hashes,
        content_removed=stripped.removed,
    )


def embedded_chunk_facts(
    upload: Upload, facts: FileFacts, chunk_size: int, cfg: InspectConfig
) -> FileFacts:
    """``facts`` with the chunk leaf hashes of ``upload``'s bytes at ``chunk_size`` bytes,
    for a video whose claim came embedded in its C2PA manifest (`prov sign --c2pa`) with
    the sidecar's list of chunk hashes: no sidecar named the chunk size while the upload
    arrived, so its chunks were not hashed then. Sets ``chunk_hashes`` (the file as it is)
    and, when its manifest store strips, ``content_chunk_hashes`` and ``content_removed``
    (the bytes the claim signed), as `Upload.hash_chunks` and the content hash do for a
    sidecar's claim, so the damaged ranges are named the same way
    (`provenance.core.verify`). ``facts`` as it is when its chunks were hashed already,
    when ``chunk_size`` is outside ``cfg.min_chunk_bytes``..`MAX_VIDEO_CHUNK` (a tiny
    chunk would cost a hash per few bytes) or the file has more chunks than a claim's list
    can hold (`chunks_fit`), or when the upload is not a kept file of a
    strippable type within ``cfg.limits.max_image_bytes`` (it is read whole, as for the
    content hash). Cost: two passes of chunk hashing over the file; callers ask only for
    a file its claim does not bind. Raises nothing."""
    if (
        facts.chunk_hashes
        or not max(1, cfg.min_chunk_bytes) <= chunk_size <= MAX_VIDEO_CHUNK
        or not chunks_fit(upload.size, chunk_size)
        or facts.media_type not in STRIPPABLE_TYPES
        or upload.size > cfg.limits.max_image_bytes
        or not upload.kept
    ):
        return facts
    data = upload.data()
    whole = replace(facts, chunk_hashes=_chunk_leaves(data, chunk_size))
    try:
        stripped = strip_and_locate(data, facts.media_type)
    except ProvenanceError:  # no store to take out: the file as it is is compared alone
        return whole
    if not stripped.removed:
        return whole
    return replace(
        whole,
        content_chunk_hashes=_chunk_leaves(stripped.data, chunk_size),
        content_removed=stripped.removed,
    )


def _chunk_leaves(data: bytes, chunk_size: int) -> tuple[bytes, ...]:
    """The RFC 9162 leaf hashes of ``data`` cut into ``chunk_size``-byte chunks."""
    leaves = ChunkLeaves(chunk_size)
    leaves.update(data)
    return leaves.finalize()[0]


def inspect_upload(
    upload: Upload,
    cfg: InspectConfig,
    lenient: bool,
    video_pixels: int = 0,
    call: CallStop | None = None,
    *,
    judge_undecodable: bool = False,
) -> Inspection:
    """Measure a complete upload.

    ``lenient``: a sidecar or an exact log match exists, so a file that cannot be
    decoded is still judged (with a note) instead of refused. ``judge_undecodable``: an
    image or video (by its magic bytes) whose pixels or frames cannot be decoded
    (truncated, corrupt; not over a limit) is judged so too, on its exact bytes, whatever
    the log holds (a verdict, as `prov scan` gives it; the detector needs pixels and asks
    without). ``video_pixels``: for a
    video, also keep the native pixels of up to this many of its 1 Hz samples, spread
    over it (`sample_frames` ``keep_rgb_spread``), for the detector to score without a
    second decode; if keeping them is what the decoder cannot afford (out of memory), the
    video is sampled again without them, so they never cost the verdict. ``call``: the
    call the upload came in (None: none): a video's decodes stop at its deadline or when
    it ends (`DecodeClock`). Raises MediaError for an empty, unrecognised or corrupt
    file, MediaTooLargeError beyond the limits, DeadlineError when the call ends first.
    """
    check_size(upload.size, cfg.limits)
    sha = upload.sha256
    media_type = sniff_media_type(upload.head())
    if media_type is None:
        if lenient:
            return Inspection(
                FileFacts(
                    sha,
                    upload.size,
                    "application/octet-stream",
                    (),
                    ("the file is not a recognised image or video format",),
                )
            )
        raise MediaError(UNSUPPORTED_FORMAT)
    c2pa, base = _c2pa(
        upload, FileFacts(sha, upload.size, media_type, chunk_hashes=upload.chunk_hashes), cfg
    )
    # Content Credentials are evidence of their own: report them even when pixels fail
    lenient = lenient or bool(c2pa and (c2pa.get("present") or c2pa.get("validation_state")))
    if media_type.startswith("video/"):
        path = upload.spill()
        clock = DecodeClock(cfg.video_timeout_s, call)
        try:
            info, pixels_error = _sample_soft(path, cfg, video_pixels, clock)
        except MediaError as e:
            why = str(e).replace(f"'{path}'", "the upload").replace(path, "the upload")
            if lenient and isinstance(e, DecodeBudgetError):  # as an image's: a note
                note = f"the frames were not decoded, so no perceptual hashes: {why}"
                return Inspection(replace(base, notes=(note,)), None, c2pa)
            if (lenient or judge_undecodable) and not isinstance(e, MediaTooLargeError):
                return Inspection(
                    replace(base, notes=(f"could not decode the video: {why}",)), None, c2pa
                )
            if isinstance(e, MediaTooLargeError):  # decodable, but over a limit
                raise type(e)(f"the {media_type} file is over a limit: {why}") from e
            raise type(e)(
                f"the file looks like {media_type} but is not a decodable video: {why}"
            ) from e
        soft = tuple(f.pdq for f in info.frames)
        found = replace(base, soft_bindings=soft, dihedral_soft_bindings=video_turns(info))
        return Inspection(found, None, c2pa, info, pixels_error, clock)
    if not media_type.startswith("image/"):
        note = f"no perceptual hash for {media_type}: only exact matches were searched"
        return Inspection(replace(base, notes=(note,)), None, c2pa)
    check_image_size(upload.size, cfg.limits)  # before the bytes are read into memory
    try:
        image = inspect_image(sha, upload.data(), cfg.limits)
    except DecodeBudgetError as e:
        if not lenient:
            raise
        note = f"the pixels were not decoded, so no perceptual hash: {e}"
        return Inspection(replace(base, notes=(note,)), None, c2pa)
    except MediaTooLargeError:
        raise
    except MediaError as e:
        if not (lenient or judge_undecodable):
            raise
        return Inspection(replace(base, notes=(f"could not decode the image: {e}",)), None, c2pa)
    facts = replace(image.facts, content_sha256=base.content_sha256, content_size=base.content_size)
    return Inspection(facts, image, c2pa)


#: The decode again of a video whose decode keeping the detector's pixels stopped early.
AFTER_EARLY_STOP = Redecode(
    "the second decode of the video, without the detector's frames, that its soft bindings"
    " need after the first stopped early",
    "repair or re-encode the file (for example `ffmpeg -i damaged.mp4 -c:v libx264"
    " repaired.mp4`), or verify a shorter clip of it",
)
#: The decode again of a video whose decode keeping the detector's pixels ran out of memory.
AFTER_NO_MEMORY = Redecode(
    "the second decode of the video, without the detector's frames, that its soft bindings"
    " need after the first ran out of memory keeping them",
    "verify it without the detector (`prov verify --no-detect`), or a shorter or smaller"
    " clip of it",
)
#: The dense frame pass for trimmed clips.
DENSE_PASS = Redecode(
    "the dense frame pass's decode of every frame",
    "verify a shorter clip of it",
)


def _sample_soft(
    path: str, cfg: InspectConfig, video_pixels: int, clock: DecodeClock
) -> tuple[VideoInfo, str]:
    """The 1 Hz samples of a video that are its soft bindings, with the pixels of up to
    ``video_pixels`` of them kept (`inspect_upload`), and why none were kept when they
    did not fit ("" otherwise). A decode that keeps pixels and runs out of memory (or
    crashes, DecoderCrashError: how FFmpeg can end short of memory), or stops early (as a damaged stream does, or one short of memory), is done again without
    them; its result is used unless the two differ (pixels aside), so the soft bindings
    are always those of a decode that kept none. Every decode draws on ``clock``. Raises
    MediaError as `sample_frames`, DecodeBudgetError when the clock has no time left for
    the decode again."""
    sample = partial(
        sample_frames,
        path,
        rate_hz=DEFAULT_RATE_HZ,
        max_frames=MAX_SOFT_BINDINGS,
        max_memory_bytes=cfg.video_max_memory_bytes,
        clock=clock,
        dihedral=True,
    )
    if video_pixels <= 0:
        return sample(), ""
    try:
        kept = sample(keep_rgb_spread=video_pixels)
    except (DecoderMemoryError, DecoderCrashError) as e:
        # the kept pixels may be what did not fit: FFmpeg can also crash on an allocation
        # it did not check under the child's memory limit; a file that crashes the
        # decoder without pixels too is refused by that decode
        return sample(again=AFTER_NO_MEMORY), str(e)
    if not kept.decode_error:
        return kept, ""
    plain = sample(again=AFTER_EARLY_STOP)
    return kept if kept == plain else plain, ""  # VideoInfo equality leaves the pixels out


def resample_dense(
    upload: Upload, found: Inspection, cfg: InspectConfig, timeout_s: float | None
) -> Inspection:
    """The same video hashed at up to every frame, for finding trimmed clips whose cut
    falls between the claim's 1 Hz samples (`provenance.core.video_match`). The pass is
    bounded by ``cfg.dense_max_frames``, ``cfg.dense_max_pixels``, the time left on the
    inspection's `DecodeClock` and ``timeout_s`` seconds (None: no more). Raises
    MediaError as `sample_frames`, DecodeBudgetError when the clock has no time left
    for it."""
    assert found.video is not None
    v = found.video
    duration = max(v.duration_seconds, 1e-3)
    frames = min(cfg.dense_max_frames, cfg.dense_max_pixels // max(1, v.width * v.height))
    rate = min(QUERY_RATE_HZ, max(frames, 1) / duration)
    info = sample_frames(
        upload.spill(),
        rate_hz=rate,
        max_frames=frames + 2,
        timeout_s=timeout_s,
        max_memory_bytes=cfg.video_max_memory_bytes,
        clock=found.decoding or DecodeClock(cfg.video_timeout_s),
        again=DENSE_PASS,
    )
    facts = replace(found.facts, soft_bindings=tuple(f.pdq for f in info.frames))
    return replace(found, facts=facts, video=info)
