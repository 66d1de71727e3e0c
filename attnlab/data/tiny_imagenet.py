"""Reader for the official Tiny ImageNet-200 layout, from the extracted folder or the .zip.

Layout (DESIGN.md): ``wnids.txt``; ``words.txt`` (wnid -> names);
``train/<wnid>/images/<wnid>_<k>.JPEG`` plus ``train/<wnid>/<wnid>_boxes.txt``;
``val/images/val_<k>.JPEG`` plus ``val/val_annotations.txt`` (tab-separated: file, wnid,
x0, y0, x1, y1). Class index = position in the *sorted* wnids, for every split.

Boxes: every val annotation's box is kept (``SplitIndex.boxes``, int64 N×4, inclusive pixel
coordinates of the image file: ``0 <= x0 <= x1 <= W - 1``, ``0 <= y0 <= y1 <= H - 1``).
``scan`` refuses a box that is not four integers, has x1 < x0 or y1 < y0, or a negative
coordinate; the cache build, which knows each image's size, refuses one past the image's
right or bottom edge, and ``fit_boxes`` scales the boxes to the cached side length. The
train boxes files (``<wnid>_boxes.txt``) are not read.

``scan`` checks the structure and lists (file, label) pairs without decoding any image, so
a damaged download fails in a second with a message that names the file, says what is
wrong and how to fix it. ``decode_image`` turns one file into a uint8 RGB array (grayscale
and CMYK become RGB; an image that is not ``size``×``size`` is resized, see below); the
cache (``cache.py``) calls it for every image, in parallel.

Resize policy: Tiny ImageNet images are all 64×64. One that is not (a re-encoded or
foreign file) is resized to ``size``×``size`` with PIL's bilinear filter (antialiased when
shrinking), aspect ratio not kept, and the cache build warns with the number of such files.

Stray files are ignored: hidden files (``.DS_Store``, macOS ``._*``/``__MACOSX``), the
boxes files, anything that is not a ``.jpeg``/``.jpg``/``.png`` under ``images/``, images
in ``val/images`` that ``val_annotations.txt`` does not list, and the unlabeled ``test/``.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import AttnlabError

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
ANNOTATION_COLUMNS = 6  # file, wnid, x0, y0, x1, y1
WNIDS = "wnids.txt"
WORDS = "words.txt"
VAL_ANNOTATIONS = "val/val_annotations.txt"
_INTEGER = re.compile(r"-?[0-9]+")


class DataError(AttnlabError, ValueError):
    """A dataset problem the user can fix; the message names the file, the fault and the fix."""


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


# --------------------------------------------------------------------------- sources


class Source(Protocol):
    """Read access to a dataset root, the same for a folder and a zip."""

    kind: str
    location: Path

    def where(self, rel: str) -> str: ...
    def isfile(self, rel: str) -> bool: ...
    def listdir(self, rel: str) -> dict[str, str] | None: ...
    def read(self, rel: str) -> bytes: ...
    def statkey(self, rel: str) -> str: ...
    def redo(self) -> str: ...


class FolderSource:
    """An extracted dataset: ``location`` itself or its one subfolder holding wnids.txt."""

    kind = "folder"

    def __init__(self, location: str | Path):
        self.location = Path(location).resolve()
        self.base = self.location
        if not (self.base / WNIDS).is_file():
            inner = [p for p in sorted(self.location.iterdir()) if (p / WNIDS).is_file()]
            if len(inner) == 1:  # pointed at the folder that holds tiny-imagenet-200/
                self.base = inner[0]

    def where(self, rel: str) -> str:
        return str(self.base / rel)

    def isfile(self, rel: str) -> bool:
        return (self.base / rel).is_file()

    def listdir(self, rel: str) -> dict[str, str] | None:
        try:
            entries = list(os.scandir(self.base / rel))
        except (FileNotFoundError, NotADirectoryError):
            return None
        out: dict[str, str] = {}
        for entry in entries:
            if entry.is_file():
                st = entry.stat()
                out[entry.name] = f"{st.st_size}:{st.st_mtime_ns}"
        return out

    def read(self, rel: str) -> bytes:
        return (self.base / rel).read_bytes()

    def statkey(self, rel: str) -> str:
        st = (self.base / rel).stat()
        return f"{st.st_size}:{st.st_mtime_ns}"

    def redo(self) -> str:
        return "extract the downloaded zip again (or point --root at the .zip itself)"


class ZipSource:
    """The downloaded zip, read in place; the root is the member folder holding wnids.txt."""

    kind = "zip"

    def __init__(self, location: str | Path):
        self.location = Path(location).resolve()
        self._zip: zipfile.ZipFile | None = None
        self._dirs: dict[str, dict[str, str]] | None = None
        try:
            names = self.zip.namelist()
        except zipfile.BadZipFile as exc:
            raise DataError(
                f"{self.location}: not a readable zip file ({exc}). The download is damaged "
                "or incomplete: download tiny-imagenet-200.zip again."
            ) from None
        visible = [n for n in names if not _hidden_member(n)]
        candidates = [n for n in visible if n.rsplit("/", 1)[-1] == WNIDS]
        if candidates:
            self.prefix = min(candidates, key=len)[: -len(WNIDS)]
        else:  # name the missing file where it should be: inside the one top folder, if any
            tops = {n.split("/", 1)[0] for n in visible if "/" in n}
            self.prefix = f"{tops.pop()}/" if len(tops) == 1 else ""

    def __getstate__(self) -> dict[str, object]:  # workers reopen the zip themselves
        return {"location": self.location, "prefix": self.prefix, "_zip": None, "_dirs": None}

    @property
    def zip(self) -> zipfile.ZipFile:
        if self._zip is None:
            self._zip = _open_zip(self.location)
        return self._zip

    @property
    def dirs(self) -> dict[str, dict[str, str]]:
        if self._dirs is None:
            dirs: dict[str, dict[str, str]] = {}
            for info in self.zip.infolist():
                name = info.filename
                if info.is_dir() or not name.startswith(self.prefix) or _hidden_member(name):
                    continue
                parent, _, base = name[len(self.prefix):].rpartition("/")
                dirs.setdefault(parent, {})[base] = f"{info.file_size}:{info.CRC:08x}"
            self._dirs = dirs
        return self._dirs

    def where(self, rel: str) -> str:
        return f"{self.location}:{self.prefix}{rel}"

    def isfile(self, rel: str) -> bool:
        parent, _, base = rel.rpartition("/")
        return base in self.dirs.get(parent, {})

    def listdir(self, rel: str) -> dict[str, str] | None:
        return self.dirs.get(rel.rstrip("/"))

    def read(self, rel: str) -> bytes:
        return self.zip.read(self.prefix + rel)

    def statkey(self, rel: str) -> str:
        parent, _, base = rel.rpartition("/")
        return self.dirs[parent][base]

    def redo(self) -> str:
        return "download tiny-imagenet-200.zip again"


_OPEN_ZIPS: dict[tuple[object, ...], zipfile.ZipFile] = {}


def _open_zip(location: Path) -> zipfile.ZipFile:
    """One handle per process and file version: the central directory of the real zip (110k
    members) is parsed once per worker, not once per task. Keyed by pid (a forked child must
    not share its parent's file offset) and by inode/size/mtime (a replaced zip is reopened)."""
    st = location.stat()
    key = (os.getpid(), location, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _OPEN_ZIPS:
        _OPEN_ZIPS[key] = zipfile.ZipFile(location)
    return _OPEN_ZIPS[key]


def _hidden_member(name: str) -> bool:
    return name.startswith("__MACOSX/") or any(p.startswith(".") for p in name.split("/") if p)


def open_source(root: str | Path) -> FolderSource | ZipSource:
    """A folder or a .zip; anything else is an error that says what ``root`` should be."""
    path = Path(root).expanduser()
    if path.is_dir():
        return FolderSource(path)
    if path.is_file() and zipfile.is_zipfile(path):
        return ZipSource(path)
    if path.is_file() and path.suffix.lower() == ".zip":
        raise DataError(
            f"{path}: not a readable zip file. The download is damaged or incomplete: "
            "download tiny-imagenet-200.zip again."
        )
    raise DataError(
        f"{path}: not found or not a dataset. Pass the extracted tiny-imagenet-200 folder "
        "(the one holding wnids.txt) or the downloaded tiny-imagenet-200.zip."
    )


# --------------------------------------------------------------------------- decoding


DEFAULT_SIZE = 64  # Tiny ImageNet's native side; also the default for ImageFolder trees
DAMAGED_FIX = ("get a fresh copy of the dataset, or delete this file (and its line in "
               "val/val_annotations.txt if it is a val image)")


def decode_image(data: bytes, where: str, size: int = 64, fix: str = DAMAGED_FIX) -> tuple[np.ndarray, bool]:
    """One image file -> (uint8 array (size, size, 3), whether it had to be resized).

    ``fix`` ends the message for an undecodable file (each layout knows its own remedy)."""
    pixels, source_size = decode_image_sized(data, where, size, fix)
    return pixels, source_size != (size, size)


def decode_image_sized(data: bytes, where: str, size: int = 64,
                       fix: str = DAMAGED_FIX) -> tuple[np.ndarray, tuple[int, int]]:
    """Like ``decode_image``, with the file's own (width, height) instead of the flag."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = im.convert("RGB")  # grayscale (L), CMYK, palette -> RGB; forces full decode
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"{where}: cannot be decoded as an image ({exc}). The file is damaged: {fix}."
        ) from None
    source_size = (int(rgb.size[0]), int(rgb.size[1]))
    if source_size != (size, size):
        rgb = rgb.resize((size, size), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8), source_size


@dataclass
class DecodedChunk:
    """What a decode task returns: images, how many were resized, per-file errors and, from
    ``decode_files``, each file's own (width, height) (the frame its boxes are given in)."""

    images: np.ndarray
    resized: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)


def decode_files(source: Source, names: list[str], size: int, fix: str = DAMAGED_FIX) -> DecodedChunk:
    """Decode ``names`` (relative paths) from ``source``; runs in a worker process."""
    out = np.zeros((len(names), size, size, 3), dtype=np.uint8)
    chunk = DecodedChunk(out)
    for i, rel in enumerate(names):
        where = source.where(rel)
        chunk.sizes.append((0, 0))
        try:
            out[i], source_size = decode_image_sized(source.read(rel), where, size, fix)
        except DataError as exc:
            chunk.errors.append(str(exc))
            continue
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            chunk.errors.append(f"{where}: cannot be read ({exc}). {_cap(source.redo())}.")
            continue
        chunk.sizes[-1] = source_size
        if source_size != (size, size):
            chunk.resized.append(where)
    return chunk


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# --------------------------------------------------------------------------- index


@dataclass
class SplitIndex:
    """The files of one split in their fixed order, with labels (sorted-wnid positions) and,
    where the layout has them, one box per image (Tiny ImageNet's val split)."""

    names: list[str]
    labels: np.ndarray  # int64
    boxes: np.ndarray | None = None  # int64 (N, 4): x0, y0, x1, y1 in the file's own pixels, inclusive
    box_lines: np.ndarray | None = None  # int64 (N,): the annotation line of each box
    box_file: str | None = None  # where the boxes come from (for messages)

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class TinyImageNetIndex:
    """A validated dataset: classes, class names, and the train/val file lists."""

    source: FolderSource | ZipSource
    classes: list[str]
    class_names: list[str]
    splits: dict[str, SplitIndex]
    fingerprint: str
    notes: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.source.kind

    @property
    def location(self) -> Path:
        return self.source.location

    def cache_size(self, size: int | None) -> int:
        """The cached side length for a requested ``size`` (None: the native 64)."""
        return DEFAULT_SIZE if size is None else size

    def tasks(self, split: str, chunk_size: int, size: int) -> list[tuple[int, partial[DecodedChunk]]]:
        """Picklable decode tasks (start offset, callable) covering ``split`` in order."""
        names = self.splits[split].names
        return [
            (start, partial(decode_files, self.source, names[start:start + chunk_size], size))
            for start in range(0, len(names), chunk_size)
        ]


def _read_text(source: Source, rel: str, missing_fix: str) -> str:
    if not source.isfile(rel):
        raise DataError(f"{source.where(rel)}: not found. {missing_fix}")
    return source.read(rel).decode("utf-8", errors="replace")


def scan(root: str | Path | FolderSource | ZipSource) -> TinyImageNetIndex:
    """Check the official layout and list every train/val image with its label.

    Raises ``DataError`` for: missing wnids.txt or val/val_annotations.txt, a duplicated
    wnid, a wnid with no train folder or no train images, an annotation line that does
    not have 6 tab-separated columns, an annotated wnid not in wnids.txt, and an annotated
    file that is absent. Images are not decoded here (that is the cache build's job).
    """
    source = root if isinstance(root, FolderSource | ZipSource) else open_source(root)
    redo = source.redo()
    wnid_text = _read_text(
        source, WNIDS,
        "This is not a Tiny ImageNet root: pass the folder that holds wnids.txt, train/ and "
        f"val/ (or the downloaded .zip). If it is the right folder, the copy is incomplete: {redo}.",
    )
    listed = [line.strip() for line in wnid_text.splitlines() if line.strip()]
    if not listed:
        raise DataError(f"{source.where(WNIDS)}: is empty; it should list one wnid per line. {_cap(redo)}.")
    seen: set[str] = set()
    for lineno, wnid in enumerate(listed, 1):
        if wnid in seen:
            raise DataError(
                f"{source.where(WNIDS)} line {lineno}: wnid {wnid} is listed twice. "
                f"Delete the duplicate line, or {redo}."
            )
        seen.add(wnid)
    classes = sorted(listed)
    index_of = {wnid: i for i, wnid in enumerate(classes)}
    class_names, notes = _class_names(source, classes)
    keys = [f"{WNIDS}={source.statkey(WNIDS)}"]
    if source.isfile(WORDS):
        keys.append(f"{WORDS}={source.statkey(WORDS)}")

    # train: train/<wnid>/images/*.JPEG, every class present and non-empty
    train_names: list[str] = []
    train_labels: list[int] = []
    for wnid in classes:
        folder = f"train/{wnid}/images"
        entries = source.listdir(folder)
        if entries is None:
            raise DataError(
                f"{source.where(folder)}: not found, but {wnid} is listed in wnids.txt. "
                f"The copy is incomplete: {redo}, or remove {wnid} from wnids.txt to train without it."
            )
        images = sorted(n for n in entries if _is_image_name(n))
        if not images:
            raise DataError(
                f"{source.where(folder)}: holds no images, but {wnid} is listed in wnids.txt "
                f"(an empty class). {_cap(redo)}, or remove {wnid} from wnids.txt."
            )
        for name in images:
            train_names.append(f"{folder}/{name}")
            train_labels.append(index_of[wnid])
            keys.append(f"{folder}/{name}={entries[name]}")

    # val: val/val_annotations.txt lists file and wnid; the files live in val/images/
    ann_text = _read_text(
        source, VAL_ANNOTATIONS,
        f"Without it the validation labels are unknown. The copy is incomplete: {redo}.",
    )
    keys.append(f"{VAL_ANNOTATIONS}={source.statkey(VAL_ANNOTATIONS)}")
    val_entries = source.listdir("val/images") or {}
    val_names: list[str] = []
    val_labels: list[int] = []
    val_boxes: list[tuple[int, int, int, int]] = []
    box_lines: list[int] = []
    ann_where = source.where(VAL_ANNOTATIONS)
    listed_files: set[str] = set()
    for lineno, line in enumerate(ann_text.splitlines(), 1):
        if not line.strip():
            continue
        cols = line.rstrip("\r\n").split("\t")
        if len(cols) != ANNOTATION_COLUMNS:
            raise DataError(
                f"{ann_where} line {lineno}: expected {ANNOTATION_COLUMNS} tab-separated columns "
                f"(file, wnid, x0, y0, x1, y1), found {len(cols)}. The file is damaged: {redo}."
            )
        name, wnid = cols[0].strip(), cols[1].strip()
        box = _parse_box(cols[2:], f"{ann_where} line {lineno}", redo)
        if wnid not in index_of:
            raise DataError(
                f"{ann_where} line {lineno}: wnid {wnid} is not in wnids.txt. The two files come "
                f"from different copies: {redo}."
            )
        if name not in val_entries:
            raise DataError(
                f"{source.where('val/images/' + name)}: listed in val/val_annotations.txt "
                f"(line {lineno}) but not found. {_cap(redo)}, or delete that line."
            )
        if name in listed_files:
            raise DataError(
                f"{ann_where} line {lineno}: {name} is listed twice. Delete the duplicate line, or {redo}."
            )
        listed_files.add(name)
        val_names.append(f"val/images/{name}")
        val_labels.append(index_of[wnid])
        val_boxes.append(box)
        box_lines.append(lineno)
        keys.append(f"val/images/{name}={val_entries[name]}")
    if not val_names:
        raise DataError(f"{ann_where}: lists no images. {_cap(redo)}.")
    with_val = set(val_labels)
    empty_val = [w for w in classes if index_of[w] not in with_val]
    if empty_val:
        notes.append(f"{len(empty_val)} classes have no val images (e.g. {empty_val[0]})")
    unlisted = sum(1 for n in val_entries if _is_image_name(n) and n not in listed_files)
    if unlisted:
        notes.append(f"{unlisted} files in val/images are not in val_annotations.txt (ignored)")

    fingerprint = hashlib.sha256("\n".join(keys).encode()).hexdigest()
    splits = {
        "train": SplitIndex(train_names, np.asarray(train_labels, dtype=np.int64)),
        "val": SplitIndex(val_names, np.asarray(val_labels, dtype=np.int64),
                          boxes=np.asarray(val_boxes, dtype=np.int64).reshape(-1, 4),
                          box_lines=np.asarray(box_lines, dtype=np.int64), box_file=ann_where),
    }
    return TinyImageNetIndex(source, classes, class_names, splits, fingerprint, notes)


def _parse_box(cols: list[str], where: str, redo: str) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 of one annotation line: integers, ordered, not negative (the upper
    bound needs the image's size: ``fit_boxes``)."""
    text = ", ".join(c.strip() for c in cols)
    if not all(_INTEGER.fullmatch(c.strip()) for c in cols):
        raise DataError(
            f"{where}: the box ({text}) is not four integers (x0, y0, x1, y1 in pixels). "
            f"The file is damaged: {redo}."
        )
    x0, y0, x1, y1 = (int(c.strip()) for c in cols)
    if x1 < x0 or y1 < y0:
        axis = "x1 < x0" if x1 < x0 else "y1 < y0"
        raise DataError(
            f"{where}: the box ({text}) has {axis}; a box is x0, y0, x1, y1 with x0 <= x1 and "
            f"y0 <= y1. The file is damaged: {redo}."
        )
    if min(x0, y0) < 0:
        raise DataError(
            f"{where}: the box ({text}) lies outside the image (pixel coordinates start at 0). "
            f"The file is damaged: {redo}."
        )
    return x0, y0, x1, y1


def scale_boxes(boxes: np.ndarray, source_sizes: np.ndarray, size: int) -> np.ndarray:
    """Inclusive pixel boxes (N, 4) in images of (width, height) ``source_sizes`` (N, 2) ->
    the same boxes in ``size``×``size`` images: the pixel extent [x0, x1 + 1) is scaled and
    rounded outwards, so the scaled box covers every pixel the object covers (identity when
    the image already is ``size``×``size``)."""
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    w = np.asarray(source_sizes, dtype=np.int64).reshape(-1, 2)[:, :1]
    h = np.asarray(source_sizes, dtype=np.int64).reshape(-1, 2)[:, 1:]
    x0 = boxes[:, 0:1] * size // w
    y0 = boxes[:, 1:2] * size // h
    x1 = -((-(boxes[:, 2:3] + 1) * size) // w) - 1  # ceil((x1 + 1) * size / w) - 1
    y1 = -((-(boxes[:, 3:4] + 1) * size) // h) - 1
    return np.clip(np.concatenate([x0, y0, x1, y1], axis=1), 0, size - 1)


def fit_boxes(part: SplitIndex, source_sizes: np.ndarray, size: int, redo: str) -> np.ndarray:
    """``part``'s boxes checked against each image's own size, then scaled to ``size``.

    A box past the right or bottom edge of its image is a ``DataError`` naming the
    annotation file and line."""
    if part.boxes is None:
        raise ValueError("this split has no boxes")
    sizes = np.asarray(source_sizes, dtype=np.int64).reshape(-1, 2)
    outside = (part.boxes[:, 2] >= sizes[:, 0]) | (part.boxes[:, 3] >= sizes[:, 1])
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        x0, y0, x1, y1 = (int(v) for v in part.boxes[i])
        w, h = (int(v) for v in sizes[i])
        line = int(part.box_lines[i]) if part.box_lines is not None else i + 1
        raise DataError(
            f"{part.box_file} line {line}: the box ({x0}, {y0}, {x1}, {y1}) lies outside "
            f"{part.names[i].rsplit('/', 1)[-1]}, which is {w}x{h} pixels (x0..x1 in 0..{w - 1}, "
            f"y0..y1 in 0..{h - 1}). The file is damaged: {redo}."
        )
    return scale_boxes(part.boxes, sizes, size)


def read_boxes(root: str | Path | TinyImageNetIndex, split: str = "val", size: int = 64) -> np.ndarray | None:
    """The boxes of ``split`` scaled to ``size``×``size`` images (int64 N×4), or None when
    the split has none; checked like the cache build does (each image's size from its header)."""
    from PIL import Image

    index = root if isinstance(root, TinyImageNetIndex) else scan(root)
    part = index.splits[split]
    if part.boxes is None:
        return None
    sizes = []
    for rel in part.names:
        try:
            with Image.open(io.BytesIO(index.source.read(rel))) as im:
                sizes.append(im.size)
        except (OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"{index.source.where(rel)}: cannot be read as an image ({exc}). "
                            f"The file is damaged: {DAMAGED_FIX}.") from None
    return fit_boxes(part, np.asarray(sizes, dtype=np.int64), size, index.source.redo())


def _class_names(source: Source, classes: list[str]) -> tuple[list[str], list[str]]:
    """Names from words.txt (first synonym list as given); the wnid itself where absent."""
    if not source.isfile(WORDS):
        return list(classes), ["words.txt not found: class names are the wnids"]
    wanted = set(classes)
    words: dict[str, str] = {}
    for line in source.read(WORDS).decode("utf-8", errors="replace").splitlines():
        wnid, _, name = line.partition("\t")
        if wnid in wanted:
            words[wnid] = name.strip()
    missing = [w for w in classes if not words.get(w)]
    notes = [f"{len(missing)} wnids have no name in words.txt (e.g. {missing[0]})"] if missing else []
    return [words.get(w) or w for w in classes], notes


def read_split(root: str | Path | TinyImageNetIndex, split: str, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Decode a whole split in this process: (uint8 (N, size, size, 3), int64 labels).

    The simple, serial reader (tests, small sets); ``cache.prepare`` is the fast path.
    """
    index = root if isinstance(root, TinyImageNetIndex) else scan(root)
    part = index.splits[split]
    chunk = decode_files(index.source, part.names, size)
    if chunk.errors:
        raise DataError(chunk.errors[0])
    return chunk.images, part.labels.copy()
