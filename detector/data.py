"""Labelled image sets for training and evaluation: reading, families, splits, patches.

A data set is either a label file in the shared fixtures' format (``LABELS.tsv``: tab
separated, with columns ``file``, ``label`` (real|generated), ``generator`` and
``source``, paths relative to the file), a folder holding one, or a folder with
``real/`` and ``generated/<family>/`` (or ``fake/<family>/``) sub-folders.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from detector.transforms import CONDITIONS, Augment, cut_patches, grid_positions
from provenance.core.errors import DetectorError, MediaError
from provenance.media.image import DecodedImage, decode_image

#: Largest image read for training or evaluation, in pixels.
MAX_PIXELS = 50_000_000
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}

#: Generator description (lower case) -> (family, kind), first match wins. Families group
#: generators that share an architecture lineage, so that holding one out is a test on
#: an unseen kind of generator. kind is "gan", "diffusion" or "other".
FAMILY_RULES: tuple[tuple[str, str, str], ...] = (
    (r"stylegan|style-based-gan|eg3d", "stylegan", "gan"),
    (r"lightweight-gan", "lightweight_gan", "gan"),
    (r"biggan", "biggan", "gan"),
    (r"stargan", "stargan", "gan"),
    (r"spade|gaugan|pix2pixhd|\bcrn\b", "spade", "gan"),
    (r"cyclegan|pix2pix|munit|discogan", "image_translation", "gan"),
    (r"taming|vqgan", "vqgan", "other"),
    (r"\bdit-|pixart", "dit_pixart", "diffusion"),
    (r"\bldm\b|latent-diffusion|stable diffusion|sdxl|controlnet", "latent_diffusion", "diffusion"),
    (r"deepfloyd|ddpm|denoising-diffusion|score_sde|ncsn", "pixel_diffusion", "diffusion"),
)
#: Kind of the families named by the recipes' `family` column
#: (`../shared/detector_sources/gen_sources.tsv`); families not listed are "diffusion".
RECIPE_KINDS: dict[str, str] = {
    **dict.fromkeys(
        ("stylegan", "gigagan", "dcgan", "began", "styleswin", "pix2pixhd", "progan", "biggan"),
        "gan",
    ),
    **dict.fromkeys(("vqgan-clip", "mindalle", "dalle-mini", "rar", "infinity"), "other"),
}


@dataclass(frozen=True)
class Sample:
    """One labelled image file.

    label: 1 generated, 0 real. family / kind: see FAMILY_RULES ("real" for real images,
    "unknown" / "other" when no rule matches). group: images that share a group (tiles of
    one figure, frames of one strip) always land on the same side of a split. repo: the
    source repository or package ("owner/name", "pypi:name"), the unit of source-held-out
    splits; origin: the kind of real source (camera_exif, scan_film_print...; the
    label file's `origin` column, else the family).
    """

    path: Path
    label: int
    family: str
    kind: str
    group: str
    generator: str
    repo: str = ""
    origin: str = ""


def family_of(generator: str) -> tuple[str, str]:
    """(family, kind) of a generator description, ("unknown", "other") if no rule matches."""
    text = generator.lower()
    for pattern, family, kind in FAMILY_RULES:
        if re.search(pattern, text):
            return family, kind
    return "unknown", "other"


def _origin(cell: str | None, repo: str) -> str:
    """A real image's origin: the label file's origin (before any "; EXIF ..." note), or
    its repository when the file has none."""
    text = (cell or "-").split(";")[0].strip()
    return repo if text in ("", "-") else text


def read_label_file(path: Path) -> list[Sample]:
    """Samples listed in a LABELS.tsv file. Raises DetectorError on a malformed file."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except (OSError, UnicodeDecodeError) as e:
        raise DetectorError(f"cannot read label file {path}: {e}") from e
    samples = []
    for i, row in enumerate(rows, start=2):
        label = row.get("label")
        if not row.get("file") or label not in ("real", "generated"):
            raise DetectorError(f"{path}:{i}: need a file and a label of real|generated")
        generator = row.get("generator") or "-"
        if label == "real":
            family, kind = "real", "real"
        elif row.get("family"):
            family, kind = row["family"], RECIPE_KINDS.get(row["family"], "diffusion")
        else:
            family, kind = family_of(generator)
        source = (row.get("source") or row["file"]).split(" crop=")[0]
        repo = row.get("repo") or re.split(r"@|==", source, maxsplit=1)[0]
        samples.append(
            Sample(
                path=path.parent / row["file"],
                label=int(label == "generated"),
                family=family,
                kind=kind,
                group=f"{path.parent.name}:{source}",
                generator=generator,
                repo=repo,
                origin=_origin(row.get("origin"), repo) if label == "real" else family,
            )
        )
    return samples


def read_folder(root: Path) -> list[Sample]:
    """Samples from root/real/** and root/generated/<family>/** (or root/fake/...)."""
    samples = []
    for sub, label in (("real", 0), ("generated", 1), ("fake", 1)):
        base = root / sub
        if not base.is_dir():
            continue
        for p in sorted(base.rglob("*")):
            if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
                continue
            rel = p.relative_to(base)
            family = "real" if label == 0 else (rel.parts[0] if len(rel.parts) > 1 else "unknown")
            kind = "real" if label == 0 else "other"
            # the group is the path under root, so a split does not depend on where root lies
            samples.append(Sample(p, label, family, kind, f"{sub}/{rel}", family))
    if not samples:
        raise DetectorError(f"{root}: no LABELS.tsv and no images under real/ and generated/")
    return samples


def load_samples(sources: Iterable[Path]) -> list[Sample]:
    """All samples of several data sets (label files or folders), in order."""
    out: list[Sample] = []
    for src in sources:
        if src.is_file():
            out += read_label_file(src)
        elif (src / "LABELS.tsv").is_file():
            out += read_label_file(src / "LABELS.tsv")
        elif src.is_dir():
            out += read_folder(src)
        else:
            raise DetectorError(f"{src}: not a label file or a folder")
    return out


def in_split(group: str, fraction: float, salt: str) -> bool:
    """Deterministic membership of a group in a split holding about `fraction` of groups:
    the first 8 bytes of SHA-256(salt ":" group) read as a number in [0, 1)."""
    digest = hashlib.sha256(f"{salt}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


#: The source-held-out protocol of the shipped model (scripts/detector_candidates.py):
#: this share of sources (repositories; fixture groups without one) never trains.
HELD_OUT_FRACTION = 0.3
HELD_OUT_SALT = "det-eval"


def source_of(sample: Sample) -> str:
    """The unit of source-held-out splits: the sample's repository, else its group."""
    return sample.repo or sample.group


def is_held_out_source(sample: Sample) -> bool:
    """True for samples of the HELD_OUT_FRACTION of sources kept out of training."""
    return in_split(source_of(sample), HELD_OUT_FRACTION, HELD_OUT_SALT)


def load_image(path: Path) -> DecodedImage:
    """Decode an image file with `provenance.media.image.decode_image` (rgb: (H, W, 3) uint8).

    Raises MediaError if the file cannot be read or decoded or is over MAX_PIXELS.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MediaError(f"cannot read {path}: {e}") from e
    return decode_image(data, MAX_PIXELS)


@dataclass(frozen=True)
class PreparedImage:
    """Everything training and evaluation need from one image, computed once.

    train_patches: (variants * per_variant, P, P, 3) uint8 patches of augmented,
    re-encoded variants; conditions: condition name -> (n, P, P, 3) uint8 grid patches of
    the image under that evaluation condition (see `detector.transforms.CONDITIONS`).
    is_jpeg, pixels: the file's container and its width x height, for the trivial-cue
    baselines.
    """

    sample: Sample
    train_patches: np.ndarray
    conditions: dict[str, np.ndarray]
    is_jpeg: bool
    pixels: int


def prepare(
    samples: Sequence[Sample],
    augment: Augment,
    patch: int,
    variants: int,
    per_variant: int,
    eval_crops: int,
    seed: int,
    conditions: Sequence[str] = tuple(CONDITIONS),
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[PreparedImage], list[str]]:
    """Decode each sample once and cut its training and evaluation patches.

    Each image gets `variants` augmented variants (see `Augment`) with `per_variant`
    random patch x patch crops each, and, per evaluation condition, up to `eval_crops`
    grid crops. The random stream of image i is seeded by (seed, i), so the result does
    not depend on the order of work. Images smaller than patch x patch (after a
    condition) are skipped; returns (prepared images, "path: reason" for each skip).
    """
    # Variants must stay large enough to cut patches from.
    augment = replace(augment, crop=max(augment.crop, patch), min_side=max(augment.min_side, patch))
    prepared: list[PreparedImage] = []
    skipped: list[str] = []
    for i, sample in enumerate(samples):
        if progress is not None:
            progress(i, len(samples))
        try:
            decoded = load_image(sample.path)
        except MediaError as e:
            skipped.append(f"{sample.path}: {e}")
            continue
        rgb = decoded.rgb
        if min(rgb.shape[:2]) < patch:
            skipped.append(f"{sample.path}: {rgb.shape[1]}x{rgb.shape[0]} is under {patch} px")
            continue
        rng = np.random.default_rng([seed, i])
        crops = []
        for _ in range(variants):
            var = augment(rgb, rng)
            h, w = var.shape[:2]
            pos = [
                (int(rng.integers(0, w - patch + 1)), int(rng.integers(0, h - patch + 1)))
                for _ in range(per_variant)
            ]
            crops.append(cut_patches(var, pos, patch))
        conds = {}
        for name in conditions:
            img = CONDITIONS[name](rgb)
            if min(img.shape[:2]) >= patch:
                h, w = img.shape[:2]
                conds[name] = cut_patches(img, grid_positions(h, w, patch, eval_crops), patch)
        prepared.append(
            PreparedImage(
                sample,
                np.concatenate(crops) if crops else np.zeros((0, patch, patch, 3), np.uint8),
                conds,
                decoded.media_type == "image/jpeg",
                decoded.width * decoded.height,
            )
        )
    if progress is not None:
        progress(len(samples), len(samples))
    return prepared, skipped
