"""The one code path of a scan, run by every engine: a batch of items in, report rows out.

`process_batch` measures each item (`clients.scan.hashing`), sends the hashes of the whole
batch to the service in one batch Lookup call (only hashes travel), checks a folder file
that has a sidecar beside it with VerifyFile when the lookup alone does not find it signed
(as ``prov verify`` would, so a file edited after signing reads TAMPERED), and so a folder
file carrying a C2PA manifest store that the lookup does not find signed (its embedded
claim is checked as a sidecar), sends a video
file the lookup could not search densely through VerifyFile too (so a trimmed signed clip
reads DERIVED, as with ``prov verify``; an archived video's row says what it lacks), and, with
``detect``, scores the unsigned images: with the local detector when the ``detector``
package and its weights load, else through the server's VerifyFile (folder files only:
that uploads the file). Engines (`clients.scan.engines`) only decide where it runs.

Each worker process keeps one gRPC channel per server address and one detector per crop
key, created on first use.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from clients.api import ProvenanceClient, Query, is_unreachable
from clients.cited import CITES_LOGGED_CLAIM, EvidenceChecker, check_cited, check_lookup_verdict
from clients.derived import check_soft_cited, lookup_hashes, pixels_checked, rests_on_soft_binding
from clients.files import read_bounded
from clients.report import report_to_json
from clients.scan.hashing import Measured, decode_ahead, measure, read_ahead
from clients.scan.rows import error_row, measured_row
from clients.scan.runs import runs
from clients.scan.sources import EntryItem, FileItem, Item, RefusedItem, ScanLimits
from provenance.core.binding import PDQ_HASH_SIZE
from provenance.core.claims import Verdict
from provenance.core.errors import (
    ClaimError,
    DetectorError,
    FileChangedError,
    MediaError,
    ProvenanceError,
    ServerEvidenceError,
    TransportError,
)
from provenance.core.verify import VerificationReport
from provenance.media.assets import inspect_image
from provenance.v1 import provenance_pb2 as pb
from provenance.wire import convert as wire
from provenance.wire.contract import DENSE_PASS_NEEDS_BYTES, MAX_LOOKUP_HASHES, MAX_LOOKUP_QUERIES
from provenance.wire.sidecar import MAX_SIDECAR_BYTES, Sidecar, decode_sidecar

#: The garbage collector's youngest-generation threshold in a scan's processes (the
#: driver for the scan's duration, the workers' fork server and so every worker; Python's
#: default is 700 container objects allocated net). A batch's rows, its measured files and
#: their hashes stay alive until the batch is done, so at 700 a worker ran a young
#: collection every 40-50 files that walked them again (about 4-6 us a file) and the
#: driver one per 80 rows (about 1.5-2 us); the rows hold no reference cycles, so the
#: rarer collections free the same memory, a few MB later.
GC_YOUNG_THRESHOLD = 20_000

#: Waits between tries of a Lookup when the server is unreachable, in seconds.
RETRY_DELAYS_S = (1.0, 4.0)
#: The longest wait a server's "retry after" may ask of one try, in seconds.
MAX_RETRY_WAIT_S = 120.0
#: How long in all a Lookup follows a server's "retry after" (its near-duplicate index
#: still loading, or every Lookup place taken) before the scan gives up, in seconds.
MAX_INDEX_WAIT_S = 900.0


@dataclass(frozen=True)
class ScanConfig:
    """What every worker needs: the server address, limits, whether to run the detector,
    the detector's crop key (32 bytes; empty: a random key per worker process), and the
    pinned log key (``prov scan --log-key``, NAME+ID+KEY; empty: none), with which each
    verdict citing a logged claim has its evidence checked (`clients.cited.
    EvidenceChecker`)."""

    server: str
    limits: ScanLimits = field(default_factory=ScanLimits)
    detect: bool = False
    detector_secret: bytes = b""
    log_key: str = ""


#: The error of a row whose measure failed in a way no check foresaw (a parser bug that
#: the file's bytes reach): before, "cannot measure: " and the exception's class name.
MEASURE_FAILED = (
    "cannot measure: hashing or decoding its bytes failed unexpectedly (a damaged file, or"
    " one made to break a parser); it was not looked up. If it opens as a sound image or"
    " video, report it (with the log of `PROV_LOG_LEVEL=DEBUG prov scan --workers 0`): the"
    " scanner should say what is wrong with it"
)

_CLIENTS: dict[str, ProvenanceClient] = {}
#: Guards `_CLIENTS` and `_SCANS_RUNNING` (in-process scans may run in several threads).
_CLIENTS_LOCK = threading.Lock()
#: In-process scans (``--workers 0``) of this process running now (`scan_started`).
_SCANS_RUNNING = 0
log = logging.getLogger(__name__)
_DETECTORS: dict[bytes, Any] = {}
#: One evidence checker per pinned log key in this process: its checkpoints' signatures
#: are checked once per process, not once per file.
_CHECKERS: dict[str, EvidenceChecker] = {}

#: A row's ``evidence_checked`` when the server's evidence did not hold (its ``error``
#: says why; `prov verify` exits 3 for such a file): a claim of other bytes cited, or,
#: with --log-key, a receipt that does not verify with that key.
EVIDENCE_REFUSED = "refused"
#: A row's ``evidence_checked`` when its claim's receipt was proven with --log-key.
EVIDENCE_LOG_KEY = "log-key"


def _refused_row(
    m: Measured, archive: str | None, e: ServerEvidenceError, log_key: str | None = None
) -> dict[str, Any]:
    """The row of a file whose server answer was refused as evidence: no status, the error,
    and ``log_key``, the pinned key (NAME+ID+KEY) when its check refused it, else None."""
    return measured_row(m, archive, None) | {
        "error": str(e),
        "evidence_checked": EVIDENCE_REFUSED,
        "log_key": log_key,
    }


def _checked_evidence(
    report: VerificationReport | pb.VerificationReport, config: ScanConfig
) -> tuple[VerificationReport | pb.VerificationReport, str | None]:
    """With --log-key (``config.log_key``), the report (converted to the domain report
    when its verdict cites a logged claim, so the row is built from the one conversion)
    and EVIDENCE_LOG_KEY when its cited claim's receipt was proven with that key
    (`clients.cited.EvidenceChecker`; the receipts of any "also" claims are proven
    whatever the verdict), None when it cites no logged claim; without
    --log-key, the report and None, at no cost. Raises ServerEvidenceError."""
    also = len(report.evidence.other_claims)  # each proven whatever the verdict
    if not config.log_key or (_status(report) not in CITES_LOGGED_CLAIM and not also):
        return report, None
    checker = _CHECKERS.get(config.log_key)
    if checker is None:
        checker = _CHECKERS[config.log_key] = EvidenceChecker(config.log_key)
    if not isinstance(report, VerificationReport):
        report = wire.report_from_pb(report, f"the server at {config.server}")
    size = checker.check(report, config.server)
    return report, None if size is None else EVIDENCE_LOG_KEY


def _client(address: str) -> ProvenanceClient:
    with _CLIENTS_LOCK:  # two in-process scans' threads: one client, none left unclosed
        if address not in _CLIENTS:
            _CLIENTS[address] = ProvenanceClient(address)
        return _CLIENTS[address]


def scan_started() -> None:
    """An in-process scan (``--workers 0``) of this process starts: its end
    (`close_clients`) closes this process's clients only once no other is running."""
    global _SCANS_RUNNING
    with _CLIENTS_LOCK:
        _SCANS_RUNNING += 1


