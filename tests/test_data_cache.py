"""The uint8 cache: built once, reused while fresh, rebuilt on change, never half-written."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnlab.data import tiny_imagenet
from attnlab.data.cache import CacheError, cache_name, open_cache, prepare
from attnlab.data.synthetic import make_zip, write_synthetic
from attnlab.data.tiny_imagenet import DataError, read_split, scan


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("syn") / "tiny", classes=4, train_per_class=5,
                           val_per_class=3, seed=1)


@pytest.fixture
def root(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "tiny"))


def _cache_folders(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir()) if cache_dir.exists() else []


def test_cache_holds_what_the_reader_reads(root: Path) -> None:
    ds = prepare(root, progress=False)
    assert not ds.reused and ds.path is not None and ds.path.parent == root / ".attnlab_cache"
    index = scan(root)
    assert ds.classes == index.classes and ds.class_names == index.class_names and ds.image_size == 64
    for split in ("train", "val"):
        images, labels = read_split(index, split)
        part = ds.split(split)
        assert isinstance(part.images, np.memmap) and part.images.dtype == np.uint8
        assert np.array_equal(part.images, images) and np.array_equal(part.labels, labels)
    meta = json.loads((ds.path / "meta.json").read_text())
    assert meta["counts"] == {"train": 20, "val": 12} and meta["fingerprint"] == index.fingerprint
    assert meta["images_per_s"] > 0 and meta["image_size"] == 64


def test_fresh_cache_is_reused(root: Path) -> None:
    first = prepare(root, progress=False)
    stamp = (first.path / "train_images.npy").stat().st_mtime_ns
    again = prepare(root, progress=False)
    assert again.reused and again.path == first.path
    assert (again.path / "train_images.npy").stat().st_mtime_ns == stamp
    forced = prepare(root, progress=False, force=True)
    assert not forced.reused and forced.path == first.path
    assert _cache_folders(root / ".attnlab_cache") == [first.path.name]


def test_changed_source_invalidates_the_cache(root: Path) -> None:
    old = prepare(root, progress=False)
    index = scan(root)
    target = root / index.splits["train"].names[7]
    Image.new("RGB", (64, 64), (1, 2, 3)).save(target, "PNG")  # replaced by other content
    new = prepare(root, progress=False)
    assert not new.reused and new.path != old.path
    assert np.array_equal(new.train.images[7], np.full((64, 64, 3), (1, 2, 3), np.uint8))
    assert _cache_folders(root / ".attnlab_cache") == [new.path.name]  # the stale one is gone
    # a changed label (annotation file) invalidates it as well
    ann = root / "val" / "val_annotations.txt"
    lines = ann.read_text().splitlines()
    first, second = lines[0].split("\t"), lines[1].split("\t")
    first[1], second[1] = second[1], first[1]
    ann.write_text("\n".join(["\t".join(first), "\t".join(second), *lines[2:]]) + "\n")
    relabelled = prepare(root, progress=False)
    assert not relabelled.reused
    assert relabelled.val.labels[:2].tolist() == new.val.labels[:2][::-1].tolist()


def test_interrupted_build_leaves_no_valid_cache(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tiny_imagenet.decode_image_sized
    calls = {"n": 0}

    def dies_midway(*args, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 15:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(tiny_imagenet, "decode_image_sized", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        prepare(root, progress=False, workers=1)
    cache_dir = root / ".attnlab_cache"
    assert _cache_folders(cache_dir) == []  # neither a cache nor a .tmp- leftover
    expected = cache_dir / cache_name("folder", 64, scan(root).fingerprint)
    with pytest.raises(CacheError, match="not found"):
        open_cache(expected)
    monkeypatch.setattr(tiny_imagenet, "decode_image_sized", real)
    rebuilt = prepare(root, progress=False)
    assert not rebuilt.reused and rebuilt.path == expected


def test_killed_build_leftover_is_ignored_and_removed(root: Path) -> None:
    """A build killed hard (no cleanup) leaves a .tmp- folder with files, even a meta.json."""
    good = prepare(root, progress=False)
    shutil.rmtree(good.path)
    cache_dir = root / ".attnlab_cache"
    dead_pid = 2**22 + 12345  # above any pid_max in use: no such process
    with pytest.raises(ProcessLookupError):
        os.kill(dead_pid, 0)
    leftover = cache_dir / f".tmp-{socket.gethostname()}-{dead_pid}-abcd1234"
    leftover.mkdir()
    (leftover / "meta.json").write_text(json.dumps({"format": "attnlab-tiny-imagenet-cache"}))
    (leftover / "train_images.npy").write_bytes(b"\x93NUMPY partial")
    ds = prepare(root, progress=False)
    assert not ds.reused
    assert _cache_folders(cache_dir) == [ds.path.name]


def test_truncated_cache_file_is_detected_and_rebuilt(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = prepare(root, progress=False)
    array = ds.path / "val_images.npy"
    size = array.stat().st_size
    del ds
    with open(array, "r+b") as fh:
        fh.truncate(size - 100)
    with pytest.raises(CacheError, match="val_images.npy"):
        open_cache(array.parent)
    again = prepare(root, progress=True)
    assert not again.reused and again.path == array.parent
    assert "is damaged" in capsys.readouterr().err
    assert array.stat().st_size == size


def test_cache_of_another_source_version_is_refused(root: Path) -> None:
    ds = prepare(root, progress=False)
    with pytest.raises(CacheError, match="built from a different version of the source"):
        open_cache(ds.path, fingerprint="0" * 64)
    meta = json.loads((ds.path / "meta.json").read_text())
    del meta["counts"]
    (ds.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CacheError, match=r"meta.json: incomplete \(KeyError\('counts'\)\)"):
        open_cache(ds.path)
    assert not prepare(root, progress=False).reused  # and prepare rebuilds it


def test_parallel_build_matches_serial(root: Path, tmp_path: Path) -> None:
    serial = prepare(root, tmp_path / "a", progress=False, workers=1)
    parallel = prepare(root, tmp_path / "b", progress=False, workers=2)
    zipped = prepare(make_zip(root, tmp_path / "t.zip"), tmp_path / "c", progress=False, workers=2)
    assert parallel.meta["workers"] == zipped.meta["workers"] == 2
    for split in ("train", "val"):
        for other in (parallel, zipped):
            assert np.array_equal(serial.split(split).images, other.split(split).images)
            assert np.array_equal(serial.split(split).labels, other.split(split).labels)


def test_zip_cache_lives_next_to_the_zip(root: Path, tmp_path: Path) -> None:
    (tmp_path / "dl").mkdir()
    archive = make_zip(root, tmp_path / "dl" / "tiny-imagenet-200.zip")
    packed = prepare(archive, progress=False)
    assert packed.path.parent == tmp_path / "dl" / ".attnlab_cache"
    folder = prepare(root, progress=False)
    assert np.array_equal(packed.train.images, folder.train.images)
    assert np.array_equal(packed.val.labels, folder.val.labels)
    assert prepare(archive, progress=False).reused


def test_undecodable_image_fails_the_build_and_names_every_file(root: Path) -> None:
    index = scan(root)
    bad = [root / index.splits["train"].names[i] for i in (2, 9)]
    for path in bad:
        path.write_bytes(b"not a jpeg")
    with pytest.raises(DataError) as info:
        prepare(root, progress=False)
    lines = str(info.value).splitlines()
    assert lines[0] == "2 images cannot be decoded:"
    assert [line.split(": cannot be decoded")[0].strip() for line in lines[1:]] == [str(p) for p in bad]
    assert _cache_folders(root / ".attnlab_cache") == []


def test_resized_images_are_counted_in_a_warning(root: Path) -> None:
    index = scan(root)
    for i in (0, 3):
        Image.new("RGB", (100, 75), (9, 9, 9)).save(root / index.splits["train"].names[i], "JPEG")
    with pytest.warns(UserWarning, match=r"^2 images were not 64x64 and were resized to it"):
        ds = prepare(root, progress=False)
    assert ds.meta["resized"] == 2 and ds.train.images.shape == (20, 64, 64, 3)


def test_read_only_dataset_needs_a_cache_dir(root: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DataError, match="cannot write the cache there"):
        prepare(root, blocker / "cache", progress=False)


def test_parquet_copy_matches_the_folder(root: Path, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    index = scan(root)
    listed = (root / "wnids.txt").read_text().split()  # HF ClassLabel order: as in wnids.txt
    hf = {"info": {"features": {"image": {"_type": "Image"},
                                "label": {"names": listed, "_type": "ClassLabel"}}}}
    out = tmp_path / "pq" / "data"
    out.mkdir(parents=True)
    for split, fname in (("train", "train-00000-of-00001.parquet"), ("val", "valid-00000-of-00001.parquet")):
        part = index.splits[split]
        images = [{"bytes": (root / n).read_bytes(), "path": n} for n in part.names]
        labels = [listed.index(index.classes[k]) for k in part.labels]
        table = pa.table({"image": images, "label": labels})
        table = table.replace_schema_metadata({"huggingface": json.dumps(hf)})
        pq.write_table(table, out / fname, row_group_size=7)
    from_parquet = prepare(tmp_path / "pq", tmp_path / "c1", progress=False)
    from_folder = prepare(root, tmp_path / "c2", progress=False)
    assert from_parquet.meta["source_kind"] == "parquet" and from_parquet.classes == index.classes
    for split in ("train", "val"):
        assert np.array_equal(from_parquet.split(split).images, from_folder.split(split).images)
        assert np.array_equal(from_parquet.split(split).labels, from_folder.split(split).labels)
