"""Weakly supervised localization: boxes in the data, box-from-map and IoU, the metric, the report."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnlab.data.cache import open_cache, prepare
from attnlab.data.synthetic import _ClassStyle, _render, make_zip, write_synthetic
from attnlab.data.tiny_imagenet import DataError, read_boxes, read_split, scale_boxes, scan

FOLDER_FIX = "extract the downloaded zip again (or point --root at the .zip itself)"
JPEG_NOISE = 60  # |with shape - without| above this is the shape, not JPEG noise (measured: <= 35 vs >= 85)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("syn") / "tiny", classes=4, train_per_class=3,
                           val_per_class=5, seed=2)


@pytest.fixture
def root(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "tiny"))


def _annotated_boxes(root: Path) -> np.ndarray:
    """val_annotations.txt's boxes, parsed independently of the reader."""
    lines = (root / "val" / "val_annotations.txt").read_text().splitlines()
    return np.asarray([[int(v) for v in line.split("\t")[2:]] for line in lines], dtype=np.int64)


# ------------------------------------------------------------------------- boxes in the data


@pytest.mark.parametrize("as_zip", [False, True])
def test_boxes_round_trip_through_the_reader_and_the_cache(root: Path, tmp_path: Path, as_zip: bool) -> None:
    expected = _annotated_boxes(root)
    source = make_zip(root, tmp_path / "tiny-imagenet-200.zip") if as_zip else root
    index = scan(source)
    val = index.splits["val"]
    assert np.array_equal(val.boxes, expected) and val.boxes.dtype == np.int64
    assert index.splits["train"].boxes is None  # the train boxes files are not read
    assert np.array_equal(read_boxes(source), expected)
    ds = prepare(source, progress=False)
    assert np.array_equal(ds.val.boxes, expected) and ds.train.boxes is None
    assert ds.meta["boxes"] == ["val"] and ds.meta["version"] == 2
    assert (ds.path / "val_boxes.npy").is_file()
    again = open_cache(ds.path)
    assert np.array_equal(again.val.boxes, expected)
    assert prepare(source, progress=False).reused


