"""``prov detect``: the advisory detector's score of images and video frames, asked of
the server or run here (--local); never a provenance verdict."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Annotated, Any

import typer

from clients.api import ProvenanceClient, default_server
from clients.files import open_regular
from clients.options import ServerOpt, UsageError, files_not_folders
from detector import cli as detector_cli
from detector.bands import score_words, threshold_words, unscored_reason
from provenance.core.errors import ConfigError, ProvenanceError
from provenance.media.image import sniff_media_type
from provenance.terminal import SafeConsole, shown_line
from provenance.wire.jsontext import path_to_json, unicode_only

# text that is not ours is never read as markup or emoji codes (`SafeConsole`)
out = SafeConsole(soft_wrap=True)
err = SafeConsole(stderr=True, soft_wrap=True)


def detect(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Images or videos to score.",
            readable=False,  # each unreadable file is named with why, exit 1 (not 2)
            callback=files_not_folders(
                "detect",
                "scores files",
                "`prov scan {dir} --report scan.jsonl --detect` scores the unsigned images in it",
            ),
        ),
    ],
    server: ServerOpt = default_server(),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
    local: Annotated[
        bool, typer.Option("--local", help="Run the model here instead of asking the server.")
    ] = False,
    model: Annotated[str, typer.Option(help="With --local: registry model.")] = "default",
    seed: Annotated[int | None, typer.Option(help="With --local: fix the crop draws.")] = None,
    weights: Annotated[
        Path | None,
        typer.Option(help="With --local: a weights file (e.g. a published checkpoint)."),
    ] = None,
    device: Annotated[str | None, typer.Option(help="With --local: cpu, cuda, cuda:1.")] = None,
) -> None:
    """The detector's advisory score for generated images (and video frames), without a
    provenance verdict. Advisory only: a score never proves a file authentic or fake;
    only `prov verify` checks signatures. Exit 0 when every file was scored, 1 when any
    was not (unreadable, not an image or video, too small, or the server runs no
    detector: each is named with why), 2 on a usage error."""
    local_only = [
        name
        for name, given in (
            ("--model", model != "default"),
            ("--seed", seed is not None),
            ("--weights", weights is not None),
            ("--device", device is not None),
        )
        if given
    ]
    if local_only and not local:  # the server runs its own model: they would do nothing
        raise UsageError(f"{', '.join(local_only)} choose the model run here: add --local")
    if local:
        for f in files:
            try:
                with open_regular(f) as fh:
                    kind = sniff_media_type(fh.read(64)) or ""
            except (OSError, ProvenanceError):  # named with why as it is scored (not read)
                continue
            if kind.startswith("video/"):
                raise ConfigError(
                    f"{f}: --local scores still images; send videos to the server (drop --local)"
                )
        detector_cli.detect(files, as_json, model, seed, weights, device)
        return
    results: list[dict[str, Any]] = []
    with ProvenanceClient(server) as c:
        for f in files:
            if _empty_file(f):  # said here, not the server's "nothing to sign or verify"
                results.append({"file": str(f), "error": detector_cli.EMPTY_FILE})
                continue
            try:
                results.append({"file": str(f), **c.detect_file(f)})
            except ProvenanceError as e:
                results.append({"file": str(f), "error": str(e)})
    if as_json:
        # the JSON names a file as verify does ('file' in Unicode, 'file_bytes_b64'
        # when the name is not UTF-8); the text below shows it escaped, as SafeConsole does
        named = [{**r, **path_to_json(r["file"], "file")} for r in results]
        print(json.dumps(unicode_only({"results": named}), indent=2))
    for r in results if not as_json else []:
        name = shown_line(r["file"])  # one line per file: a name's newline cannot forge one
        if "error" in r:
            err.print(f"{name}: {r['error']}", style="red", highlight=False)
        elif not r.get("available", True):
            out.print(f"{name}: not scored: {unscored_reason(r)}", highlight=False)
        else:
            out.print(
                f"{name}: {r['band']}, {score_words(r)}, model {r['model_id']}"
                f" {r['model_version']}",
                highlight=False,
            )
            out.print(f"  {threshold_words(r)}", highlight=False)
    if not as_json and any("band" in r for r in results):  # under a score, not an error
        out.print(
            "advisory only: a learned estimate, never proof; only `prov verify` checks signatures"
        )
    unscored = sum("error" in r or not r.get("available", True) for r in results)
    detector_cli.exit_unless_all_scored(unscored, len(results))


def _empty_file(path: Path) -> bool:
    """Whether ``path`` is a regular file of 0 bytes; False for anything else, also a path
    that cannot be examined (the upload that follows says why)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == 0
