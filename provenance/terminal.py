"""Terminal output that never passes control characters from text that is not ours.

File names, archive entries, server answers and error messages reach the terminal
through Rich consoles. Rich removes BEL, BS, CR, VT and FF from text but keeps ESC and
the other C0 and C1 controls, so a file named ``$'x\\e[2J.jpg'`` cleared the screen when
`prov sign` or `prov verify` printed its name, and ``$'x\\e]0;TITLE\\a.jpg'`` set the
window title (terminal injection: a name can also move the cursor and overwrite a
verdict already printed). `SafeConsole` shows each such character as its escape
(``\\x1b``, ``\\u202e``), as Python's repr does; the console's own styles and cursor
moves (Rich's control segments) are written as before. Bidirectional overrides and
isolates (U+202A-U+202E, U+2066-U+2069) and the direction marks (U+200E, U+200F,
U+061C) are shown so too: they reorder what follows on the line ("photo\\u202egpj.exe"
reads "photoexe.jpg"). A lone surrogate (a file name that is not UTF-8: ``caf\\xe9.jpg``
made under Latin-1 reaches Python as ``"caf\\udce9.jpg"``) is shown as the byte it stands
for (``\\xe9``, as `prov scan` writes it in a ref), other surrogates as a four-hex-digit
``\\u`` escape (``\\ud83d``): no UTF-8 stream can carry one, and `prov sign` died with
UnicodeEncodeError on a stdout that encodes strictly (Python's under a locale such as
en_US.UTF-8) after writing the sidecar. `shown` does the same for other human-readable
text (the scan's HTML and CSV reports), `shown_line` for text shown on one line (a file
name on the web page and in its tab's title, tab and newline escaped too).

Its markup and emoji codes are off unless asked for: a file named ``[foo].jpg`` printed
as ``.jpg``, ``[/red]x.jpg`` raised MarkupError and ``:smile:z.jpg`` became an emoji; a
styled label is given as `rich.text.Text` (``Text.assemble(("error:", "red"), ...)``)."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType
from rich.progress import Progress
from rich.segment import Segment
from rich.text import Span, Text

#: What is never written as it is: C0 controls but tab and newline, DEL, C1 controls,
#: the bidirectional embeddings, overrides and isolates, the invisible direction marks
#: (LRM, RLM, ALM), which reorder neutral characters around them, the characters that
#: draw nothing (ZERO WIDTH SPACE, WORD JOINER and the invisible operators U+2060-U+2064,
#: the BYTE ORDER MARK U+FEFF: "pay\u200bpal.jpg" looked like "paypal.jpg"), and lone
#: surrogates (a file name that is not UTF-8 holds one for each byte that did not decode:
#: no UTF-8 stream can carry it, and a stdout that encodes strictly raised
#: UnicodeEncodeError).
_ALWAYS = (
    "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u202a-\u202e\u2060-\u2069"
    "\ufeff\ud800-\udfff"
    # and (a review): SOFT HYPHEN, COMBINING GRAPHEME JOINER, MONGOLIAN VOWEL SEPARATOR,
    # LINE and PARAGRAPH SEPARATOR, the interlinear annotation marks and the Tag
    # characters (they spell a hidden ASCII text) but in a subdivision flag, `_FLAG`
    "\xad\u034f\u180e\u2028\u2029\ufff9-\ufffb\U000e0000-\U000e007f"
    # and (a review): HANGUL FILLER and HALFWIDTH HANGUL FILLER, which draw nothing
    "\u3164\uffa0"
    # and: the rest of Unicode's Default_Ignorable_Code_Point that no rule
    # below keeps: the Khmer inherent vowels (Unicode: not to be used) and the code points
    # kept for future invisible characters (U+FFF0-U+FFF8, U+E0080-U+E0FFF but the
    # variation selectors), which draw nothing
    "\u17b4\u17b5\ufff0-\ufff8\U000e0080-\U000e00ff\U000e01f0-\U000e0fff"
)
#: ZERO WIDTH NON-JOINER and JOINER (U+200C, U+200D) are kept between two characters that
#: are neither ASCII nor `_ALWAYS` (Persian and Indic words, emoji sequences: there they
#: change what is drawn, Unicode 15 section 23.2) and escaped elsewhere: between ASCII
#: letters, beside another joiner or at an end they draw nothing ("pay\u200dpal").
_JOINS = "[^\x00-\x7f\u200c\u200d" + _ALWAYS + "]"
# (each alternative starts with its characters, the lookbehind after them: a lookbehind
# first is tried at every position of every name, and made `shown_line` 2.3 times slower)
_LONE_JOINER = (
    "[\u200c\u200d](?<!" + _JOINS + "[\u200c\u200d])"  # no joining character before it
    "|[\u200c\u200d](?!" + _JOINS + ")"  # nor after it
)
#: The variation selectors (U+FE00-U+FE0F, U+E0100-U+E01EF, and the Mongolian free
#: variation selectors U+180B-U+180D and U+180F) are kept after a character
#: that is neither ASCII nor `_ALWAYS` nor a joiner or selector (an emoji's style, an
#: ideograph's variant, a Mongolian letter's form), and in a keycap (a digit, # or *,
#: then U+20E3); elsewhere they draw nothing and are escaped.
_SELECTORS = "\u180b-\u180d\u180f\ufe00-\ufe0f\U000e0100-\U000e01ef"
_SELECTED = "[^\x00-\x7f\u200c\u200d" + _SELECTORS + _ALWAYS + "]"
_SELECTOR = "[" + _SELECTORS + "]"
_LONE_SELECTOR = (
    _SELECTOR + "(?<!" + _SELECTED + _SELECTOR + ")(?<![0-9#*]" + _SELECTOR + ")"
    "|" + _SELECTOR + "(?<=[0-9#*]" + _SELECTOR + ")(?!\u20e3)"
)
#: The Hangul CHOSEONG FILLER U+115F is kept before a vowel jamo and the JUNGSEONG FILLER
#: U+1160 after an initial jamo (a conjoining syllable without an initial or a vowel: it
#: draws the jamo beside it, Unicode 15 section 3.12); elsewhere, the two together
#: included, they draw nothing and are escaped.
_LONE_FILLER = (
    "\u115f(?![\u1161-\u11a7\ud7b0-\ud7c6])"  # no vowel after it
    "|\u1160(?<![\u1100-\u115e\ua960-\ua97c]\u1160)"  # no initial before it
)
#: A flag of a subdivision (England, Scotland, Wales: WAVING BLACK FLAG, a CLDR
#: subdivision code in Tag characters, CANCEL TAG; `provenance.core.registry` keeps it in
#: a device's label): matched whole, first, and written as it is (`_escape`).
_FLAG = (
    "\U0001f3f4(?:[\U000e0061-\U000e007a]{2}|[\U000e0030-\U000e0039]{3})"
    "[\U000e0030-\U000e0039\U000e0061-\U000e007a]{1,4}\U000e007f"
)
UNSAFE = re.compile(
    _FLAG + "|[" + _ALWAYS + "]|" + _LONE_JOINER + "|" + _LONE_SELECTOR + "|" + _LONE_FILLER
)


#: `UNSAFE`, and tab and newline too: for text shown on one line (a file name on the web
#: page, in the tab's title, where a newline would read as a space).
UNSAFE_IN_LINE = re.compile(
    _FLAG + "|[" + _ALWAYS + "\t\n]|" + _LONE_JOINER + "|" + _LONE_SELECTOR + "|" + _LONE_FILLER
)


def _escape(m: re.Match[str]) -> str:
    if len(m.group()) > 1:  # a subdivision flag (`_FLAG`), kept
        return m.group()
    c = ord(m.group())
    if 0xDC80 <= c <= 0xDCFF:  # the byte that did not decode (os.fsdecode's surrogateescape)
        c -= 0xDC00
    if c > 0xFFFF:  # a Tag character, a supplementary variation selector
        return f"\\U{c:08x}"
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def shown(text: str) -> str:
    """``text`` with every `UNSAFE` character written as its escape (``\\x1b``)."""
    if text.isascii() and text.isprintable():  # most names: none of them (fast path)
        return text
    return UNSAFE.sub(_escape, text)


def shown_line(text: str) -> str:
    """``text`` with every `UNSAFE_IN_LINE` character written as its escape: `shown`, and
    tab and newline as ``\\x09`` and ``\\x0a`` (a file name shown on one line)."""
    if text.isascii() and text.isprintable():  # most names: none of them (fast path)
        return text
    return UNSAFE_IN_LINE.sub(_escape, text)


#: In ``repr`` of a text: a lone surrogate U+DC80-U+DCFF written ``\udcNN`` by ``repr``
#: itself (an odd number of backslashes before it; ``\\udce9`` is a backslash of the text).
_REPR_UNDECODED = re.compile(r"(?<!\\)((?:\\\\)*)\\udc([89a-f][0-9a-f])")


def quoted_path(path: str | os.PathLike[str]) -> str:
    """``path`` quoted as Python's ``repr`` writes a string (what a usage error quotes:
    ``path 'x.jpg' does not exist``), with `shown_line`'s escapes of what ``repr`` keeps
    that draws nothing, and each byte of a name that is not UTF-8 (a lone surrogate
    U+DC80-U+DCFF, ``os.fsdecode``'s surrogateescape) written as that byte, ``\\xe9``,
    as `shown` writes it everywhere else, not ``repr``'s ``\\udce9``."""
    return _REPR_UNDECODED.sub(r"\1\\x\2", shown_line(repr(os.fspath(path))))


def clipped_line(
    text: str,
    most: int,
    *,
    show: Callable[[str], str] = shown_line,
    length: int | None = None,
) -> str:
    """``text`` from a peer or a configuration as a message or log line repeats it: its
    first ``most`` characters as ``show`` writes them (`shown_line`: controls,
    bidirectional marks, tab and newline escaped; ``repr`` for a quoted field,
    `quoted`), then ``... (N characters)`` when it is longer,
    so a field a hostile peer made a megabyte long costs a line of at most about
    ``10 * most`` characters (an escape is at most 10), in time of order ``most``.
    ``length``: N when ``text`` is the start of a longer field (its whole length),
    else ``len(text)``."""
    size = len(text) if length is None else length
    if size <= most:
        return show(text)
    return f"{show(text[:most])}... ({size:,} characters)"


def quoted(text: str, most: int = 60, length: int | None = None) -> str:
    """``text`` as Python writes a string, cut to its first ``most`` characters (its
    length then said: ``length`` when ``text`` is the start of a longer field): what a
    message quotes of a field a hostile peer may make huge (`clipped_line`, writing the
    characters kept with ``repr``, then what ``repr`` leaves that draws nothing, such as
    HANGUL FILLER, as `shown_line` does)."""
    return clipped_line(text, most, show=_repr_line, length=length)


def _repr_line(text: str) -> str:
    """``repr(text)`` with `shown_line`'s escapes of what it keeps."""
    return shown_line(repr(text))


def js_class(pattern: re.Pattern[str]) -> str:
    """``pattern`` (character classes of single characters and ranges, alternatives and
    lookarounds, as `UNSAFE`) as JavaScript RegExp source, every character outside printable
    ASCII written as a four-hex-digit ``\\u`` escape (``\\u202e``), or ``\\u{e0000}`` past
    U+FFFF, so the page's script applies the same
    rule (`shown_line`) to a name it shows before sending it. The source is for a RegExp
    with the ``u`` flag: without it a range of surrogates (``\\ud800-\\udfff``) matches
    each half of an emoji's surrogate pair, not only a lone surrogate."""
    return "".join(
        c if " " <= c <= "~" else f"\\u{ord(c):04x}" if c <= "\uffff" else f"\\u{{{ord(c):x}}}"
        for c in pattern.pattern
    )


def _safe_text(text: Text) -> Text:
    """A copy of ``text`` with each `UNSAFE` character written as its escape, in the
    styles of the character it stands for (escaped before the text is wrapped, so the
    lines are measured with the escapes' widths)."""
    safe = text.blank_copy()
    at = 0
    for m in UNSAFE.finditer(text.plain):
        safe.append_text(text[at : m.start()])
        esc = _escape(m)
        styles = text[m.start() : m.end()].spans
        safe.append_text(Text(esc, spans=[Span(0, len(esc), s.style) for s in styles]))
        at = m.end()
    safe.append_text(text[at:])
    return safe


class SafeConsole(Console):
    """A Rich console whose text segments never carry `UNSAFE` characters, and that reads
    strings as neither markup nor emoji codes unless ``markup``/``emoji`` say so (see the
    module's docstring); everything else as Rich's Console."""

    def __init__(self, *args: Any, markup: bool = False, emoji: bool = False, **kw: Any) -> None:
        super().__init__(*args, markup=markup, emoji=emoji, **kw)

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterable[Segment]:
        if isinstance(renderable, Text) and UNSAFE.search(renderable.plain):
            renderable = _safe_text(renderable)
        for segment in super().render(renderable, options):
            if segment.control is None and UNSAFE.search(segment.text):
                yield Segment(shown(segment.text), segment.style)
            else:
                yield segment


def protect_typer() -> None:
    """Typer's usage errors (``Invalid value for FILE: NAME ...``) print through a console
    of its own: make it a `SafeConsole` too (with markup and emoji codes, as Typer writes
    its help with them)."""
    import typer.rich_utils

    if getattr(typer.rich_utils, "Console", None) is Console:
        typer.rich_utils.Console = functools.partial(  # type: ignore[assignment, attr-defined]
            SafeConsole, markup=True, emoji=True
        )


def transient_bar(console: Console) -> Progress:
    """A progress bar on ``console`` that is drawn on a terminal only and gone when done.
    Elsewhere it writes nothing at all: Rich's transient bar still ends with an empty
    line on a file or pipe, so every `prov log audit` from cron wrote one to stderr."""
    return Progress(console=console, transient=True, disable=not console.is_terminal)
