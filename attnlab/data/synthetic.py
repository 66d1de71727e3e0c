"""A synthetic twin of Tiny ImageNet, written in exactly the official layout.

Tests and the CPU demo use it so they run the same reader, validation and cache as the
real download. Each class has its own low-frequency structure that a CNN learns quickly
but that is not a flat colour: an oriented sinusoidal grating between two class colours
(class orientation and frequency, jittered per image, random phase) plus one shape
(disc, square, triangle or ring, class-typed, random position and size) with a 1-pixel
outline that contrasts with the grating under it (black on bright, white on dark),
brightness jitter and pixel noise. Hues are spread over the colour wheel, so with many
classes neighbours share colours and only orientation/frequency/shape tell them apart. A
few images are stored as grayscale JPEGs (mode "L"), as in the real set.

Boxes: each image's box (``<wnid>_boxes.txt``, ``val_annotations.txt``) is the pixel extent
of its shape, inclusive, as in the official files. The outline keeps the shape's extreme
pixels visible in colour and in grayscale, and the JPEGs are written at quality 95 without
chroma subsampling, so after decoding too every pixel that differs from the shape-less
image (``write_synthetic(..., shapes=False)``, the same files without the shapes) by more
than the encoding noise lies inside the box, and each of the box's four edges holds such a
pixel (tests/test_localization.py checks this on the files and on the cache).
"""

from __future__ import annotations

import colorsys
import zipfile
from pathlib import Path

import numpy as np

SHAPES = ("disc", "square", "triangle", "ring")
JPEG_OPTIONS = {"quality": 95, "subsampling": 0}  # 4:4:4: no colour bleeding past the shape


def _wnids(rng: np.random.Generator, classes: int) -> list[str]:
    numbers = rng.choice(np.arange(1_000_000, 10_000_000), size=classes, replace=False)
    return [f"n{int(n):08d}" for n in numbers]


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


