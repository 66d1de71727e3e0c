"""Decode the dataset once into memory-mappable uint8 arrays; reuse them while fresh.

A cache is one folder ``<cache_dir>/<kind>-<size>px-<fingerprint>/`` holding
``{train,val}_images.npy`` (uint8, N×S×S×3), ``{train,val}_labels.npy`` (int64),
``val_boxes.npy`` where the dataset has boxes (int64 N×4: x0, y0, x1, y1, inclusive pixel
coordinates of the cached S×S image; Tiny ImageNet's val annotations, scaled when the cached
size is not the image's own) and ``meta.json`` (source, fingerprint, counts, size, classes,
``boxes``: the splits with a boxes file, build speed). The fingerprint
hashes the source's file list with sizes and mtimes (folder) or sizes and CRCs (zip), so a
changed source gets a new folder and is rebuilt.

Atomicity: a build writes into a ``.tmp-*`` folder, flushes the arrays, writes meta.json
last and then renames the folder into place. An interrupted build leaves at most a
``.tmp-*`` folder, which is never opened as a cache (and is removed by a later build once
its process is gone); opening also checks every array against meta.json, so a truncated
file is detected and rebuilt; so are boxes outside the image, and a cache of an older
``CACHE_VERSION`` (version 1 had no boxes).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .tiny_imagenet import DataError, DecodedChunk, TinyImageNetIndex, fit_boxes

CACHE_FORMAT = "attnlab-tiny-imagenet-cache"
CACHE_VERSION = 2  # 2: val_boxes.npy and meta["boxes"]
SPLITS = ("train", "val")
CACHE_DIRNAME = ".attnlab_cache"


@dataclass(eq=False)  # identity hash: the loader keeps device copies per split object
class CachedSplit:
    """One split: uint8 images (N, H, W, 3), memory-mapped, int64 labels (N,) and, where the
    dataset has them, int64 boxes (N, 4): x0, y0, x1, y1, inclusive pixel coordinates of the
    cached image (None for parquet, CIFAR-100, ImageFolder trees and the train split)."""

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(eq=False)
class CachedDataset:
    """The decoded dataset: classes (sorted wnids), names, and the two cached splits."""

    root: Path
    classes: list[str]
    class_names: list[str]
    image_size: int
    train: CachedSplit
    val: CachedSplit
    meta: dict[str, Any]
    path: Path | None = None  # the cache folder
    reused: bool = False  # True when an existing fresh cache was opened

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> CachedSplit:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; the cache holds {SPLITS}")
        return getattr(self, name)


class CacheError(RuntimeError):
    """A cache folder that is incomplete or damaged (it is rebuilt, never trusted)."""


class CacheVersionError(CacheError):
    """A cache folder written in another format version (it is rebuilt)."""


def scan_source(root: str | Path) -> TinyImageNetIndex:
    """The validated index of ``root``, its layout detected: the Tiny ImageNet folder or .zip,
    its parquet copy, CIFAR-100 (python pickles), or an ImageFolder train/val tree."""
    from . import cifar, imagefolder, parquet

    if parquet.is_parquet_source(root):
        return parquet.scan_parquet(root)  # type: ignore[return-value]
    if cifar.is_cifar_source(root):
        return cifar.scan_cifar(root)
    if imagefolder.is_imagefolder_source(root):
        return imagefolder.scan_imagefolder(root)
    from .tiny_imagenet import scan

    path = Path(root).expanduser()
    if not path.exists() or (path.is_dir() and not _tiny_like(path)):
        raise DataError(
            f"{path}: {'not found' if not path.exists() else 'not a dataset layout attnlab reads'}. "
            "Pass the Tiny ImageNet folder (holding wnids.txt, train/, val/) or its .zip, a folder "
            "with its parquet copy (train-*.parquet, valid-*.parquet), the extracted cifar-100-python/ "
            "folder (train, test, meta), or an ImageFolder tree (train/<class>/, val/<class>/)."
        )
    return scan(root)


def _tiny_like(path: Path) -> bool:
    """Tiny ImageNet here or one level down, or a damaged copy of it (train/ or val/ present)."""
    if any((path / name).exists() for name in ("wnids.txt", "train", "val")):
        return True
    return any((p / "wnids.txt").is_file() for p in path.iterdir() if p.is_dir())


def default_cache_dir(root: str | Path) -> Path:
    """``<root>/.attnlab_cache`` for a folder; next to the file for a .zip or .parquet."""
    path = Path(root).expanduser().resolve()
    return path / CACHE_DIRNAME if path.is_dir() else path.parent / CACHE_DIRNAME


def cache_name(kind: str, size: int, fingerprint: str) -> str:
    return f"{kind}-{size}px-{fingerprint[:20]}"


def open_cache(path: str | Path, *, fingerprint: str | None = None) -> CachedDataset:
    """Open a finished cache folder, checking it against its meta.json (and ``fingerprint``)."""
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise CacheError(f"{meta_path}: not found (an unfinished build)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise CacheError(f"{meta_path}: unreadable ({exc})") from None
    if meta.get("format") != CACHE_FORMAT or meta.get("version") != CACHE_VERSION:
        raise CacheVersionError(f"{meta_path}: format {meta.get('format')} v{meta.get('version')}, "
                         f"expected {CACHE_FORMAT} v{CACHE_VERSION}")
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        raise CacheError(f"{meta_path}: built from a different version of the source")
    try:
        size = int(meta["image_size"])
        counts = {split: int(meta["counts"][split]) for split in SPLITS}
        classes, class_names = list(meta["classes"]), list(meta["class_names"])
        source = Path(meta["source"])
        with_boxes = list(meta["boxes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CacheError(f"{meta_path}: incomplete ({exc!r})") from None
    if any(split not in SPLITS for split in with_boxes):
        raise CacheError(f"{meta_path}: boxes for unknown splits {with_boxes}")
    splits = {}
    for split in SPLITS:
        n = counts[split]
        images = _load_array(path / f"{split}_images.npy", np.uint8, (n, size, size, 3))
        labels = _load_array(path / f"{split}_labels.npy", np.int64, (n,))
        boxes = None
        if split in with_boxes:
            boxes = _load_boxes(path / f"{split}_boxes.npy", n, size)
        splits[split] = CachedSplit(images, labels, boxes)
    return CachedDataset(root=source, classes=classes, class_names=class_names, image_size=size,
                         train=splits["train"], val=splits["val"], meta=meta, path=path)


def _load_array(path: Path, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    """Memory-map ``path`` (copy-on-write, so torch can wrap it) after checking its size."""
    try:
        arr = np.load(path, mmap_mode="c")
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path}: unreadable ({exc})") from None
    if arr.dtype != dtype or arr.shape != shape:
        raise CacheError(f"{path}: holds {arr.dtype}{arr.shape}, expected {np.dtype(dtype)}{shape}")
    if isinstance(arr, np.memmap) and os.path.getsize(path) != arr.offset + arr.nbytes:
        raise CacheError(f"{path}: {os.path.getsize(path)} bytes, expected {arr.offset + arr.nbytes}")
    return arr


def _load_boxes(path: Path, n: int, size: int) -> np.ndarray:
    """A boxes array (n, 4), every box ordered and inside the size×size image."""
    boxes = np.array(_load_array(path, np.int64, (n, 4)))  # small: read it whole
    x0, y0, x1, y1 = boxes.T
    bad = (x0 < 0) | (y0 < 0) | (x1 < x0) | (y1 < y0) | (x1 >= size) | (y1 >= size)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CacheError(f"{path}: box {i} {boxes[i].tolist()} is not inside a {size}x{size} image")
    return boxes


def prepare(root: str | Path, cache_dir: str | Path | None = None, *, workers: int | None = None,
            progress: bool = True, force: bool = False, size: int | None = None) -> CachedDataset:
    """Validate ``root`` and return its cache, building it if missing, stale or damaged.

    ``workers``: decode processes (default: all CPUs available to this process, or 1 for
    small sets); ``force`` rebuilds even a fresh cache; ``size`` is the cached side length
    (None: the dataset's native size, 64 for Tiny ImageNet and ImageFolder trees, 32 for
    CIFAR-100, which refuses any other).
    """
    root = Path(root).expanduser()
    index = scan_source(root)
    size = index.cache_size(size)
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(root)
    final = cache_dir / cache_name(index.kind, size, index.fingerprint)
    if final.exists() and not force:
        try:
            dataset = open_cache(final, fingerprint=index.fingerprint)
        except CacheError as exc:
            why = "is outdated" if isinstance(exc, CacheVersionError) else "is damaged"
            _say(progress, f"cache {final} {why} ({exc}); rebuilding")
        else:
            dataset.reused = True
            return dataset
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        probe = cache_dir / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise DataError(f"{cache_dir}: cannot write the cache there ({exc}). Pass a writable "
                        "--cache-dir (the dataset itself may stay read-only).") from None
    _remove_abandoned(cache_dir)
    dataset = _build(index, cache_dir, final, size=size, workers=workers, progress=progress)
    _remove_superseded(cache_dir, keep=final, source=str(index.location), size=size)
    return dataset


def open_dataset(root: str | Path, cache_dir: str | Path | None = None, **kw: Any) -> CachedDataset:
    """The engine's entry point: the cached dataset of ``root`` (see ``prepare``)."""
    kw.setdefault("progress", False)
    return prepare(root, cache_dir, **kw)


