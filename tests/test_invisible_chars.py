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
    again = re.compile(js_class(UNSAFE_IN_LINE))
    for raw, escaped in INVISIBLE.items():
        assert [m.start() for m in again.finditer(raw)] == [
            m.start() for m in UNSAFE_IN_LINE.finditer(raw)
        ]
        assert again.search(raw) is not None, escaped
    for name in KEPT:
        assert again.search(name) is None
