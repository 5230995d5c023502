"""A near copy's verdict must rest on a claim whose soft binding matches the file's pixels.

`clients.cited.check_cited` checks that a verdict resting on a claim's hard binding cites
a claim of the bytes sent. A near copy's verdict (DERIVED, or REVOKED_KEY of a near match)
rests instead on the claim's soft binding: PDQ hashes within `PDQ_MATCH_THRESHOLD` bits of
the file's (docs/verify.md). Unchecked, a hostile or broken server (or anyone on the
plaintext channel) could answer DERIVED for any file, citing the genuine, logged claim of
an unrelated capture. `check_derived` closes that: the client hashes the file itself, with
the server's own code, and applies the server's rule (`provenance.core.verify`):

* an image: the 8 dihedral PDQ hashes of its pixels decoded for PDQ as the server decodes
  them (`provenance.media.assets.image_pdq`); the smallest distance to the claim's hashes
  (`provenance.core.dihedral.best_dihedral_distance`, quality >= `PDQ_MIN_QUALITY` on
  both sides) must be at most `PDQ_MATCH_THRESHOLD`;
* a video: the PDQ hashes of its frames sampled at 1 Hz with their 7 turns
  (`provenance.media.video.decode.sample_frames`, as `provenance.media.inspect` samples
  them) must line up in time with the claim's (`provenance.core.video_match.match_video`:
  at least `MIN_COVERAGE` of the claim's frames in the stretch the file spans), as is or
  through one turn; if not, the server's dense pass for trimmed clips is done here too
  (every frame, within the server's default bounds) and its frames must line up.

Only a near copy's verdict is checked, so no other answer costs anything. A mismatch, a
file that cannot be decoded here (corrupt, or of no image or video type), or a near
verdict citing no claim raises ServerEvidenceError (exit 3), naming the distance found.
A file over this client's own limits (an image's, `provenance.media.assets.AssetLimits`:
pixels, bytes, decode budget; a video decoder's memory) is not hashed: a service started with
higher limits (`prov serve --max-megapixels`, `--max-image-mb`) honestly answers near
copies of it, so its verdict is kept, marked as not checked here (`NOT_CHECKED_HERE`,
``pixels_checked: false``), never refused as forged.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from clients.cited import changed_after_upload
from clients.files import open_regular, read_bounded, still_the_file
from provenance.core.binding import (
    PDQ_ALGORITHM,
    PDQ_HASH_SIZE,
    PDQ_MATCH_THRESHOLD,
    PerceptualHash,
    perceptual_hash,
)
from provenance.core.claims import MAX_SOFT_BINDINGS, Claim, Verdict
from provenance.core.dihedral import DIHEDRAL_TURNS, best_dihedral_distance
from provenance.core.errors import (
    DecoderMemoryError,
    FileChangedError,
    MediaError,
    MediaTooLargeError,
    ServerEvidenceError,
    StructureLimitError,
)
from provenance.core.verify import VerificationReport, best_pdq_distance, video_runs
from provenance.core.video_match import MIN_COVERAGE, QUERY_RATE_HZ, VideoMatch, match_video

if TYPE_CHECKING:
    from provenance.media.assets import AssetLimits


#: How the reason a near copy's verdict gets when this client could not hash the file
#: within its own limits begins (`check_derived`; ``pixels_checked: false``).
NOT_CHECKED_HERE = "not checked here"


def rests_on_soft_binding(report: VerificationReport) -> bool:
    """Whether ``report``'s verdict says the file is a near copy of its claim's capture
    (DERIVED, or REVOKED_KEY of a near match: not of the exact bytes)."""
    return report.status is Verdict.DERIVED or (
        report.status is Verdict.REVOKED_KEY
        and not report.evidence.hash_match
        and report.evidence.claim is not None
    )


@dataclass(frozen=True)
class OwnHashes:
    """A file's perceptual hashes as computed here. media_type: sniffed from its bytes;
    plain: an image's PDQ hash (one), or a video's 1 Hz frames' (with their times);
    turned: an image's 7 other dihedral hashes, or a video's 7 runs of its frames turned
    (`provenance.core.verify.video_runs`), both in `provenance.core.dihedral.TRANSFORMS`
    order after the identity (empty: not computed); dense: for a video, the frames of the
    dense pass, made only when needed (None: none can be made, as for a Lookup);
    queried: the hashes are a Lookup query's as its sender gave them (`prov web`'s ``POST
    /api/v1/lookup``), not computed here from a file: refusals name them "the query's PDQ
    hashes", and a query of no video type is matched as an image, as the server matches
    it (`provenance.core.verify._decide_near`)."""

    media_type: str
    plain: tuple[PerceptualHash, ...]
    turned: tuple[PerceptualHash, ...] = ()
    dense: Callable[[], Sequence[PerceptualHash]] | None = None
    queried: bool = False


def _who(report: VerificationReport, server: str | None) -> str:
    cited = report.evidence.claim
    at = f" at {server}" if server is not None else ""
    said = f"the server{at} answered {report.status}"
    if cited is None:
        return said
    return (
        f"{said} citing a claim (device {cited.claim.device_id.hex()[:16]},"
        f" sequence {cited.claim.sequence})"
    )


def _refusal(report: VerificationReport, server: str, rest: str) -> ServerEvidenceError:
    """ServerEvidenceError saying the server at ``server`` answered as it did, then
    ``rest``; its ``public`` text (what `prov web` tells a visitor) without the address."""
    return ServerEvidenceError(
        f"{_who(report, server)}{rest}", public=f"{_who(report, None)}{rest}"
    )


def _image_mismatch(report: VerificationReport, own: OwnHashes, claim: Claim) -> str | None:
    """Why an image's own hashes do not make it a near copy of ``claim`` (None: they do)."""
    found = best_dihedral_distance(own.plain, own.turned, claim.soft_bindings)
    if found is not None and found[0] <= PDQ_MATCH_THRESHOLD:
        return None
    said = report.evidence.pdq_distance
    server_said = f" (the server said {said})" if said is not None else ""
    if own.queried:
        return _query_mismatch(own, found, server_said)
    if found is None:
        return (
            "but this file's pixels and that claim's have no PDQ hashes of usable quality to"
            f" compare{server_said}: no distance within the match threshold of"
            f" {PDQ_MATCH_THRESHOLD} bits (PDQ) can be found"
        )
    return (
        f"but this file's pixels, hashed here, are {found[0]} bits (PDQ) from that claim's"
        " (the closest of their 8 rotations and mirror images), past the match threshold of"
        f" {PDQ_MATCH_THRESHOLD}{server_said}"
    )


