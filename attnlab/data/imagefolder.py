"""Any ImageFolder-style tree with a train/val split: ``root/train/<class>/*``, ``root/val/<class>/*``.

Classes are the sorted folder names under ``train/`` (class index = position, for both
splits, as torchvision's ``ImageFolder``); images are found recursively inside a class
folder, in sorted path order. A ``val/`` folder whose name is not a train class is an
error (its label would be undefined); a train class without images is an error (it would
be a class the model can never learn); a train class without val images is a note.

Images go through the Tiny ImageNet reader's ``decode_image``: RGB, and anything not
``size``x``size`` is resized (bilinear, aspect ratio not kept) with a warning from the
cache build, so an ImageFolder tree and Tiny ImageNet follow the same size policy.
"""

from __future__ import annotations

import hashlib
import os
from functools import partial
from pathlib import Path

import numpy as np

from .tiny_imagenet import (
    DataError,
    DecodedChunk,
    FolderSource,
    SplitIndex,
    TinyImageNetIndex,
    decode_files,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLIT_DIRS = {"train": "train", "val": "val"}
LAYOUT = "an ImageFolder tree has train/<class>/<image> and val/<class>/<image>"
DAMAGED_FIX = "copy this file again, or delete it"


def is_imagefolder_source(root: str | Path) -> bool:
    """A folder with ``train/`` that is not Tiny ImageNet (no wnids.txt, no val annotations)."""
    path = Path(root).expanduser()
    return (path.is_dir() and (path / "train").is_dir() and not (path / "wnids.txt").is_file()
            and not (path / "val" / "val_annotations.txt").is_file())


class ImageFolderSource(FolderSource):
    """The tree itself: relative paths from its root (``train/cat/1.jpg``)."""

    kind = "imagefolder"

    def __init__(self, location: str | Path):
        self.location = Path(location).expanduser().resolve()
        self.base = self.location

    def redo(self) -> str:
        return "copy the dataset folder again"


class ImageFolderIndex(TinyImageNetIndex):
    """A TinyImageNetIndex whose decode failures name the ImageFolder remedy."""

    def tasks(self, split: str, chunk_size: int, size: int) -> list[tuple[int, partial[DecodedChunk]]]:
        names = self.splits[split].names
        return [
            (start, partial(decode_files, self.source, names[start:start + chunk_size], size, DAMAGED_FIX))
            for start in range(0, len(names), chunk_size)
        ]


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def _class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _images(folder: Path, base: Path) -> tuple[list[tuple[str, str]], int]:
    """(relative path, size:mtime) of every image below ``folder``, sorted; and the number of
    other (ignored) files. Hidden files and folders are skipped."""
    found, other = [], 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__MACOSX"]
        for name in filenames:
            if name.startswith("."):
                continue
            if not _is_image(name):
                other += 1
                continue
            path = Path(dirpath) / name
            st = path.stat()
            found.append((path.relative_to(base).as_posix(), f"{st.st_size}:{st.st_mtime_ns}"))
    return sorted(found), other


def scan_imagefolder(root: str | Path) -> ImageFolderIndex:
    """Check the tree and list every train/val image with its label (no decoding)."""
    source = ImageFolderSource(root)
    base = source.base
    train_dir, val_dir = base / SPLIT_DIRS["train"], base / SPLIT_DIRS["val"]
    if not train_dir.is_dir():
        raise DataError(f"{train_dir}: not found; {LAYOUT}.")
    classes = _class_dirs(train_dir)
    if not classes:
        raise DataError(f"{train_dir}: holds no class folders; {LAYOUT} (one folder per class).")
    if not val_dir.is_dir():
        raise DataError(f"{val_dir}: not found; {LAYOUT}. Add val/<class>/ folders named like the "
                        "train classes (or split some train images off into them).")
    index_of = {c: i for i, c in enumerate(classes)}
    val_classes = _class_dirs(val_dir)
    for name in val_classes:
        if name not in index_of:
            shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
            raise DataError(
                f"{val_dir / name}: class {name!r} has no folder in train/ (train has {len(classes)} "
                f"classes: {shown}). Labels come from the train folders: rename it to its train "
                "class, or remove it."
            )
    keys = [f"classes={classes}"]
    notes: list[str] = []
    splits: dict[str, SplitIndex] = {}
    ignored = 0
    for split, split_classes in (("train", classes), ("val", val_classes)):
        folder = base / SPLIT_DIRS[split]
        names: list[str] = []
        labels: list[int] = []
        for cls in split_classes:
            images, other = _images(folder / cls, base)
            ignored += other
            if not images and split == "train":
                raise DataError(f"{folder / cls}: holds no images ({', '.join(IMAGE_SUFFIXES)}), but every "
                                "folder in train/ is a class. Add its images, or remove the folder.")
            for rel, stat in images:
                names.append(rel)
                labels.append(index_of[cls])
                keys.append(f"{rel}={stat}")
        loose = sum(1 for e in os.scandir(folder) if e.is_file() and not e.name.startswith("."))
        if loose:
            notes.append(f"{loose} files directly in {SPLIT_DIRS[split]}/ are ignored (images belong in "
                         f"{SPLIT_DIRS[split]}/<class>/)")
        splits[split] = SplitIndex(names, np.asarray(labels, dtype=np.int64))
    if not len(splits["val"]):
        raise DataError(f"{val_dir}: holds no images; {LAYOUT}. Put each val image in val/<its class>/.")
    missing = sorted(set(classes) - {classes[i] for i in set(splits["val"].labels.tolist())})
    if missing:
        notes.append(f"{len(missing)} classes have no val images (e.g. {missing[0]})")
    if ignored:
        notes.append(f"{ignored} non-image files in class folders are ignored")
    fingerprint = hashlib.sha256("\n".join(keys).encode()).hexdigest()
    return ImageFolderIndex(source, classes, list(classes), splits, fingerprint, notes)