def close_clients(wait: bool = True) -> None:
    """An in-process scan (``--workers 0``, begun with `scan_started`) ends: close this
    process's clients (one per server address, kept from batch to batch) unless another
    in-process scan of this process still runs (a program scanning two folders at once in
    two threads: before, the first to end closed the client the other was using, whose
    next call raised "ValueError: Cannot invoke RPC on closed channel!"). Otherwise the
    process that ran it kept each one's connection, or, once its server had stopped, its
    retries of that address (every 2 minutes at most) for as long as it ran. A later
    batch opens a new one.

    ``wait=False`` (a scan stopped by Ctrl-C or SIGTERM): each is closed on a daemon
    thread of its own, not waited for. The signal's KeyboardInterrupt can have been raised
    inside gRPC with a call's lock taken (`clients.interrupt`), and that channel's close
    then waits for good: the scan waited in it until `clients.interrupt.ctrl_c_deadline`
    ended the process 30 s later, without its summary."""
    global _SCANS_RUNNING
    with _CLIENTS_LOCK:
        _SCANS_RUNNING = max(0, _SCANS_RUNNING - 1)
        if _SCANS_RUNNING:
            return
        clients = list(_CLIENTS.values())
        _CLIENTS.clear()
    for client in clients:
        if wait:
            client.close()
        else:
            threading.Thread(target=client.close, name="close-scan-client", daemon=True).start()


