"""ImageFolder train/val trees through the same validation, size policy, cache and loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnlab.data import BatchLoader, DataError, prepare, scan_source, write_synthetic
from attnlab.data.imagefolder import scan_imagefolder

COLOURS = {"zebra": (250, 10, 10), "ant": (10, 250, 10), "moth": (10, 10, 250)}


def _png(path: Path, colour: tuple[int, int, int], size: int = 64, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (size, size), colour)
    (img.convert("L") if mode == "L" else img).save(path)


def write_tree(root: Path) -> Path:
    """3 classes; train: 2 PNGs each (one in a subfolder), one JPEG of another size; val: 1-2 each."""
    for cls, colour in COLOURS.items():
        _png(root / "train" / cls / "b.png", colour)
        _png(root / "train" / cls / "sub" / "a.png", colour)
        _png(root / "val" / cls / "v1.png", colour)
    Image.new("RGB", (80, 48), COLOURS["ant"]).save(root / "train" / "ant" / "c.JPG", quality=95)
    _png(root / "val" / "moth" / "v0.png", COLOURS["moth"], mode="L")  # grayscale -> RGB
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    (root / "train" / "ant" / ".DS_Store").write_bytes(b"junk")
    (root / "train" / "README").write_text("loose file")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "tree")


def _error(root: Path) -> str:
    with pytest.raises(DataError) as info:
        scan_source(root)
    return str(info.value)


def test_labels_are_sorted_train_folders(tree: Path) -> None:
    index = scan_source(tree)
    assert index.kind == "imagefolder" and index.classes == ["ant", "moth", "zebra"]
    assert index.splits["train"].names == [
        "train/ant/b.png", "train/ant/c.JPG", "train/ant/sub/a.png",
        "train/moth/b.png", "train/moth/sub/a.png", "train/zebra/b.png", "train/zebra/sub/a.png"]
    assert index.splits["train"].labels.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert index.splits["val"].names == ["val/ant/v1.png", "val/moth/v0.png", "val/moth/v1.png", "val/zebra/v1.png"]
    assert index.splits["val"].labels.tolist() == [0, 1, 1, 2]
    assert index.notes == ["1 files directly in train/ are ignored (images belong in train/<class>/)",
                           "1 non-image files in class folders are ignored"]


def test_cache_decodes_resizes_and_warns(tree: Path) -> None:
    with pytest.warns(UserWarning, match=r"^1 images were not 64x64 and were resized to it .* e\.g\. .*c\.JPG"):
        ds = prepare(tree, progress=False)
    assert ds.meta["source_kind"] == "imagefolder" and ds.meta["resized"] == 1 and ds.image_size == 64
    assert ds.train.images.shape == (7, 64, 64, 3) and ds.val.images.shape == (4, 64, 64, 3)
    for i, label in enumerate(ds.train.labels):
        colour = COLOURS[ds.classes[label]]
        assert np.abs(ds.train.images[i].astype(int) - colour).max() <= 3  # JPEG's small error
    assert ds.train.images[0, 0, 0].tolist() == [10, 250, 10]  # PNG: exact
    grey = ds.val.images[1]  # the grayscale file became RGB with equal channels
    assert grey[..., 0].tolist() == grey[..., 1].tolist() == grey[..., 2].tolist()
    assert prepare(tree, progress=False).reused


def test_size_argument_resizes_everything(tree: Path) -> None:
    with pytest.warns(UserWarning, match=r"^11 images were not 32x32"):
        ds = prepare(tree, progress=False, size=32)
    assert ds.image_size == 32 and ds.train.images.shape == (7, 32, 32, 3)
    images, labels, _ = next(iter(BatchLoader(ds.train, batch_size=4, train=True, seed=0)))
    assert images.shape == (4, 3, 32, 32) and set(labels.tolist()) <= {0, 1, 2}


def test_val_class_not_in_train(tree: Path) -> None:
    _png(tree / "val" / "yak" / "1.png", (0, 0, 0))
    assert _error(tree) == (
        f"{tree.resolve()}/val/yak: class 'yak' has no folder in train/ (train has 3 classes: ant, moth, "
        "zebra). Labels come from the train folders: rename it to its train class, or remove it."
    )


def test_empty_train_class(tree: Path) -> None:
    (tree / "train" / "newt").mkdir()
    (tree / "train" / "newt" / "list.csv").write_text("x")
    assert _error(tree) == (
        f"{tree.resolve()}/train/newt: holds no images (.jpg, .jpeg, .png, .ppm, .bmp, .pgm, .tif, .tiff, "
        ".webp), but every folder in train/ is a class. Add its images, or remove the folder."
    )


def test_missing_val(tree: Path) -> None:
    import shutil

    shutil.rmtree(tree / "val")
    assert _error(tree) == (
        f"{tree.resolve()}/val: not found; an ImageFolder tree has train/<class>/<image> and "
        "val/<class>/<image>. Add val/<class>/ folders named like the train classes (or split some "
        "train images off into them)."
    )


def test_val_without_images(tmp_path: Path) -> None:
    root = tmp_path / "t"
    _png(root / "train" / "a" / "1.png", (1, 2, 3))
    (root / "val" / "a").mkdir(parents=True)
    assert _error(root) == (f"{root.resolve()}/val: holds no images; an ImageFolder tree has "
                            "train/<class>/<image> and val/<class>/<image>. Put each val image in val/<its class>/.")


def test_undecodable_image_names_file_and_fix(tree: Path) -> None:
    bad = tree / "val" / "ant" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    msg = _error_prepare(tree)
    assert msg.startswith(f"{bad.resolve()}: cannot be decoded as an image (")
    assert msg.endswith("). The file is damaged: copy this file again, or delete it.")


def _error_prepare(root: Path) -> str:
    with pytest.raises(DataError) as info:
        prepare(root, progress=False)
    return str(info.value)


def test_class_without_val_is_a_note(tree: Path) -> None:
    for f in (tree / "val" / "zebra").iterdir():
        f.unlink()
    (tree / "val" / "zebra").rmdir()
    assert "1 classes have no val images (e.g. zebra)" in scan_imagefolder(tree).notes


def test_other_layouts_are_still_detected(tmp_path: Path) -> None:
    tiny = write_synthetic(tmp_path / "tiny", classes=2, train_per_class=2, val_per_class=1, seed=0)
    assert scan_source(tiny).kind == "folder"
    (tiny / "wnids.txt").unlink()  # a damaged Tiny ImageNet copy keeps its own message
    assert "wnids.txt: not found. This is not a Tiny ImageNet root" in _error(tiny)
    (tmp_path / "empty").mkdir()
    assert _error(tmp_path / "empty") == (
        f"{tmp_path / 'empty'}: not a dataset layout attnlab reads. Pass the Tiny ImageNet folder "
        "(holding wnids.txt, train/, val/) or its .zip, a folder with its parquet copy (train-*.parquet, "
        "valid-*.parquet), the extracted cifar-100-python/ folder (train, test, meta), or an ImageFolder "
        "tree (train/<class>/, val/<class>/)."
    )
    assert _error(tmp_path / "nope").startswith(f"{tmp_path / 'nope'}: not found. Pass the Tiny ImageNet")
