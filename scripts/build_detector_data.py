"""Build the detector's training and evaluation images from the shared recipes.

The recipes (`../shared/detector_sources/real_sources.tsv` and `gen_sources.tsv`, see
their README) name, for each image, a public GitHub repository, a commit, a path, the
byte count and the SHA-256 of the file. This script reads each file from a local bare
mirror of its repository (`<mirrors>/<owner>+<name>/repo`, as the session's `fetch`
tool leaves them), checks bytes and SHA-256, crops the rows that carry a crop box
(Pillow, frame 0, RGB, saved as PNG with compress_level=9) and copies the others
unchanged, into a git-ignored cache (default `.cache/detector-data/`).

It writes beside the images:

* ``LABELS.tsv`` in the format `detector.data.read_label_file` reads (file, label,
  generator, source, plus repo, origin, family, format), one row per built image;
* ``DATA_CARD.json``: which recipe rows were used, which were skipped and why (missing
  mirror, missing commit, SHA-256 mismatch), counts per origin, family and repository.

Rows whose repository has no mirror are skipped with a message; nothing is downloaded.
Evaluation must split by repository (`repo` column), never by image.

Usage::

    python scripts/build_detector_data.py                       # everything mirrored
    python scripts/build_detector_data.py --max-per-repo 40     # a bounded, diverse subset
    python scripts/build_detector_data.py --out /tmp/dd --mirrors /work/.mirror

Exit codes: 0 built (some rows may be skipped; see the card), 1 nothing could be built,
2 bad arguments or unreadable recipes.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RECIPES = (ROOT.parent / "shared" / "detector_sources").resolve()
DEFAULT_OUT = ROOT / ".cache" / "detector-data"
DEFAULT_MIRRORS = Path("/work/.mirror")


@dataclass(frozen=True)
class Row:
    """One recipe row, normalised across the two recipes."""

    file: str
    label: str
    repo: str
    commit: str
    path: str
    size: int
    sha256: str
    crop: tuple[int, int, int, int] | None
    generator: str
    family: str
    origin: str
    fmt: str


def read_recipe(path: Path) -> list[Row]:
    """Rows of a recipe TSV. Raises SystemExit(2) on a missing or malformed file."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except OSError as e:
        raise SystemExit(f"error: cannot read recipe {path}: {e}") from e
    out = []
    for i, r in enumerate(rows, start=2):
        try:
            crop = r.get("crop") or "-"
            box = None if crop == "-" else tuple(int(v) for v in crop.split(","))
            if box is not None and len(box) != 4:
                raise ValueError(f"crop {crop!r} is not x0,y0,x1,y1")
            out.append(
                Row(
                    file=r["file"],
                    label=r["label"],
                    repo=r["repo"],
                    commit=r["commit"],
                    path=r["path"],
                    size=int(r["bytes"]),
                    sha256=r["sha256"].lower(),
                    crop=box,
                    generator=r.get("generator") or "-",
                    family=r.get("family") or "real",
                    origin=r.get("origin") or "-",
                    fmt=r.get("format") or "-",
                )
            )
        except (KeyError, ValueError) as e:
            raise SystemExit(f"error: {path}:{i}: malformed row ({e})") from e
    return out


def git_dir(mirrors: Path, repo: str) -> Path | None:
    """The bare git directory of repo's mirror, or None if it is not mirrored."""
    base = mirrors / repo.replace("/", "+") / "repo"
    for cand in (base, base / ".git"):
        if (cand / "objects").is_dir() and (cand / "HEAD").is_file():
            return cand
    return None


