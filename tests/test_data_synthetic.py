"""The synthetic twin: the official layout exactly, reproducible, structured, and learnable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from attnlab.data.cache import prepare
from attnlab.data.loader import AugmentConfig, BatchLoader
from attnlab.data.synthetic import write_synthetic
from attnlab.data.tiny_imagenet import scan


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_official_layout(tmp_path: Path) -> None:
    root = write_synthetic(tmp_path / "s", classes=4, train_per_class=3, val_per_class=2, size=32, seed=0)
    assert root == tmp_path / "s"
    wnids = (root / "wnids.txt").read_text().splitlines()
    assert len(wnids) == 4 and all(w.startswith("n") and len(w) == 9 and w[1:].isdigit() for w in wnids)
    words = dict(line.split("\t") for line in (root / "words.txt").read_text().splitlines())
    assert set(wnids) < set(words)  # like the official file, it names more wnids than the classes
    for w in wnids:
        images = sorted(p.name for p in (root / "train" / w / "images").iterdir())
        assert images == [f"{w}_{i}.JPEG" for i in range(3)]
        boxes = (root / "train" / w / f"{w}_boxes.txt").read_text().splitlines()
        assert [b.split("\t")[0] for b in boxes] == images and all(len(b.split("\t")) == 5 for b in boxes)
        for name in images:
            with Image.open(root / "train" / w / "images" / name) as im:
                assert im.format == "JPEG" and im.size == (32, 32)
    ann = [line.split("\t") for line in (root / "val" / "val_annotations.txt").read_text().splitlines()]
    assert [a[0] for a in ann] == [f"val_{j}.JPEG" for j in range(8)]
    assert all(len(a) == 6 for a in ann) and sorted(a[1] for a in ann) == sorted(wnids * 2)
    assert sorted(p.name for p in (root / "val" / "images").iterdir()) == sorted(a[0] for a in ann)
    for a in ann:  # boxes are inside the image and ordered
        x0, y0, x1, y1 = map(int, a[2:])
        assert 0 <= x0 <= x1 < 32 and 0 <= y0 <= y1 < 32


def test_a_few_grayscale_jpegs(tmp_path: Path) -> None:
    root = write_synthetic(tmp_path / "s", classes=5, train_per_class=4, val_per_class=2)
    modes = [Image.open(p).mode for p in sorted(root.rglob("*.JPEG"))]
    assert modes.count("L") == 3 + 1 and modes.count("RGB") == len(modes) - 4  # classes 0, 2, 4 + val_0


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    kw = dict(classes=3, train_per_class=3, val_per_class=1)
    a = _digest(write_synthetic(tmp_path / "a", seed=4, **kw))
    b = _digest(write_synthetic(tmp_path / "b", seed=4, **kw))
    c = _digest(write_synthetic(tmp_path / "c", seed=5, **kw))
    assert a == b != c


def test_images_are_structured_not_flat(tmp_path: Path) -> None:
    root = write_synthetic(tmp_path / "s", classes=6, train_per_class=5, val_per_class=1)
    ds = prepare(root, progress=False)
    images = ds.train.images.astype(np.float32)
    per_image_std = images.reshape(len(images), -1, 3).std(axis=1).mean(axis=1)
    assert per_image_std.min() > 20  # gratings and shapes, not one colour
    # images of one class differ from each other (position, phase, size, noise)
    first = images[ds.train.labels == 0]
    assert np.abs(first[0] - first[1]).mean() > 10


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^need classes >= 1, train_per_class >= 1, val_per_class >= 1 "
                                         r"and size >= 8; got 3, 5, 0, 64$"):
        write_synthetic(tmp_path / "s", classes=3, train_per_class=5, val_per_class=0)




def test_a_small_cnn_learns_it_well_above_chance(tmp_path: Path, one_thread: None) -> None:
    """The demo's promise at a tiny scale: a few CPU epochs reach far above 1/K."""
    root = write_synthetic(tmp_path / "s", classes=8, train_per_class=24, val_per_class=8, size=32, seed=0)
    ds = prepare(root, progress=False, size=32)
    assert len(scan(root).splits["val"]) == 64
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 8),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    train = BatchLoader(ds.train, batch_size=32, train=True, seed=0, augment=AugmentConfig(crop_padding=2))
    for epoch in range(8):
        train.set_epoch(epoch)
        model.train()
        for x, y, _ in train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y, _ in BatchLoader(ds.val, batch_size=64, train=False):
            correct += (model(x).argmax(1) == y).sum().item()
    print(f"val accuracy {correct / 64:.3f}")
    assert correct / 64 > 0.5  # chance is 0.125