def _query_mismatch(own: OwnHashes, found: tuple[int, str] | None, server_said: str) -> str:
    """`_image_mismatch`'s reason for a Lookup query's own hashes (``own.queried``), whose
    smallest distance to the claim's is ``found`` (None: no usable pair)."""
    if not own.plain:
        return (
            f"but the query sent no PDQ hash, so no near copy's verdict can rest on it{server_said}"
        )
    if found is None:
        return (
            "but the query's PDQ hashes and that claim's have none of usable quality to"
            f" compare{server_said}: no distance within the match threshold of"
            f" {PDQ_MATCH_THRESHOLD} bits (PDQ) can be found"
        )
    return (
        f"but the query's PDQ hashes are {found[0]} bits from that claim's (the closest"
        f" pair), past the match threshold of {PDQ_MATCH_THRESHOLD}{server_said}"
    )


def _video_match(own: OwnHashes, claimed: Sequence[PerceptualHash]) -> VideoMatch:
    """The best time-aligned match of ``own``'s 1 Hz frames, as they are or through one of
    their 7 turns, with ``claimed`` (`provenance.core.verify._decide_video_near`'s rule)."""
    m = match_video(own.plain, claimed)
    for run in video_runs(own.turned) if not m.matched else ():
        turned = match_video(run, claimed)
        if turned.matched and (not m.matched or turned.coverage > m.coverage):
            m = turned
    return m


def _video_mismatch(own: OwnHashes, claim: Claim) -> str | None:
    """Why a video's own frames do not make it a near copy of ``claim`` (None: they do)."""
    if not claim.media_type.startswith("video/"):
        return f"but that claim is of {claim.media_type or 'no media type'}, not of a video"
    m = _video_match(own, claim.soft_bindings)
    if m.matched:
        return None
    frames = list(own.plain)
    if own.dense is not None:  # the server's dense pass for trimmed clips, done here too
        frames = list(own.dense())
        m = match_video(frames, claim.soft_bindings)
        if m.matched:
            return None
    closest = best_pdq_distance([*frames, *own.turned], claim.soft_bindings)
    near = "none" if closest is None else f"{closest} bits (PDQ)"
    if m.window_frames:
        lined = (
            f"{m.aligned_frames} of the {m.window_frames} claimed frames in the stretch it"
            f" spans line up within {PDQ_MATCH_THRESHOLD} bits ({m.coverage:.0%}, at least"
            f" {MIN_COVERAGE:.0%} needed)"
        )
    else:
        lined = (
            f"none of its {m.query_frames} usable frames is within {PDQ_MATCH_THRESHOLD} bits"
            f" of any of the claim's {m.original_frames}"
        )
    whose = "the query's PDQ hashes" if own.queried else "this file's sampled frames, hashed here,"
    return (
        f"but {whose} do not line up with that claim's:"
        f" {lined}; the closest pair of frames is {near} apart"
    )


