"""What the templates show: verdict wording, formatting, and server-side plots.

Everything here turns report and log views (JSON-able dicts) into text and numbers
for Jinja; templates never compute. Plots are inline SVG drawn from numbers only,
so they need no script and no inline style (the page's CSP allows neither).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment
from markupsafe import Markup

from detector.bands import (
    CROP_TONES,
    LIKELY_GENERATED,
    crop_tone,
    threshold_words,
    thresholds,
    unscored_reason,
)
from provenance.terminal import UNSAFE_IN_LINE, js_class, shown, shown_line


@dataclass(frozen=True)
class VerdictText:
    """A verdict as the page shows it: the name, a short title, one sentence on what it
    means, and a tone (CSS class) from good to bad."""

    status: str
    title: str
    meaning: str
    tone: str


VERDICTS: dict[str, VerdictText] = {
    v.status: v
    for v in (
        VerdictText(
            "SIGNED_ORIGINAL",
            "Signed original",
            "These are the exact bytes a registered device signed and this log recorded.",
            "good",
        ),
        VerdictText(
            "DERIVED",
            "Derived from a signed capture",
            "Not the original bytes, but the picture matches a signed capture closely:"
            " a re-encoded, resized or lightly edited copy.",
            "info",
        ),
        VerdictText(
            "TAMPERED",
            "Tampered",
            "A signed claim came with this file, but the file or the signature does not match it.",
            "bad",
        ),
        VerdictText(
            "REVOKED_KEY",
            "Signed by a revoked key",
            "Signed, but by a device key that had been revoked when the claim was logged"
            " (or, for a claim never logged, is revoked now), or a copy of such a capture.",
            "bad",
        ),
        VerdictText(
            "UNSIGNED",
            "Unsigned",
            "No signed capture matches this file. That says nothing about whether it is"
            " real: most files are never signed.",
            "neutral",
        ),
    )
}


#: UNSIGNED's sentence when the search for near copies was cut short (the report's
#: ``evidence.near_search_cut``): it may have found a revoked key's capture (named in the
#: reasons), and a capture it did not reach may match, so not "No signed capture matches".
UNSIGNED_CUT_MEANING = (
    "No signed capture in good standing was found, but the search for near copies was cut"
    " short at the server's time limit, so one it did not reach may match (see Why; asking"
    " again searches further). That says nothing about whether it is real: most files are"
    " never signed."
)


def verdict(status: str, near_search_cut: bool = False) -> VerdictText:
    """The wording of a verdict name (unknown names shown as they are); UNSIGNED's
    sentence is `UNSIGNED_CUT_MEANING` when ``near_search_cut`` (the report's evidence
    field)."""
    found = VERDICTS.get(status, VerdictText(status, status, "", "neutral"))
    if status == "UNSIGNED" and near_search_cut:
        return VerdictText(found.status, found.title, UNSIGNED_CUT_MEANING, found.tone)
    return found


ERROR_TITLES = {
    400: "This could not be checked",
    401: "Not allowed",
    403: "Not allowed",
    404: "Not found",
    408: "The upload stalled",
    413: "Too large",
    429: "Too many uploads at once",
    502: "The verification service's answer was refused",
    503: "The verification service is unavailable",
    504: "The verification service took too long",
}


def error_title(code: int) -> str:
    """A plain title for an HTTP error status."""
    return ERROR_TITLES.get(code, "Something went wrong")


def short(value: str | None, n: int = 16) -> str:
    """A long hex string cut to ``n`` characters and an ellipsis."""
    if not value:
        return ""
    return value if len(value) <= n else value[:n] + "…"


def human_bytes(n: int | None) -> str:
    """1536 -> '1.5 KiB'."""
    if n is None:
        return ""
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size):,} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{n} bytes"


def when(iso: str | None) -> str:
    """'2026-12-01T15:27:33.123456Z' -> '2026-12-01 15:27:33 UTC'."""
    if not iso:
        return ""
    m = re.match(r"(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})", iso)
    return f"{m.group(1)} {m.group(2)} UTC" if m else iso


def seconds(value: float | None) -> str:
    """75.5 -> '1:15.5'."""
    if value is None:
        return ""
    minutes, secs = divmod(float(value), 60)
    return f"{int(minutes)}:{secs:04.1f}"


def json_data_url(obj: Any) -> str:
    """A data: URL holding ``obj`` as indented JSON (the report download link)."""
    data = json.dumps(obj, indent=2).encode()
    return "data:application/json;base64," + base64.b64encode(data).decode()


def download_name(filename: str | None) -> str:
    """A safe file name for the JSON report of ``filename``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", filename or "file").strip("._") or "file"
    return f"{stem[:80]}.report.json"


@dataclass(frozen=True)
class Plot:
    """An SVG plot of per-frame scores: the view box size, the polyline's points, one
    dot per scored frame (x, y, time, score), axis ticks (x, label), and the band
    thresholds as levels (y, label, tone: "high" for `likely generated`, "low" for `no
    generator traces found`; none when the block carries no thresholds)."""

    width: int
    height: int
    points: str
    dots: tuple[tuple[float, float, str, str], ...]
    ticks: tuple[tuple[float, str], ...]
    unscored: int
    levels: tuple[tuple[float, str, str], ...]


PLOT_W, PLOT_H, PAD = 640, 160, 28


