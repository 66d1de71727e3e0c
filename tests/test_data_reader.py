"""Tiny ImageNet reader: synthetic round trip, zip = folder, and every malformed-input error."""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnlab.data.synthetic import make_zip, write_synthetic
from attnlab.data.tiny_imagenet import DataError, decode_image, read_split, scan

FOLDER_FIX = "extract the downloaded zip again (or point --root at the .zip itself)"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("syn") / "tiny", classes=3, train_per_class=4,
                           val_per_class=2, seed=3)


@pytest.fixture
def root(pristine: Path, tmp_path: Path) -> Path:
    """A private copy to break."""
    return Path(shutil.copytree(pristine, tmp_path / "tiny"))


def _expected_labels(root: Path) -> tuple[list[str], list[int], list[str], list[int]]:
    """Parse the layout independently of the reader."""
    classes = sorted((root / "wnids.txt").read_text().split())
    train_names, train_labels = [], []
    for k, wnid in enumerate(classes):
        for p in sorted((root / "train" / wnid / "images").iterdir()):
            train_names.append(str(p))
            train_labels.append(k)
    val_names, val_labels = [], []
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
        name, wnid = line.split("\t")[:2]
        val_names.append(str(root / "val" / "images" / name))
        val_labels.append(classes.index(wnid))
    return train_names, train_labels, val_names, val_labels


def test_round_trip_images_and_labels(root: Path) -> None:
    index = scan(root)
    train_names, train_labels, val_names, val_labels = _expected_labels(root)
    assert index.classes == sorted((root / "wnids.txt").read_text().split())
    assert (root / "wnids.txt").read_text().split() != index.classes  # the file is not sorted
    words = dict(line.split("\t") for line in (root / "words.txt").read_text().splitlines())
    assert index.class_names == [words[w] for w in index.classes]
    for split, names, labels in (("train", train_names, train_labels), ("val", val_names, val_labels)):
        images, got = read_split(index, split)
        assert images.dtype == np.uint8 and images.shape == (len(names), 64, 64, 3)
        assert got.dtype == np.int64 and got.tolist() == labels
        for img, path in zip(images, names, strict=True):
            with Image.open(path) as im:
                assert np.array_equal(img, np.asarray(im.convert("RGB")))


def test_zip_reads_like_the_folder(root: Path, tmp_path: Path) -> None:
    archive = make_zip(root, tmp_path / "tiny-imagenet-200.zip")
    with zipfile.ZipFile(archive, "a") as zf:  # what a macOS re-zip adds
        zf.writestr("__MACOSX/tiny-imagenet-200/._wnids.txt", b"junk")
        zf.writestr("tiny-imagenet-200/train/.DS_Store", b"junk")
    folder, packed = scan(root), scan(archive)
    assert packed.classes == folder.classes and packed.class_names == folder.class_names
    for split in ("train", "val"):
        a, la = read_split(folder, split)
        b, lb = read_split(packed, split)
        assert np.array_equal(a, b) and np.array_equal(la, lb)


def test_parent_folder_of_the_extracted_root_is_accepted(root: Path) -> None:
    assert scan(root.parent).classes == scan(root).classes


def test_grayscale_and_cmyk_become_rgb(root: Path) -> None:
    index = scan(root)
    gray = [n for n in index.splits["train"].names if Image.open(root / n).mode == "L"]
    assert len(gray) == 2  # image 1 of classes 0 and 2
    rgb = np.asarray(Image.open(root / gray[0]).convert("RGB"))
    images, _ = read_split(index, "train")
    got = images[index.splits["train"].names.index(gray[0])]
    assert np.array_equal(got, rgb) and np.array_equal(got[..., 0], got[..., 2])

    buf = io.BytesIO()
    Image.new("CMYK", (64, 64), (0, 255, 255, 0)).save(buf, "JPEG")  # pure red in CMYK
    pixels, resized = decode_image(buf.getvalue(), "x.JPEG")
    assert pixels.shape == (64, 64, 3) and not resized
    assert pixels[..., 0].min() > 240 and pixels[..., 1:].max() < 15


