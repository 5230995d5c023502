"""Malformed request messages answered as INVALID_ARGUMENT, not INTERNAL.

grpcio deserializes each request message before our handlers run; when the bytes are
not a valid protobuf message (corrupt wire format, bad UTF-8 in a string field) it
aborts the call with INTERNAL "Exception deserializing request!", which tells a client
the server is broken. `MalformedRequestInterceptor` wraps every method's deserializer:
a message that does not parse reaches the handler as a marker, and the call is aborted
with INVALID_ARGUMENT naming the method and the message type, in our words (protobuf's
own, "Error parsing message with type 'provenance.v1.GetEntriesRequest': Wire format was
corrupt", name its parser, not what a client sent wrong).

Upload messages (`VerifyFileChunk`) that carry only bytes, the bulk of every upload, are
recognised by their wire format (field 2, length-delimited, filling the message: protobuf
encoding, https://protobuf.dev/programming-guides/encoding/) and handed on as a `DataChunk`
whose ``data`` is a view into the received message: no parse into protobuf's arena and no
copy on each read of the field (about 0.15 ms per MiB otherwise). Any other message is
parsed by protobuf as before.

Fields of a parsed message that no honest client sends are refused in the same words
(INVALID_ARGUMENT naming the field and its limit): `check_upload_header` (an upload's
file name and chunk hashes) and `check_query_media_type` (a Lookup query's media type).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from provenance.core.errors import ClaimError, MediaError
from provenance.core.merkle import HASH_SIZE
from provenance.core.registry import MAX_MEDIA_TYPE_CHARS, MEDIA_TYPE
from provenance.v1 import provenance_pb2 as pb

#: Full names of the methods whose requests are `VerifyFileChunk` streams.
UPLOAD_METHODS = frozenset(
    f"/{service.full_name}/{method.name}"
    for service in pb.DESCRIPTOR.services_by_name.values()
    for method in service.methods
    if method.input_type is pb.VerifyFileChunk.DESCRIPTOR
)
# The key of `VerifyFileChunk.data`: field number 2, wire type 2 (length-delimited).
_DATA_KEY = (pb.VerifyFileChunk.DESCRIPTOR.fields_by_name["data"].number << 3) | 2


#: The most bytes (UTF-8) of an upload header's ``filename``, a name for the report only:
#: `prov verify` sends a path's last part, at most 255 bytes on Linux (NAME_MAX; 765 once
#: each undecodable byte is sent as U+FFFD), 255 UTF-16 units on Windows and macOS (at most
#: 765 bytes of UTF-8), and the web page at most 255 characters (1,020 bytes,
#: `provenance.web.formparts.MAX_NAME`): 4 KiB, Linux's PATH_MAX, holds even a whole path.
#: Before, a 7 MB name was taken.
MAX_FILENAME_BYTES = 4096


def _shown(text: str, most: int = 80) -> str:
    """``text`` for an error message: its first ``most`` characters as Python writes them in
    ASCII (a NUL as \\x00), "..." after when there is more."""
    return ascii(text[:most]) + ("..." if len(text) > most else "")


def check_upload_header(header: Any) -> None:
    """Raises MediaError (INVALID_ARGUMENT) when a `VerifyFileHeader` holds a ``filename``
    of more than `MAX_FILENAME_BYTES` bytes of UTF-8, a ``chunk_hashes`` entry that is
    not a 32-byte RFC 9162 leaf hash (SHA-256) of a video sidecar's chunk, or
    ``chunk_hashes`` without a ``sidecar``. Before, all were taken silently: a hash of
    another length only failed to rebuild the signed chunk root, and hashes without a
    sidecar were dropped unread (they are checked against the sidecar's signed chunk
    root, and no client of ours sends them without it).
    A file name's characters are not checked: a file on disk may be named with any but
    "/" and NUL, and the name is shown only as its report's label."""
    size = len(header.filename.encode("utf-8", "surrogatepass"))
    if size > MAX_FILENAME_BYTES:
        raise MediaError(
            f"the upload header's filename is {size:,} bytes; at most {MAX_FILENAME_BYTES:,}"
            " bytes of UTF-8 (a file's name without its folder, for the report only)"
        )
    for i, h in enumerate(header.chunk_hashes):
        if len(h) != HASH_SIZE:
            raise MediaError(
                f"the upload header's chunk_hashes[{i}] is {len(h):,} bytes; each is a"
                f" {HASH_SIZE}-byte leaf hash (SHA-256, RFC 9162) of one chunk of the video,"
                f" as the sidecar lists them ({len(header.chunk_hashes):,} hashes sent)"
            )
    if (n := len(header.chunk_hashes)) and not header.HasField("sidecar"):
        raise MediaError(
            f"the upload header carries chunk_hashes ({n:,} hash{'es' if n != 1 else ''})"
            " but no sidecar: they are a video sidecar's chunk list, checked against the"
            " chunk root its signed claim binds, so send them with that claim (the header's"
            " sidecar), or leave them out"
        )


