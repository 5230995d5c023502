"""Command line of the detector: ``prov detector train|eval`` and ``prov detect``.

`app` is a typer app the main CLI mounts as ``prov detector``; `detect` is the function
behind ``prov detect FILE... [--json]``. Exit codes as every `prov` command's (README,
"Exit codes"): a usage error found before any work (a --data path that does not exist, an
unknown --model or --families) exits 2 under the usage line; an error of the project
(DetectorError, MediaError, ...) or of the machine (OSError) met while working prints one
``error: ...`` line and exits 1; no traceback, no exception class name.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from detector.bands import score_words, threshold_words
from detector.transforms import CONDITIONS
from provenance.cli.options import UsageError
from provenance.core.errors import ProvenanceError
from provenance.terminal import SafeConsole
from provenance.wire.jsontext import path_to_json, unicode_only

if TYPE_CHECKING:
    import torch

app = typer.Typer(
    name="detector",
    help=(
        "Train and evaluate the advisory detector of generated images.\n\n"
        "Scores are advisory: they estimate whether pixels carry generator traces and never "
        "prove an image authentic. Data sets are LABELS.tsv files (columns file, label "
        "real|generated, generator, source) or folders with real/ and generated/<family>/."
    ),
    no_args_is_help=True,
    add_completion=False,
)
_err = SafeConsole(stderr=True, soft_wrap=True)
_out = SafeConsole(soft_wrap=True)

DEFAULT_DATA = [
    Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "detector",
    Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "detector_more",
]


@contextmanager
def _clean_errors(code: int = 1) -> Iterator[None]:
    """Print a ProvenanceError, or an OSError (a file or folder that cannot be read or
    written), as one ``error: ...`` line on stderr and raise typer.Exit(code): 1, the work
    could not be done, unless the caller says otherwise."""
    try:
        yield
    except ProvenanceError as e:
        _err.print(Text.assemble(("error:", "red"), f" {e}"))
        raise typer.Exit(code) from None
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        _err.print(Text.assemble(("error:", "red"), f" {e.strerror or e}{where}"))
        raise typer.Exit(code) from None


@contextmanager
def _usage_errors() -> Iterator[None]:
    """Turn a ProvenanceError of a check made on the arguments alone, before any work,
    into a usage error (exit 2, under the usage line)."""
    try:
        yield
    except ProvenanceError as e:
        raise UsageError(str(e)) from None


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar per stage; yields the callback train/eval expect."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=_err,
        disable=not enabled,
    )
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    with bar:
        yield update


def _set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def _device(name: str | None) -> torch.device:
    import torch

    from detector.infer import default_device

    return torch.device(name) if name else default_device()


DataOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--data",
        "-d",
        exists=True,
        help="Label file or folder; repeat for several. Default: the shared fixture sets.",
    ),
]
SeedOpt = Annotated[int, typer.Option(help="Seeds numpy, torch and the calibration split.")]
EpochsOpt = Annotated[int, typer.Option(help="Passes over the training patches.")]
ThreadsOpt = Annotated[
    int | None, typer.Option(help="CPU threads for torch (default: torch's choice).")
]
DeviceOpt = Annotated[
    str | None, typer.Option(help="cpu, cuda or cuda:N (default: CUDA if available).")
]


@app.command()
def train(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Weights file to write (.safetensors); the arguments go beside it as .json.",
        ),
    ] = Path("detector-weights.safetensors"),
    data: DataOpt = None,
    model_id: Annotated[str, typer.Option(help="Model id recorded in the metadata.")] = "default",
    version: Annotated[str, typer.Option(help="Version string recorded in the metadata.")] = "1",
    epochs: EpochsOpt = 8,
    variants: Annotated[int, typer.Option(help="Augmented, re-encoded variants per image.")] = 3,
    per_variant: Annotated[int, typer.Option(help="Random patches cut from each variant.")] = 8,
    patch: Annotated[
        int, typer.Option(help="Patch side in pixels (native resolution, never resized).")
    ] = 64,
    width: Annotated[
        int, typer.Option(help="Channels of the stem; stages use 1x, 2x, 4x, 8x.")
    ] = 16,
    batch_size: Annotated[int, typer.Option(help="Patches per optimisation step.")] = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate of the one-cycle schedule.")] = 3e-3,
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars on stderr.")] = True,
) -> None:
    """Train a patch detector on real and generated images, calibrate it on held-out
    images and save it as safetensors with its metadata.

    Every training image is cropped at a random offset, optionally downscaled or blurred,
    and re-encoded as JPEG at a random quality, real and generated alike, so container
    format and JPEG history are no cue. 20% of groups (tiles of one figure stay together)
    are held out to fit the calibration and the band thresholds.

    On a GPU, train a larger model with e.g. --device cuda --width 32 --patch 128
    --variants 8 --epochs 20, then load it with `prov detect --weights FILE`.
    """
    from detector.train import TrainConfig, fit

    with _clean_errors():
        _set_threads(threads)
        config = TrainConfig(
            patch=patch,
            variants=variants,
            per_variant=per_variant,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            widths=(width, 2 * width, 4 * width, 8 * width),
        )
        with _progress(progress) as update:
            meta, summary = fit(
                data or DEFAULT_DATA, out, config, model_id, version, _device(device), update
            )
        _out.print_json(
            json.dumps(
                {
                    "weights": str(out),
                    "arguments": str(out.with_suffix(".json")),
                    "version": meta.version,
                    "calibration": vars(meta.calibration),
                    **{k: v for k, v in summary.items() if k != "skipped"},
                    "skipped": len(summary["skipped"]),
                }
            )
        )


@app.command("eval")
def evaluate(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON report to write.")] = Path(
        "detector-eval.json"
    ),
    data: DataOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Score this registry model instead of leave-one-family-out training "
            "(only fair on data it never saw)."
        ),
    ] = None,
    weights: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="Weights file for --model.")
    ] = None,
    families: Annotated[
        str | None, typer.Option(help="Comma-separated families to hold out (default: all).")
    ] = None,
    epochs: EpochsOpt = 3,
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars on stderr.")] = True,
) -> None:
    """Leave-one-family-out evaluation: for each generator family, train on the others,
    test on it against held-out real images.

    Prints and saves, per family and condition (as_is; harmonised = centre crop 256 + JPEG
    q90; harmonised_jpeg75; harmonised_resize50), ROC AUC, average precision, ECE of the
    calibrated score, and the share flagged "likely generated" at thresholds fitted on
    calibration images. Trains one model per family from scratch, by default for 3 epochs
    (the shipped model trains 8): about 4 minutes per family on one thread of a shared
    2-core machine, 38-45 minutes for the 10 families of the shared sets.
    """
    from detector.data import load_samples
    from detector.eval import EvalConfig, evaluate_model, held_out_families, leave_one_family_out
    from detector.registry import load_model, model_spec
    from detector.train import TrainConfig

    fams = tuple(f.strip() for f in families.split(",")) if families else None
    if model is not None:
        with _usage_errors():
            model_spec(model, weights)
    with _clean_errors():
        _set_threads(threads)
        samples = load_samples(data or DEFAULT_DATA)
        if model is None:
            with _usage_errors():
                held_out_families(fams, samples)
        dev = _device(device)
        with _progress(progress) as update:
            if model is not None:
                m = load_model(model, weights)
                report = evaluate_model(
                    m.net, m.meta.preprocess, m.meta.calibration, samples, dev, update
                )
            else:
                config = EvalConfig(train=TrainConfig(epochs=epochs, seed=seed), families=fams)
                report = leave_one_family_out(samples, config, dev, update, _print_fold)
        out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        _print_eval(report)
        _out.print(f"report saved to {out}")


def _print_fold(family: str, fold: dict[str, Any]) -> None:
    cells = ", ".join(f"{c} {m['auc']:.3f}" for c, m in fold["conditions"].items())
    _err.print(f"held out {family} ({fold['kind']}, {fold['test_generated']} images): AUC {cells}")


def _print_eval(report: dict[str, Any]) -> None:
    rows = report.get("folds") or report.get("families") or {}
    conds = list(CONDITIONS)
    table = Table(title="AUC per held-out family (AP and ECE: harmonised; all in the JSON)")
    for col in ("family", *conds, "AP", "ECE"):
        table.add_column(col)
    for fam, r in rows.items():
        m = r.get("conditions", r)
        aucs = [f"{m[c]['auc']:.3f}" if c in m else "-" for c in conds]
        h = m.get("harmonised", {})
        table.add_row(
            Text(fam),
            *aucs,
            f"{h.get('ap', float('nan')):.3f}",
            f"{h.get('ece', float('nan')):.3f}",
        )
    _out.print(table)
    if "summary" in report:
        _out.print_json(json.dumps(report["summary"]))


#: What `prov detect` says of an empty file, named before it (scored here or by a server).
EMPTY_FILE = "empty file (0 bytes): nothing to score"


def detect(
    files: list[Path],
    json_out: bool = False,
    model: str = "default",
    seed: int | None = None,
    weights: Path | None = None,
    device: str | None = None,
) -> None:
    """Score image files locally and print one advisory report per file.

    seed: fixes the crop draws (the secret is derived from it and the request key is the
    file's SHA-256), so the same file gives the same score; None draws a fresh secret.
    Prints JSON ({"results": [...]}) with json_out, else a line per file. A file that
    cannot be read or decoded is reported and the others are still scored; then raises
    typer.Exit(1) (`exit_unless_all_scored`). Raises typer.Exit(2) when the model cannot
    load (DetectorError), after printing why.
    """
    from detector.infer import Detector

    results: list[dict[str, Any]] = []
    secret = (
        hashlib.sha256(f"prov-detect-seed:{seed}".encode()).digest() if seed is not None else None
    )
    with _clean_errors(2), Detector.load(model, weights, device, secret) as det:
        for path in files:
            try:
                data = _read_image(path)
                if not data:
                    results.append({"file": str(path), "error": EMPTY_FILE})
                    continue
                report = det.score_bytes(data, hashlib.sha256(data).digest())
            except OSError as e:
                results.append({"file": str(path), "error": f"cannot read: {e.strerror}"})
                continue
            except ProvenanceError as e:  # its message, as other commands print it
                results.append({"file": str(path), "error": str(e)})
                continue
            results.append({"file": str(path), **report.to_dict()})
    if json_out:  # a name that is not UTF-8: U+FFFD and file_bytes_b64, as in `prov verify`
        named = [{**r, **path_to_json(r["file"], "file")} for r in results]
        _out.print_json(json.dumps(unicode_only({"results": named})))
    else:
        for r in results:
            if "error" in r:
                _err.print(f"{r['file']}: {r['error']}", style="red", highlight=False)
            else:
                _out.print(
                    f"{r['file']}: {r['band']}, {score_words(r)}, model {r['model_id']}"
                    f" {r['model_version']}, {len(r['crops'])} crops",
                    highlight=False,
                )
                _out.print(f"  {threshold_words(r)}", highlight=False)
        scored = [r for r in results if "error" not in r]
        if scored:  # the footer qualifies a score: none under errors alone
            _out.print(scored[0].get("advisory", ""), style="dim")
    exit_unless_all_scored(sum("error" in r for r in results), len(results))


def _read_image(path: Path) -> bytes:
    """The bytes of the image file ``path``, read as the server's upload limits read one:
    opened only if it is a regular file (`provenance.cli.files.open_regular`: a FIFO, a
    socket, a device or a link to one is never opened for reading, so neither blocks nor
    reads without end) and refused from its size when over the image limit
    (`provenance.media.assets.DEFAULT_MAX_IMAGE_BYTES`, 256 MiB), reading at most one
    byte more than the limit whatever the size it claims. Raises MediaError (not a regular file),
    MediaTooLargeError (over the limit), OSError (cannot be read)."""
    from provenance.cli.files import open_regular
    from provenance.core.errors import MediaError
    from provenance.media.assets import AssetLimits, check_image_size

    limits = AssetLimits()
    with open_regular(path, MediaError) as f:
        check_image_size(os.fstat(f.fileno()).st_size, limits)
        data = f.read(limits.max_image_bytes + 1)
    check_image_size(len(data), limits)  # grew since its size was taken
    return data


def exit_unless_all_scored(unscored: int, total: int) -> None:
    """The exit of `prov detect` (and `prov detector detect`): none when every one of the
    ``total`` files was scored; else an ``error:`` line on stderr saying how many of them
    were not (each was named above with why) and typer.Exit(1), as any command that could
    not do its work (README, "Exit codes"), so that a script can tell a run that scored
    nothing (no detector on the server, no image among the files) from one that did."""
    if not unscored:
        return
    what = "no file was scored" if unscored == total else "not every file was scored"
    _err.print(
        Text.assemble(("error:", "red"), f" {what} ({unscored} of {total} not scored)"),
        highlight=False,
    )
    raise typer.Exit(1)


@app.command("detect")
def detect_command(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Image files (JPEG, PNG, WebP, GIF, TIFF).",
            readable=False,  # each unreadable file is named with why, exit 1 (not 2)
        ),
    ],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
    model: Annotated[
        str, typer.Option(help="Registry model: default, cnndetection, npr.")
    ] = "default",
    weights: Annotated[
        Path | None, typer.Option(help="Weights file (required for cnndetection / npr).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Fix the crop draws for reproducible scores.")
    ] = None,
    device: DeviceOpt = None,
) -> None:
    """Score image files locally (advisory: never a proof of authenticity). Exit 0 when
    every file was scored, 1 when any could not be (each is named with why)."""
    detect(files, json_out, model, seed, weights, device)


def main(argv: list[str] | None = None) -> None:
    """Entry point for ``python -m detector.cli``."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="prov detector")


if __name__ == "__main__":
    main()