def timeline_plot(block: dict[str, Any] | None) -> Plot | None:
    """The per-frame scores of a detector block's ``timeline`` along the video's time
    (score 0 at the bottom, 1 at the top), with lines at the block's own band thresholds
    (the frames' scores are judged by them, never by 0.5); None without a timeline."""
    timeline = (block or {}).get("timeline")
    if not timeline:
        return None
    end = max(float(f["timestamp_seconds"]) for f in timeline) or 1.0
    inner_w, inner_h = PLOT_W - 2 * PAD, PLOT_H - 2 * PAD

    def xy(t: float, s: float) -> tuple[float, float]:
        return round(PAD + inner_w * t / end, 1), round(PAD + inner_h * (1 - s), 1)

    dots = tuple(
        (
            *xy(float(f["timestamp_seconds"]), float(f["score"])),
            seconds(f["timestamp_seconds"]),
            f"{float(f['score']):.2f}",
        )
        for f in timeline
        if f.get("score") is not None
    )
    ticks = tuple((xy(end * i / 4, 0)[0], seconds(end * i / 4)) for i in range(5))
    th = thresholds(block or {})
    levels = () if th is None else (
        (xy(0, th[1])[1], f"{th[1]:.3f}", "high"),
        (xy(0, th[0])[1], f"{th[0]:.3f}", "low"),
    )  # fmt: skip
    return Plot(
        PLOT_W,
        PLOT_H,
        " ".join(f"{x},{y}" for x, y, _, _ in dots),
        dots,
        ticks,
        sum(1 for f in timeline if f.get("score") is None),
        levels,
    )


def crop_extent(crops: list[dict[str, Any]] | None) -> str:
    """A view box holding every crop ("0 0 W H"): the image is at least that large.
    The page's script replaces it with the picture's real size."""
    if not crops:
        return "0 0 1 1"
    w = max(int(c["x"]) + int(c["width"]) for c in crops)
    h = max(int(c["y"]) + int(c["height"]) for c in crops)
    return f"0 0 {w} {h}"


@dataclass(frozen=True)
class CropMark:
    """One crop as the overlay draws it: its box in image pixels, its tone (one of
    `detector.bands.CROP_TONES`: the CSS class ``crop-TONE``) and its tooltip."""

    x: int
    y: int
    width: int
    height: int
    tone: str
    title: str


@dataclass(frozen=True)
class CropMarks:
    """The crop overlay of a detector block: the marks, how many crops fall in each tone
    (tone -> count, every tone of `CROP_TONES`), the crops' side in pixels, and the image
    thresholds the tones use ((low, high), None when the block has none)."""

    marks: tuple[CropMark, ...]
    counts: dict[str, int]
    side: int
    thresholds: tuple[float, float] | None


#: What each tone means on the overlay, after the crop's score.
_TONE_WORDS = {
    "high": f"in the {LIKELY_GENERATED} range",
    "mid": "in the uncertain range",
    "low": "below the uncertain range",
    "unknown": "thresholds unknown",
}


def crop_marks(block: dict[str, Any] | None) -> CropMarks | None:
    """The overlay of a detector block's crops, toned by the image's own band thresholds
    (`detector.bands.crop_tone`); None without crops."""
    if not block or not block.get("crops"):
        return None
    marks = []
    for c in block["crops"]:
        score = float(c["score"])
        tone = crop_tone(score, block)
        marks.append(
            CropMark(
                int(c["x"]),
                int(c["y"]),
                int(c["width"]),
                int(c["height"]),
                tone,
                f"crop at {c['x']},{c['y']}: score {score:.3f}, {_TONE_WORDS[tone]}",
            )
        )
    counts = {t: sum(1 for m in marks if m.tone == t) for t in CROP_TONES}
    return CropMarks(tuple(marks), counts, marks[0].width, thresholds(block))


def shown_text(value: Any) -> Any:
    """Jinja's ``finalize`` for every page: each string a template writes (a claim's
    media type and metadata, which its device wrote; a device's label and a revocation's
    reason, the operator's; a C2PA manifest's signer, generator and ingredients, the
    file's maker's) with its control and bidirectional control characters written as
    escapes (`provenance.terminal.shown`: "Paris\\u202eLondon", which U+202E would
    have shown as "Parisnodnol"), as the CLI prints them; tab and newline are kept (the
    checkpoint's note is shown as lines). Markup (HTML that Jinja's ``join`` or a helper
    built from escaped text) stays Markup, its characters escaped the same way (the
    escapes are plain ASCII, nothing HTML reads); other values pass unchanged."""
    if isinstance(value, Markup):
        return Markup(shown(str(value)))
    if isinstance(value, str):
        return shown(value)
    return value


def sentence(text: str) -> str:
    """``text`` with its first letter upper-case and the rest as written (Jinja's
    `capitalize` lowercases the rest: "PDQ" read "pdq")."""
    return text[:1].upper() + text[1:]


def install(env: Environment) -> None:
    """Register these helpers with a Jinja environment."""
    env.globals.update(
        verdict=verdict,
        timeline_plot=timeline_plot,
        crop_extent=crop_extent,
        crop_marks=crop_marks,
        error_title=error_title,
        # the rule of the `file_name` filter, for the page's script (app.js)
        unsafe_in_name=js_class(UNSAFE_IN_LINE),
    )
    env.filters.update(
        short=short,
        sentence=sentence,
        human_bytes=human_bytes,
        when=when,
        seconds=seconds,
        json_data_url=json_data_url,
        download_name=download_name,
        # a file name as shown on the page and in the tab's title: its control and
        # bidirectional control characters written as escapes ("photo\\u202egpj.exe"
        # read "photoexe.jpg"), as the CLI prints it (`provenance.terminal.shown_line`)
        file_name=shown_line,
        threshold_words=threshold_words,
        unscored_reason=unscored_reason,
    )