def _too_many_frames(report: VerificationReport, server: str) -> None:
    """Raise ServerEvidenceError when ``report``'s cited claim holds more soft bindings
    than `MAX_SOFT_BINDINGS`: more than any `prov sign` ever put in a claim (1,000 since
    the log's entry bound; 4,096 before it), so no log holds it, and each of them costs
    the comparison time (about 1.5 us per frame of the file per turn: a hostile 8 MiB
    answer's 150,000 kept a 60-frame check busy 105 s)."""
    cited = report.evidence.claim
    if cited is not None and len(cited.claim.soft_bindings) > MAX_SOFT_BINDINGS:
        raise _refusal(
            report,
            server,
            f", but that claim holds {len(cited.claim.soft_bindings):,} soft bindings, more"
            f" than any claim a log holds (at most {MAX_SOFT_BINDINGS:,}), so it is no logged"
            " capture; its verdict is not shown",
        )


def check_soft_cited(report: VerificationReport, own: OwnHashes, server: str) -> None:
    """Raise ServerEvidenceError unless ``report``, when its verdict rests on a claim's soft
    binding (`rests_on_soft_binding`), cites a claim whose soft binding matches ``own``
    (the file's hashes computed here) by the server's rule (module docstring): an image
    within `PDQ_MATCH_THRESHOLD` bits through one of its 8 dihedral turns, a video's frames
    lined up in time. ``server``: HOST:PORT, for the message. A near verdict citing no
    claim, or a claim of more than `MAX_SOFT_BINDINGS` soft bindings (no log holds one),
    or a file of no image or video type, is refused too. A Lookup query's own hashes
    (``own.queried``) are matched as the server matched them: a video query's as frames,
    any other's as an image's, with only the turns the query sent."""
    if not rests_on_soft_binding(report):
        return
    cited = report.evidence.claim
    if cited is None:
        raise _refusal(report, server, " citing no claim; the verdict is not shown")
    _too_many_frames(report, server)
    if own.media_type.startswith("video/"):
        why = _video_mismatch(own, cited.claim)
    elif own.media_type.startswith("image/") or own.queried:  # as the server matches a query
        why = _image_mismatch(report, own, cited.claim)
    else:
        why = "but this file is of no image or video format, so no copy of a capture"
    if why is not None:
        raise _refusal(report, server, f", {why}; its verdict is not shown")


def lookup_hashes(
    media_type: str | None,
    soft: Sequence[PerceptualHash],
    dihedral: bytes = b"",
    video_turned: bytes = b"",
    queried: bool = False,
) -> OwnHashes:
    """`OwnHashes` from what a scan measured and sent in its Lookup (`clients.scan.hashing.
    Measured`): ``soft``; an image's ``dihedral``, its 8 PDQ hashes packed (its own first),
    of ``soft[0]``'s quality; a video's ``video_turned``, its frames' 7 turns packed turn
    by turn, each of its frame's quality and time. No dense pass: a Lookup has none.
    ``queried``: the hashes are the query's sender's, not computed here (`OwnHashes`;
    `prov web`'s ``POST /api/v1/lookup``)."""
    mt = media_type or ""
    if dihedral and soft:
        turned = _unpack(dihedral[PDQ_HASH_SIZE:], [soft[0]] * DIHEDRAL_TURNS)
    elif video_turned and len(video_turned) == DIHEDRAL_TURNS * PDQ_HASH_SIZE * len(soft):
        turned = _unpack(video_turned, list(soft) * DIHEDRAL_TURNS)
    else:
        turned = ()
    return OwnHashes(mt, tuple(soft), turned, queried=queried)


def _unpack(packed: bytes, like: Sequence[PerceptualHash]) -> tuple[PerceptualHash, ...]:
    """``packed`` 32-byte hashes, each of the quality and time of its place in ``like``."""
    return tuple(
        perceptual_hash(
            PDQ_ALGORITHM, packed[at : at + PDQ_HASH_SIZE], h.quality, h.timestamp_seconds
        )
        for at, h in zip(range(0, len(packed), PDQ_HASH_SIZE), like, strict=True)
    )


