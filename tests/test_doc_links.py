"""Every relative link in README.md and docs/*.md resolves: the file (or folder) it names
exists in the repository, and its `#anchor`, if any, is a heading of that Markdown file
under GitHub's anchor rules (lowercase; spaces to '-'; punctuation other than '-' and '_'
dropped; a repeated heading gets -1, -2, ...). README.md was split into docs/*.md, and a
heading renamed or moved there would otherwise leave a link that goes nowhere."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
# [text](target) and ![alt](target); the target optionally in <...> and with a "title"
_INLINE = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]*)(?:\s+\"[^\"]*\")?\s*\)"
)
# [label]: target (a reference definition)
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.M)
_HTML_TARGET = re.compile(r"<(?:a|img)\s[^>]*?(?:href|src)=\"([^\"]*)\"", re.I)
_HTML_ID = re.compile(r"<[a-z]+\s[^>]*?(?:id|name)=\"([^\"]+)\"", re.I)
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$", re.M)


def _without_code(text: str) -> str:
    """The text with fenced blocks and code spans blanked (a link shown as code is not one)."""
    text = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return _CODE_SPAN.sub(" ", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's Markdown text, before de-duplication: the rendered
    text (code spans keep their words, links their text, HTML tags go), lowercased, every
    character but letters, digits, spaces, '-' and '_' dropped, spaces turned to '-'."""
    text = re.sub(r"`+([^`]*)`+", r"\1", heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = text.lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a Markdown text offers: its headings' slugs (a repeat of a slug gets
    -1, -2, ... in order) and the ids or names of its HTML elements."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for m in _HEADING.finditer(_FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)):
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    found.update(_HTML_ID.findall(text))
    return found


def links(text: str) -> list[str]:
    """The link targets of a Markdown text, outside code."""
    text = _without_code(text)
    found = [t.strip("<>") for t in _INLINE.findall(text)]
    found += [t.strip("<>") for t in _REFERENCE.findall(text)]
    found += _HTML_TARGET.findall(text)
    return found


def broken(doc: Path) -> list[str]:
    """The relative links of ``doc`` that name no file, or an anchor its target lacks."""
    problems = []
    for target in links(doc.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:, ...
            continue
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / unquote(path_part)).resolve() if path_part else doc
        if not dest.exists():
            problems.append(f"{target}: no file {os.path.relpath(dest, doc.parent)}")
        elif anchor and dest.suffix == ".md":
            if unquote(anchor) not in anchors(dest.read_text(encoding="utf-8")):
                problems.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_relative_links_and_anchors_resolve(doc: Path) -> None:
    problems = broken(doc)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_checker_reads_github_anchors_and_catches_a_broken_link(tmp_path: Path) -> None:
    """The checker itself: GitHub's slugs (duplicates numbered), links in code ignored,
    a missing file and a missing anchor both reported."""
    target = tmp_path / "b.md"
    target.write_text(
        "# Verdicts and exit codes of `prov verify`\n## Content Credentials (C2PA)\n"
        "## Servers, Ctrl-C and SIGTERM\n## Same\n## Same\n```sh\n# not a heading\n```\n",
        encoding="utf-8",
    )
    assert anchors(target.read_text(encoding="utf-8")) == {
        "verdicts-and-exit-codes-of-prov-verify",
        "content-credentials-c2pa",
        "servers-ctrl-c-and-sigterm",
        "same",
        "same-1",
    }
    doc = tmp_path / "a.md"
    doc.write_text(
        "[ok](b.md#same-1) [ok](#here) [web](https://example.com/x#y)\n# Here\n"
        "`[code](nowhere.md)`\n```\n[block](nowhere.md)\n```\n"
        "[gone](missing.md) [no anchor](b.md#same-2) [self](#nothere)\n",
        encoding="utf-8",
    )
    assert broken(doc) == [
        "missing.md: no file missing.md",
        "b.md#same-2: no heading with anchor #same-2 in b.md",
        "#nothere: no heading with anchor #nothere in a.md",
    ]