def _local_detector(secret: bytes) -> Any:
    """The local `detector.infer.Detector` for this crop key, or the reason (a str) why
    none loads in this process."""
    if secret not in _DETECTORS:
        try:
            from detector.infer import Detector
        except ImportError as e:
            _DETECTORS[secret] = f"the detector package is not installed ({e})"
        else:
            try:
                _DETECTORS[secret] = Detector.load(device="cpu", secret=secret or None)
            except DetectorError as e:
                _DETECTORS[secret] = f"the local detector did not load ({e})"
    return _DETECTORS[secret]


#: What a Lookup gives for one file: the wire report, or why the server could not answer it.
Answer = pb.VerificationReport | TransportError


def query(m: Measured) -> Query:
    """The Lookup query of a measured item: a photo's 8 PDQ hashes packed in one field
    (``pdq_dihedral``), a video's frame hashes as soft bindings with their 7 turns packed
    (``video_turned``), always: a server whose --max-lookup-hashes its frames fit but not
    with their turns searches the frames alone and says so in the file's reasons, naming
    the bound they need (`provenance.server.rpc._turns_left_out`). Before, they were left
    out by the default bound (8 x frames over 16,384), so a server run with a higher one
    was never sent them."""
    if m.dihedral:
        return Query(
            m.ref, m.sha256, (), m.media_type or "", m.content_sha256, m.dihedral, m.soft[0].quality
        )
    return Query(
        m.ref, m.sha256, m.soft, m.media_type or "", m.content_sha256, video_turned=m.video_turned
    )


def _lookup(client: ProvenanceClient, measured: Sequence[Measured]) -> dict[str, Answer]:
    """The server's answer for each of ``measured`` by ref: its wire report (converted only
    where needed: `clients.scan.rows.report_json`), or why the server could not answer that
    one file (the others are answered)."""
    queries = [query(m) for m in measured]
    out: dict[str, Answer] = {}
    for part in _parts(queries):
        out.update(_lookup_part(client, part))
    return out


def _parts(queries: Sequence[Query]) -> Iterator[list[Query]]:
    """Consecutive runs of ``queries`` within the server's default Lookup limits (files and
    perceptual hashes per call, a photo's packed hashes counted as the server counts them)."""
    return runs(
        queries,
        MAX_LOOKUP_QUERIES,
        lambda q: (
            len(q.soft_bindings) + (len(q.pdq_dihedral) + len(q.video_turned)) // PDQ_HASH_SIZE
        ),
        MAX_LOOKUP_HASHES,
    )


def _lookup_part(client: ProvenanceClient, part: list[Query]) -> dict[str, Answer]:
    """One Lookup, split in halves when the server says RESOURCE_EXHAUSTED without a
    time to retry after (a reply over its size limit, or lower limits than the
    defaults); a busy server's refusal says when to retry, and is not split
    (`_lookup_retrying` waits for it)."""
    try:
        return _lookup_retrying(client, part)
    except TransportError as e:
        if e.code != "RESOURCE_EXHAUSTED" or e.retry_after_s is not None or len(part) < 2:
            raise
    half = len(part) // 2
    return {**_lookup_part(client, part[:half]), **_lookup_part(client, part[half:])}


def _lookup_retrying(client: ProvenanceClient, part: list[Query]) -> dict[str, Answer]:
    """One Lookup, tried again while the server cannot answer it.

    A server that says how long to wait (``TransportError.retry_after_s``: its
    near-duplicate index still loading at start, tens of seconds on a 10^7 log, longer on
    a loaded machine, whose estimate can run short; or RESOURCE_EXHAUSTED with every
    Lookup place taken, by other clients or by this scan's own workers, before which a
    scan of more workers than the server's --max-lookups stopped with exit 1) is followed
    for as long as it keeps asking, each wait at most MAX_RETRY_WAIT_S and
    MAX_INDEX_WAIT_S in all, a busy server's with a random part (from the asked time to
    twice it) so workers refused together do not come back together; an unreachable
    server without such a wait is tried again after each of RETRY_DELAYS_S.

    Raises:
        TransportError: the server refused the call, stayed unreachable after the
            retries, or still asked to wait after MAX_INDEX_WAIT_S.
    """
    blind = iter(RETRY_DELAYS_S)
    waited = 0.0
    while True:
        try:
            return dict(client.lookup_wire(part))
        except TransportError as e:
            asked = e.retry_after_s
            if e.code == "RESOURCE_EXHAUSTED" and asked is not None:  # busy: retry later
                asked *= 1.0 + random.random()
            elif not is_unreachable(e):
                raise
            if asked is not None and waited < MAX_INDEX_WAIT_S:
                delay = min(max(asked, RETRY_DELAYS_S[0]), MAX_RETRY_WAIT_S)
                delay = min(delay, MAX_INDEX_WAIT_S - waited)
            else:
                nxt = next(blind, None)
                if nxt is None:
                    raise
                delay = nxt
            time.sleep(delay)
            waited += delay


