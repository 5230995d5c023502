"""Relaying an uploaded file to the service's ``VerifyFile`` as it arrives.

The web layer stores no uploaded file: a multipart body is parsed as it streams in
(python-multipart's push parser) and the file's bytes go on to the gRPC upload in
1 MiB chunks from a worker thread, with back-pressure, so memory stays bounded and
nothing is written to disk here (the service keeps its own spill file).

The gRPC upload starts with a header naming the sidecar, so fields must be known
before the file's bytes are sent: a file of up to ``hold_bytes`` is held in memory
until the form ends (any field order works); past that the relay starts with the
fields that came before the file, and a ``sidecar`` field after a large file is
refused with a message saying to send it first.

The service's answer is checked as `prov verify` checks it (`clients.cited`): the
SHA-256 of the bytes relayed is taken as they go up, and a verdict resting on a claim's
hard binding must cite a claim of those bytes, or of those bytes without their C2PA
manifest store; with a pinned log key (``prov web --log-key``) the cited claim's receipt
is verified too; a near copy's verdict (DERIVED, a near REVOKED_KEY) must cite a claim
whose soft binding the upload's own PDQ hashes match (`clients.derived`). The stripped
hash and the PDQ hashes need the bytes again, so an image or a video upload is also
spooled, as it goes up, to an unlinked temporary file (``$TMPDIR``; at most the upload
size cap; gone when the answer is given), read only when the claim cited does not bind
the bytes as sent, or to decode it for a near copy's verdict (docs/web.md, "The
service's answer is checked").
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import queue
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio.to_thread
import grpc
from python_multipart.exceptions import ParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from clients.api import VERIFY_DECODE_SECONDS, ProvenanceClient
from clients.cited import check_cited, check_evidence, file_content_sha256
from clients.derived import (
    OwnHashes,
    check_derived,
    check_soft_cited,
    rests_on_soft_binding,
    with_check,
)
from provenance.c2pa.container import STRIPPABLE_TYPES
from provenance.core.errors import ClaimError, ProvenanceError, ServerEvidenceError
from provenance.core.fair_share import NOTICE_WINDOWS, Notice, ended_slow, take_victim
from provenance.core.verify import VerificationReport
from provenance.media.image import SNIFF_BYTES, sniff_media_type
from provenance.terminal import shown_line
from provenance.web.errors import WebError
from provenance.web.formparts import (
    MAX_NAME,
    Preamble,
    check_transfer_encoding,
    disposition_params,
    has_filename,
    part_filename,
    repeated_param,
)
from provenance.web.logviews import is_number
from provenance.web.present import human_bytes
from provenance.wire.sidecar import MAX_SIDECAR_BYTES, Sidecar, decode_sidecar

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

    from provenance.media.assets import AssetLimits

log = logging.getLogger(__name__)

#: Multipart parts accepted in one form (file, sidecar and a few small fields).
MAX_PARTS = 8
#: Largest form field other than the file and the sidecar, in bytes.
MAX_SMALL_FIELD = 1024
#: Bytes gathered before they go on to the service: small enough that a slow upload
#: (down to about 9 KB/s) never leaves the service's stream idle for its 30 s, large
#: enough to stay above its minimum message size (64 KiB).
RELAY_BLOCK = 256 * 1024
#: Longest header value of a multipart part, in bytes.
MAX_HEADER = 8 * 1024
#: Longest header line of a multipart part the parser reads, in bytes (without its CRLF;
#: python-multipart's default): a file name of about 4,000 bytes fits.
MAX_HEADER_LINE = 4096 + 128
#: Most header lines in one multipart part (python-multipart's default).
MAX_PART_HEADERS = 8
#: Longest the page waits for the service by default, in seconds: a call's answer, or an
#: upload's next piece taken or its receipt (`UploadLimits.answer_s`; ``prov web
#: --service-timeout``).
SERVICE_TIMEOUT_S = 20.0
#: Longest multipart boundary accepted, in bytes.
MAX_BOUNDARY = 256


def _shown_field(name: str) -> str:
    """A form field's ``name`` as an error message shows it: its first `MAX_NAME`
    characters, each bidi control (U+202E would reorder the message around it), terminal
    escape or other unsafe character written as its code point (``\\u202e``), by the rule
    file names follow (`provenance.terminal.shown_line`)."""
    return shown_line(name[:MAX_NAME])


def _header_title(name: str) -> str:
    """A part's header ``name`` (read lowercased) as it is usually written:
    ``Content-Disposition``."""
    return "-".join(word.capitalize() for word in name.split("-"))


#: The name ending of a sidecar (FILE.prov), as `prov sign` writes it beside the file.
SIDECAR_SUFFIX = ".prov"


def _not_a_sidecar(filename: str) -> None:
    """Raises WebError (400) when the file sent to verify is named as a sidecar
    (FILE.prov), saying to send it as the sidecar of the file it describes, as `prov
    verify FILE.prov` says (before, it was relayed and answered "unsupported or
    unrecognised file format")."""
    if filename.endswith(SIDECAR_SUFFIX) and len(filename) > len(SIDECAR_SUFFIX):
        media = shown_line(filename.removesuffix(SIDECAR_SUFFIX))
        raise WebError(
            f"{shown_line(filename)} is a provenance sidecar: send the file it describes"
            f" ({media}) in the field `file` and this one in the field `sidecar` (on the"
            ' page: "Add the file\'s sidecar")'
        )


@dataclass(frozen=True)
class UploadLimits:
    """``max_file_bytes``: the largest file relayed (the service has its own limit);
    ``hold_bytes``: a file up to this size is held in memory until the form ends;
    ``timeout_s``: the longest the service may take to answer once it has the whole file
    (decoding a long video), seconds, also the call's deadline beyond the longest the
    upload may take (``grace_s`` and ``min_rate``); ``answer_s``: the longest the service
    may keep the call waiting, to take the next piece or, after the last, to say it has
    the whole file (`ProvenanceClient.verify_stream`); a slow upload is not counted
    (``prov web --service-timeout``);
    ``idle_s``: longest wait for the next piece of a request body, in seconds;
    ``per_client``: uploads one client address may have running at once;
    ``grace_s`` and ``min_rate``: a body must arrive within ``grace_s`` seconds plus
    one second per ``min_rate`` bytes received (an average of at least ``min_rate``
    bytes a second once the grace has passed), so a client dripping a byte at a time
    cannot hold a relay slot for ever;
    ``cut_rate``: bytes a second a body must average, once it has arrived for
    ``idle_s``, to keep its slot while every slot is taken and another upload arrives
    (`Relayer`; ``prov web --upload-min-rate-kb``); 0: none;
    ``image``: the image limits an upload answered as a near copy is decoded within for
    its check (`clients.derived.check_derived`; over them, shown as not checked here);
    None: the defaults, `provenance.media.assets.AssetLimits`, as `prov verify`'s;
    `prov serve --http` gives its own service's."""

    max_file_bytes: int
    hold_bytes: int = 8 * 1024 * 1024
    timeout_s: float = 30.0 + VERIFY_DECODE_SECONDS
    answer_s: float = SERVICE_TIMEOUT_S
    idle_s: float = 60.0
    per_client: int = 2
    grace_s: float = 120.0
    min_rate: float = 32 * 1024
    cut_rate: float = 8 * 1024
    image: AssetLimits | None = None

    def deadline(self, size: int) -> float:
        """Seconds the service call may take for a file of ``size`` bytes (0: unknown):
        as long as the upload may take at the slowest pace allowed, plus ``timeout_s``.
        (It assumed 5 MiB/s: a slower honest upload of a large file ran out of time.)"""
        return self.grace_s + (size or self.max_file_bytes) / self.min_rate + self.timeout_s


@dataclass(frozen=True)
class Verified:
    """The service's report on an uploaded file, the file's name as sent, and what of its
    evidence was checked here beyond the claim's binding (`clients.cited.check_cited`,
    always): "log-key" when the cited claim's receipt verified with the pinned log key
    (`clients.cited.check_evidence`), else None; ``prov verify --json``'s
    ``evidence_checked``."""

    report: VerificationReport
    filename: str
    evidence_checked: str | None = None


#: What a visitor is told, before the reason, when the service's answer is refused.
REFUSED = "this page checked the answer and refused it, as prov verify does"


class _Sent:
    """What went up to the service of one upload, seen from the thread that hands its
    blocks to gRPC: their SHA-256, whether the last was handed over (``whole``), and,
    for a file whose first bytes sniff as an image or a video (``media_type``), a spool of
    them: an unlinked temporary file (``$TMPDIR``), at most the upload's size, closed (and
    so gone) by `close`; read for its stripped hash (`content_sha256`, a type whose C2PA
    manifest store can be stripped, `STRIPPABLE_TYPES`) and for a near copy's verdict
    (`check_derived`). A spool that cannot be written (disk full) is dropped, and both
    then raise WebError 503."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.whole = False
        self.first = True
        self.spool: IO[bytes] | None = None
        self.media_type: str | None = None
        self.spool_failed = False
        self.closed = False
        self._lock = threading.Lock()  # the spool: written by gRPC's thread, read by ours

    def add(self, block: bytes) -> None:
        """Count ``block``, the next bytes sent (hashed and spooled here: off the event
        loop)."""
        self.digest.update(block)
        with self._lock:
            if self.first and not self.closed:
                self.first = False
                self.media_type = sniff_media_type(block[:SNIFF_BYTES])
                if self.media_type is not None:  # an image or a video
                    try:
                        self.spool = tempfile.TemporaryFile(prefix="prov-web-upload-")
                    except OSError as e:
                        self._drop(e)
            if self.spool is not None:
                try:
                    self.spool.write(block)
                except OSError as e:
                    self._drop(e)

    def _drop(self, why: OSError) -> None:
        """Give the spool up (`content_sha256` then raises), saying why in the log."""
        log.warning(
            "cannot spool an upload in %s to check the service's answer (%s); its answer is"
            " shown only if the claim it cites binds the bytes as sent and it is no near"
            " copy's verdict",
            tempfile.gettempdir(),
            why,
        )
        if self.spool is not None:
            self.spool.close()
        self.spool, self.spool_failed = None, True

    def content_sha256(self) -> bytes:
        """SHA-256 of the bytes sent without their C2PA manifest store, b"" when they
        hold none (`clients.cited.file_content_sha256` of the spool). Raises WebError
        (503) when the spool was lost: the answer cannot be checked, so is not shown."""
        with self._lock:
            self._kept()
            if self.spool is None or self.media_type not in STRIPPABLE_TYPES:
                return b""  # a type no manifest store is stripped from
            self.spool.flush()
            return file_content_sha256(self.spool)

    def _kept(self) -> None:
        """Raise WebError (503) when the spool was lost (held: ``_lock``)."""
        if self.spool_failed:
            raise WebError(
                "this page could not keep the copy of the upload it needs to check the"
                " verification service's answer (its temporary folder is full or not"
                " writable: the page's log says more); try again later",
                "UNAVAILABLE",
                retry_after=5,
            )

    def check_derived(
        self, report: VerificationReport, server: str, limits: AssetLimits | None = None
    ) -> str | None:
        """`clients.derived.check_derived` of ``report`` on the spool: when its verdict
        rests on a soft binding (DERIVED, a near REVOKED_KEY), the upload is decoded and
        hashed here (PDQ; a video's frames by the sandboxed decoder, which opens the spool
        as ``/proc/PID/fd/N``) and must match the cited claim's soft binding; no cost for
        other verdicts, within ``limits`` (None: the defaults). Returns None, or the reason
        to show with the verdict when the upload is over those limits (not checked here:
        the service may have higher ones). Raises ServerEvidenceError (its ``public`` text without the
        address ``server``), WebError (503) when the spool was lost."""
        if not rests_on_soft_binding(report):
            return None
        with self._lock:
            self._kept()
            if self.spool is None:  # no image or video: no near copy of a capture
                check_soft_cited(report, OwnHashes(self.media_type or "", ()), server)
                return None
            self.spool.flush()
            path = Path(f"/proc/{os.getpid()}/fd/{self.spool.fileno()}")
            return check_derived(report, self.digest.digest(), path, server, limits)

    def close(self) -> None:
        """Close the spool (an unlinked file: its space is freed); later blocks (a call
        given up while gRPC's thread still hands them over) are hashed only."""
        with self._lock:
            self.closed = True
            if self.spool is not None:
                self.spool.close()
                self.spool = None


class _Relay:
    """One ``VerifyFile`` call running in a worker thread, fed block by block."""

    def __init__(
        self,
        executor: ThreadPoolExecutor,
        client: ProvenanceClient,
        filename: str,
        size: int,
        sidecar: Sidecar | None,
        detect: bool,
        limits: UploadLimits,
        log_key: str | None = None,
    ) -> None:
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._call: grpc.Future[Any] | None = None
        self._sent = _Sent()
        self._image = limits.image
        self.done = threading.Event()

        def run() -> tuple[VerificationReport, str | None]:
            try:
                report = client.verify_stream(
                    self._blocks(),
                    filename,
                    limits.deadline(size),
                    size=size,
                    sidecar=sidecar.signed_claim if sidecar else None,
                    detect=detect,
                    chunk_hashes=sidecar.chunk_hashes if sidecar else (),
                    flush_bytes=RELAY_BLOCK,
                    public_key=sidecar.public_key if sidecar else b"",
                    receipt=sidecar.receipt if sidecar else None,
                    on_call=self._started,
                    answer_s=limits.answer_s,
                    work_s=limits.timeout_s,
                )
                return self._checked(report, client.address, log_key)
            finally:
                self.done.set()
                self._sent.close()

        self.future = asyncio.get_running_loop().run_in_executor(executor, run)

    def _started(self, call: grpc.Future[Any]) -> None:
        with self._lock:
            self._call = call
            if self._stop.is_set():
                call.cancel()

    def _checked(
        self, report: VerificationReport, server: str, log_key: str | None
    ) -> tuple[VerificationReport, str | None]:
        """Check ``report``, the service's answer, as `prov verify` does: it must describe
        the bytes sent and cite a claim of them (`check_cited`), a near copy's verdict a
        claim its pixels match (`_Sent.check_derived`), and with ``log_key``
        the cited claim's receipt must verify with it (`check_evidence`). Returns the
        report (a near copy's with ``pixels_checked``, and a last reason saying its match
        was not checked here when the upload is over this page's image limits:
        `clients.derived.with_check`)
        and ``evidence_checked`` ("log-key" or None); raises ServerEvidenceError (502),
        its message after `REFUSED` (its ``public`` text without the service's
        address ``server``), or WebError (503) when the spool needed was lost."""
        try:
            if not self._sent.whole:
                raise ServerEvidenceError(
                    f"the server at {server} answered {report.status} before it was sent"
                    " the whole file; the verdict is not shown",
                    public=f"the server answered {report.status} before it was sent the"
                    " whole file; the verdict is not shown",
                )
            check_cited(report, self._sent.digest.digest(), None, server, self._sent.content_sha256)
            report = with_check(report, self._sent.check_derived(report, server, self._image))
            if log_key is None:
                return report, None
            proven = check_evidence(report, log_key, server) is not None
            return report, "log-key" if proven else None
        except ServerEvidenceError as e:
            raise ServerEvidenceError(f"{REFUSED}: {e}", public=f"{REFUSED}: {e.public}") from e

    def _blocks(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is None and not self._stop.is_set():
                self._sent.whole = True
            if item is None or self._stop.is_set():
                # stopped: the call is cancelled (`stop`), so ending here sends nothing
                # more (raising would have grpc log "Exception iterating requests!"
                # with a traceback, at ERROR, for each upload a client gave up)
                return
            self._sent.add(item)
            yield item

    def _put(self, item: bytes | None) -> None:
        while not self.done.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    async def send(self, block: bytes) -> None:
        """Hand ``block`` to the call, waiting while the service is behind."""
        await anyio.to_thread.run_sync(self._put, block)

    async def finish(self) -> tuple[VerificationReport, str | None]:
        """End the upload and return the service's report, checked (`_checked`), and its
        ``evidence_checked``; raises the service's error or the check's."""
        await anyio.to_thread.run_sync(self._put, None)
        return await self.future

    def stop(self) -> None:
        """Have the call end soon (its worker thread then leaves) without waiting: it is
        cancelled, so the service stops receiving (and verifies nothing)."""
        with self._lock:
            self._stop.set()
            if self._call is not None:
                self._call.cancel()
        try:
            self._queue.put_nowait(b"")
        except queue.Full:
            pass

    async def abort(self) -> None:
        """Cancel the call (the client went away or the form was bad)."""
        self.stop()
        try:
            await self.future
        except (ProvenanceError, OSError):
            pass


@dataclass(eq=False)
class _Hold:
    """One upload's hold on a relay slot: its client, when it started (`time.monotonic`),
    the body bytes received so far, whether the body is still arriving, its relay once
    started, and whether another upload took its slot (``cut``: it is answered 503 at its
    next piece), and if so for its pace (``slow``, bytes a second) rather than its
    client's share."""

    peer: str
    started: float = field(default_factory=time.monotonic)
    received: int = 0
    arriving: bool = True
    relay: _Relay | None = None
    cut: bool = False
    slow: float | None = None
    #: its address was on notice when it began: measured without the idle window
    on_notice: bool = False
    #: the relay of the upload whose slot this one took, which must end before this
    #: one's starts (else the service may still count it and refuse this one)
    after: _Relay | None = None

    def got(self, chunk: bytes) -> None:
        """Count ``chunk``; raises WebError (503) when the slot was taken (`Relayer`)."""
        self.received += len(chunk)
        if self.cut:
            raise self.cut_error()

    def cut_error(self) -> WebError:
        """The 503 of an upload whose slot another took, saying why."""
        why = (
            f"this upload averaged {self.slow / 1024:.1f} KiB/s, under this page's minimum"
            " (prov web --upload-min-rate-kb), so another upload took its slot: send it"
            " faster, or try again later"
            if self.slow is not None
            else "your address had the most of them, so another client's upload took one:"
            " try again in a few seconds"
        )
        return WebError(
            f"upload cut: this page's upload slots were all taken and {why}",
            "UNAVAILABLE",
            retry_after=5,
        )


@dataclass
class _Form:
    """What the multipart parser has seen so far."""

    max_file_bytes: int
    parts: int = 0
    header_name: bytes = b""
    headers: dict[bytes, bytes] = field(default_factory=dict)
    #: the current part's headers read to their end (a header given again is refused)
    headers_ended: set[bytes] = field(default_factory=set)
    current: str = ""  # name of the part being read ("" before the first)
    fields: dict[str, bytearray] = field(default_factory=dict)
    fields_after_file: list[str] = field(default_factory=list)
    filename: str = ""
    file_seen: bool = False
    file_done: bool = False
    file_size: int = 0
    held: bytearray = field(default_factory=bytearray)
    ended: bool = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise WebError(f"the form has more than {MAX_PARTS} parts")
        self.headers = {}
        self.headers_ended = set()
        self.header_name = b""
        self.current = ""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        # a name may come in pieces (it spans two reads of the body): join them until
        # the header ends (the parser bounds a header line's length)
        self.header_name += data[start:end].lower()

    def _header_end(self) -> None:
        # a header given twice is ambiguous (one reader takes the first, another the
        # last); before, its values were joined into one: `form-data; name="note"` and
        # `form-data; name="file"; ...` read as the field `file`
        if self.header_name in self.headers_ended:
            shown = shown_line(self.header_name.decode("latin-1")[:64])
            raise WebError(
                f"a part of the form gives its header {_header_title(shown)} twice, which"
                " readers may take differently: give each header once"
            )
        self.headers_ended.add(self.header_name)
        self.header_name = b""

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        value = self.headers.get(self.header_name, b"") + data[start:end]
        if len(value) > MAX_HEADER or len(self.headers) > MAX_PARTS:
            raise WebError(f"a multipart part's headers are longer than {MAX_HEADER:,} bytes")
        self.headers[self.header_name] = value

    def _headers_finished(self) -> None:
        disposition = self.headers.get(b"content-disposition", b"")
        # read once, as the file name is (a parameter given twice, or a quoted value not
        # closed, refused)
        params = disposition_params(disposition)
        name = params.get("name", "").encode("latin-1").decode("utf-8", "replace")
        if not name:  # RFC 7578 section 4.2: every part names its field
            raise WebError(
                "a part of the form names no field: each part needs a header such as"
                ' Content-Disposition: form-data; name="file"; filename="photo.jpg"'
                " (RFC 7578 section 4.2)"
            )
        check_transfer_encoding(self.headers, name)
        if name == "file":
            if self.file_seen:
                raise WebError("the form carries more than one field named `file`")
            self.file_seen = True
            self.filename = part_filename(disposition, name, "upload")
            _not_a_sidecar(self.filename)
        elif name != "sidecar" and has_filename(disposition):  # curl -F photo=@h.jpg
            shown = shown_line(part_filename(disposition, name, "FILE"))
            raise WebError(
                f"the file came in the form field `{_shown_field(name)}`; send it in the field"
                f" `file` (e.g. curl -F file=@{shown})"
            )
        elif name in self.fields:
            raise WebError(f"the form carries the field `{_shown_field(name)}` twice")
        else:
            self.fields[name] = bytearray()
            if self.file_seen:
                self.fields_after_file.append(name)
        self.current = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.current == "file":
            self.file_size += end - start
            if self.file_size > self.max_file_bytes:
                raise WebError(
                    f"the file is {over_limit(self.max_file_bytes)}", "RESOURCE_EXHAUSTED"
                )
            self.held += data[start:end]
            return
        buf = self.fields[self.current]
        limit = MAX_SIDECAR_BYTES if self.current == "sidecar" else MAX_SMALL_FIELD
        if len(buf) + end - start > limit:
            if self.current != "sidecar":  # not a size limit: the wrong field (400)
                raise WebError(
                    f"the form field `{_shown_field(self.current)}` is larger than {limit:,}"
                    " bytes; a file goes in the field `file`"
                )
            raise WebError(
                f"the form field `sidecar` is larger than {limit:,} bytes", "RESOURCE_EXHAUSTED"
            )
        buf += data[start:end]

    def _part_end(self) -> None:
        if self.current == "file":
            self.file_done = True

    def _end(self) -> None:
        self.ended = True

    def take(self, at_least: int) -> bytes:
        """The held file bytes when there are at least ``at_least`` of them, else b""."""
        if len(self.held) < at_least or not self.held:
            return b""
        out = bytes(self.held)
        self.held.clear()
        return out

    def sidecar(self) -> Sidecar | None:
        """The decoded ``sidecar`` field (None when absent or empty). Raises ClaimError
        (HTTP 400) naming the field when it is not a usable sidecar: sent explicitly, it
        is the caller's mistake, never silently dropped."""
        data = bytes(self.fields.get("sidecar", b""))
        if not data:
            return None
        try:
            return decode_sidecar(data)
        except ClaimError as e:
            raise ClaimError(
                f"the `sidecar` field is not a usable sidecar ({e}): send the FILE.prov"
                " written beside the file, or leave the field out"
            ) from e


async def _gone(request: Request) -> None:
    """Return once the client of ``request``, whose body has all been read, has closed
    its connection (the server's ``http.disconnect``)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _answer(request: Request, relay: _Relay) -> tuple[VerificationReport, str | None]:
    """The service's report on the upload relayed, checked, and its ``evidence_checked``
    (`_Relay.finish`), unless the client
    of ``request`` closes its connection first: then WebError CANCELLED (the caller
    aborts the relay, which cancels the service's call, so the service stops decoding
    and gives its decode slot back). Before, the page waited for the answer of a client
    gone: a hostile video held a decode slot of the service for its whole decode."""
    answer = asyncio.ensure_future(relay.finish())
    gone = asyncio.ensure_future(_gone(request))
    try:
        await asyncio.wait((answer, gone), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this request cancelled: as awaiting the answer itself was
        answer.cancel()
        raise
    finally:
        gone.cancel()
    if answer.done():
        return answer.result()
    # its outcome (the cancelled call's error) is nobody's: read it, or asyncio logs
    # "Task exception was never retrieved"
    answer.add_done_callback(lambda task: task.cancelled() or task.exception())
    raise WebError("the client closed its connection before the answer", "CANCELLED")


def check_content_coding(request: Request) -> None:
    """Raise WebError (415, UNSUPPORTED_ENCODING) naming the request's Content-Encoding
    unless it has none or only ``identity``: bodies are read as they are sent, so a
    gzipped JSON body would be told it is not JSON, a gzipped file verified as the gzip
    bytes."""
    value = request.headers.get("content-encoding", "")
    if all(c.strip().lower() in ("", "identity") for c in value.split(",")):
        return
    raise WebError(
        f"the request body has Content-Encoding: {shown_line(value.strip()[:64])}, which"
        " this server does not read: send the body as it is, without a content coding",
        "UNSUPPORTED_ENCODING",
    )


async def timed_body(
    request: Request, limits: UploadLimits, what: str = "upload"
) -> AsyncIterator[bytes]:
    """The request body as it arrives, refused first when it has a content coding
    (`check_content_coding`); raises WebError (408) when the client sends
    nothing for ``limits.idle_s`` seconds or falls behind the upload's deadline (see
    `UploadLimits`), so a stalled or dripping upload cannot hold a relay slot, and
    WebError (CANCELLED) when the client leaves mid-body. ``what``: the body's name in
    those messages ("the upload stalled")."""
    check_content_coding(request)
    stream = request.stream().__aiter__()
    loop = asyncio.get_running_loop()
    started = loop.time()
    received = 0
    while True:
        left = started + limits.grace_s + received / limits.min_rate - loop.time()
        try:
            if left <= 0:
                raise TimeoutError
            chunk = await asyncio.wait_for(stream.__anext__(), min(limits.idle_s, left))
        except StopAsyncIteration:
            return
        except ClientDisconnect as e:
            raise WebError(
                f"the client closed the connection before its {what} ended", "CANCELLED"
            ) from e
        except TimeoutError as e:
            if left > limits.idle_s:
                raise WebError(
                    f"the {what} stalled: nothing arrived for {limits.idle_s:g} s",
                    "CLIENT_TIMEOUT",
                ) from e
            raise WebError(
                f"the {what} is too slow: after {limits.grace_s:g} s it must arrive at"
                f" {limits.min_rate / 1024:g} KiB/s or faster on average",
                "CLIENT_TIMEOUT",
            ) from e
        received += len(chunk)
        yield chunk


def _write(parser: MultipartParser, data: bytes) -> None:
    """Feed ``data`` to the multipart parser; its parse errors become WebError (400) in
    our words (`_parse_error`)."""
    try:
        parser.write(data)
    except ParseError as e:
        raise WebError(_parse_error(str(e), parser)) from e


#: python-multipart's complaints about a boundary line (its text begins with one of these),
#: and about a part's header lines (its text holds "header").
_BOUNDARY_LINE_FAULTS = (
    "Did not find CR at end of boundary",
    "Did not find LF at end of boundary",
    "Did not find - at end of boundary",
    "Did not find CRLF after boundary padding",
)


def _parse_error(said: str, parser: MultipartParser) -> str:
    """What a person reads for python-multipart's refusal ``said``, whose own words
    ("Did not find CR at end of boundary (13)", "Found invalid character b'\\x00' in
    header at 9") name its parser's states and offsets in a piece of the body."""
    boundary = getattr(parser, "boundary", b"")[4:]  # it keeps b"\r\n--" + the boundary
    shown = shown_line(boundary.decode("latin-1"))
    if said.startswith(_BOUNDARY_LINE_FAULTS):
        return (
            f"a boundary line of the multipart form (--{shown}) goes on past its boundary:"
            " after the boundary only spaces or tabs may come before the line ends, or -- to"
            " close the form"
        )
    if said.startswith("Expected boundary character"):
        return f"the multipart form does not start with its boundary line (--{shown})"
    if said.startswith("Maximum header size exceeded"):
        return (
            "a header line of a part of the multipart form is longer than"
            f" {MAX_HEADER_LINE:,} bytes, the most this page reads (a file name"
            " that long?): send a shorter file name"
        )
    if said.startswith("Maximum header count exceeded"):
        return (
            f"a part of the multipart form has more than {MAX_PART_HEADERS} header"
            " lines, the most this page reads: a part needs only Content-Disposition (and"
            " Content-Type)"
        )
    if "header" in said.lower():
        return (
            "the multipart form is malformed: a part's header lines do not parse (each is a"
            " `Name: value` line of printable characters ending in CRLF, and an empty line"
            " ends them)"
        )
    return (
        "the multipart form is malformed: it does not follow the multipart/form-data"
        " layout (RFC 7578: parts between boundary lines, each with its header lines)"
    )


def _boundary(request: Request) -> bytes:
    header = request.headers.get("content-type", "")
    if repeated_param(header) == "boundary":
        raise WebError(
            "the Content-Type names the multipart boundary twice, which readers may take"
            " differently: name it once"
        )
    ctype, params = parse_options_header(header)
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise WebError(
            "send the file as a multipart/form-data form with a field named `file`"
            " (and optionally `sidecar`), e.g. curl -F file=@photo.jpg"
        )
    boundary = params[b"boundary"]
    if len(boundary) > MAX_BOUNDARY:
        raise WebError(
            f"the multipart boundary is {len(boundary):,} characters; at most"
            f" {MAX_BOUNDARY} are accepted (RFC 2046 allows 70)"
        )
    return boundary


def over_limit(max_file_bytes: int) -> str:
    """ "larger than this page's limit of 2.0 GiB (2,147,483,648 bytes) per file": the
    limit as the page states it ("up to 2.0 GiB"), and exactly."""
    return (
        f"larger than this page's limit of {human_bytes(max_file_bytes)}"
        f" ({max_file_bytes:,} bytes) per file"
    )


def _check_length(request: Request, max_file_bytes: int, allowance: int = 0) -> None:
    """Refuse (WebError, 413) a request whose Content-Length is over ``max_file_bytes``
    plus ``allowance`` (what a form may add: a sidecar, part headers), naming the file
    limit, the one the page states."""
    length = request.headers.get("content-length", "").strip()
    if not is_number(length):
        length = ""  # none, or one the server (uvicorn) itself refuses
    if length and int(length) > max_file_bytes + allowance:
        raise WebError(
            f"the file is {over_limit(max_file_bytes)}: the upload is {int(length):,} bytes",
            "RESOURCE_EXHAUSTED",
        )


class Relayer:
    """Relays uploads to the service, each in its own worker thread: at most
    ``max_concurrent`` at once, and at most ``limits.per_client`` from one client
    address (more get a 429).

    The slots are shared fairly between clients, as the service's are: when all are
    taken, an upload from a client holding at least two fewer than the client holding
    the most takes the slot of that client's upload whose body is still arriving and has
    arrived the least (the newest of equals), which is answered 503 "upload cut ... try
    again" at its next piece; a client's last upload is never cut. Otherwise one more is
    answered 503 with Retry-After. Before, four addresses each holding two uploads that
    sent their body at the slowest pace allowed (nothing for the first 120 s, then
    32 KiB/s: 256 KiB/s in all) kept every other caller's upload answered 503.

    Failing that, as the service does (`take_victim`), the newcomer takes the slot of the
    slowest upload whose body is still arriving, has arrived for more than
    ``limits.idle_s`` and averaged under ``limits.cut_rate`` bytes a second since it
    started, whoever's it is ("upload cut ... send it faster"). Before, 8 addresses each
    holding one upload that sent a byte now and then kept every other upload answered
    503 for the first 120 s of theirs (the grace before the 32 KiB/s floor of
    `UploadLimits`), and again after each reconnection; now each slot costs its holder
    ``cut_rate`` (8 KiB/s by default, the service's).

    Reconnecting does not restart that clock: an address whose upload ended with its body
    still arriving at an average under ``cut_rate`` (abandoned, stalled, cut) is on
    notice for `NOTICE_WINDOWS` idle windows, and its uploads begun meanwhile are
    measured at once, without the idle window (`take_victim`'s ``on_notice``). Before,
    8 addresses each reopening a stalled upload every 50 s (within the 60 s window) held
    every slot for as long as they kept it up, and every other upload got 503."""

    def __init__(
        self,
        client: ProvenanceClient,
        limits: UploadLimits,
        max_concurrent: int,
        log_key: str | None = None,
    ) -> None:
        self.client = client
        self.limits = limits
        self.log_key = log_key  # the pinned log key (``prov web --log-key``), or None
        self._max = max_concurrent
        self._executor = ThreadPoolExecutor(max_concurrent, thread_name_prefix="relay")
        # touched on the event loop only: slots taken (a cut upload's counts for its
        # successor) and each client's uploads, oldest first
        self._held = 0
        self._holds: dict[str, list[_Hold]] = {}
        self._notice = Notice()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _victim(self, mine: int) -> _Hold | None:
        """Of the client holding the most slots, when that is at least ``mine`` + 2, the
        upload whose body is still arriving and has arrived the least (the newest of
        equals, `share_victim`); else the slowest under the minimum pace, its ``slow``
        set to its pace; else None (`take_victim`)."""
        found = take_victim(
            self._holds.values(),
            mine,
            time.monotonic(),
            self.limits.idle_s,
            self.limits.cut_rate,
            arriving=lambda h: h.arriving,
            received=lambda h: h.received,
            started=lambda h: h.started,
            on_notice=lambda h: h.on_notice,
        )
        if found is None:
            return None
        victim, pace = found
        victim.slow = pace  # None when taken by share
        return victim

    @contextmanager
    def _slot(self, peer: str) -> Iterator[_Hold]:
        """Hold one relay slot for ``peer`` (see the class docstring; runs on the event
        loop: no lock needed)."""
        mine = self._holds.get(peer, [])
        if len(mine) >= self.limits.per_client:
            raise WebError(
                f"{self.limits.per_client} uploads from {peer} are already running;"
                " wait for one to finish",
                "RATE_LIMITED",
                retry_after=5,
            )
        if self._held >= self._max:
            victim = self._victim(len(mine))
            if victim is None:
                raise WebError(
                    "the server is verifying as many files as it can; try again in a few seconds",
                    "UNAVAILABLE",
                    retry_after=5,
                )
            victim.cut = True  # its slot is this upload's now
            self._release(victim)
            if victim.relay is not None:
                victim.relay.stop()  # its worker thread is free for this upload's relay
        else:
            victim = None
            self._held += 1
        hold = _Hold(
            peer,
            after=victim.relay if victim is not None else None,
            on_notice=self._notice.on(peer, time.monotonic()),
        )
        self._holds.setdefault(peer, []).append(hold)
        try:
            yield hold
        finally:
            if not hold.cut:
                self._held -= 1
                self._release(hold)

    def _release(self, hold: _Hold) -> None:
        """Give back ``hold``'s slot (it ended, or another took it); its address goes on
        notice when its body was still arriving under the pace (see the class
        docstring)."""
        holds = self._holds[hold.peer]
        holds.remove(hold)
        if not holds:
            del self._holds[hold.peer]
        now = time.monotonic()
        lim = self.limits
        if ended_slow(hold.arriving, hold.received, now - hold.started, lim.cut_rate, lim.idle_s):
            self._notice.put(hold.peer, now, now + NOTICE_WINDOWS * lim.idle_s)

    async def verify_form(self, request: Request, detect: bool, peer: str) -> Verified:
        """Verify the ``file`` field of a multipart request (with its optional
        ``sidecar`` field) from client address ``peer``. Raises WebError for a bad,
        oversized or stalled form or too many uploads, ClaimError for an unreadable
        sidecar, TransportError with the service's status, and ServerEvidenceError (502)
        when the service's answer does not hold (`_Relay._checked`)."""
        boundary = _boundary(request)
        _check_length(request, self.limits.max_file_bytes, MAX_SIDECAR_BYTES + 64 * 1024)
        with self._slot(peer) as hold:
            return await self._verify_form(request, boundary, detect, hold)

    async def _verify_form(
        self, request: Request, boundary: bytes, detect: bool, hold: _Hold
    ) -> Verified:
        form = _Form(self.limits.max_file_bytes)
        parser = MultipartParser(
            boundary,
            form.callbacks(),
            max_header_count=MAX_PART_HEADERS,
            max_header_size=MAX_HEADER_LINE,
        )
        preamble = Preamble(boundary)
        relay: _Relay | None = None
        try:
            async for chunk in timed_body(request, self.limits):
                hold.got(chunk)
                _write(parser, preamble.feed(chunk))
                if relay is None and len(form.held) > self.limits.hold_bytes:
                    relay = await self._start(hold, form.filename, 0, form.sidecar(), detect)
                if relay is not None:
                    if relay.done.is_set():
                        break  # the service answered early (an error): stop reading
                    if block := form.take(RELAY_BLOCK):
                        await relay.send(block)
            else:
                _write(parser, preamble.finish())
                parser.finalize()
                self._check_complete(form, relay is not None, hold.received)
            hold.arriving = False  # whole: never cut from here on
            if relay is None:
                relay = await self._start(
                    hold, form.filename, form.file_size, form.sidecar(), detect
                )
            if block := form.take(1):
                await relay.send(block)
            report, checked = await _answer(request, relay)
            return Verified(report, form.filename, checked)
        except BaseException as e:
            if relay is not None:
                await relay.abort()
            if hold.cut and isinstance(e, ProvenanceError):
                raise hold.cut_error() from e  # e.g. its idle timeout, or its aborted relay
            raise

    def _check_complete(self, form: _Form, streaming: bool, received: int) -> None:
        if received == 0:
            raise WebError(
                "the request carried no file: send a multipart form with the file in the"
                " field named `file` (e.g. curl -F file=@photo.jpg)"
            )
        if not form.ended:
            raise WebError(
                "truncated upload: the request ended before the end of the multipart form"
            )
        if not form.file_seen:
            raise WebError("the form has no field named `file`: choose a file to verify")
        if form.file_size == 0:
            raise WebError("empty file: there is nothing to verify")
        if streaming and "sidecar" in form.fields_after_file:
            raise WebError(
                f"the `sidecar` field came after a file of more than"
                f" {self.limits.hold_bytes:,} bytes: send the sidecar field before the file"
            )

    async def _start(
        self,
        hold: _Hold,
        filename: str,
        size: int,
        sidecar: Sidecar | None,
        detect: bool,
    ) -> _Relay:
        """Start ``hold``'s relay, once the relay of the upload it took the slot of (if
        any) has ended."""
        if hold.after is not None:
            await asyncio.wait([hold.after.future])  # its outcome is its own caller's
            if hold.cut:  # cut in turn while it waited: no relay of its own then
                raise hold.cut_error()
        hold.relay = _Relay(
            self._executor, self.client, filename, size, sidecar, detect, self.limits, self.log_key
        )
        return hold.relay

    async def verify_body(self, request: Request, filename: str, peer: str) -> Verified:
        """Verify a request whose whole body is the file (the C2PA ``/matches/byContent``
        shape). Raises WebError, TransportError and ServerEvidenceError as `verify_form`
        does."""
        _check_length(request, self.limits.max_file_bytes)
        with self._slot(peer) as hold:
            body = timed_body(request, self.limits)
            report, checked = await self._verify_body(request, body, filename, hold)
            return Verified(report, filename, checked)

    async def _verify_body(
        self, request: Request, body: AsyncIterator[bytes], filename: str, hold: _Hold
    ) -> tuple[VerificationReport, str | None]:
        relay = await self._start(hold, filename, 0, None, False)
        size = 0
        pending = bytearray()
        try:
            async for chunk in body:
                hold.got(chunk)
                size += len(chunk)
                if size > self.limits.max_file_bytes:
                    raise WebError(
                        f"the file is {over_limit(self.limits.max_file_bytes)}",
                        "RESOURCE_EXHAUSTED",
                    )
                pending += chunk
                if relay.done.is_set():
                    break
                if len(pending) >= RELAY_BLOCK:
                    await relay.send(bytes(pending))
                    pending.clear()
            if size == 0 and not relay.done.is_set():
                raise WebError("empty body: send the file's bytes as the request body")
            hold.arriving = False
            if pending:
                await relay.send(bytes(pending))
            return await _answer(request, relay)
        except BaseException as e:
            await relay.abort()
            if hold.cut and isinstance(e, ProvenanceError):
                raise hold.cut_error() from e
            raise