def _say(enabled: bool, message: str) -> None:
    if enabled:
        print(message, file=sys.stderr)


def _default_workers(total: int) -> int:
    if total < 2000:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 32))


def _build(index: TinyImageNetIndex, cache_dir: Path, final: Path, *, size: int,
           workers: int | None, progress: bool) -> CachedDataset:
    counts = {split: len(index.splits[split]) for split in SPLITS}
    total = sum(counts.values())
    workers = _default_workers(total) if workers is None else max(1, int(workers))
    tmp = cache_dir / f".tmp-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    start = time.perf_counter()
    try:
        arrays = {
            split: np.lib.format.open_memmap(tmp / f"{split}_images.npy", mode="w+", dtype=np.uint8,
                                             shape=(counts[split], size, size, 3))
            for split in SPLITS
        }
        chunk_size = max(16, min(512, total // (workers * 8) or 16))
        tasks = [(split, offset, task) for split in SPLITS
                 for offset, task in index.tasks(split, chunk_size, size)]
        resized: list[str] = []
        errors: list[str] = []
        boxed = [split for split in SPLITS if index.splits[split].boxes is not None]
        sizes = {split: np.zeros((counts[split], 2), dtype=np.int64) for split in boxed}

        def store(split: str, offset: int, chunk: DecodedChunk) -> None:
            arrays[split][offset:offset + len(chunk.images)] = chunk.images
            if split in sizes:
                sizes[split][offset:offset + len(chunk.images)] = np.asarray(chunk.sizes).reshape(-1, 2)
            resized.extend(chunk.resized)
            errors.extend(chunk.errors)

        _run_tasks(tasks, store, workers=workers, total=total, progress=progress)
        if errors:
            head = errors[0] if len(errors) == 1 else (
                f"{len(errors)} images cannot be decoded:\n  " + "\n  ".join(errors[:10])
                + ("\n  ..." if len(errors) > 10 else ""))
            raise DataError(head)
        for split in SPLITS:
            arrays[split].flush()
            del arrays[split]  # close the memmap before the rename
            np.save(tmp / f"{split}_labels.npy", index.splits[split].labels.astype(np.int64))
        for split in boxed:  # checked against each image's own size, scaled to the cached size
            boxes = fit_boxes(index.splits[split], sizes[split], size, index.source.redo())
            np.save(tmp / f"{split}_boxes.npy", boxes.astype(np.int64))
        seconds = time.perf_counter() - start
        meta = {
            "format": CACHE_FORMAT, "version": CACHE_VERSION,
            "source": str(index.location), "source_kind": index.kind,
            "fingerprint": index.fingerprint, "image_size": size,
            "classes": index.classes, "class_names": index.class_names,
            "counts": counts, "boxes": boxed, "resized": len(resized), "notes": index.notes,
            "build_seconds": round(seconds, 3), "images_per_s": round(total / max(seconds, 1e-9), 1),
            "workers": workers, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        _write_meta(tmp / "meta.json", meta)
        _fsync_dir(tmp)
        if final.exists():  # forced or damaged: move the old one aside first
            old = cache_dir / f".tmp-old-{secrets.token_hex(4)}"
            os.rename(final, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same cache first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
        _fsync_dir(cache_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if resized:
        warnings.warn(
            f"{len(resized)} images were not {size}x{size} and were resized to it (bilinear, "
            f"aspect ratio not kept), e.g. {resized[0]}", stacklevel=3)
    dataset = open_cache(final, fingerprint=index.fingerprint)
    _say(progress, f"cached train {counts['train']:,} + val {counts['val']:,} images ({size}x{size}) "
                   f"in {meta['build_seconds']:.1f} s, {meta['images_per_s']:,.0f} images/s, "
                   f"{workers} worker(s) -> {final}")
    return dataset


def _run_tasks(tasks: list[tuple[str, int, Callable[[], DecodedChunk]]],
               store: Callable[[str, int, DecodedChunk], None], *, workers: int, total: int,
               progress: bool) -> None:
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="img", desc="decoding", disable=not progress, leave=False) as bar:
        if workers == 1:
            for split, offset, task in tasks:
                chunk = task()
                store(split, offset, chunk)
                bar.update(len(chunk.images))
            return
        import multiprocessing as mp

        # fork: workers start at once and inherit the open source; they only run PIL/numpy.
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_die_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(task): (split, offset) for split, offset, task in tasks}
            try:
                for future in as_completed(futures):
                    chunk = future.result()
                    store(*futures[future], chunk)
                    bar.update(len(chunk.images))
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


def _die_with_parent(parent: int) -> None:
    """Decode workers end when the process that started them dies (even by kill -9).

    On Linux the kernel sends SIGTERM (prctl PR_SET_PDEATHSIG); elsewhere, and as a backstop,
    a daemon thread checks the parent every second."""
    import signal
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="attnlab-parent-watch").start()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _write_meta(path: Path, meta: dict[str, Any]) -> None:
    with open(path, "w") as fh:
        json.dump(meta, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    for child in path.iterdir() if path.is_dir() else []:
        if child.is_file():
            with open(child, "rb") as fh:
                os.fsync(fh.fileno())
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_abandoned(cache_dir: Path) -> None:
    """Delete ``.tmp-*`` folders left by builds on this host whose process is gone."""
    host = socket.gethostname()
    for path in cache_dir.glob(".tmp-*"):
        parts = path.name.split("-")
        if path.name.startswith(".tmp-old-"):
            shutil.rmtree(path, ignore_errors=True)
            continue
        try:
            pid = int(parts[-2])
        except (IndexError, ValueError):
            continue
        if "-".join(parts[1:-2]) == host and not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_superseded(cache_dir: Path, *, keep: Path, source: str, size: int) -> None:
    """Delete older caches of the same source (a changed source leaves its old cache stale)."""
    for path in cache_dir.iterdir():
        if path == keep or path.name.startswith(".") or not (path / "meta.json").is_file():
            continue
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        if meta.get("format") == CACHE_FORMAT and meta.get("source") == source \
                and meta.get("image_size") == size:
            shutil.rmtree(path, ignore_errors=True)
