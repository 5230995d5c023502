"""Image-level transforms: harmonisation, augmentation, evaluation conditions, crop grids.

All functions take and return RGB pixels as (H, W, 3) uint8 numpy arrays; sizes are in
pixels. JPEG encoding always goes through Pillow (libjpeg) with 4:2:0 chroma subsampling,
the same encoder for both classes, so container format can never be a cue.

Augmentation follows CNNDetection (Wang et al. 2020): Gaussian blur and JPEG applied to
real and generated images alike.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

#: Side of the square centre crop of the harmonised evaluation conditions, in pixels.
HARMONISED_SIZE = 256
#: JPEG quality of the harmonised evaluation condition.
HARMONISED_QUALITY = 90


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Encode as baseline JPEG at `quality` (1-100, 4:2:0) with Pillow and decode again."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=int(quality), subsampling="4:2:0")
    buf.seek(0)
    with Image.open(buf) as im:
        im.load()
        # an RGB JPEG decodes as RGB: convert("RGB") would only copy it (4 B/px more at
        # the peak, where the server's detector decode budget counts every byte)
        return np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)


def gaussian_blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation `sigma` pixels (OpenCV, kernel from sigma)."""
    return cv2.GaussianBlur(np.ascontiguousarray(rgb), (0, 0), sigmaX=float(sigma))


def resize(rgb: np.ndarray, scale: float) -> np.ndarray:
    """Resize both sides by `scale` (rounded, at least 1 px) with Pillow's antialiased
    bilinear filter."""
    h, w = rgb.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))


def center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """The central square of side min(size, H, W)."""
    h, w = rgb.shape[:2]
    s = min(size, h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return rgb[y : y + s, x : x + s]


def harmonise(rgb: np.ndarray, quality: int = HARMONISED_QUALITY) -> np.ndarray:
    """Centre crop to at most HARMONISED_SIZE square, then JPEG at `quality`."""
    return jpeg_roundtrip(center_crop(rgb, HARMONISED_SIZE), quality)


#: Evaluation conditions, applied identically to both classes:
#: as_is: the decoded file, untouched (format and size cues present);
#: harmonised: centre crop 256 + JPEG q90; harmonised_jpeg75: centre crop 256 + JPEG q75;
#: harmonised_resize50: centre crop 256, 0.5x bilinear resize, then JPEG q90.
CONDITIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "as_is": lambda rgb: rgb,
    "harmonised": harmonise,
    "harmonised_jpeg75": lambda rgb: harmonise(rgb, 75),
    "harmonised_resize50": lambda rgb: jpeg_roundtrip(
        resize(center_crop(rgb, HARMONISED_SIZE), 0.5), HARMONISED_QUALITY
    ),
}


