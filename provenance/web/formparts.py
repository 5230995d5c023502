"""What of a multipart/form-data body (RFC 7578) python-multipart leaves to its caller:
the preamble before the first boundary line (`Preamble`), the file name of a part,
``filename`` or the ``filename*`` that some senders write (`part_filename`), and the
Content-Transfer-Encoding of a part, refused unless it is the identity
(`check_transfer_encoding`). Each refusal is a WebError (HTTP 400) that names what the
form holds and how to send it instead."""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from provenance.terminal import shown_line
from provenance.web.errors import WebError

#: Longest file name kept (characters); longer names are cut.
MAX_NAME = 255
#: Longest preamble skipped before the first boundary line, in bytes: browsers and curl
#: send none, and a body with no boundary line is refused once past it, not read on.
MAX_PREAMBLE = 64 * 1024
#: Most bytes of spaces and tabs after the first boundary before its line ends.
MAX_PADDING = 1024
#: What browsers write in place of a multipart file name's LF, CR and ``"`` (the HTML
#: standard's multipart/form-data encoding; curl does the same): undone by `part_filename`.
FORM_ESCAPES = {"%0A": "\n", "%0D": "\r", "%22": '"'}
_FORM_ESCAPED = re.compile("|".join(FORM_ESCAPES))
#: Content-Transfer-Encodings that leave a part's bytes as they are (RFC 2045 section
#: 6.2): accepted; any other is refused (RFC 7578 section 4.7 deprecates the header).
IDENTITY_ENCODINGS = frozenset({b"binary", b"8bit", b"7bit"})
#: Character sets of a ``filename*`` read (RFC 8187 section 3.2.1).
FILENAME_CHARSETS = {"utf-8": "utf-8", "iso-8859-1": "latin-1"}
#: One ``; key=value`` parameter of a header, the value a quoted string or a token.
_PARAM = re.compile(r';\s*([^\s;=]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
#: One ``; key=value`` parameter read from where the last one ended, its value a quoted
#: string with RFC 9110 quoted-pairs (``"a\\"`` is ``a\``, ``"a\"b"`` is ``a"b``: how RFC
#: 6266 and RFC 7578 write a name holding ``\`` or ``"``), or written as the HTML standard's
#: multipart/form-data encoding writes it (browsers, curl -F): ``\`` is never an escape
#: there (``"`` is sent as %22), so ``filename="a\"`` is the name ``a\``; or a token. A
#: key without ``=`` and an empty ``;`` are passed over, as before.
_PARAM_AT = {
    escapes: re.compile(r'\s*;\s*(?:([^\s;="]+)\s*(?:=\s*(' + quoted + r'|[^;"]*))?)?\s*')
    for escapes, quoted in ((True, r'"(?:[^"\\]|\\.)*"'), (False, r'"[^"]*"'))
}
#: A quoted-pair the RFC reading undoes: ``\\`` and ``\"`` only (a backslash before any
#: other character is kept, as python-multipart kept it: ``C:\Users\photo.jpg``).
_QUOTED_PAIR = re.compile(r'\\([\\"])')
#: An RFC 8187 ext-value: charset ' language ' percent-encoded value.
_EXT_VALUE = re.compile(r"([A-Za-z0-9!#$%&+\-^_`{}~]+)'([A-Za-z0-9\-]*)'(.*)", re.S)
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")


class Preamble:
    """Drops the preamble of a multipart body: what comes before its first boundary line
    (``--BOUNDARY`` at the body's start or after a CRLF), which RFC 2046 section 5.1.1
    says to ignore (python-multipart refused any, "Expected boundary character"). A
    preamble whose last line ends in LF alone is taken too, as common parsers take it:
    before, its ``\n--BOUNDARY`` was passed over as preamble text, the form's closing
    line was taken for its first, and a form with a file was read as one with none.
    `feed` each piece of the body; it returns the bytes from the first boundary line
    on. A preamble of more than ``limit`` bytes is refused; of the bytes dropped only a
    boundary line's length is kept.

    The first boundary line is read whole (at most `MAX_PADDING` bytes after the
    boundary) and checked here: spaces and tabs after the boundary (RFC 2046's transport
    padding, which python-multipart refused on the first line) are dropped; a close
    delimiter (``--BOUNDARY--``) is passed on; anything else after the boundary
    (``\\r\\n--BOUNDARYjunk``), and a line ending in LF alone, is refused in words naming
    the line, where python-multipart's own were "Did not find CR at end of boundary (5)".
    The refusal waits for the line's end (or more bytes than any padding), so that its
    words are the same however the body is cut into pieces."""

    def __init__(self, boundary: bytes, limit: int = MAX_PREAMBLE) -> None:
        self._first = b"--" + boundary
        # a line's start: after LF, so after CRLF too (a preamble's last line ending in
        # LF alone is taken, as common parsers take it: `Preamble`)
        self._line = b"\n--" + boundary
        self._boundary = boundary
        self._limit = limit
        self._pending = b""
        self._dropped = 0
        self.found = False
        self._first_line_bytes = b""  # the first boundary line, while it is read
        self._checked = False

    def feed(self, data: bytes) -> bytes:
        """The bytes of ``data`` from the first boundary line on (b"" while still in the
        preamble or its first boundary line). Raises WebError once the preamble is known to
        be longer than the limit, or the first boundary line to go on past its boundary."""
        if self._checked:
            return data
        if not self.found:
            data = self._skip(data)
            if not self.found:
                return b""
        return self._first_line(data)

    def _first_line(self, data: bytes) -> bytes:
        """``data`` after the start of the first boundary line: b"" until the line is whole,
        then the line with its padding dropped, and the rest. A fault is named once the
        line is whole (or past any padding), so in the same words however the body is cut
        into pieces."""
        buf = self._first_line_bytes + data
        end = buf.find(b"\n", len(self._first))
        line = buf[: end if end >= 0 else len(buf)]
        after = line[len(self._first) :]
        if after.startswith(b"--"):  # the close delimiter: the form has no parts
            self._checked = True
            self._first_line_bytes = b""
            return buf
        if end < 0 and len(after) <= MAX_PADDING + 1:  # padding and its CR, maybe
            self._first_line_bytes = buf
            return b""
        padding = after.removesuffix(b"\r") if end >= 0 else after
        if padding.strip(b" \t") or len(padding) > MAX_PADDING:
            raise WebError(self._goes_on(line.removesuffix(b"\r")))
        if not after.endswith(b"\r"):
            raise WebError(self._lf_alone(line))
        self._checked = True
        self._first_line_bytes = b""
        return self._first + buf[end - 1 :]

    def _goes_on(self, line: bytes) -> str:
        return (
            f'the multipart form\'s first boundary line "{self._shown(line)}" goes on past its'
            f" boundary (--{self._shown(self._boundary)}, as its Content-Type header names"
            " it): after the boundary only spaces or tabs may come before the line ends, or"
            " -- to close the form"
        )

    def _lf_alone(self, line: bytes) -> str:
        return (
            f'the multipart form\'s first boundary line "{self._shown(line)}" ends in LF'
            " alone: the lines of a multipart form end in CRLF (RFC 2046), as browsers and"
            " curl send them"
        )

    @staticmethod
    def _shown(text: bytes) -> str:
        """``text`` as one line of at most 80 bytes (then "...")."""
        return shown_line(text[:80].decode("latin-1")) + ("..." if len(text) > 80 else "")

    def _skip(self, data: bytes) -> bytes:
        """The preamble's part of `feed`: ``data`` from the first boundary line on, once
        it is found (``found``)."""
        buf = self._pending + data
        if not self._dropped:  # ``buf`` is the body from its start
            if len(buf) < len(self._first) and self._first.startswith(buf):
                self._pending = buf  # maybe the boundary line, in pieces
                return b""
            if buf.startswith(self._first):
                return self._start(buf, 0)
        at = buf.find(self._line)
        if at >= 0:
            self._check_limit(self._dropped + at + 1)
            return self._start(buf, at + 1)
        keep = len(self._line) - 1  # a boundary line may begin in these
        drop = max(0, len(buf) - keep)
        self._dropped += drop
        self._pending = buf[drop:]
        self._check_limit(self._dropped + 1)  # where the first line could begin now
        return b""

    def _check_limit(self, first_line: int) -> None:
        """Raises WebError when the first boundary line's ``--`` is ``first_line`` bytes
        into the body (or later), past the limit: a rule of the body, the same however it
        is cut into pieces (the fuzz target `multipart` checks it)."""
        if first_line > self._limit:
            raise WebError(f"{self._missing()} in its first {self._limit:,} bytes")

    def _start(self, buf: bytes, at: int) -> bytes:
        self.found = True
        self._pending = b""
        return buf[at:]

    def finish(self) -> bytes:
        """What is left to parse when the body ends: a first boundary line held back
        while it was read (one that ends the body without a line end). Raises WebError
        when a body that had bytes ended before any boundary line."""
        if not self.found and (self._dropped or self._pending):
            raise WebError(self._missing())
        left, self._first_line_bytes = self._first_line_bytes, b""
        self._checked = self._checked or self.found
        after = left[len(self._first) :]
        if not left or after == b"-":  # nothing held, or a close delimiter cut short
            return left
        if after.removesuffix(b"\r").strip(b" \t"):  # cut off as it went on
            raise WebError(self._goes_on(left.removesuffix(b"\r")))
        return self._first  # its padding dropped: the form's own "truncated" error follows

    def _missing(self) -> str:
        shown = shown_line(self._boundary.decode("latin-1"))
        return (
            f"the multipart form has no boundary line (--{shown}, as its Content-Type"
            " header names the boundary)"
        )


def _pairs_read(value: str, escapes: bool) -> tuple[list[tuple[str, str]], int]:
    """The ``(key, value)`` parameters of a header ``value`` read one after another
    (`_PARAM_AT`), keys lowercased, values unquoted, and where the reading stopped (the
    length of ``value`` when it read to the end)."""
    pos = len(value.split(";", 1)[0])  # past the type (form-data)
    found: list[tuple[str, str]] = []
    while pos < len(value):
        m = _PARAM_AT[escapes].match(value, pos)
        if m is None or m.end() == pos:
            break
        pos = m.end()
        if m.group(1) is None or m.group(2) is None:  # `;;`, or a key alone
            continue
        raw = m.group(2).strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = _QUOTED_PAIR.sub(r"\1", raw[1:-1]) if escapes else raw[1:-1]
        found.append((m.group(1).lower(), raw))
    return found, pos


def header_pairs(value: str) -> list[tuple[str, str]] | None:
    r"""The parameters of a header ``value`` (``type; key=value; ...``) as ``(key, value)``
    in order, keys lowercased, quoted values unquoted: read with RFC 9110 quoted-pairs, or
    else, when that reading does not reach the end (in ``filename="a\"; name="file"`` it
    takes ``\"`` for an escaped quote, and the string runs on), with ``\`` as plain text, as the HTML standard's form encoding
    writes it (`_PARAM_AT`). None when neither reading reaches the end (a quoted value
    not closed, or text after one)."""
    for escapes in (True, False):
        found, pos = _pairs_read(value, escapes)
        if pos >= len(value):
            return found
    return None


def disposition_params(disposition: bytes) -> dict[str, str]:
    r"""The parameters of a part's Content-Disposition header ``disposition``
    (`header_pairs`; values as latin-1 text, the bytes as sent). Raises WebError when it
    does not parse, naming where (before, python-multipart's reading, which takes
    ``"a\\"`` for a string that runs on, found no field name in
    ``filename="a\\"; name="file"`` and named the file '"; size=3' in
    ``filename="a\\"; size=3``), or when it gives a parameter twice (`repeated_param`)."""
    text = disposition.decode("latin-1")
    pairs = header_pairs(text)
    if pairs is None:
        _, pos = _pairs_read(text, escapes=False)
        rest = text[pos:].strip()
        what = (
            "a quoted value (from " + shown_line(rest[:60]) + ") is not closed"
            if rest.count('"') % 2
            else "text follows a value, at " + shown_line(rest[:60])
        )
        raise WebError(
            f"the Content-Disposition of a part of the form does not parse: {what}; its"
            ' parameters are ; key=value or ; key="value" (RFC 7578 section 4.2), as in'
            ' form-data; name="file"; filename="photo.jpg"'
        )
    if (twice := _repeated(pairs)) is not None:
        raise WebError(
            f"a part of the form gives the parameter {shown_line(twice[:64])} twice in its"
            " Content-Disposition, which readers may take differently: give it once"
        )
    return dict(pairs)


def _params(value: str) -> dict[str, str]:
    """The parameters of a header ``value`` (``type; key=value; ...``), keys lowercased,
    values as written (quoted strings unquoted: `header_pairs`, or for a header that does
    not parse, each ``; key=value`` found); the first of a key repeated."""
    pairs = header_pairs(value)
    if pairs is None:
        pairs = []
        for m in _PARAM.finditer(value):
            key, raw = m.group(1).lower(), m.group(2).strip()
            if len(raw) >= 2 and raw[0] == raw[-1] == '"':
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            pairs.append((key, raw))
    found: dict[str, str] = {}
    for key, raw in pairs:
        found.setdefault(key, raw)
    return found


def _repeated(pairs: list[tuple[str, str]]) -> str | None:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return key
        seen.add(key)
    return None


def repeated_param(value: str) -> str | None:
    """The first parameter of a header ``value`` (``type; key=value; ...``) given more
    than once, lowercased (keys are case-insensitive), or None. Such a header is
    ambiguous: python-multipart takes the last of a key, `_params` and other readers the
    first (``name="sidecar"; name="file"`` was verified as the file)."""
    pairs = header_pairs(value)
    if pairs is None:
        pairs = [(m.group(1).lower(), "") for m in _PARAM.finditer(value)]
    return _repeated(pairs)


def _extended_name(value: str, field: str) -> str:
    """The file name an RFC 8187 ``filename*`` ``value`` holds; raises WebError naming
    what is wrong with it."""
    where = f"the file name parameter filename* of the form's part `{field}`"
    instead = '; or send the name as filename="NAME" (RFC 7578 section 4.2)'
    m = _EXT_VALUE.fullmatch(value)
    if m is None:
        raise WebError(
            f"{where} is not CHARSET'LANGUAGE'NAME (RFC 8187, e.g."
            f" filename*=UTF-8''caf%C3%A9.jpg){instead}"
        )
    charset = m.group(1)
    codec = FILENAME_CHARSETS.get(charset.lower())
    if codec is None:
        raise WebError(
            f"{where} is in the character set {shown_line(charset[:40])}; this page reads"
            f" UTF-8 or ISO-8859-1 (RFC 8187){instead}"
        )
    raw = m.group(3).encode("latin-1")
    if _BAD_PERCENT.search(raw):
        raise WebError(
            f"{where} holds a % not followed by two hex digits (RFC 8187 percent-encoding){instead}"
        )
    try:
        return unquote_to_bytes(raw).decode(codec)
    except UnicodeDecodeError as e:
        raise WebError(f"{where} is not UTF-8 once its percent escapes are decoded{instead}") from e


def has_filename(disposition: bytes) -> bool:
    """Whether a part's Content-Disposition ``disposition`` names a file: a ``filename``
    or ``filename*`` parameter (or RFC 2231 continuations of one)."""
    keys = _params(disposition.decode("latin-1"))
    return any(k == "filename" or k.startswith("filename*") for k in keys)


def part_filename(disposition: bytes, field: str, default: str) -> str:
    """The file name a part's Content-Disposition header ``disposition`` gives, as its
    sender named it: ``filename*`` (RFC 8187, decoded; preferred, as RFC 6266 section
    4.3 prefers it, when both are present) or ``filename`` (UTF-8, undecodable bytes
    replaced, the browser's escapes of LF, CR and ``"`` undone: `FORM_ESCAPES`;
    Chromium sends ``a"b.jpg`` as ``a%22b.jpg``, and the page showed that); any folder
    dropped (``\\`` counts as a separator), at most `MAX_NAME` characters; ``default``
    when nothing is left. Raises WebError (naming ``field``) for a malformed
    ``filename*`` or RFC 2231 continuations (``filename*0*``), which are not joined.
    The name is still text from a client (templates escape it, the `file_name` filter
    shows its controls as escapes). (A plain name holding a literal ``%22`` reads as
    ``"``: the encoding leaves ``%`` as it is, so the two cannot be told apart.)"""
    params = _params(disposition.decode("latin-1"))
    pieces = sorted(k for k in params if re.fullmatch(r"filename\*\d+\*?", k))
    if pieces:
        raise WebError(
            f"the file name of the form's part `{shown_line(field[:MAX_NAME])}` comes in RFC"
            f" 2231 continuations ({', '.join(pieces[:4])}), which this page does not join:"
            ' send it as filename="NAME" (RFC 7578 section 4.2)'
        )
    if "filename*" in params:
        name = _extended_name(params["filename*"], shown_line(field[:MAX_NAME]))
    else:
        # the plain name, unquoted (`header_pairs`): the bytes as sent, read as UTF-8
        plain = params.get("filename", "").encode("latin-1")
        name = plain.decode("utf-8", "replace")
        name = _FORM_ESCAPED.sub(lambda m: FORM_ESCAPES[m.group()], name)
    return name.replace("\\", "/").rsplit("/", 1)[-1][:MAX_NAME] or default


def check_transfer_encoding(headers: dict[bytes, bytes], field: str) -> None:
    """Raises WebError when a part's ``headers`` (names lowercased) give it a
    Content-Transfer-Encoding other than the identity (`IDENTITY_ENCODINGS`): this page
    does not decode one, and before it verified the encoded text (base64) as if it were
    the file's bytes, a verdict on other bytes."""
    value = headers.get(b"content-transfer-encoding")
    if value is None or value.strip().lower() in IDENTITY_ENCODINGS:
        return
    shown = shown_line(value.strip().decode("latin-1")[:64])
    raise WebError(
        f"the form's part `{shown_line(field[:MAX_NAME])}` has Content-Transfer-Encoding:"
        f" {shown}, which this page does not decode (RFC 7578 section 4.7 deprecates it):"
        " send the bytes as they are, as browsers and curl -F do"
    )
