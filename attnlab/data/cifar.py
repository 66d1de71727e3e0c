"""CIFAR-100, python version: the extracted ``cifar-100-python/`` folder, read as downloaded.

Layout: three pickles, ``train`` (50,000 images), ``test`` (10,000; it serves as the val
split) and ``meta``. Each split is a dict with ``b"data"``, uint8 (N, 3072): one row per
image, the 32x32 red plane, then green, then blue, each row-major; and ``b"fine_labels"``,
N ints. ``meta`` holds ``b"fine_label_names"`` (100 names). Class index = the stored fine
label, so results compare with every CIFAR-100 paper (the names are already sorted).

Images are cached at their native 32x32 (no resizing: ask the loader for
``AugmentConfig(train_size=64)`` to train bigger, see README). The pickles are read with an
unpickler that only admits numpy arrays and plain containers, so a foreign file cannot run
code; a file that is not such a pickle is a ``DataError`` naming it.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .tiny_imagenet import DataError, DecodedChunk, SplitIndex, TinyImageNetIndex

FOLDER = "cifar-100-python"
FILES = ("train", "test", "meta")
SPLIT_FILES = {"train": "train", "val": "test"}  # the test split is the val split
NATIVE_SIZE = 32
ROW = 3 * NATIVE_SIZE * NATIVE_SIZE
REDO = "download cifar-100-python.tar.gz again and extract it"

# what a CIFAR pickle may reference: numpy's array reconstruction and nothing else
_ALLOWED = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refers to {module}.{name}, which a CIFAR pickle never does")
        return super().find_class(module, name)


def cifar_base(root: str | Path) -> Path | None:
    """The folder holding the pickles: ``root`` itself or its ``cifar-100-python/``."""
    path = Path(root).expanduser()
    for base in (path, path / FOLDER):
        if base.is_dir() and any((base / name).is_file() for name in FILES):
            return base
    return None


def is_cifar_source(root: str | Path) -> bool:
    """A folder with a ``train``, ``test`` or ``meta`` file (here or in cifar-100-python/)."""
    return cifar_base(root) is not None


@dataclass
class CifarSource:
    kind = "cifar100"
    location: Path

    def redo(self) -> str:
        return REDO


def load_pickle(path: Path) -> dict[str, Any]:
    """One CIFAR pickle as a dict with str keys (the files store bytes keys)."""
    if not path.is_file():
        raise DataError(f"{path}: not found. A CIFAR-100 folder holds train, test and meta: {REDO}.")
    try:
        with open(path, "rb") as fh:
            obj = _ArrayUnpickler(fh, encoding="bytes").load()
    except Exception as exc:  # a damaged pickle fails in many ways (even MemoryError on a bad length)
        raise DataError(f"{path}: cannot be read as a CIFAR-100 pickle ({exc}). The file is damaged "
                        f"or belongs to another dataset: {REDO}.") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: holds a {type(obj).__name__}, expected a dict (CIFAR-100 python "
                        f"version). {REDO[:1].upper() + REDO[1:]}.")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _entry(obj: dict[str, Any], key: str, path: Path) -> Any:
    if key not in obj:
        raise DataError(f"{path}: has no b{key!r} entry (keys: {', '.join(sorted(obj))}). This is not "
                        f"the CIFAR-100 python version: {REDO}.")
    return obj[key]


def split_images(obj: dict[str, Any], path: Path) -> np.ndarray:
    """``b"data"`` checked and returned as uint8 (N, 3072)."""
    data = _entry(obj, "data", path)
    arr = np.asarray(data) if isinstance(data, np.ndarray) else None
    if arr is None or arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != ROW:
        got = f"{arr.dtype}{arr.shape}" if arr is not None else type(data).__name__
        raise DataError(f"{path}: b'data' holds {got}, expected uint8 (N, {ROW}) (32x32 RGB planes, "
                        f"one image per row). The file is damaged: {REDO}.")
    return arr


def split_labels(obj: dict[str, Any], path: Path, n_images: int, n_classes: int) -> np.ndarray:
    """``b"fine_labels"`` checked (one per image, each a class index) as int64 (N,)."""
    raw = _entry(obj, "fine_labels", path)
    try:
        labels = np.asarray(raw, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{path}: b'fine_labels' is not a list of integers. The file is damaged: {REDO}.") from None
    if len(labels) != n_images:
        raise DataError(f"{path}: {len(labels)} fine_labels for {n_images} images; they must match one "
                        f"to one. The file is damaged: {REDO}.")
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if bad.size:
        raise DataError(f"{path}: fine label {labels[bad[0]]} (image {bad[0]}) is not a class index: meta "
                        f"names {n_classes} classes (0..{n_classes - 1}). The files come from different "
                        f"copies: {REDO}.")
    return labels


def class_names(base: Path) -> list[str]:
    path = base / "meta"
    raw = _entry(load_pickle(path), "fine_label_names", path)
    names = [n.decode("utf-8", errors="replace") if isinstance(n, bytes) else str(n)
             for n in (raw if isinstance(raw, (list, tuple)) else [])]
    if not names:
        raise DataError(f"{path}: b'fine_label_names' is empty or not a list. The file is damaged: {REDO}.")
    return names


def decode_split(path: Path) -> DecodedChunk:
    """All images of one pickle as uint8 (N, 32, 32, 3); runs in a worker process."""
    rows = split_images(load_pickle(path), path)
    images = rows.reshape(-1, 3, NATIVE_SIZE, NATIVE_SIZE).transpose(0, 2, 3, 1)
    return DecodedChunk(np.ascontiguousarray(images))


class CifarIndex(TinyImageNetIndex):
    """A TinyImageNetIndex whose decode tasks are whole CIFAR pickles, at a fixed 32x32."""

    def tasks(self, split: str, chunk_size: int, size: int) -> list[tuple[int, partial[DecodedChunk]]]:
        return [(0, partial(decode_split, self.location / SPLIT_FILES[split]))]

    def cache_size(self, size: int | None) -> int:
        if size is None or size == NATIVE_SIZE:
            return NATIVE_SIZE
        raise DataError(
            f"{self.location}: CIFAR-100 images are {NATIVE_SIZE}x{NATIVE_SIZE} and are cached at that "
            f"size, but size {size} was asked for. Ask for {NATIVE_SIZE} (data.image_size: {NATIVE_SIZE}, "
            f"or --size {NATIVE_SIZE}) and enlarge on the device instead: data.augment.train_size: 64 "
            "trains and evaluates at 64x64 (ResNet-50 leaves layer4 at 1x1 from 32x32, which SimAM refuses)."
        )


def scan_cifar(root: str | Path) -> CifarIndex:
    """Check the three pickles and read the labels; images are decoded by the cache build."""
    base = cifar_base(root)
    if base is None:
        raise DataError(f"{root}: no CIFAR-100 files (train, test, meta) here or in {FOLDER}/. Extract "
                        "cifar-100-python.tar.gz and pass the folder it creates.")
    base = base.resolve()
    for name in FILES:  # name every missing file before reading any
        if not (base / name).is_file():
            raise DataError(f"{base / name}: not found. A CIFAR-100 folder holds train, test and meta: {REDO}.")
    classes = class_names(base)
    splits = {}
    keys = [f"classes={classes}"]
    for split, name in SPLIT_FILES.items():
        path = base / name
        obj = load_pickle(path)
        n = len(split_images(obj, path))
        labels = split_labels(obj, path, n, len(classes))
        splits[split] = SplitIndex([f"{name}#{i}" for i in range(n)], labels)
    for name in FILES:
        st = (base / name).stat()
        keys.append(f"{name}={st.st_size}:{st.st_mtime_ns}")
    fingerprint = hashlib.sha256("\n".join(keys).encode()).hexdigest()
    notes = [] if len(classes) == 100 else [f"meta names {len(classes)} classes (CIFAR-100 has 100)"]
    return CifarIndex(CifarSource(base), classes, list(classes), splits, fingerprint, notes)  # type: ignore[arg-type]