def check_query_media_type(media_type: str) -> None:
    """Raises ClaimError (INVALID_ARGUMENT) unless a `LookupQuery`'s ``media_type`` is empty
    (unknown) or a media type of RFC 6838 section 4.2 without parameters ("image/jpeg",
    `provenance.core.registry.MEDIA_TYPE`: no NUL, control character, space or ";") of at
    most `MAX_MEDIA_TYPE_CHARS` characters, what `prov scan` sniffs. Before, any text was
    taken, 1 MB or holding NULs, and carried into the query's report."""
    if len(media_type) > MAX_MEDIA_TYPE_CHARS:
        raise ClaimError(
            f"media_type is {len(media_type):,} characters; at most {MAX_MEDIA_TYPE_CHARS}"
            " (RFC 6838: a type and a subtype of at most 127 each, such as image/jpeg)"
        )
    if media_type and not MEDIA_TYPE.fullmatch(media_type):
        raise ClaimError(
            f"media_type {_shown(media_type)} is not a media type (RFC 6838 type/subtype,"
            " such as image/jpeg, without parameters, spaces or control characters; empty"
            " when unknown)"
        )


@dataclass(frozen=True, slots=True)
class DataChunk:
    """A `VerifyFileChunk` holding only ``data``, a read-only view into the received
    message's bytes; answers `WhichOneof` as the protobuf message would."""

    data: memoryview

    def WhichOneof(self, group: str) -> str:  # noqa: N802 - protobuf's name
        return "data"


def _upload_chunk(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """``deserialize``, except that a message of one ``data`` field becomes a DataChunk."""

    def parse(raw: bytes) -> Any:
        if raw[:1] == bytes((_DATA_KEY,)):
            size, shift, at = 0, 0, 1
            # protobuf (upb) refuses a length varint of more than 5 bytes, even one
            # padded with 0x80s to a small value: so does this
            while at < len(raw) and at <= 5:
                byte = raw[at]
                size |= (byte & 0x7F) << shift
                at += 1
                if byte < 0x80:
                    if at + size == len(raw):
                        return DataChunk(memoryview(raw)[at:])
                    break
                shift += 7
        return deserialize(raw)

    return parse


@dataclass(frozen=True)
class _Malformed:
    """Stands in for a request message whose bytes did not parse: ``kind`` names the
    message type ("GetEntriesRequest")."""

    kind: str


def _message_kind(deserialize: Callable[[bytes], Any]) -> str:
    """The short name of the protobuf message type a deserializer parses (its
    ``FromString`` is bound to the message class), or "request" when it is no such."""
    descriptor = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
    name = getattr(descriptor, "name", None)
    return name if isinstance(name, str) and name else "request"


def _lenient(deserialize: Callable[[bytes], Any], kind: str) -> Callable[[bytes], Any]:
    malformed = _Malformed(kind)

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:  # protobuf's DecodeError and friends: the caller's bytes
            return malformed

    return parse


def _message(method: str, bad: _Malformed) -> str:
    return (
        f"malformed request to {method}: its bytes are not a valid {bad.kind} message"
        " (protobuf's encoding of one is damaged, cut short, or holds text that is not UTF-8)"
    )


def _unary(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):  # an asyncio server-streaming handler

        async def stream_async(request: Any, context: Any) -> AsyncIterator[Any]:
            if isinstance(request, _Malformed):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(method, request))
            async for reply in behavior(request, context):
                yield reply

        return stream_async
    if inspect.iscoroutinefunction(behavior):

        async def handle_async(request: Any, context: Any) -> Any:
            if isinstance(request, _Malformed):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(method, request))
            return await behavior(request, context)

        return handle_async

    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, _Malformed):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(method, request))
        return behavior(request, context)

    return handle


def _checked(requests: Iterator[Any], method: str) -> Iterator[Any]:
    for r in requests:
        if isinstance(r, _Malformed):
            # our handlers map ClaimError to INVALID_ARGUMENT (provenance.server.rpc._rpc)
            raise ClaimError(_message(method, r))
        yield r


async def _checked_async(requests: AsyncIterator[Any], method: str) -> AsyncIterator[Any]:
    async for r in requests:
        if isinstance(r, _Malformed):
            raise ClaimError(_message(method, r))
        yield r


async def _aborting(requests: AsyncIterator[Any], method: str, context: Any) -> AsyncIterator[Any]:
    """``requests`` for a handler not ours (grpc's reflection), which maps no ClaimError: a
    malformed message aborts the call with INVALID_ARGUMENT (grpc's AbortError passes
    through the handler quietly). Before, the ClaimError escaped it: the
    client got UNKNOWN "Unexpected <class 'provenance.core.errors.ClaimError'>: ..." and
    the server's log a traceback, for each such call."""
    async for r in requests:
        if isinstance(r, _Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(method, r))
        yield r


def _streaming(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):  # an asyncio bidirectional handler (reflection)

        async def stream_async(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            async for reply in behavior(_aborting(requests, method, context), context):
                yield reply

        return stream_async
    if inspect.iscoroutinefunction(behavior):

        async def handle_async(requests: AsyncIterator[Any], context: Any) -> Any:
            return await behavior(_checked_async(requests, method), context)

        return handle_async

    def handle(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        return behavior(_checked(requests, method), context)

    return handle


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):
    """Server interceptor (asyncio server; sync or async handlers): see the module
    docstring. Stateless; one per server."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = str(handler_call_details.method)
        deserialize = handler.request_deserializer
        kind = _message_kind(deserialize)
        if method in UPLOAD_METHODS:
            deserialize = _upload_chunk(deserialize)
        changes: dict[str, Any] = {"request_deserializer": _lenient(deserialize, kind)}
        for kind, wrap in (
            ("unary_unary", _unary),
            ("unary_stream", _unary),
            ("stream_unary", _streaming),
            ("stream_stream", _streaming),
        ):
            behavior = getattr(handler, kind)
            if behavior is not None:
                changes[kind] = wrap(behavior, method)
        return handler._replace(**changes)  # grpc's handlers are namedtuples