def test_boxes_are_scaled_to_the_cached_size(tmp_path: Path) -> None:
    small = write_synthetic(tmp_path / "s32", classes=2, train_per_class=1, val_per_class=3, size=32, seed=0)
    native = _annotated_boxes(small)  # in the 32x32 files' pixels
    with pytest.warns(UserWarning, match="resized"):
        up = prepare(small, progress=False, size=64).val.boxes
    assert np.array_equal(up, np.stack([native[:, 0] * 2, native[:, 1] * 2, native[:, 2] * 2 + 1,
                                        native[:, 3] * 2 + 1], axis=1))  # each source pixel is 2x2
    with pytest.warns(UserWarning, match="resized"):
        down = prepare(small, progress=False, size=16).val.boxes
    assert np.array_equal(down, np.stack([native[:, 0] // 2, native[:, 1] // 2, native[:, 2] // 2,
                                          native[:, 3] // 2], axis=1))
    assert np.array_equal(read_boxes(small, size=64), up)
    # by hand: pixels 3..5 of 10 cover [0.3, 0.6) of the side: 6..11 of 20, 0..1 of 4 (outwards)
    assert scale_boxes([[3, 0, 5, 9]], [[10, 10]], 20).tolist() == [[6, 0, 11, 19]]
    assert scale_boxes([[3, 0, 5, 9]], [[10, 10]], 4).tolist() == [[1, 0, 2, 3]]


def test_an_old_cache_without_boxes_is_rebuilt(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    ds = prepare(root, progress=False)
    meta = json.loads((ds.path / "meta.json").read_text())
    meta["version"] = 1
    del meta["boxes"]
    (ds.path / "meta.json").write_text(json.dumps(meta))
    (ds.path / "val_boxes.npy").unlink()
    again = prepare(root, progress=True)
    assert not again.reused and np.array_equal(again.val.boxes, _annotated_boxes(root))
    assert "is outdated" in capsys.readouterr().err


def test_a_damaged_boxes_file_is_detected(root: Path) -> None:
    from attnlab.data.cache import CacheError

    ds = prepare(root, progress=False)
    boxes = np.load(ds.path / "val_boxes.npy")
    boxes[1] = [5, 5, 70, 10]  # past the 64x64 image
    np.save(ds.path / "val_boxes.npy", boxes)
    with pytest.raises(CacheError, match=r"val_boxes.npy: box 1 \[5, 5, 70, 10\] is not inside a 64x64 image"):
        open_cache(ds.path)
    (ds.path / "val_boxes.npy").unlink()
    with pytest.raises(CacheError, match="val_boxes.npy"):
        open_cache(ds.path)
    assert np.array_equal(prepare(root, progress=False).val.boxes, _annotated_boxes(root))


def _rewrite_box(root: Path, lineno: int, box: str) -> None:
    path = root / "val" / "val_annotations.txt"
    lines = path.read_text().splitlines()
    cols = lines[lineno - 1].split("\t")
    lines[lineno - 1] = "\t".join(cols[:2] + box.split())
    path.write_text("\n".join(lines) + "\n")


ORDER = "; a box is x0, y0, x1, y1 with x0 <= x1 and y0 <= y1"


@pytest.mark.parametrize(("box", "fault"), [
    ("1 2 x 4", "is not four integers (x0, y0, x1, y1 in pixels)"),
    ("1 2 3.5 4", "is not four integers (x0, y0, x1, y1 in pixels)"),
    ("1 2 3_0 4", "is not four integers (x0, y0, x1, y1 in pixels)"),
    ("9 2 3 4", "has x1 < x0" + ORDER),
    ("1 9 3 4", "has y1 < y0" + ORDER),
    ("-1 2 3 4", "lies outside the image (pixel coordinates start at 0)"),
])
def test_a_malformed_box_names_the_file_and_line(root: Path, box: str, fault: str) -> None:
    _rewrite_box(root, 3, box)
    with pytest.raises(DataError) as info:
        scan(root)
    assert str(info.value) == (f"{root}/val/val_annotations.txt line 3: the box ({', '.join(box.split())}) "
                               f"{fault}. The file is damaged: {FOLDER_FIX}.")


def test_a_box_past_the_image_is_refused_by_the_cache_build(root: Path) -> None:
    _rewrite_box(root, 4, "10 10 64 20")  # the 64x64 image's last column is 63
    scan(root)  # the size is only known once the image is decoded
    with pytest.raises(DataError) as info:
        prepare(root, progress=False)
    assert str(info.value) == (
        f"{root}/val/val_annotations.txt line 4: the box (10, 10, 64, 20) lies outside val_3.JPEG, which is "
        f"64x64 pixels (x0..x1 in 0..63, y0..y1 in 0..63). The file is damaged: {FOLDER_FIX}."
    )
    with pytest.raises(DataError, match="line 4: the box"):
        read_boxes(root)
    assert not list((root / ".attnlab_cache").glob("*"))  # nothing half-built is left


def test_the_box_frame_is_each_images_own_size(root: Path) -> None:
    """A val image that is not 64x64 is resized; its box is checked and scaled in its own frame."""
    buf = io.BytesIO()
    Image.new("RGB", (128, 32), (10, 200, 30)).save(buf, "PNG")
    (root / "val" / "images" / "val_2.JPEG").write_bytes(buf.getvalue())
    _rewrite_box(root, 3, "64 8 127 15")  # the right half, rows 8..15 of the 128x32 image
    with pytest.warns(UserWarning, match="resized"):
        ds = prepare(root, progress=False)
    assert ds.val.boxes[2].tolist() == [32, 16, 63, 31]


# ------------------------------------------------------------------------- synthetic boxes


def _assert_bounds(diff: np.ndarray, box: np.ndarray, threshold: float, where: str) -> None:
    """The pixels where ``diff`` > threshold lie inside ``box`` and touch each of its edges."""
    x0, y0, x1, y1 = (int(v) for v in box)
    ys, xs = np.nonzero(diff > threshold)
    assert len(xs), where
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (x0, y0, x1, y1), where


def test_each_synthetic_box_bounds_its_drawn_object_exactly() -> None:
    """Before encoding: the pixels that differ from the shape-less image are the shape's box."""
    for k, shape in enumerate(("disc", "square", "triangle", "ring")):
        style = _ClassStyle(k, 4)
        for i in range(6):
            with_shape, box = _render(style, np.random.default_rng([7, k, i]), 64)
            without, box2 = _render(style, np.random.default_rng([7, k, i]), 64, shape=False)
            assert style.shape == shape and box == box2
            diff = np.abs(with_shape.astype(int) - without.astype(int)).max(axis=-1)
            _assert_bounds(diff, np.asarray(box), 0, f"{shape} {i}")


@pytest.mark.parametrize("size", [64, 32])
def test_synthetic_boxes_bound_the_object_after_jpeg_and_in_the_cache(tmp_path: Path, size: int) -> None:
    kw = dict(classes=4, train_per_class=3, val_per_class=4, size=size, seed=5)
    root = write_synthetic(tmp_path / "a", **kw)
    bare = write_synthetic(tmp_path / "b", shapes=False, **kw)
    assert (root / "val" / "val_annotations.txt").read_text() == (bare / "val" / "val_annotations.txt").read_text()
    boxes = _annotated_boxes(root)
    # the decoded JPEG files (val image 0 is grayscale), at their own size
    images, _ = read_split(root, "val", size=size)
    backgrounds, _ = read_split(bare, "val", size=size)
    for j, box in enumerate(boxes):
        diff = np.abs(images[j].astype(int) - backgrounds[j].astype(int)).max(axis=-1)
        _assert_bounds(diff, box, JPEG_NOISE, f"val_{j}.JPEG")
    for wnid in (root / "wnids.txt").read_text().split():  # the train boxes files too
        lines = (root / "train" / wnid / f"{wnid}_boxes.txt").read_text().splitlines()
        for line in lines:
            name, *coords = line.split("\t")
            a = np.asarray(Image.open(root / "train" / wnid / "images" / name).convert("RGB"), dtype=int)
            b = np.asarray(Image.open(bare / "train" / wnid / "images" / name).convert("RGB"), dtype=int)
            _assert_bounds(np.abs(a - b).max(axis=-1), np.asarray(coords, dtype=int), JPEG_NOISE, name)
    # the cached arrays, at the files' own size
    cached = prepare(root, progress=False, size=size).val
    cached_bare = prepare(bare, progress=False, size=size).val
    assert np.array_equal(cached.boxes, boxes)
    for j, box in enumerate(cached.boxes):
        diff = np.abs(cached.images[j].astype(int) - cached_bare.images[j].astype(int)).max(axis=-1)
        _assert_bounds(diff, box, JPEG_NOISE, f"cached val {j}")