def _item_bytes(item: FileItem | EntryItem, limit: int) -> bytes:
    if isinstance(item, EntryItem):
        return item.data
    return read_bounded(item.path, limit, "image")


def _detect(
    client: ProvenanceClient, item: FileItem | EntryItem, m: Measured, config: ScanConfig
) -> dict[str, Any]:
    """The advisory detector block of an unsigned image."""
    det = _local_detector(config.detector_secret)
    if not isinstance(det, str):
        try:
            data = _item_bytes(item, config.limits.assets.max_image_bytes)
            # the server's rule (`ImageAsset.rgb`): native pixels only when their full-size
            # decode fits the decode budget (a JPEG hashed at a smaller scale may not)
            rgb = inspect_image(m.sha256, data, config.limits.assets).rgb
            return dict(det.score_image(rgb, m.sha256).to_dict())
        except (MediaError, DetectorError) as e:
            return {"available": False, "note": f"not scored: {e}"}
    if isinstance(item, FileItem):
        try:
            report = client.verify_file(Path(item.path), None, detect=True)
        except FileChangedError as e:
            return {"available": False, "note": f"not scored: {e}"}
        except TransportError as e:
            if is_unreachable(e):
                raise
            return {"available": False, "note": f"the server did not score it: {e}"}
        block = report_to_json(report).get("detector")
        return block or {"available": False, "note": "the server returned no detector block"}
    return {
        "available": False,
        "note": f"{det}; the server's detector needs a file on disk, not an archive entry",
    }


def _check_sidecar(
    client: ProvenanceClient, item: FileItem, report: VerificationReport
) -> tuple[VerificationReport, str | None]:
    """Verify a folder file with its sidecar (uploads the file) unless already signed.

    Returns the report and a note on a sidecar that could not be used (then the lookup's
    report stands). Raises TransportError only when the server is unreachable.
    """
    if item.sidecar is None or report.status == Verdict.SIGNED_ORIGINAL:
        return report, None
    try:
        data = read_bounded(item.sidecar, MAX_SIDECAR_BYTES, "sidecar")
        found = decode_sidecar(data)
    except OSError as e:
        msg = e.strerror or str(e)
        return report, f"sidecar {os.path.basename(item.sidecar)} not usable: {msg}"
    except (ClaimError, MediaError) as e:
        return report, f"sidecar {os.path.basename(item.sidecar)} not usable: {e}"
    return _verify_file(
        client, item, found, report, f"sidecar {os.path.basename(item.sidecar)} not checked"
    )


def _verify_file(
    client: ProvenanceClient,
    item: FileItem,
    found: Sidecar | None,
    report: VerificationReport,
    failed: str,
) -> tuple[VerificationReport, str | None]:
    """The server's report on the uploaded file, or ``report`` and the note ``failed``
    with the error when the server refused it. ``found``: the file's sidecar, sent whole
    as `prov verify` sends it (its claim, the public key it carries, its receipt and a
    video's chunk hashes), so the row gives `prov verify`'s reasons. Raises
    TransportError when unreachable, FileChangedError when the file changed while it
    was sent (`clients.api.ProvenanceClient.verify_file`: the row is an error)."""
    try:
        return client.verify_with_sidecar(Path(item.path), found), None
    except TransportError as e:
        if is_unreachable(e):
            raise
        return report, f"{failed}: {e}"


def _may_embed_claim(m: Measured, report: VerificationReport | pb.VerificationReport) -> bool:
    """Whether a file's Content Credentials may hold a signed claim that changes its verdict:
    it carries a C2PA manifest store (``content_sha256``) and the lookup's verdict does not
    rest on its exact bytes (logged exact bytes decide first, whatever claim comes with
    them). Such a claim is checked as a sidecar is (`prov verify`), which needs the file's
    bytes."""
    return bool(m.content_sha256) and not report.evidence.hash_match


