"""The one verification pipeline, used by every entry point: the VerifyFile and Lookup
RPCs (`provenance.server.rpc`), the scanner through them, and in-process callers.

A file's bytes (an `Upload`) go through, in order:

1. inspection (`provenance.media.inspect.inspect_upload`): hashes, media type, pixels or frame
   hashes, and the Content Credentials block;
2. the cryptographic verdict (`ProvenanceService.verify`, which applies
   `provenance.core.verify.decide`: exact bytes in the log decide first); without a
   sidecar, the claim `prov sign --c2pa` embedded in the file's C2PA manifest, if any,
   is judged as its sidecar would be;
3. for a video still UNSIGNED while the log holds video claims, and no sidecar came (an
   embedded claim that leaves it UNSIGNED was not used and does not count), the dense
   second pass that finds trimmed clips (every frame hashed, within the call's deadline);
4. the Content Credentials block attached (`provenance.core.verify.with_c2pa`);
5. the advisory detector, when asked, within its deadline (``detector_timeout_s``, or the
   call's if sooner): past it the report says it was not scored and why.

Only the cryptographic verdict can fail the call. Steps 3-5 are optional evidence: when
one of them cannot run (no detector, an image too small for it, a decoder error, a
deadline too close) the report says what was not done and the verdict stands (issue 11,
"a verdict always"). A lookup by hashes (`lookup`) runs step 2 and says in its reasons
which evidence it lacks without the bytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from provenance import metrics
from provenance.core.callstop import CallStop
from provenance.core.claims import Receipt, SignedClaim, Verdict
from provenance.core.errors import (
    DecodeBudgetError,
    DecoderMemoryError,
    DetectorTimeoutError,
    LogIntegrityError,
    MediaError,
    ProvenanceError,
)
from provenance.core.verify import FileFacts, VerificationReport, with_c2pa
from provenance.core.video_binding import MAX_VIDEO_CHUNK
from provenance.media.inspect import (
    InspectConfig,
    Inspection,
    Upload,
    chunks_fit,
    embedded_chunk_facts,
    inspect_upload,
    resample_dense,
)
from provenance.media.video.decode import DecodeClock, Redecode, sample_frames
from provenance.server.limits import DETECTOR_TIMEOUT_S
from provenance.server.service import ProvenanceService, SearchBudget
from provenance.wire import convert as wire
from provenance.wire.contract import DENSE_PASS_NEEDS_BYTES, MAX_CLAIM_CHUNK_HASHES
from provenance.wire.sidecar import Sidecar, embedded_sidecar

log = logging.getLogger(__name__)

#: Frames of a video the detector scores, spread evenly over its length.
DETECTOR_VIDEO_FRAMES = 16
#: The detector's decode of a video whose first decode kept other frames than it scores.
DETECTOR_DECODE = Redecode(
    "the detector's decode of the frames it scores (the first decode kept others: the"
    " file's header misstates its length)",
    "verify it without the detector (`prov verify --no-detect`), or re-encode the file so"
    " that its header states its length",
)
#: Least time, in seconds, the dense frame pass needs before the call's deadline.
DENSE_PASS_MIN_S = 5.0
#: Seconds before the caller's deadline at which a VerifyFile's near-duplicate searches
#: start no further round (`SearchBudget`): time to read the candidates and answer, so
#: that a search cut short is reported rather than the call timing out.
SEARCH_MARGIN_S = 2.0
#: Reading a file for in-process verification, in bytes per read.
_READ_BYTES = 1 << 20


class DetectorBackend(Protocol):
    """The advisory detector as the pipeline uses it (`detector.serving` provides one).

    Blocks are JSON-able dicts in `DetectorReport.to_dict()` shape; a video block adds
    a ``timeline`` of {"timestamp_seconds", "score"} per sampled frame."""

    def score_image(
        self, rgb: np.ndarray, request_key: bytes, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """rgb: (H, W, 3) uint8 pixels; request_key: bytes naming the request;
        timeout_s: seconds it may take, past them DetectorTimeoutError (None: no limit)."""
        ...

    def score_video(
        self,
        frames: Sequence[tuple[float, np.ndarray]],
        request_key: bytes,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """frames: (timestamp in seconds, (H, W, 3) uint8 pixels) in time order;
        timeout_s: as in score_image, for all the frames."""
        ...


def claimed_chunk_size(sidecar: SignedClaim | None) -> int:
    """The chunk size in bytes that a sidecar claim's hard binding states (0 for an image
    claim, no sidecar, or a claim that does not decode: an unusable sidecar never fails the
    call, the verdict reports it)."""
    if sidecar is None:
        return 0
    try:
        return wire.decode_offered_claim(sidecar.claim_bytes).hard_binding.chunk_size
    except ProvenanceError:
        return 0


def sidecar_chunk_size(sidecar: SignedClaim | None) -> int:
    """The chunk size (bytes) at which an upload should hash its chunks as they arrive, so
    damaged ranges can be named: `claimed_chunk_size` when it is in 1..MAX_VIDEO_CHUNK,
    else 0."""
    size = claimed_chunk_size(sidecar)
    return size if 0 < size <= MAX_VIDEO_CHUNK else 0


def unlocated_note(whose: str, chunk_size: int, size: int, min_chunk_bytes: int) -> str | None:
    """The note saying why a file's damaged byte ranges were not located when ``whose``
    claim ("the sidecar's claim") cuts its ``size`` bytes into ``chunk_size``-byte chunks
    that were not hashed: under ``min_chunk_bytes`` (`prov serve --min-chunk-kb`), or more
    chunks than a claim's list can hold (`chunks_fit`, `MAX_CLAIM_CHUNK_HASHES`). None
    for a chunk size of neither (0: no chunked binding)."""
    if 0 < chunk_size < min_chunk_bytes:
        why = f"under the server's minimum of {min_chunk_bytes} bytes"
    elif 0 < chunk_size and not chunks_fit(size, chunk_size):
        why = (
            f"{-(-size // chunk_size):,} of them, more than the {MAX_CLAIM_CHUNK_HASHES:,}"
            " chunk hashes a claim's list can hold, so no list matches and they were not"
            " hashed"
        )
    else:
        return None
    return (
        f"damaged byte ranges were not located: {whose} cuts the file into {chunk_size}-byte"
        f" chunks, {why}"
    )


#: The reason added when the claim judged as a sidecar came embedded in the file.
EMBEDDED_CLAIM_NOTE = (
    "note: no sidecar file came with the file; the sidecar claim these reasons speak of is"
    " the one embedded in its Content Credentials (C2PA manifest, as `prov sign --c2pa`"
    " writes it), checked as a sidecar is"
)


def _embedded_claim(c2pa: dict[str, Any] | None) -> Sidecar | None:
    """Our signed claim embedded in a file's C2PA manifest (`embedded_sidecar`), whether
    or not the manifest validates: the verdict checks the claim itself (DESIGN.md, "The
    verdict": a sidecar *or embedded* claim whose bytes or signature do not match is
    TAMPERED); None without one."""
    if not c2pa or not c2pa.get("present"):
        return None
    return embedded_sidecar(c2pa.get("provenance_assertion"))


def _with_claim_notes(dense: VerificationReport, before: VerificationReport) -> VerificationReport:
    """The dense pass's report (``dense``, made from the frames alone) keeping what
    ``before`` said of a claim embedded in the file: its reasons about it and the evidence
    that one came. An embedded claim that leaves a video UNSIGNED (its key is not enrolled
    here) was not used, so the clip is still searched for: before, it turned the dense
    pass off as a sidecar does, and anyone could hide a trimmed copy's original by
    embedding a claim under a key of their own."""
    if not before.evidence.claim_embedded or dense is before:
        return dense
    said = [r for r in before.reasons if "sidecar" in r and r not in dense.reasons]
    evidence = replace(dense.evidence, sidecar_present=True, claim_embedded=True)
    return replace(dense, reasons=(*dense.reasons, *said), evidence=evidence)


def _note(report: VerificationReport, note: str) -> VerificationReport:
    return replace(report, reasons=(*report.reasons, note))


@dataclass
class VerificationPipeline:
    """See module docstring. ``inspect``: limits, the C2PA reader and video decoding;
    ``detector``: the advisory detector, or None when the server runs none;
    ``detector_timeout_s``: seconds its scoring of one file may take (``prov serve
    --detector-timeout``; None: no limit), after which the report is returned without a
    score and the detector's queued work for it is dropped."""

    service: ProvenanceService
    inspect: InspectConfig = InspectConfig()
    detector: DetectorBackend | None = None
    detector_timeout_s: float | None = DETECTOR_TIMEOUT_S

    # ---------------------------------------------------------------- entry points

    def verify_upload(
        self,
        upload: Upload,
        sidecar: SignedClaim | None = None,
        chunk_hashes: Sequence[bytes] = (),
        detect: bool = False,
        time_left: Callable[[], float | None] | None = None,
        sidecar_receipt: Receipt | None = None,
        sidecar_public_key: bytes = b"",
        call: CallStop | None = None,
        search_s: float | None = None,
    ) -> VerificationReport:
        """The report on a complete upload (module docstring, steps 1-5).

        sidecar: the claim that came beside the file; chunk_hashes: a video sidecar's
        chunk leaf hashes (32 bytes each); detect: run the advisory detector; time_left:
        seconds left before the caller's deadline (None: no deadline); sidecar_receipt:
        the sidecar's log receipt (a lost one reads as a log rollback); sidecar_public_key:
        the raw key the sidecar carries (words the reason on an unenrolled key); call:
        the call's end, which stops the video's decodes (`inspect_upload`); search_s: the
        seconds its near-duplicate searches may spend in all (`SearchBudget`, `prov serve
        --verify-search-seconds`; None: no bound), and no later than `SEARCH_MARGIN_S`
        before the caller's deadline: one cut short is reported so. An image or
        video that cannot be decoded (truncated, corrupt) is judged on its exact bytes and
        sidecar, a reason saying why no perceptual hash was made (as `prov scan` judges
        it). Raises MediaError for an empty file, or one of no recognised media format
        matched by neither the log nor a sidecar, MediaTooLargeError beyond the limits,
        LogIntegrityError for a damaged log, DeadlineError when the call ends while its
        video is decoded.
        """
        lenient = sidecar is not None or bool(
            self.service.store.leaves_by_file_sha256(upload.sha256, limit=1)
        )
        try:
            found = inspect_upload(
                upload,
                self.inspect,
                lenient,
                self._video_pixels(detect),
                call,
                judge_undecodable=True,
            )
        except DecodeBudgetError as e:
            if lenient:  # an exact match or a sidecar: not a pixel decode's refusal
                raise
            raise DecodeBudgetError(
                "no signed capture holds these exact bytes (looked up by SHA-256), and its"
                " pixels were not decoded, so it was not compared with signed captures as a"
                f" re-encoded copy: {e}"
            ) from e
        sidecar_came = sidecar is not None
        embedded = None if sidecar_came else _embedded_claim(found.c2pa)
        facts = found.facts
        if embedded is not None:  # the claim `prov sign --c2pa` put in the file
            sidecar, sidecar_receipt = embedded.signed_claim, embedded.receipt
            sidecar_public_key = embedded.public_key
            chunk_hashes = embedded.chunk_hashes  # the sidecar's list, as it was embedded
            facts, unlocated = self._embedded_chunks(upload, facts, embedded)
        budget = None
        if search_s is not None:
            left = time_left() if time_left is not None else None
            until = None if left is None else time.monotonic() + left - SEARCH_MARGIN_S
            budget = SearchBudget(search_s, until)
        report = self.service.verify(
            facts, sidecar, tuple(chunk_hashes), sidecar_receipt, sidecar_public_key, budget
        )
        if embedded is not None and report.evidence.sidecar_present:  # the claim was read
            report = replace(report, evidence=replace(report.evidence, claim_embedded=True))
            if unlocated:
                report = _note(report, unlocated)
            if any("sidecar" in r for r in report.reasons):  # they speak of it as a sidecar
                report = _note(report, EMBEDDED_CLAIM_NOTE)
        if (
            report.status is Verdict.UNSIGNED
            and found.video is not None
            and not sidecar_came  # an embedded claim left UNSIGNED was not used: search on
            and self.service.has_video
        ):
            report = _with_claim_notes(
                self._dense_pass(upload, found, report, time_left, budget), report
            )
        report = with_c2pa(report, found.c2pa)
        if detect:
            left = time_left() if time_left is not None else None
            report = replace(report, detector=self.detect(found, upload, left))
        return report

    def _embedded_chunks(
        self, upload: Upload, facts: FileFacts, embedded: Sidecar
    ) -> tuple[FileFacts, str | None]:
        """``facts`` with the chunk hashes that name a video's damaged byte ranges against
        the chunk list of the claim embedded in its C2PA manifest (`embedded_chunk_facts`),
        when the claim lists them and does not bind these bytes: an intact export costs no
        extra hashing. ``facts`` as it is otherwise (a claim that does not decode is
        reported by the verdict). With it, the note saying why no range was located when
        the claim's chunks are too small or too many to hash (`unlocated_note`), or None."""
        if not embedded.chunk_hashes:
            return facts, None
        try:
            hb = wire.decode_offered_claim(embedded.signed_claim.claim_bytes).hard_binding
        except ProvenanceError:
            return facts, None
        if facts.binds(hb.sha256):
            return facts, None
        whose = "the claim embedded in its Content Credentials"
        note = unlocated_note(whose, hb.chunk_size, upload.size, self.inspect.min_chunk_bytes)
        return embedded_chunk_facts(upload, facts, hb.chunk_size, self.inspect), note

    def verify_file(
        self,
        path: Path,
        sidecar: SignedClaim | None = None,
        chunk_hashes: Sequence[bytes] = (),
        detect: bool = False,
    ) -> VerificationReport:
        """`verify_upload` of a file on disk, for in-process callers. Raises MediaError
        when it cannot be read, and as `verify_upload`."""
        with Upload(self.inspect.limits.max_bytes) as upload:
            chunk = sidecar_chunk_size(sidecar)
            if chunk and chunk_hashes:
                upload.hash_chunks(chunk)
            try:
                with path.open("rb") as f:
                    while block := f.read(_READ_BYTES):
                        upload.write(block)
            except OSError as e:
                raise MediaError(f"cannot read {path}: {e.strerror or e}") from e
            return self.verify_upload(upload, sidecar, chunk_hashes, detect)

    def lookup_many(
        self,
        many: Sequence[FileFacts],
        packed_turns: Sequence[bytes] = (),
        deadline: float | None = None,
    ) -> list[VerificationReport | LogIntegrityError]:
        """The verdicts from hashes alone (the Lookup RPC: scanners send no bytes), in
        order, found together (`ProvenanceService.verify_many`, ``packed_turns`` as it
        takes them): a file whose logged record is damaged gets its LogIntegrityError in
        its place. The reasons say which evidence needs the bytes: the dense pass for a
        video that stays UNSIGNED, and the Content Credentials of a file that carries a
        manifest store. ``deadline`` (time.monotonic) as `ProvenanceService.verify_many`
        takes it. Raises StorageError, DeadlineError."""
        found = self.service.verify_many(many, packed_turns, deadline)
        return [
            r if isinstance(r, LogIntegrityError) else self._lookup_notes(f, r)
            for f, r in zip(many, found, strict=True)
        ]

    def _lookup_notes(self, facts: FileFacts, report: VerificationReport) -> VerificationReport:
        video = facts.media_type.startswith("video/")
        if report.status is Verdict.UNSIGNED and video and self.service.has_video:
            report = _note(
                report,
                f"{DENSE_PASS_NEEDS_BYTES}: this lookup sent hashes of 1 Hz samples only,"
                " so a trimmed copy of a signed video may be missed (verify the file itself)",
            )
        if facts.content_sha256:
            report = _note(
                report,
                "the file carries Content Credentials (C2PA) that a lookup by hashes does"
                " not validate, nor checks the signed claim they may embed (verify the file"
                " itself to read them)",
            )
        return report

    # ---------------------------------------------------------------- optional evidence

    def _dense_pass(
        self,
        upload: Upload,
        found: Inspection,
        report: VerificationReport,
        time_left: Callable[[], float | None] | None,
        search: SearchBudget | None = None,
    ) -> VerificationReport:
        """A trimmed clip may fall between the claim's 1 Hz samples: hash (up to) every
        frame, within the caller's deadline, and look again (its search within what is
        left of ``search``, the first search's budget; a report marked cut when either
        search was, `ProvenanceService.verify`). Skipped, with a note naming
        the bound, when the deadline or the video decoding limit leaves under
        DENSE_PASS_MIN_S for it."""
        left = time_left() if time_left is not None else None
        budget = None if left is None else left - DENSE_PASS_MIN_S  # the call's deadline
        limit = self.inspect.video_timeout_s
        why = None
        if budget is not None and budget < DENSE_PASS_MIN_S:
            why = "the call's deadline is too close"
        elif limit < DENSE_PASS_MIN_S:  # set in-process (InspectConfig), deadline or none
            why = (
                f"the video decoding limit ({limit:g} s) is under the {DENSE_PASS_MIN_S:g} s"
                " the pass needs at least"
            )
        if why is not None:
            return _note(report, f"the dense frame pass for trimmed clips was skipped: {why}")
        try:  # also within the time the inspection's decodes left (its DecodeClock)
            dense = resample_dense(upload, found, self.inspect, budget)
        except MediaError as e:
            return _note(report, f"the dense frame pass for trimmed clips did not finish: {e}")
        return self.service.verify(dense.facts, budget=search)

    def detect(
        self, found: Inspection, upload: Upload, time_left: float | None = None
    ) -> dict[str, Any]:
        """The advisory block: an image's score, or a video's per-frame timeline.
        time_left: seconds left before the caller's deadline (None: none); the detector
        gets ``detector_timeout_s`` or that, whichever is less. Never raises: what the
        detector cannot score, or not in time, is reported in the block as not scored."""
        timeout = self.detector_timeout_s
        if time_left is not None:
            timeout = max(0.0, time_left) if timeout is None else min(timeout, max(0.0, time_left))
        try:
            if found.video is not None:
                return self._detect_video(found, upload, timeout)
            if self.detector is None:
                return {"available": False, "note": "this server runs no detector"}
            if found.image is None:
                media = found.facts.media_type.startswith(("image/", "video/"))
                why = (  # a damaged image is an image: its pixels are what is missing
                    "its pixels could not be decoded (the reasons say why)"
                    if media
                    else "the detector scores images and video frames only"
                )
                return {"available": False, "note": f"not scored: {why}"}
            return self.detector.score_image(found.image.rgb, upload.sha256, timeout)
        except DetectorTimeoutError as e:
            metrics.DETECTOR_TIMEOUTS.inc()
            log.warning("detector not scored in time: %s", e)
            by = (
                "the server's --detector-timeout"
                if timeout == self.detector_timeout_s
                else "the call's deadline"
            )
            return {
                "available": False,
                "note": f"not scored: {e}, the limit set by {by}; the verdict did not wait",
            }
        except ProvenanceError as e:  # the report is the caller's: its public words
            if e.hides_detail:
                log.warning("the detector did not score an input: %s", e)
            return {"available": False, "note": f"not scored: {e.public}"}
        except Exception:  # advisory only: a detector fault never costs the verdict
            log.exception("the detector failed")
            return {"available": False, "note": "not scored: the detector failed (logged)"}

    def _detect_video(
        self, found: Inspection, upload: Upload, timeout: float | None
    ) -> dict[str, Any]:
        assert found.video is not None
        n = len(found.video.frames)
        if self.detector is None:
            return {
                "available": False,
                "note": "this server runs no detector: the timeline carries no scores",
                "timeline": [
                    {"timestamp_seconds": f.timestamp_seconds, "score": None}
                    for f in found.video.frames
                ],
            }
        if found.video_pixels_error:  # a decode that keeps them does not fit
            raise DecoderMemoryError(found.video_pixels_error)
        every = max(1, -(-n // DETECTOR_VIDEO_FRAMES))
        wanted = range(0, n, every)  # at most DETECTOR_VIDEO_FRAMES of them
        kept = [i for i, f in enumerate(found.video.frames) if f.rgb is not None]
        info = found.video
        if kept != list(wanted):  # not kept by the first decode (its header was wrong)
            info = sample_frames(
                upload.spill(),
                rate_hz=found.video.rate_hz,
                max_frames=n + 2,
                keep_rgb_every=every,
                max_rgb_frames=DETECTOR_VIDEO_FRAMES,
                max_memory_bytes=self.inspect.video_max_memory_bytes,
                clock=found.decoding or DecodeClock(self.inspect.video_timeout_s),
                again=DETECTOR_DECODE,
            )
        frames = [(f.timestamp_seconds, f.rgb) for f in info.frames if f.rgb is not None]
        return self.detector.score_video(frames, upload.sha256, timeout)

    def _video_pixels(self, detect: bool) -> int:
        """How many frames' pixels the first decode of a video keeps for the detector
        (`inspect_upload` ``video_pixels``): DETECTOR_VIDEO_FRAMES when a detector will
        score it, else none."""
        return DETECTOR_VIDEO_FRAMES if detect and self.detector is not None else 0

    def detect_upload(
        self, upload: Upload, time_left: float | None = None, call: CallStop | None = None
    ) -> dict[str, Any]:
        """Only the advisory block of an upload (DetectFile): C2PA is not read; time_left
        as in `detect`, call as in `verify_upload`. Raises MediaError for a file that is
        not decodable media, DeadlineError when the call ends while its video is decoded."""
        cfg = replace(self.inspect, c2pa_pool=None)
        found = inspect_upload(upload, cfg, False, self._video_pixels(True), call)
        return self.detect(found, upload, time_left)