class BlobReader:
    """Reads `commit:path` blobs of one repository with one `git cat-file --batch`."""

    def __init__(self, gitdir: Path) -> None:
        self.proc = subprocess.Popen(
            ["git", f"--git-dir={gitdir}", "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,  # pipes: each answer is read whole before the next ask
        )

    def read(self, commit: str, path: str) -> bytes | None:
        """The blob's bytes, or None if commit:path is not in the mirror."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{commit}:{path}\n".encode())
        self.proc.stdin.flush()
        header = self.proc.stdout.readline().decode("utf-8", "replace").split()
        if len(header) < 3 or header[1] != "blob":
            return None
        data = self.proc.stdout.read(int(header[2]))
        self.proc.stdout.read(1)  # the newline after the contents
        return data

    def close(self) -> None:
        """Stop the git process."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def crop_png(data: bytes, box: tuple[int, int, int, int]) -> bytes:
    """Frame 0 of an encoded image, as RGB, cropped to box (x0, y0, x1, y1), as PNG."""
    with Image.open(io.BytesIO(data)) as im:
        im.seek(0)
        rgb = im.convert("RGB")
        out = io.BytesIO()
        rgb.crop(box).save(out, format="PNG", compress_level=9)
        return out.getvalue()


def select(rows: list[Row], max_per_repo: int, seed: int) -> list[Row]:
    """At most max_per_repo rows of each repository (0: all), drawn at random but
    spread over its origins / families (round robin), in recipe order."""
    if max_per_repo <= 0:
        return rows
    rng = random.Random(seed)
    by_repo: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, r in enumerate(rows):
        by_repo[r.repo][r.origin if r.label == "real" else r.family].append(i)
    keep: set[int] = set()
    for kinds in by_repo.values():
        pools = [rng.sample(v, len(v)) for _, v in sorted(kinds.items())]
        taken = 0
        while taken < max_per_repo and any(pools):
            for pool in pools:
                if pool and taken < max_per_repo:
                    keep.add(pool.pop())
                    taken += 1
    return [r for i, r in enumerate(rows) if i in keep]


def build(
    rows: list[Row], out: Path, mirrors: Path, progress: bool = True
) -> tuple[list[Row], dict[str, list[str]]]:
    """Write the images of rows under out; returns (built rows, reason -> skipped files)."""
    built: list[Row] = []
    skipped: dict[str, list[str]] = defaultdict(list)
    by_repo: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_repo[r.repo].append(r)
    done = 0
    for repo, group in sorted(by_repo.items()):
        gd = git_dir(mirrors, repo)
        if gd is None:
            print(
                f"skip: {repo}: no mirror at {mirrors / repo.replace('/', '+')} "
                f"({len(group)} rows); fetch it first",
                file=sys.stderr,
            )
            skipped[f"no mirror of {repo}"] += [r.file for r in group]
            done += len(group)
            continue
        reader = BlobReader(gd)
        try:
            for r in group:
                done += 1
                dest = out / r.file
                if dest.is_file() and r.crop is None and _sha(dest.read_bytes()) == r.sha256:
                    built.append(r)
                    continue
                if dest.is_file() and r.crop is not None:
                    built.append(r)  # cropped from a verified source on an earlier run
                    continue
                data = reader.read(r.commit, r.path)
                if data is None:
                    skipped["commit:path not in the mirror"].append(r.file)
                    continue
                if len(data) != r.size or _sha(data) != r.sha256:
                    skipped["bytes or SHA-256 differ from the recipe"].append(r.file)
                    continue
                try:
                    payload = data if r.crop is None else crop_png(data, r.crop)
                except (OSError, ValueError) as e:
                    skipped[f"cannot crop: {type(e).__name__}"].append(r.file)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(dest.name + ".part")
                tmp.write_bytes(payload)
                tmp.replace(dest)
                built.append(r)
                if progress and done % 100 == 0:
                    print(f"  {done}/{len(rows)} rows", file=sys.stderr)
        finally:
            reader.close()
    return built, dict(skipped)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_labels(out: Path, built: list[Row]) -> None:
    """LABELS.tsv in the shared fixtures' format plus repo / origin / family columns."""
    cols = ["file", "label", "generator", "source", "repo", "origin", "family", "format"]
    with (out / "LABELS.tsv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(cols)
        for r in sorted(built, key=lambda r: r.file):
            source = f"{r.repo}@{r.commit[:12]}:{r.path}"
            if r.crop is not None:
                source += " crop=({},{},{},{})".format(*r.crop)
            w.writerow([r.file, r.label, r.generator, source, r.repo, r.origin, r.family, r.fmt])


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    ap = argparse.ArgumentParser(
        description="Build the detector data set from the shared recipes and local "
        "repository mirrors (no download), verifying every SHA-256.",
    )
    ap.add_argument("--recipes", type=Path, default=DEFAULT_RECIPES, help="recipe folder")
    ap.add_argument("--mirrors", type=Path, default=DEFAULT_MIRRORS, help="mirror root")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="cache folder (git-ignored)")
    ap.add_argument(
        "--max-per-repo",
        type=int,
        default=0,
        help="at most this many rows per repository, spread over its origins (0: all)",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the --max-per-repo draw")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    args = ap.parse_args(argv)
    real = read_recipe(args.recipes / "real_sources.tsv")
    gen = read_recipe(args.recipes / "gen_sources.tsv")
    rows = select(real, args.max_per_repo, args.seed) + select(gen, args.max_per_repo, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    built, skipped = build(rows, args.out, args.mirrors, not args.quiet)
    write_labels(args.out, built)
    card = {
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "recipes": str(args.recipes),
        "max_per_repo": args.max_per_repo,
        "seed": args.seed,
        "rows_in_recipes": {"real": len(real), "generated": len(gen)},
        "rows_selected": len(rows),
        "rows_built": len(built),
        "real_by_origin": dict(Counter(r.origin for r in built if r.label == "real")),
        "generated_by_family": dict(Counter(r.family for r in built if r.label != "real")),
        "by_repo": dict(Counter(r.repo for r in built)),
        "skipped": {k: len(v) for k, v in skipped.items()},
        "skipped_files": skipped,
        "used_files": sorted(r.file for r in built),
        "seconds": round(time.monotonic() - start, 1),
        "note": "Images are public research data under their sources' terms; do not "
        "ship or commit them. Split evaluation by the repo column, never by image.",
    }
    (args.out / "DATA_CARD.json").write_text(json.dumps(card, indent=1, sort_keys=True) + "\n")
    print(
        f"built {len(built)} of {len(rows)} selected rows into {args.out} "
        f"({sum(len(v) for v in skipped.values())} skipped; see DATA_CARD.json)"
    )
    return 0 if built else 1


if __name__ == "__main__":
    sys.exit(main())