def low_light_capture(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A real photo as a camera would have taken it in poor light, for training real
    photos that cover low light and high ISO (drawn with rng).

    The pixels go to linear light (gamma 2.2), are exposed at 2-25% of their level on a
    sensor with a full well of 200-4,000 electrons (Poisson shot noise) and 0.5-8
    electrons of Gaussian read noise, then amplified back (digital gain: to 30-100% of
    the original brightness) and gamma-encoded, the camera's noise reduction
    (p = 0.5: Gaussian blur, sigma 0.5-1.3 px) and downscaling (p = 0.5: 0.4-0.7x
    bilinear, where at least 256 px remain) applied, and saved as the camera's JPEG
    (quality 70-95). The Poisson-Gaussian sensor model of Foi et al. 2008 ("Practical
    Poissonian-Gaussian noise modeling and fitting for single-image raw-data").
    """
    lin = (rgb.astype(np.float32) / 255.0) ** 2.2
    exposure = rng.uniform(0.02, 0.25)
    well = rng.uniform(200, 4000)
    read = rng.uniform(0.5, 8)
    electrons = rng.poisson(lin * exposure * well).astype(np.float32)
    electrons += rng.normal(0, read, lin.shape).astype(np.float32)
    gain = rng.uniform(0.3, 1.0) / exposure
    out = np.clip(electrons / well * gain, 0, 1) ** (1 / 2.2)
    out = (out * 255 + 0.5).astype(np.uint8)
    if rng.random() < 0.5:
        out = gaussian_blur(out, rng.uniform(0.5, 1.3))
    if rng.random() < 0.5 and min(out.shape[:2]) * 0.4 >= 256:
        out = resize(out, rng.uniform(0.4, 0.7))
    return jpeg_roundtrip(out, int(rng.integers(70, 96)))


def clean_downscale(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An image as a clean, strongly downscaled copy (drawn with rng), as photo sets
    publish camera pictures: optionally defocused (p = 0.5: Gaussian blur, sigma 0.8-2.5
    px), then downscaled by 0.2-0.5x (Pillow's antialiased bilinear; never under 96 px a
    side), then saved as JPEG at quality 75-95. Downscaling averages the sensor noise
    away, so such photos are far cleaner than the camera's own file; applied to both
    classes for training, cleanliness stops being a cue for "generated".
    """
    out = rgb
    if rng.random() < 0.5:
        out = gaussian_blur(out, rng.uniform(0.8, 2.5))
    scale = max(rng.uniform(0.2, 0.5), 96 / min(out.shape[:2]))
    if scale < 1:
        out = resize(out, scale)
    return jpeg_roundtrip(out, int(rng.integers(75, 96)))


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation of one image, applied to both classes.

    crop: side of a random square crop at any offset (clipped to the image), so a
    source JPEG's 8x8 grid lands anywhere. resize_prob / resize_range: chance and scale
    range of a bilinear downscale, skipped where it would leave a side under min_side.
    blur_prob / blur_sigma: chance and sigma range (pixels) of a Gaussian blur.
    jpeg_quality: range of the final JPEG quality; every image is re-encoded (format
    harmonisation).
    """

    crop: int = 256
    resize_prob: float = 0.15
    resize_range: tuple[float, float] = (0.5, 0.9)
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    jpeg_quality: tuple[int, int] = (65, 100)
    min_side: int = 64

    def __call__(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One augmented, re-encoded variant of rgb, drawn with rng."""
        h, w = rgb.shape[:2]
        s = min(self.crop, h, w)
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        out = np.ascontiguousarray(rgb[y : y + s, x : x + s])
        if rng.random() < self.resize_prob:
            scale = float(rng.uniform(*self.resize_range))
            if s * scale >= self.min_side:
                out = resize(out, scale)
        if rng.random() < self.blur_prob:
            out = gaussian_blur(out, float(rng.uniform(*self.blur_sigma)))
        quality = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
        return jpeg_roundtrip(out, quality)


def grid_positions(height: int, width: int, patch: int, count: int) -> list[tuple[int, int]]:
    """Up to `count` (x, y) top-left corners of patch x patch crops on an even grid.

    A k x k grid with k = ceil(sqrt(count)), spread from edge to edge (overlapping where
    the image is small), then thinned to `count` evenly; duplicates removed. The image
    must be at least patch x patch.
    """
    k = int(np.ceil(np.sqrt(count)))
    xs = np.unique(np.linspace(0, width - patch, k).round().astype(int))
    ys = np.unique(np.linspace(0, height - patch, k).round().astype(int))
    grid = [(int(x), int(y)) for y in ys for x in xs]
    if len(grid) > count:
        keep = np.linspace(0, len(grid) - 1, count).round().astype(int)
        grid = [grid[i] for i in keep]
    return grid


def cut_patches(rgb: np.ndarray, positions: list[tuple[int, int]], patch: int) -> np.ndarray:
    """Stack the crops at `positions` ((x, y) corners): (N, patch, patch, 3) uint8."""
    return np.stack([rgb[y : y + patch, x : x + patch] for x, y in positions])
