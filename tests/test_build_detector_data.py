"""scripts/build_detector_data.py against a real local git mirror: verified copies, crops,
SHA-256 mismatches and missing mirrors skipped and recorded in the data card."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "build_detector_data", ROOT / "scripts" / "build_detector_data.py"
)
assert _spec is not None and _spec.loader is not None
build = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = build
_spec.loader.exec_module(build)

REAL_COLS = ["file", "label", "repo", "commit", "path", "bytes", "sha256", "origin"]
GEN_COLS = [
    "file",
    "label",
    "generator",
    "family",
    "repo",
    "commit",
    "path",
    "crop",
    "bytes",
    "sha256",
]


def _png(seed: int, size: int = 96) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _mirror(root: Path, repo: str, files: dict[str, bytes]) -> str:
    """A bare mirror at root/<owner>+<name>/repo holding files; returns the commit."""
    work = root / "work" / repo.replace("/", "+")
    work.mkdir(parents=True)
    for name, data in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(data)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(work)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    bare = root / "mirrors" / repo.replace("/", "+") / "repo"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    out = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def _write(path: Path, cols: list[str], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, cols, delimiter="\t", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def test_build_verifies_crops_skips_and_records(tmp_path: Path) -> None:
    photo, grid = _png(1), _png(2, 128)
    commit = _mirror(tmp_path, "cam/photos", {"a b/photo 1.png": photo, "x.png": _png(3)})
    gcommit = _mirror(tmp_path, "gen/samples", {"grid.png": grid})
    recipes = tmp_path / "recipes"
    recipes.mkdir()

    def sha(b: bytes) -> str:
        return hashlib.sha256(b).hexdigest()

    real = [
        {"file": "real/camera_exif/p1.png", "label": "real", "repo": "cam/photos",
         "commit": commit, "path": "a b/photo 1.png", "bytes": str(len(photo)),
         "sha256": sha(photo), "origin": "camera_exif"},
        {"file": "real/camera_exif/bad.png", "label": "real", "repo": "cam/photos",
         "commit": commit, "path": "x.png", "bytes": "10", "sha256": "0" * 64,
         "origin": "camera_exif"},
        {"file": "real/scan/gone.png", "label": "real", "repo": "nobody/here",
         "commit": commit, "path": "p.png", "bytes": "1", "sha256": "0" * 64, "origin": "scan"},
    ]  # fmt: skip
    gen = [
        {"file": "generated/sd1/cell.png", "label": "generated", "generator": "SD 1.5",
         "family": "sd1", "repo": "gen/samples", "commit": gcommit, "path": "grid.png",
         "crop": "0,0,64,64", "bytes": str(len(grid)), "sha256": sha(grid)},
    ]  # fmt: skip
    _write(recipes / "real_sources.tsv", REAL_COLS, real)
    _write(recipes / "gen_sources.tsv", GEN_COLS, gen)
    out = tmp_path / "out"
    args = ["--recipes", str(recipes), "--mirrors", str(tmp_path / "mirrors"), "--out", str(out)]
    assert build.main([*args, "--quiet"]) == 0
    assert (out / "real/camera_exif/p1.png").read_bytes() == photo
    with Image.open(out / "generated/sd1/cell.png") as im:
        assert im.size == (64, 64)
        assert np.array_equal(np.asarray(im), np.asarray(Image.open(io.BytesIO(grid)))[:64, :64])
    assert not (out / "real/camera_exif/bad.png").exists()
    card = json.loads((out / "DATA_CARD.json").read_text())
    assert card["rows_built"] == 2 and card["used_files"] == [
        "generated/sd1/cell.png",
        "real/camera_exif/p1.png",
    ]
    assert card["skipped_files"] == {
        "bytes or SHA-256 differ from the recipe": ["real/camera_exif/bad.png"],
        "no mirror of nobody/here": ["real/scan/gone.png"],
    }
    with (out / "LABELS.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [(r["file"], r["repo"], r["origin"]) for r in rows] == [
        ("generated/sd1/cell.png", "gen/samples", "-"),
        ("real/camera_exif/p1.png", "cam/photos", "camera_exif"),
    ]
    assert rows[0]["source"].endswith("grid.png crop=(0,0,64,64)")
    # A second run reuses what is there and gives the same card.
    assert build.main([*args, "--quiet"]) == 0
    assert json.loads((out / "DATA_CARD.json").read_text())["used_files"] == card["used_files"]
