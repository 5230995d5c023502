"""Zero-width and byte-order-mark characters in names that reach a person are shown as
their escapes, as the bidirectional controls already were: "pay\\u200bpal.jpg" looked
exactly like "paypal.jpg" in a `prov verify` report, the scan's CSV and HTML and the web
page (a reviewer's finding). ZERO WIDTH JOINER and NON-JOINER between two non-ASCII
characters (Persian and Indic words, emoji sequences, where they change what is drawn)
are kept; between ASCII letters or at an end, where they draw nothing, they are
escaped."""

from __future__ import annotations

import re

import pytest

from clients.scan.report import _e, csv_cell
from provenance.terminal import UNSAFE_IN_LINE, js_class, shown, shown_line
from provenance.web.present import shown_text

INVISIBLE = {
    "pay\u200bpal.jpg": "pay\\u200bpal.jpg",  # ZERO WIDTH SPACE
    "\ufeffpaypal.jpg": "\\ufeffpaypal.jpg",  # BYTE ORDER MARK (ZW NO-BREAK SPACE)
    "pay\u2060pal.jpg": "pay\\u2060pal.jpg",  # WORD JOINER
    "pay\u200dpal.jpg": "pay\\u200dpal.jpg",  # a joiner between ASCII letters
    "pay\u200cpal.jpg": "pay\\u200cpal.jpg",
    "\u200dpaypal.jpg": "\\u200dpaypal.jpg",  # at an end
    "paypal.jpg\u200c": "paypal.jpg\\u200c",
    "\u0645\u200d": "\u0645\\u200d",  # after a letter but at the end
    "pay\u200epal": "pay\\u200epal",  # LRM, RLM: escaped before too
    "\U0001f468\u200d\u200d\U0001f469": "\U0001f468\\u200d\\u200d\U0001f469",  # two
}
KEPT = (
    "\U0001f468\u200d\U0001f469\u200d\U0001f467.jpg",  # a family emoji (ZWJ sequence)
    "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.jpg",  # Persian: mi-khaham (ZWNJ)
    "\u0915\u094d\u200d\u0937.jpg",  # Devanagari half form (ZWJ)
)


@pytest.mark.parametrize(("raw", "escaped"), INVISIBLE.items())
def test_invisible_characters_are_escaped_everywhere_a_name_is_shown(
    raw: str, escaped: str
) -> None:
    assert shown(raw) == escaped  # terminal (SafeConsole), scan HTML, web pages
    assert shown_line(raw) == escaped  # one-line names: verify report, web file name
    assert csv_cell(raw) == escaped  # the scan's CSV
    assert _e(raw) == escaped  # the scan's HTML
    assert shown_text(raw) == escaped  # every string a web template writes


@pytest.mark.parametrize("name", KEPT)
def test_joiners_inside_words_that_need_them_are_kept(name: str) -> None:
    assert shown(name) == name and shown_line(name) == name and csv_cell(name) == name


def test_the_page_script_s_rule_is_the_same() -> None:
    """The page's script escapes a chosen file's name with the server's rule (js_class of
    `UNSAFE_IN_LINE`, a RegExp with the "u" flag); Python's re reads that source the same
    way here (its \\uXXXX escapes and lookarounds), so both escape the same characters."""
    again = re.compile(_python_source(js_class(UNSAFE_IN_LINE)))
    for raw, escaped in INVISIBLE.items():
        assert [m.start() for m in again.finditer(raw)] == [
            m.start() for m in UNSAFE_IN_LINE.finditer(raw)
        ]
        assert again.search(raw) is not None, escaped
    for name in KEPT:
        assert again.search(name) is None


#: Invisible characters the rule above missed (a review, 6 December): each draws nothing
#: between ASCII letters, so "pay<it>pal.jpg" read "paypal.jpg" again; Tag characters
#: (U+E0000-U+E007F) carry a whole hidden ASCII text ("ASCII smuggling").
MISSED = {
    "pay\u00adpal.jpg": "pay\\xadpal.jpg",  # SOFT HYPHEN
    "pay\u034fpal.jpg": "pay\\u034fpal.jpg",  # COMBINING GRAPHEME JOINER
    "pay\u180epal.jpg": "pay\\u180epal.jpg",  # MONGOLIAN VOWEL SEPARATOR
    "pay\u2028pal.jpg": "pay\\u2028pal.jpg",  # LINE SEPARATOR
    "pay\u2029pal.jpg": "pay\\u2029pal.jpg",  # PARAGRAPH SEPARATOR
    "pay\ufff9pal.jpg": "pay\\ufff9pal.jpg",  # INTERLINEAR ANNOTATION ANCHOR
    "paypal.jpg\U000e0068\U000e0069": "paypal.jpg\\U000e0068\\U000e0069",  # tags "hi"
    "pay\ufe0fpal.jpg": "pay\\ufe0fpal.jpg",  # a variation selector after ASCII
    "\ufe0epaypal.jpg": "\\ufe0epaypal.jpg",  # at the start
    "\u2764\ufe0f\ufe0f.jpg": "\u2764\ufe0f\\ufe0f.jpg",  # a second one
    "pay\U000e0100pal.jpg": "pay\\U000e0100pal.jpg",  # VARIATION SELECTOR-17
    "1\ufe0fpal.jpg": "1\\ufe0fpal.jpg",  # after a digit but no keycap
    # a flag with a longer tag text (hidden ASCII) than a subdivision code: "gbsctxyz"
    "\U0001f3f4" + "".join(chr(0xE0000 + ord(c)) for c in "gbsctxyz") + "\U000e007f": (
        "\U0001f3f4" + "".join(f"\\U{0xE0000 + ord(c):08x}" for c in "gbsctxyz") + "\\U000e007f"
    ),
}
#: Variation selectors where they choose how the character before them is drawn.
SELECTED = (
    "\u2764\ufe0f.jpg",  # a red heart, emoji style
    "\U0001f3f3\ufe0f\u200d\U0001f308.jpg",  # the rainbow flag (selector, then joiner)
    "1\ufe0f\u20e3.jpg",  # keycap one
    "\u845b\U000e0100.jpg",  # an ideographic variation
    "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f.jpg",  # Scotland
)


