"""Reader for the official Tiny ImageNet-200 layout, from the extracted folder or the .zip.

Layout (DESIGN.md): ``wnids.txt``; ``words.txt`` (wnid -> names);
``train/<wnid>/images/<wnid>_<k>.JPEG`` plus ``train/<wnid>/<wnid>_boxes.txt``;
``val/images/val_<k>.JPEG`` plus ``val/val_annotations.txt`` (tab-separated: file, wnid,
x0, y0, x1, y1). Class index = position in the *sorted* wnids, for every split.

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
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = im.convert("RGB")  # grayscale (L), CMYK, palette -> RGB; forces full decode
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"{where}: cannot be decoded as an image ({exc}). The file is damaged: {fix}."
        ) from None
    resized = rgb.size != (size, size)
    if resized:
        rgb = rgb.resize((size, size), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8), resized


@dataclass
class DecodedChunk:
    """What a decode task returns: images, how many were resized, and per-file errors."""

    images: np.ndarray
    resized: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def decode_files(source: Source, names: list[str], size: int, fix: str = DAMAGED_FIX) -> DecodedChunk:
    """Decode ``names`` (relative paths) from ``source``; runs in a worker process."""
    out = np.zeros((len(names), size, size, 3), dtype=np.uint8)
    chunk = DecodedChunk(out)
    for i, rel in enumerate(names):
        where = source.where(rel)
        try:
            out[i], resized = decode_image(source.read(rel), where, size, fix)
        except DataError as exc:
            chunk.errors.append(str(exc))
            continue
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            chunk.errors.append(f"{where}: cannot be read ({exc}). {_cap(source.redo())}.")
            continue
        if resized:
            chunk.resized.append(where)
    return chunk


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# --------------------------------------------------------------------------- index


@dataclass
class SplitIndex:
    """The files of one split in their fixed order, with labels (sorted-wnid positions)."""

    names: list[str]
    labels: np.ndarray  # int64

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
        "val": SplitIndex(val_names, np.asarray(val_labels, dtype=np.int64)),
    }
    return TinyImageNetIndex(source, classes, class_names, splits, fingerprint, notes)


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