def check_derived(
    report: VerificationReport,
    sent_sha256: bytes,
    path: Path,
    server: str,
    limits: AssetLimits | None = None,
) -> str | None:
    """`check_soft_cited` of the server's ``report`` on the file at ``path`` (the bytes whose
    SHA-256, 32 bytes, is ``sent_sha256``), hashing the file here only when the verdict
    rests on a soft binding: an image read whole (at most ``limits.max_image_bytes``;
    None: the server's default limits, `provenance.media.assets.AssetLimits`) and
    decoded for PDQ; a video's frames sampled by the sandboxed decoder, at 1 Hz, then, if
    they do not line up, densely. ``server``: HOST:PORT, for the message.

    Returns None when the verdict was checked or needed no check; the reason to show with
    it (beginning `NOT_CHECKED_HERE`) when the file is over this client's own limits
    (MediaTooLargeError: an image's pixels, bytes, decode budget; a video decoder's
    memory), so its pixels were not hashed and the match is the server's word: a server
    started with higher limits answers such a file honestly. Raises ServerEvidenceError
    (exit 3) on a mismatch, and when the file cannot be decoded here for another reason
    (corrupt: the server decodes it with the same code; an image past a limit on its
    structure, StructureLimitError, which no flag of a server moves; a video over the decoding
    budget, frame size or frame count, or whose dense pass is over a limit: a server's
    video bounds are the same); FileChangedError when the bytes hashed here are not
    those sent (written to since)."""
    if not rests_on_soft_binding(report):
        return None
    if report.evidence.claim is None:  # refused: nothing to hash the file for
        check_soft_cited(report, OwnHashes("", ()), server)
        return None
    _too_many_frames(report, server)  # refused before the file is decoded for it
    # imported here: Pillow and the decoders load only when a near verdict is checked
    from provenance.media.assets import AssetLimits

    try:
        own, done = _own_hashes(path, sent_sha256, limits or AssetLimits())
    except MediaError as e:
        if isinstance(e, FileChangedError):
            raise
        # a limit on the image's structure is every service's too (no flag moves it): no
        # service decoded it to find a match, as for a corrupt file
        if isinstance(e, MediaTooLargeError) and not isinstance(e, StructureLimitError):
            return not_checked(report, e)
        raise _unhashable(report, server, e) from e
    try:  # a video's dense pass runs in here, only when its 1 Hz frames do not line up
        check_soft_cited(report, own, server)
    except MediaError as e:
        if isinstance(e, FileChangedError):
            raise
        # over a limit too: the pass runs only on the server's answer, within the bounds
        # the server's own dense pass has (`provenance.media.inspect.resample_dense`), so
        # no server found a match by it that this file's 1 Hz frames did not show
        raise _unhashable(report, server, e, dense=True) from e
    finally:
        done()
    return None


def _unhashable(
    report: VerificationReport, server: str, e: MediaError, dense: bool = False
) -> ServerEvidenceError:
    """The refusal of a near copy's ``report`` whose file cannot be hashed here (``e``);
    ``dense``: its dense frame pass could not, after its 1 Hz frames did not line up."""
    if dense:
        return _refusal(
            report,
            server,
            ", but this file's 1 Hz frames, hashed here, do not line up with that claim's,"
            " and the dense frame pass for trimmed clips, which the server runs within the"
            f" same bounds, cannot be done here either: {e}; its verdict is not shown",
        )
    return _refusal(
        report,
        server,
        ", but this file cannot be hashed here to check that (with the server's own"
        f" code): {e}; its verdict is not shown",
    )


#: What `not_checked`'s reason says just before, and just after, the limit the file is over.
_OVER_LIMITS = " own limits ("
_AFTER_LIMITS = "); the service may have been started with higher ones"


def not_checked(report: VerificationReport, why: MediaTooLargeError) -> str:
    """The reason a near copy's ``report`` is shown with when the file is over this
    client's own limits (``why``): its match is the server's word."""
    return (
        f"{NOT_CHECKED_HERE}: the file's pixels were not hashed here to check that they"
        f" match the claim this {report.status} verdict cites, as it is over this client's"
        f"{_OVER_LIMITS}{why}{_AFTER_LIMITS}"
        " (`prov serve --max-megapixels`, `--max-image-mb`), so the match is its word"
    )


#: `match_line` of a near copy whose pixels were hashed here and matched (the web page's
#: "Match checked: checked here too").
MATCHED_HERE = (
    "checked here too: this client hashed the file's own pixels and they match the claim's"
)