def _check_embedded(
    client: ProvenanceClient, item: FileItem, m: Measured, report: VerificationReport
) -> tuple[VerificationReport, str | None]:
    """Send a folder file without a sidecar that carries a C2PA manifest store, not found
    signed by its exact bytes, through the server's whole pipeline (VerifyFile), so a
    claim embedded by `prov sign --c2pa` is checked as `prov verify` checks it (an edited
    export reads TAMPERED, not DERIVED). Returns the report and a note when the upload
    failed (then the lookup's report stands). Raises TransportError only when the server
    is unreachable."""
    if item.sidecar is not None or not _may_embed_claim(m, report):
        return report, None
    return _verify_file(client, item, None, report, "its Content Credentials were not checked")


def _check_densely(
    client: ProvenanceClient, item: FileItem, report: VerificationReport
) -> tuple[VerificationReport, str | None]:
    """Send a video file on disk through the server's whole pipeline (VerifyFile: the dense
    frame pass for trimmed clips) when the hash lookup says it needed the bytes, so the row
    gets the verdict ``prov verify`` gives. Returns the report and a note when the upload
    failed (then the lookup's report, which says what it lacks, stands). Raises
    TransportError only when the server is unreachable."""
    if report.status != Verdict.UNSIGNED or not any(
        r.startswith(DENSE_PASS_NEEDS_BYTES) for r in report.reasons
    ):
        return report, None
    return _verify_file(client, item, None, report, "the dense frame pass was not run")


def _check_lookup_cited(answer: pb.VerificationReport, m: Measured, server: str) -> bool | None:
    """`clients.cited.check_cited` on a Lookup answer for the file measured as ``m`` (its
    SHA-256 and, for a file with Content Credentials, the SHA-256 without them, both
    computed here): the report converted only when its verdict rests on a claim's hard
    binding, lists other claims ("also" signed) or names other bytes, so an honest
    unsigned answer costs three field reads;
    and `clients.derived.check_soft_cited` on a near copy's answer, with the hashes the
    scan computed and sent (nothing decoded again). Returns the row's ``pixels_checked``:
    True when a near copy's match was so checked on the file's own pixels, None for any
    other verdict. And `clients.cited.check_lookup_verdict`, from three more field reads: the
    verdict is one an honest service gives a lookup (never TAMPERED, an UNSIGNED citing and
    listing no claim, a REVOKED_KEY citing one). Raises ServerEvidenceError."""
    e = answer.evidence
    signed = answer.status == pb.SIGNED_ORIGINAL or (
        answer.status == pb.REVOKED_KEY and e.hash_match
    )
    # the "also" claims of any verdict must bind the bytes too (not only those of a
    # verdict resting on a hard binding: a DERIVED row could list a claim of other bytes
    # as also signed)
    if signed or e.other_claims or (e.file_sha256 and e.file_sha256 != m.sha256):
        check_cited(wire.report_from_pb(answer), m.sha256, None, server, m.content_sha256)
    # a verdict an honest service gives a lookup (no TAMPERED or UNSIGNED row beside an
    # unrelated genuine claim)
    check_lookup_verdict(_status(answer), e.HasField("claim"), len(e.other_claims), server)
    if answer.status == pb.DERIVED or (answer.status == pb.REVOKED_KEY and not e.hash_match):
        own = lookup_hashes(m.media_type, m.soft, m.dihedral, m.video_turned)
        near = wire.report_from_pb(answer)
        check_soft_cited(near, own, server)  # `clients.derived`
        return True if rests_on_soft_binding(near) else None
    return None


def _status(report: VerificationReport | pb.VerificationReport) -> Verdict:
    if isinstance(report, VerificationReport):
        return report.status
    return wire.verdict_from_pb(report.status)