@pytest.mark.parametrize(("raw", "escaped"), MISSED.items())
def test_other_invisible_characters_are_escaped_too(raw: str, escaped: str) -> None:
    assert shown(raw) == escaped
    assert shown_line(raw) == escaped
    assert csv_cell(raw) == escaped
    assert _e(raw) == escaped
    assert shown_text(raw) == escaped


@pytest.mark.parametrize("name", SELECTED)
def test_variation_selectors_that_choose_a_glyph_are_kept(name: str) -> None:
    assert shown(name) == name and shown_line(name) == name and csv_cell(name) == name


def _python_source(js: str) -> str:
    """js_class's source as Python re source: ``\\u{XXXXX}`` (JavaScript, "u" flag) as
    ``\\UXXXXXXXX``."""
    return re.sub(r"\\u\{([0-9a-f]+)\}", lambda m: f"\\U{int(m[1], 16):08x}", js)


def test_the_page_script_s_rule_covers_the_other_characters() -> None:
    source = js_class(UNSAFE_IN_LINE)
    assert "\\ue0000" not in source  # a character past U+FFFF is one \u{...} escape
    again = re.compile(_python_source(source))
    for raw in (*MISSED, *SELECTED):
        assert [m.start() for m in again.finditer(raw)] == [
            m.start() for m in UNSAFE_IN_LINE.finditer(raw)
        ], raw


#: Hangul fillers (a review): HANGUL FILLER U+3164 and HALFWIDTH HANGUL FILLER U+FFA0
#: draw nothing anywhere; the CHOSEONG and JUNGSEONG FILLERS U+115F and U+1160 draw
#: nothing but inside a conjoining jamo syllable (a filler initial before a vowel, a
#: filler vowel after an initial), so "pay<it>pal.jpg" read "paypal.jpg".
HANGUL_FILLERS = {
    "pay\u3164pal.jpg": "pay\\u3164pal.jpg",  # HANGUL FILLER
    "pay\uffa0pal.jpg": "pay\\uffa0pal.jpg",  # HALFWIDTH HANGUL FILLER
    "pay\u115fpal.jpg": "pay\\u115fpal.jpg",  # CHOSEONG FILLER after ASCII
    "pay\u1160pal.jpg": "pay\\u1160pal.jpg",  # JUNGSEONG FILLER after ASCII
    "\ud55c\u3164.jpg": "\ud55c\\u3164.jpg",  # after a syllable: still a filler
    "\u115f\u1160.jpg": "\\u115f\\u1160.jpg",  # the two fillers: nothing drawn
    "\uac00\u1160.jpg": "\uac00\\u1160.jpg",  # after a whole syllable, not an initial
}
#: Korean text the fillers are part of: kept as it is.
KOREAN = (
    "\ud55c\uad6d\uc5b4.jpg",  # hangugeo, precomposed syllables
    "\u1112\u1161\u11ab.jpg",  # han as conjoining jamo
    "\u115f\u1161.jpg",  # a syllable with a filler initial: draws its vowel
    "\u1100\u1160.jpg",  # a syllable with a filler vowel: draws its initial
    "\u1100\u1160\u11a8.jpg",  # and a final
    "\ua960\u1160.jpg",  # an extended-A initial and a filler vowel
    "\u115f\ud7b0.jpg",  # a filler initial and an extended-B vowel
)


@pytest.mark.parametrize(("raw", "escaped"), HANGUL_FILLERS.items())
def test_hangul_fillers_are_escaped(raw: str, escaped: str) -> None:
    assert shown(raw) == escaped
    assert shown_line(raw) == escaped
    assert csv_cell(raw) == escaped
    assert _e(raw) == escaped
    assert shown_text(raw) == escaped


@pytest.mark.parametrize("name", KOREAN)
def test_korean_text_keeps_its_fillers(name: str) -> None:
    assert shown(name) == name and shown_line(name) == name and csv_cell(name) == name


def test_the_page_script_s_rule_covers_the_hangul_fillers() -> None:
    again = re.compile(_python_source(js_class(UNSAFE_IN_LINE)))
    for raw in (*HANGUL_FILLERS, *KOREAN):
        assert [m.start() for m in again.finditer(raw)] == [
            m.start() for m in UNSAFE_IN_LINE.finditer(raw)
        ], raw
