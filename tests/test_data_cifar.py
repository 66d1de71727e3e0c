"""CIFAR-100 (python pickles) through the same validation, uint8 cache and loader."""

from __future__ import annotations

import collections
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from attnlab.data import AugmentConfig, BatchLoader, DataError, prepare, scan_source
from attnlab.data.cifar import scan_cifar

NAMES = ["apple", "bear", "cloud"]  # sorted, as in the real meta file


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> the file's rows: the red plane, then green, then blue, each row-major."""
    planes = [images[..., c].reshape(len(images), -1) for c in range(3)]
    return np.concatenate(planes, axis=1).astype(np.uint8)


def write_cifar(folder: Path, n_train: int = 12, n_test: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """A fake cifar-100-python/ folder (bytes keys, numpy data, as the real pickles)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, len(NAMES), size=n)]
        with open(folder / name, "wb") as fh:
            pickle.dump({b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
                         b"fine_labels": labels, b"coarse_labels": [0] * n,
                         b"data": cifar_rows(images)}, fh, protocol=2)
        out[name], out[f"{name}_labels"] = images, np.asarray(labels)
    with open(folder / "meta", "wb") as fh:
        pickle.dump({b"fine_label_names": [n.encode() for n in NAMES],
                     b"coarse_label_names": [b"all"]}, fh, protocol=2)
    return out


@pytest.fixture
def cifar(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "cifar-100-python"
    return root, write_cifar(root)


def _error(root: Path, **kw) -> str:
    with pytest.raises(DataError) as info:
        prepare(root, progress=False, **kw)
    return str(info.value)


def test_cache_holds_the_images_and_labels(cifar: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, data = cifar
    ds = prepare(root, progress=False)
    assert ds.image_size == 32 and ds.classes == NAMES and ds.class_names == NAMES
    assert ds.meta["source_kind"] == "cifar100" and ds.meta["counts"] == {"train": 12, "val": 6}
    assert np.array_equal(ds.train.images, data["train"]) and np.array_equal(ds.val.images, data["test"])
    assert ds.train.labels.tolist() == data["train_labels"].tolist()
    assert ds.val.labels.tolist() == data["test_labels"].tolist()  # the test split is val
    assert prepare(root, progress=False).reused


def test_plane_order_and_row_major_pixels(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write_cifar(root, n_train=2, n_test=1)
    with open(root / "train", "rb") as fh:
        obj = pickle.load(fh, encoding="bytes")
    row = np.zeros(3072, dtype=np.uint8)
    row[1] = 200           # red plane, index 1 = row 0, column 1
    row[1024 + 32] = 100   # green plane, index 32 = row 1, column 0
    row[2048 + 1023] = 50  # blue plane, last pixel
    obj[b"data"][0] = row
    with open(root / "train", "wb") as fh:
        pickle.dump(obj, fh)
    img = prepare(root, progress=False).train.images[0]
    assert img[0, 1].tolist() == [200, 0, 0] and img[1, 0].tolist() == [0, 100, 0]
    assert img[31, 31].tolist() == [0, 0, 50] and int(img.sum()) == 350


def test_found_from_the_parent_folder(cifar: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = cifar
    index = scan_source(root.parent)
    assert index.kind == "cifar100" and index.location == root.resolve()
    assert len(index.splits["train"]) == 12


def test_other_sizes_are_refused_with_the_fix(cifar: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = cifar
    assert prepare(root, progress=False, size=32).image_size == 32
    assert _error(root, size=64) == (
        f"{root.resolve()}: CIFAR-100 images are 32x32 and are cached at that size, but size 64 was "
        "asked for. Ask for 32 (data.image_size: 32, or --size 32) and enlarge on the device instead: "
        "data.augment.train_size: 64 trains and evaluates at 64x64 (ResNet-50 leaves layer4 at 1x1 "
        "from 32x32, which SimAM refuses)."
    )


def test_loader_enlarges_on_the_device(cifar: tuple[Path, dict[str, np.ndarray]]) -> None:
    ds = prepare(cifar[0], progress=False)
    loader = BatchLoader(ds.val, batch_size=4, train=False, augment=AugmentConfig(train_size=64))
    images, labels, _ = next(iter(loader))
    assert images.shape == (4, 3, 64, 64) and labels.tolist() == ds.val.labels[:4].tolist()


def test_simam_at_32px_fails_clearly_and_64px_works() -> None:
    from attnlab import create_model

    model = create_model("hybrid", backbone="resnet18", num_classes=3,
                         attention_kwargs={"ema": {"factor": 8}}).eval()
    with torch.no_grad(), pytest.raises(ValueError) as info:
        model(torch.zeros(1, 3, 32, 32))  # layer4 is 1x1
    assert "got 1x1" in str(info.value) and "use a larger input size" in str(info.value)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 3)


# ------------------------------------------------------------------------- malformed inputs

REDO = "download cifar-100-python.tar.gz again and extract it"


def test_missing_meta(cifar: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = cifar
    (root / "meta").unlink()
    assert _error(root) == (f"{root.resolve()}/meta: not found. A CIFAR-100 folder holds train, test "
                            f"and meta: {REDO}.")


def test_damaged_pickle(cifar: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = cifar
    (root / "test").write_bytes(b"\x80\x02}q\x00(truncated")
    msg = _error(root)
    assert msg.startswith(f"{root.resolve()}/test: cannot be read as a CIFAR-100 pickle (")
    assert msg.endswith(f"). The file is damaged or belongs to another dataset: {REDO}.")


def test_pickle_referring_to_other_code_is_refused(cifar: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = cifar
    with open(root / "meta", "wb") as fh:
        pickle.dump(collections.OrderedDict(fine_label_names=NAMES), fh)
    assert "refers to collections.OrderedDict, which a CIFAR pickle never does" in _error(root)


def test_wrong_data_shape(cifar: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = cifar
    with open(root / "train", "wb") as fh:
        pickle.dump({b"data": np.zeros((4, 1024), np.uint8), b"fine_labels": [0] * 4}, fh)
    assert _error(root) == (f"{root.resolve()}/train: b'data' holds uint8(4, 1024), expected uint8 "
                            f"(N, 3072) (32x32 RGB planes, one image per row). The file is damaged: {REDO}.")


def test_label_count_and_range(cifar: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = cifar
    rows = np.zeros((3, 3072), np.uint8)
    with open(root / "test", "wb") as fh:
        pickle.dump({b"data": rows, b"fine_labels": [0, 1]}, fh)
    assert _error(root) == (f"{root.resolve()}/test: 2 fine_labels for 3 images; they must match one to "
                            f"one. The file is damaged: {REDO}.")
    with open(root / "test", "wb") as fh:
        pickle.dump({b"data": rows, b"fine_labels": [0, 3, 1]}, fh)
    assert _error(root) == (f"{root.resolve()}/test: fine label 3 (image 1) is not a class index: meta "
                            f"names 3 classes (0..2). The files come from different copies: {REDO}.")


def test_missing_key_names_the_keys(cifar: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = cifar
    with open(root / "train", "wb") as fh:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}, fh)
    assert _error(root) == (f"{root.resolve()}/train: has no b'fine_labels' entry (keys: data, labels). "
                            f"This is not the CIFAR-100 python version: {REDO}.")


def test_changed_file_rebuilds_the_cache(cifar: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = cifar
    first = prepare(root, progress=False)
    write_cifar(root.parent / "other", seed=5)
    (root / "train").write_bytes((root.parent / "other" / "train").read_bytes())
    again = prepare(root, progress=False)
    assert not again.reused and again.path != first.path
    assert scan_cifar(root).fingerprint == again.meta["fingerprint"]