class _ClassStyle:
    """The class-dependent parameters the images of class ``k`` are drawn around."""

    def __init__(self, k: int, classes: int):
        hue = k / classes
        self.colour_a = _hsv(hue, 0.75, 0.9)
        self.colour_b = _hsv(hue + 0.5, 0.55, 0.35)
        self.colour_shape = _hsv(hue + 0.25, 0.35, 1.0)
        self.theta = ((k * 0.6180339887) % 1.0) * np.pi
        self.freq = (1.5, 2.5, 3.5)[(k // len(SHAPES)) % 3]  # cycles per image
        self.shape = SHAPES[k % len(SHAPES)]


def _outline(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` with a 4-neighbour outside it (or on the image border)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _render(style: _ClassStyle, rng: np.random.Generator, size: int,
            shape: bool = True) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One image (uint8 HWC RGB) and its shape's bounding box (x0, y0, x1, y1).

    ``shape=False`` draws the same image without the shape (the same random draws)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    theta = style.theta + rng.normal(0.0, np.deg2rad(8.0))
    freq = style.freq * rng.uniform(0.9, 1.1)
    phase = rng.uniform(0.0, 2 * np.pi)
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
    img = wave[..., None] * style.colour_a + (1.0 - wave[..., None]) * style.colour_b

    cx, cy = rng.uniform(0.3, 0.7, size=2)
    r = rng.uniform(0.14, 0.26)
    dx, dy = xx - cx, yy - cy
    if style.shape == "disc":
        mask = dx**2 + dy**2 <= r**2
    elif style.shape == "square":
        mask = (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    elif style.shape == "triangle":
        mask = (dy <= r * 0.8) & (dy >= -r + 2 * np.abs(dx))
    else:  # ring
        d2 = dx**2 + dy**2
        mask = (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    shade = style.colour_shape * rng.uniform(0.85, 1.1)
    if shape:
        luminance = img @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
        rim = np.where(luminance > 0.45, 0.0, 1.0).astype(np.float32)[..., None]
        img = np.where(mask[..., None], shade, img)
        img = np.where(_outline(mask)[..., None], rim, img)

    img = img * rng.uniform(0.8, 1.15) + rng.normal(0.0, 0.05, size=img.shape)
    pixels = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())) if len(xs) else (0, 0, size - 1, size - 1)
    return pixels, box


def _save(pixels: np.ndarray, path: Path, gray: bool) -> None:
    from PIL import Image

    im = Image.fromarray(pixels, "RGB")
    if gray:
        im = im.convert("L")
    im.save(path, "JPEG", **JPEG_OPTIONS)


def write_synthetic(out: str | Path, *, classes: int = 10, train_per_class: int = 50, val_per_class: int = 10,
                    size: int = 64, seed: int = 0, shapes: bool = True) -> Path:
    """Write a Tiny-ImageNet-layout dataset into ``out`` and return ``out`` (the root).

    Files: ``wnids.txt`` (shuffled, as the official file is not sorted), ``words.txt``
    (the classes plus unrelated wnids), ``train/<wnid>/images/<wnid>_<k>.JPEG``,
    ``train/<wnid>/<wnid>_boxes.txt``, ``val/images/val_<k>.JPEG`` (classes interleaved)
    and ``val/val_annotations.txt``. Image 1 of every even class (train) and val image 0
    are grayscale. The same arguments always give the same files. ``shapes=False`` writes
    the same dataset without the shapes (the background each box is checked against); its
    annotation files still hold the boxes of the shapes left out.
    """
    if classes < 1 or train_per_class < 1 or val_per_class < 1 or size < 8:
        raise ValueError("need classes >= 1, train_per_class >= 1, val_per_class >= 1 and size >= 8; "
                         f"got {classes}, {train_per_class}, {val_per_class}, {size}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 0x7A11])
    wnids = _wnids(rng, classes + 5)
    wnids, extra = wnids[:classes], wnids[classes:]
    styles = {w: _ClassStyle(k, classes) for k, w in enumerate(wnids)}

    listed = list(wnids)
    rng.shuffle(listed)
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in listed))
    words = [(w, f"synthetic {styles[w].shape} {k}") for k, w in enumerate(wnids)]
    words += [(w, f"unused entry {i}") for i, w in enumerate(extra)]
    (root / "words.txt").write_text("".join(f"{w}\t{name}\n" for w, name in sorted(words)))

    for k, wnid in enumerate(wnids):
        images = root / "train" / wnid / "images"
        images.mkdir(parents=True, exist_ok=True)
        img_rng = np.random.default_rng([seed, 1, k])
        boxes = []
        for i in range(train_per_class):
            pixels, box = _render(styles[wnid], img_rng, size, shapes)
            name = f"{wnid}_{i}.JPEG"
            _save(pixels, images / name, gray=(i == 1 and k % 2 == 0))
            boxes.append(f"{name}\t{box[0]}\t{box[1]}\t{box[2]}\t{box[3]}\n")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))

    val_images = root / "val" / "images"
    val_images.mkdir(parents=True, exist_ok=True)
    order = [(k, i) for k in range(classes) for i in range(val_per_class)]
    rng.shuffle(order)
    lines = []
    val_rngs = {k: np.random.default_rng([seed, 2, k]) for k in range(classes)}
    for j, (k, _i) in enumerate(order):
        wnid = wnids[k]
        pixels, box = _render(styles[wnid], val_rngs[k], size, shapes)
        name = f"val_{j}.JPEG"
        _save(pixels, val_images / name, gray=(j == 0))
        lines.append(f"{name}\t{wnid}\t{box[0]}\t{box[1]}\t{box[2]}\t{box[3]}\n")
    (root / "val" / "val_annotations.txt").write_text("".join(lines))
    return root


def make_zip(root: str | Path, zip_path: str | Path | None = None, *, top: str = "tiny-imagenet-200") -> Path:
    """Pack a dataset folder like the official download: every member under ``top/``."""
    root = Path(root)
    zip_path = Path(zip_path) if zip_path is not None else root.with_suffix(".zip")
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as zf:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if rel.parts[0].startswith("."):  # a cache folder inside the root
                continue
            arc = f"{top}/{rel.as_posix()}" + ("/" if path.is_dir() else "")
            if path.is_dir():
                zf.writestr(arc, b"")
            else:
                zf.write(path, arc)
    return zip_path
