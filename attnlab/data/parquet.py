"""The parquet copy of Tiny ImageNet (columns ``image``, ``label``), read through pyarrow.

Layout: a folder (or its ``data/`` subfolder) with ``*.parquet`` files whose names start
with ``train`` or ``val``/``valid`` (e.g. ``train-00000-of-00001.parquet``). ``image`` is
either encoded bytes or a struct with a ``bytes`` field; ``label`` is an integer. When the
schema metadata carries the class names (Hugging Face ``ClassLabel`` names, the wnids),
labels are remapped so that the class index is the position in the sorted wnids, as for
the official layout; otherwise labels are kept as stored and the classes are ``"0".."K-1"``.
pyarrow is an optional extra (``pip install attnlab[parquet]``), imported only here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from .tiny_imagenet import DataError, DecodedChunk, SplitIndex, TinyImageNetIndex, decode_image

SPLIT_PREFIXES = {"train": ("train",), "val": ("valid", "val")}


def _pq():  # type: ignore[no-untyped-def]
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("reading the parquet copy needs pyarrow: pip install 'attnlab[parquet]'") from None
    return pq


def _parquet_files(root: Path) -> list[Path]:
    for folder in (root, root / "data"):
        if folder.is_dir():
            files = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))
            if files:
                return files
    return []


def is_parquet_source(root: str | Path) -> bool:
    """A folder with no wnids.txt but with train/val parquet files (here or in data/)."""
    path = Path(root).expanduser()
    return path.is_dir() and not (path / "wnids.txt").is_file() and bool(_parquet_files(path))


@dataclass
class ParquetSource:
    kind = "parquet"
    location: Path

    def redo(self) -> str:
        return "download the parquet files again"


def _split_of(path: Path) -> str | None:
    name = path.name.lower()
    for split, prefixes in SPLIT_PREFIXES.items():
        if name.startswith(prefixes):
            return split
    return None


def _image_bytes(value: object) -> bytes | None:
    if isinstance(value, dict):
        value = value.get("bytes")
    return value if isinstance(value, bytes) else None


def decode_row_group(path: Path, group: int, size: int) -> DecodedChunk:
    """Decode the images of one row group; runs in a worker process."""
    table = _pq().ParquetFile(path).read_row_group(group, columns=["image"])
    values = table.column("image").to_pylist()
    chunk = DecodedChunk(np.zeros((len(values), size, size, 3), dtype=np.uint8))
    for i, value in enumerate(values):
        where = f"{path} (row group {group}, row {i})"
        data = _image_bytes(value)
        if data is None:
            chunk.errors.append(f"{where}: the image column holds no encoded bytes. "
                                "Download the parquet files again.")
            continue
        try:
            chunk.images[i], resized = decode_image(data, where, size)
        except DataError as exc:
            chunk.errors.append(str(exc))
            continue
        if resized:
            chunk.resized.append(where)
    return chunk


class ParquetIndex(TinyImageNetIndex):
    """A TinyImageNetIndex whose decode tasks are parquet row groups."""

    groups: dict[str, list[tuple[Path, int, int]]]  # split -> (file, row group, rows)

    def tasks(self, split: str, chunk_size: int, size: int) -> list[tuple[int, partial[DecodedChunk]]]:
        out, offset = [], 0
        for path, group, rows in self.groups[split]:
            out.append((offset, partial(decode_row_group, path, group, size)))
            offset += rows
        return out


def _class_labels(schema_metadata: dict[bytes, bytes] | None) -> list[str] | None:
    """Hugging Face ``ClassLabel`` names of the ``label`` column, if the file carries them."""
    raw = (schema_metadata or {}).get(b"huggingface")
    if not raw:
        return None
    try:
        features = json.loads(raw)["info"]["features"]
        names = features["label"]["names"]
    except (ValueError, KeyError, TypeError):
        return None
    return [str(n) for n in names] if isinstance(names, list) and names else None


def scan_parquet(root: str | Path) -> ParquetIndex:
    """Index the parquet copy: labels per split (read now), images per row group (decoded later)."""
    pq = _pq()
    location = Path(root).resolve()
    files = _parquet_files(location)
    by_split: dict[str, list[Path]] = {"train": [], "val": []}
    for path in files:
        split = _split_of(path)
        if split is not None:
            by_split[split].append(path)
    for split, paths in by_split.items():
        if not paths:
            raise DataError(f"{location}: no {split} parquet file (a name starting with "
                            f"{' or '.join(SPLIT_PREFIXES[split])}). Download the parquet files again.")
    keys: list[str] = []
    labels: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    groups: dict[str, list[tuple[Path, int, int]]] = {"train": [], "val": []}
    names: list[str] | None = None
    for split, paths in by_split.items():
        for path in paths:
            pf = pq.ParquetFile(path)
            missing = {"image", "label"} - set(pf.schema_arrow.names)
            if missing:
                raise DataError(f"{path}: has no column {', '.join(sorted(missing))} (columns: "
                                f"{', '.join(pf.schema_arrow.names)}). This is not the Tiny ImageNet parquet copy.")
            names = names or _class_labels(pf.schema_arrow.metadata)
            labels[split].append(pf.read(columns=["label"]).column("label").to_numpy().astype(np.int64))
            groups[split] += [(path, g, pf.metadata.row_group(g).num_rows) for g in range(pf.num_row_groups)]
            st = path.stat()
            keys.append(f"{path.name}={st.st_size}:{st.st_mtime_ns}")
    merged = {split: np.concatenate(parts) for split, parts in labels.items()}
    top = int(max(int(v.max(initial=-1)) for v in merged.values()))
    if names is not None and top < len(names):
        classes = sorted(names)
        remap = np.asarray([classes.index(n) for n in names], dtype=np.int64)
        merged = {split: remap[v] for split, v in merged.items()}
    else:
        classes = [str(i) for i in range(top + 1)]
    splits = {split: SplitIndex([f"{split}#{i}" for i in range(len(v))], v) for split, v in merged.items()}
    fingerprint = hashlib.sha256("\n".join(keys).encode()).hexdigest()
    index = ParquetIndex(ParquetSource(location), classes, list(classes), splits, fingerprint, [])  # type: ignore[arg-type]
    index.groups = groups
    return index