def process_batch(items: Sequence[Item], config: ScanConfig) -> list[dict[str, Any]]:
    """Rows for a batch of items, in the order given (see the module docstring).

    At most MAX_LOOKUP_QUERIES items and MAX_LOOKUP_HASHES perceptual hashes go in one
    Lookup call (fewer when the server's reply would be too large). A file the server
    cannot answer (a damaged log record, a hash it refuses) gets a row with that error and
    a null status; the batch's other files get their reports. Raises TransportError if the
    server cannot be reached after the retries of RETRY_DELAYS_S, or refuses the call.
    """
    client = _client(config.server)
    measured: dict[str, Measured] = {}
    rows: dict[str, dict[str, Any]] = {}
    read = read_ahead(items, config.limits.assets)
    decoded = decode_ahead(read, config.limits.assets)
    for item in items:
        if isinstance(item, RefusedItem):
            rows[item.ref] = error_row(item.ref, item.error, item.size, item.archive)
            continue
        try:
            data, pdq = read.pop(item.ref, None), decoded.pop(item.ref, None)
            measured[item.ref] = measure(item, config.limits.assets, data, pdq)
        except FileChangedError as e:  # not unreadable: read twice, two sets of bytes
            rows[item.ref] = error_row(item.ref, str(e), item.size, getattr(item, "archive", None))
        except (OSError, ProvenanceError) as e:
            msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            rows[item.ref] = error_row(
                item.ref, f"cannot read: {msg}", item.size, getattr(item, "archive", None)
            )
        except Exception:  # a decoder failing on hostile bytes: one bad row, not a stop
            log.debug("cannot measure %s", item.ref, exc_info=True)  # for a bug report
            rows[item.ref] = error_row(
                item.ref, MEASURE_FAILED, item.size, getattr(item, "archive", None)
            )
    unlooked = ("sidecar", "empty")
    reports = _lookup(client, [m for m in measured.values() if m.kind not in unlooked])
    for item in items:
        m = measured.get(item.ref)
        if m is None:
            continue
        archive = getattr(item, "archive", None)
        answer = reports.get(item.ref)
        if answer is None and m.kind not in unlooked:
            # asked about but left out of the reply (a proxy or server dropping part of
            # it): before, a row with no status and no error, counted as a SIDECAR
            answer = TransportError(
                f"the server at {config.server} answered no result for this file; scan it again"
            )
        if answer is None:
            rows[item.ref] = measured_row(m, archive, None)
            continue
        if isinstance(answer, TransportError):  # this file only: the batch was answered
            rows[item.ref] = measured_row(m, archive, None) | {"error": str(answer)}
            continue
        try:  # a newer server's verdict, or none: this file's row says so
            wire.verdict_from_pb(answer.status, f"the server at {config.server}")
        except TransportError as e:
            rows[item.ref] = measured_row(m, archive, None) | {"error": str(e)}
            continue
        try:
            pixels = _check_lookup_cited(answer, m, config.server)
        except ServerEvidenceError as e:  # a claim of other bytes cited: no verdict shown
            rows[item.ref] = _refused_row(m, archive, e)
            continue
        report: VerificationReport | pb.VerificationReport = answer
        if isinstance(item, FileItem) and (
            item.sidecar is not None
            or any(r.startswith(DENSE_PASS_NEEDS_BYTES) for r in answer.reasons)
            or _may_embed_claim(m, answer)
        ):
            looked_up = wire.report_from_pb(answer)
            try:
                report, problem = _check_sidecar(client, item, looked_up)
                report, embedded_problem = _check_embedded(client, item, m, report)
                report, dense_problem = _check_densely(client, item, report)
            except FileChangedError as e:  # changed while it was sent: judged on no bytes
                rows[item.ref] = error_row(item.ref, str(e), item.size, archive)
                continue
            except ServerEvidenceError as e:  # the upload's answer cited a claim of other bytes
                rows[item.ref] = _refused_row(m, archive, e)
                continue
            if report is not looked_up:  # VerifyFile's: its near copy checked by the client
                pixels = pixels_checked(report)  # (`clients.api.ProvenanceClient.verify_file`)
            notes = (m.note, problem, embedded_problem, dense_problem)
            if any(x is not None for x in notes[1:]):
                m = replace(m, note="; ".join(x for x in notes if x))
        try:
            report, checked = _checked_evidence(report, config)
        except ServerEvidenceError as e:  # --log-key: the receipt does not verify with it
            rows[item.ref] = _refused_row(m, archive, e, config.log_key)
            continue
        block = None
        if (
            config.detect
            and _status(report) == Verdict.UNSIGNED
            and m.kind == "media"
            and m.media_type is not None
            and m.media_type.startswith("image/")
            and isinstance(item, FileItem | EntryItem)
        ):
            block = _detect(client, item, m, config)
        # the key that proved the row (a resumed scan with another key tells them apart)
        key = config.log_key if checked == EVIDENCE_LOG_KEY else None
        rows[item.ref] = measured_row(m, archive, report, block, checked, key, pixels)
    return [rows[item.ref] for item in items]