def match_line(report: VerificationReport) -> str:
    """Whether a near copy's match was checked here, in one line (`prov verify`'s text
    report, its ``match`` line; the web page's "Match checked"): `MATCHED_HERE`, or
    "not checked here: the file is over this client's own limits (LIMIT), so the match is
    the service's word", LIMIT as the reason `with_check` added names it; "" when
    `pixels_checked` is None (another verdict, or a report no client checked)."""
    checked = pixels_checked(report)
    if checked is None:
        return ""
    if checked:
        return MATCHED_HERE
    # the last such reason is this client's own (`with_check` adds it after the server's)
    ours = [r for r in report.reasons if r.startswith(NOT_CHECKED_HERE) and _OVER_LIMITS in r]
    limit = ours[-1].partition(_OVER_LIMITS)[2].rpartition(_AFTER_LIMITS)[0] if ours else ""
    return (
        f"{NOT_CHECKED_HERE}: the file is over this client's own limits"
        f" ({limit or 'see why'}), so the match is the service's word"
    )


def pixels_checked(report: VerificationReport) -> bool | None:
    """``pixels_checked`` of ``prov verify --json`` and `prov web`'s JSON: None when
    ``report``'s verdict rests on no soft binding (nothing to check), else the report's
    own field (`VerificationReport.pixels_checked`, set by `with_check`: never by the
    server's words; None for a report no client checked)."""
    if not rests_on_soft_binding(report):
        return None
    return report.pixels_checked


def with_check(report: VerificationReport, unchecked: str | None) -> VerificationReport:
    """``report`` after `check_derived` returned ``unchecked`` for it (it raised
    nothing): a near copy's verdict gets ``pixels_checked`` (True, or False with the
    reason ``unchecked`` last); any other verdict is returned as it is."""
    if not rests_on_soft_binding(report):
        return report
    if unchecked is None:
        return replace(report, pixels_checked=True)
    return replace(report, reasons=(*report.reasons, unchecked), pixels_checked=False)


def _own_hashes(
    path: Path, sent_sha256: bytes, limits: AssetLimits
) -> tuple[OwnHashes, Callable[[], None]]:
    """The file's hashes (`OwnHashes`) and what to call once they were used: for a video,
    the check that ``path`` still names the bytes sent (its frames are decoded by name).
    Raises MediaError as decoding raises it, FileChangedError."""
    from provenance.media.assets import image_pdq
    from provenance.media.image import SNIFF_BYTES, sniff_media_type

    with open_regular(path) as f:
        media_type = sniff_media_type(f.read(SNIFF_BYTES)) or ""
    if media_type.startswith("image/"):
        data = read_bounded(path, limits.max_image_bytes, "image")
        if hashlib.sha256(data).digest() != sent_sha256:
            raise changed_after_upload(path)
        hashes, quality = image_pdq(data, limits)
        own = [perceptual_hash(PDQ_ALGORITHM, h, quality) for h in hashes]
        return OwnHashes(media_type, (own[0],), tuple(own[1:])), lambda: None
    if not media_type.startswith("video/"):
        return OwnHashes(media_type, ()), lambda: None
    # imported here: PyAV and the decoder's sandbox are loaded only for a video's check
    from provenance.media.video.decode import sample_frames, video_turns

    f = open_regular(path)
    before = os.fstat(f.fileno())
    try:
        info = sample_frames(path, dihedral=True)
    except MediaError as e:
        f.close()
        if isinstance(e, MediaTooLargeError) and not isinstance(e, DecoderMemoryError):
            # a service decodes videos within these same bounds (`prov serve` has no flag
            # for them): over them, it found no match either. Only the decoder's memory
            # is this machine's own limit
            raise MediaError(f"{e} (a service's video bounds are the same)") from e
        raise
    except BaseException:
        f.close()
        raise

    def dense() -> Sequence[PerceptualHash]:
        """`provenance.media.inspect.resample_dense`'s frames, within the server's default
        bounds (`provenance.media.inspect.InspectConfig`)."""
        from provenance.media.inspect import InspectConfig

        cfg = InspectConfig()
        duration = max(info.duration_seconds, 1e-3)
        frames = min(cfg.dense_max_frames, cfg.dense_max_pixels // max(1, info.width * info.height))
        rate = min(QUERY_RATE_HZ, max(frames, 1) / duration)
        again = sample_frames(path, rate_hz=rate, max_frames=frames + 2)
        return tuple(fr.pdq for fr in again.frames)

    def done() -> None:
        try:
            if not still_the_file(path, f, before, sent_sha256):
                raise changed_after_upload(path)
        finally:
            f.close()

    plain = tuple(fr.pdq for fr in info.frames)
    return OwnHashes(info.media_type, plain, video_turns(info), dense), done