def test_stray_files_are_ignored(root: Path) -> None:
    clean = scan(root)
    wnid = clean.classes[0]
    for stray in (f"train/{wnid}/images/.DS_Store", f"train/{wnid}/images/._{wnid}_0.JPEG",
                  f"train/{wnid}/images/notes.txt", "train/.DS_Store", ".DS_Store",
                  "val/images/.DS_Store", "val/images/val_999.JPEG"):
        (root / stray).write_bytes(b"not an image")
    messy = scan(root)
    assert messy.splits["train"].names == clean.splits["train"].names
    assert messy.splits["val"].names == clean.splits["val"].names
    assert (root / "train" / wnid / f"{wnid}_boxes.txt").is_file()  # present, and ignored
    assert messy.notes == ["1 files in val/images are not in val_annotations.txt (ignored)"]


def test_missing_words_txt_falls_back_to_wnids(root: Path) -> None:
    (root / "words.txt").unlink()
    index = scan(root)
    assert index.class_names == index.classes
    assert index.notes == ["words.txt not found: class names are the wnids"]


def test_image_that_is_not_64px_is_resized(root: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (80, 50), (10, 200, 30)).save(buf, "PNG")
    pixels, resized = decode_image(buf.getvalue(), "x.png")
    assert resized and pixels.shape == (64, 64, 3)
    assert np.array_equal(pixels[20, 20], [10, 200, 30])


# ------------------------------------------------------------------------- malformed inputs


def _error(root: Path | str) -> str:
    with pytest.raises(DataError) as info:
        scan(root)
    return str(info.value)


def test_missing_wnids(root: Path) -> None:
    (root / "wnids.txt").unlink()
    assert _error(root) == (
        f"{root}/wnids.txt: not found. This is not a Tiny ImageNet root: pass the folder that holds "
        "wnids.txt, train/ and val/ (or the downloaded .zip). If it is the right folder, the copy is "
        f"incomplete: {FOLDER_FIX}."
    )


def test_missing_wnids_in_zip_names_the_member(root: Path, tmp_path: Path) -> None:
    (root / "wnids.txt").unlink()
    archive = make_zip(root, tmp_path / "t.zip", top="tiny-imagenet-200")
    assert _error(archive) == (
        f"{archive}:tiny-imagenet-200/wnids.txt: not found. This is not a Tiny ImageNet root: pass the folder that holds "
        "wnids.txt, train/ and val/ (or the downloaded .zip). If it is the right folder, the copy is "
        "incomplete: download tiny-imagenet-200.zip again."
    )


def test_damaged_zip(tmp_path: Path) -> None:
    bad = tmp_path / "tiny-imagenet-200.zip"
    bad.write_bytes(b"PK\x03\x04 truncated download")
    assert _error(bad) == (
        f"{bad}: not a readable zip file. The download is damaged or incomplete: "
        "download tiny-imagenet-200.zip again."
    )


def test_missing_root(tmp_path: Path) -> None:
    assert _error(tmp_path / "nope") == (
        f"{tmp_path / 'nope'}: not found or not a dataset. Pass the extracted tiny-imagenet-200 folder "
        "(the one holding wnids.txt) or the downloaded tiny-imagenet-200.zip."
    )


def test_missing_val_annotations(root: Path) -> None:
    (root / "val" / "val_annotations.txt").unlink()
    assert _error(root) == (
        f"{root}/val/val_annotations.txt: not found. Without it the validation labels are unknown. "
        f"The copy is incomplete: {FOLDER_FIX}."
    )


def test_wnid_without_train_folder(root: Path) -> None:
    wnid = sorted((root / "wnids.txt").read_text().split())[1]
    shutil.rmtree(root / "train" / wnid)
    assert _error(root) == (
        f"{root}/train/{wnid}/images: not found, but {wnid} is listed in wnids.txt. The copy is "
        f"incomplete: {FOLDER_FIX}, or remove {wnid} from wnids.txt to train without it."
    )


def test_empty_class(root: Path) -> None:
    wnid = sorted((root / "wnids.txt").read_text().split())[2]
    for p in (root / "train" / wnid / "images").iterdir():
        p.unlink()
    (root / "train" / wnid / "images" / ".DS_Store").write_bytes(b"")
    assert _error(root) == (
        f"{root}/train/{wnid}/images: holds no images, but {wnid} is listed in wnids.txt (an empty "
        f"class). Extract the downloaded zip again (or point --root at the .zip itself), or remove "
        f"{wnid} from wnids.txt."
    )


def test_duplicate_wnid(root: Path) -> None:
    listed = (root / "wnids.txt").read_text().split()
    (root / "wnids.txt").write_text("\n".join(listed + [listed[0]]) + "\n")
    assert _error(root) == (
        f"{root}/wnids.txt line 4: wnid {listed[0]} is listed twice. Delete the duplicate line, "
        f"or {FOLDER_FIX}."
    )


def _rewrite_annotation(root: Path, lineno: int, new: str) -> None:
    path = root / "val" / "val_annotations.txt"
    lines = path.read_text().splitlines()
    lines[lineno - 1] = new
    path.write_text("\n".join(lines) + "\n")


def test_annotation_with_wrong_number_of_columns(root: Path) -> None:
    _rewrite_annotation(root, 3, "val_2.JPEG\tn00000001 3 4 5 6")  # spaces instead of tabs
    assert _error(root) == (
        f"{root}/val/val_annotations.txt line 3: expected 6 tab-separated columns (file, wnid, x0, "
        f"y0, x1, y1), found 2. The file is damaged: {FOLDER_FIX}."
    )


def test_annotation_wnid_not_in_wnids(root: Path) -> None:
    _rewrite_annotation(root, 2, "val_1.JPEG\tn99999999\t1\t2\t3\t4")
    assert _error(root) == (
        f"{root}/val/val_annotations.txt line 2: wnid n99999999 is not in wnids.txt. The two files "
        f"come from different copies: {FOLDER_FIX}."
    )


def test_annotated_file_absent(root: Path) -> None:
    (root / "val" / "images" / "val_4.JPEG").unlink()
    assert _error(root) == (
        f"{root}/val/images/val_4.JPEG: listed in val/val_annotations.txt (line 5) but not found. "
        f"Extract the downloaded zip again (or point --root at the .zip itself), or delete that line."
    )


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_undecodable_image(root: Path, damage: str) -> None:
    index = scan(root)  # structure is fine: decoding finds it
    bad = root / index.splits["val"].names[1]
    data = bad.read_bytes()
    bad.write_bytes(b"\x00" * 100 if damage == "garbage" else data[: len(data) // 3])
    with pytest.raises(DataError) as info:
        read_split(index, "val")
    message = str(info.value)
    assert message.startswith(f"{bad}: cannot be decoded as an image (")
    assert message.endswith("). The file is damaged: get a fresh copy of the dataset, or delete this "
                            "file (and its line in val/val_annotations.txt if it is a val image).")


def test_a_replaced_zip_is_read_afresh(root: Path, tmp_path: Path) -> None:
    archive = make_zip(root, tmp_path / "t.zip")
    before, _ = read_split(scan(archive), "val")
    first = root / scan(root).splits["val"].names[0]
    Image.new("RGB", (64, 64), (7, 7, 7)).save(first, "PNG")
    make_zip(root, archive)  # same path, new content
    after, _ = read_split(scan(archive), "val")
    assert not np.array_equal(before[0], after[0])
    assert np.array_equal(after[0], np.full((64, 64, 3), 7, np.uint8))
