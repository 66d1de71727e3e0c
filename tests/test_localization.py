"""Weakly supervised localization: boxes in the data, box-from-map and IoU, the metric, the report."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnlab.data.cache import CachedSplit, open_cache, prepare
from attnlab.data.synthetic import _ClassStyle, _render, make_zip, write_synthetic
from attnlab.data.tiny_imagenet import DataError, read_boxes, read_split, scale_boxes, scan
from attnlab.report.localization import (
    NO_BOX,
    SWEEP,
    THRESHOLD,
    box_from_map,
    box_iou,
    boxes_from_maps,
    localize,
)

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


# ------------------------------------------------------------------------- box from map, IoU


def test_box_from_map_takes_the_largest_component() -> None:
    cam = np.zeros((10, 12))
    cam[1:3, 1:3] = 0.9  # 4 pixels
    cam[5:8, 6:10] = 0.5  # 12 pixels: the larger blob
    assert box_from_map(cam, 0.2).tolist() == [6, 5, 9, 7]
    assert box_from_map(cam, 0.6).tolist() == [1, 1, 2, 2]  # only the small blob reaches 0.6
    assert box_from_map(cam, 0.5).tolist() == [6, 5, 9, 7]  # >=: a pixel at the threshold counts
    assert box_from_map(cam, 0.95).tolist() == [-1, -1, -1, -1]  # nothing reaches it: no box
    diagonal = np.zeros((6, 6))
    diagonal[[0, 1, 2], [0, 1, 2]] = 1.0  # touching at corners: one 8-connected component
    diagonal[4, 4:6] = 1.0
    assert box_from_map(diagonal, 0.5).tolist() == [0, 0, 2, 2]
    tie = np.zeros((5, 9))
    tie[3, 5:7] = 1.0
    tie[0, 0:2] = 1.0  # the same size, met first row by row
    assert box_from_map(tie, 0.5).tolist() == [0, 0, 1, 0]
    stacked = boxes_from_maps(np.stack([cam, np.zeros_like(cam)]), [0.2, 0.6])
    assert stacked.shape == (2, 2, 4) and stacked[0, 1].tolist() == [1, 1, 2, 2]
    assert stacked[1].tolist() == [[-1, -1, -1, -1]] * 2


def test_iou_of_known_boxes() -> None:
    assert box_iou([0, 0, 3, 3], [0, 0, 3, 3]) == 1.0
    assert box_iou([0, 0, 1, 1], [1, 1, 2, 2]) == pytest.approx(1 / 7)  # 1 shared pixel of 4 + 4 - 1
    assert box_iou([0, 0, 3, 3], [0, 0, 1, 1]) == pytest.approx(4 / 16)
    assert box_iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0
    assert box_iou([0, 0, 9, 4], [5, 0, 14, 4]) == pytest.approx(25 / 75)
    assert box_iou(NO_BOX, [0, 0, 3, 3]) == 0.0 and box_iou(NO_BOX, NO_BOX) == 0.0
    many = box_iou(np.array([[[0, 0, 3, 3], [0, 0, 1, 1]]]), np.array([[0, 0, 3, 3]])[:, None])
    assert many.shape == (1, 2) and many.tolist() == [[1.0, 0.25]]


# ------------------------------------------------------------------------- the metric


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("data") / "tiny", classes=4, train_per_class=6,
                           val_per_class=6, size=64, seed=1)


def _components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """8-connected components by flood fill, in raster order of their first pixel."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    out = []
    for y, x in zip(*np.nonzero(mask), strict=True):
        if seen[y, x]:
            continue
        seen[y, x] = True
        stack, pixels = [(int(y), int(x))], []
        while stack:
            cy, cx = stack.pop()
            pixels.append((cy, cx))
            for ny in (cy - 1, cy, cy + 1):
                for nx in (cx - 1, cx, cx + 1):
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        out.append(pixels)
    return out


def _brute_iou(cam: np.ndarray, threshold: float, truth: np.ndarray) -> float:
    parts = _components(cam >= threshold)
    if not parts:
        return 0.0
    largest = max(parts, key=len)  # the first of the largest
    ys, xs = zip(*largest, strict=True)
    pred = {(x, y) for x in range(min(xs), max(xs) + 1) for y in range(min(ys), max(ys) + 1)}
    x0, y0, x1, y1 = (int(v) for v in truth)
    true = {(x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)}
    return len(pred & true) / len(pred | true)


def test_gt_known_loc_equals_a_brute_force_recomputation(data: Path, one_thread: None) -> None:
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from attnlab.data.loader import BatchLoader
    from attnlab.models import create_model

    val = prepare(data, progress=False).val
    model = create_model("hybrid", backbone="resnet18", num_classes=4, attention_kwargs={"ema": {"factor": 8}}).eval()
    loc = localize(model, val, batch_size=10)  # batches of 10, 10, 4
    assert len(loc) == len(val) == 24 and loc.threshold == THRESHOLD and loc.layer_size == (2, 2)
    assert loc.thresholds.tolist() == list(SWEEP) and np.array_equal(loc.gt_boxes, val.boxes)
    x, y, _ = next(iter(BatchLoader(val, batch_size=len(val), train=False)))
    with torch.no_grad():
        assert np.array_equal(loc.pred, model(x).argmax(dim=1).numpy())
    cam = GradCAM(model=model, target_layers=[model.layer4])
    checked = [0.2, 0.5, 0.8]
    brute = np.zeros((len(val), len(checked)))
    for i in range(len(val)):  # one image at a time, GT class, own components and IoU
        single = cam(input_tensor=x[i:i + 1], targets=[ClassifierOutputTarget(int(y[i]))])[0]
        brute[i] = [_brute_iou(single, t, val.boxes[i]) for t in checked]
    cam.activations_and_grads.release()
    np.testing.assert_allclose(loc.iou_gt[:, [SWEEP.index(t) for t in checked]], brute, rtol=0, atol=1e-12)
    for iou_min in (0.5, 0.3, 0.1):
        expected = brute[:, 0] >= iou_min
        assert np.array_equal(loc.gt_known_correct(iou_min=iou_min), expected)
        assert np.array_equal(loc.top1_loc_correct(iou_min=iou_min), expected & (loc.pred == val.labels))
    assert loc.gt_known_correct(iou_min=0.1).any()  # the check is not all-zero
    gt_curve, top1_curve = loc.sweep(0.1)
    assert gt_curve[SWEEP.index(0.2)] == pytest.approx(np.mean(brute[:, 0] >= 0.1))
    assert np.all(top1_curve <= gt_curve)


def test_localize_at_the_runs_input_size(data: Path, one_thread: None) -> None:
    from attnlab.models import create_model

    val = prepare(data, progress=False).val
    model = create_model("baseline", backbone="resnet18", num_classes=4).eval()
    loc = localize(model, val, input_size=128, threshold=0.33, batch_size=32)
    assert loc.input_size == 128 and loc.layer_size == (4, 4) and loc.threshold == 0.33
    assert 0.33 in loc.thresholds.tolist() and len(loc.thresholds) == len(SWEEP) + 1
    assert np.array_equal(loc.gt_boxes, scale_boxes(val.boxes, np.full((len(val), 2), 64), 128))
    assert loc.box_gt.max() <= 127 and loc.box_pred.max() <= 127
    same = loc.pred == val.labels
    assert np.array_equal(loc.box_pred[same], loc.box_gt[same])  # right class: the same map
    with pytest.raises(ValueError, match="no boxes"):
        localize(model, CachedSplit(val.images, val.labels))


# ------------------------------------------------------------------------- the report


@pytest.fixture(scope="module")
def ablation(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """baseline and hybrid, seeds 0 and 1, one epoch each (resnet18, CPU), reported once with
    localization (so each run holds its localization_final.npz)."""
    import torch

    from attnlab.config import from_dict
    from attnlab.report import write_report
    from attnlab.study.grid import run_grid

    out = tmp_path_factory.mktemp("abl") / "ablation"
    cfg = from_dict({
        "variants": ["baseline", "hybrid"], "seeds": [0, 1], "output_dir": str(out),
        "model": {"backbone": "resnet18", "attention": {"ema": {"factor": 8}}},
        "data": {"root": str(data), "batch_size": 8, "eval_batch_size": 24},
        "train": {"epochs": 1, "lr": 0.02, "device": "cpu", "progress": False},
    })
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_grid(cfg, out, log=lambda *_: None)
        write_report(out, data_root=data, n_boot=100, echo=False, make_figures=False)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture
def folder(ablation: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ablation, tmp_path / "ablation"))


def _stored(run: Path, policy: str = "final") -> dict[str, np.ndarray]:
    with np.load(run / f"localization_{policy}.npz") as npz:
        return {k: npz[k] for k in npz.files}


def test_report_writes_localization_per_variant(folder: Path, data: Path, one_thread: None) -> None:
    import pandas as pd

    from attnlab.report import write_report
    from attnlab.report.attention_maps import load_checkpoint_model

    out = write_report(folder, data_root=data, n_boot=300, echo=False, n_images=2, loc_images=3)
    for name in ("localization.csv", "localization_sweep.csv", "localization_statistics.csv",
                 "figures/localization_boxes.png"):
        assert out["paths"][name] == folder / name and (folder / name).is_file()
    png = (folder / "figures" / "localization_boxes.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    table = pd.read_csv(folder / "localization.csv")
    assert table["variant"].tolist() == ["baseline", "hybrid"] and table["n_seeds"].tolist() == [2, 2]
    assert set(table["threshold"]) == {0.2} and set(table["iou_min"]) == {0.5} and set(table["n_images"]) == {24}
    assert set(table["layer"]) == {"layer4"} and set(table["method"]) == {"Grad-CAM (pytorch-grad-cam)"}
    assert set(table["layer_size"]) == {"2x2"} and set(table["input_size"]) == {64}
    at = SWEEP.index(0.2)
    for variant, row in table.set_index("variant").iterrows():  # the table from the per-image files
        runs = [_stored(folder / "runs" / f"{variant}_seed{s}") for s in (0, 1)]
        gt = [100 * np.mean(r["iou_gt"][:, at] >= 0.5) for r in runs]
        t1 = [100 * np.mean((r["iou_gt"][:, at] >= 0.5) & (r["pred"] == r["labels"])) for r in runs]
        assert row["gt_known_loc_mean_pct"] == pytest.approx(np.mean(gt))
        assert row["gt_known_loc_std_pct"] == pytest.approx(np.std(gt, ddof=1))
        assert row["top1_loc_mean_pct"] == pytest.approx(np.mean(t1))
        assert row["top1_loc_std_pct"] == pytest.approx(np.std(t1, ddof=1))
        curve = np.mean([np.mean(r["iou_gt"] >= 0.5, axis=0) for r in runs], axis=0) * 100
        assert row["best_gt_known_loc_mean_pct"] == pytest.approx(curve.max())
        assert row["best_threshold"] == pytest.approx(SWEEP[int(np.argmax(curve))])
        assert row["best_gt_known_loc_mean_pct"] >= row["gt_known_loc_mean_pct"] >= row["top1_loc_mean_pct"]
        assert row["top1_mean_pct"] == pytest.approx(np.mean([100 * np.mean(r["pred"] == r["labels"]) for r in runs]))
    # a stored file is what localize gives for that checkpoint
    run = folder / "runs" / "hybrid_seed0"
    fresh = localize(load_checkpoint_model(run / "checkpoints" / "last.pt"), prepare(data, progress=False).val)
    stored = _stored(run)
    assert np.array_equal(stored["iou_gt"], fresh.iou_gt) and np.array_equal(stored["pred"], fresh.pred)
    assert np.array_equal(stored["box_pred"], fresh.box_pred) and np.array_equal(stored["gt_boxes"], fresh.gt_boxes)
    preds = np.load(run / "predictions" / "last.npz")
    assert np.array_equal(preds["top5"][:, 0], fresh.pred)  # the run's own val predictions
    sweep = pd.read_csv(folder / "localization_sweep.csv")
    assert len(sweep) == 2 * len(SWEEP) and sweep["threshold"].tolist()[:3] == [0.05, 0.1, 0.15]
    stats = pd.read_csv(folder / "localization_statistics.csv")
    assert stats[["metric", "a", "b", "scope"]].values.tolist() == [
        ["gt_known_loc", "hybrid", "baseline", "all"], ["gt_known_loc", "hybrid", "baseline", "seed 0"],
        ["gt_known_loc", "hybrid", "baseline", "seed 1"], ["top1_loc", "hybrid", "baseline", "all"],
        ["top1_loc", "hybrid", "baseline", "seed 0"], ["top1_loc", "hybrid", "baseline", "seed 1"]]
    assert stats["n_images"].tolist() == [24] * 6 and stats["n_seeds"].tolist() == [2, 1, 1, 2, 1, 1]
    assert stats.loc[0, "verdict"].startswith("hybrid vs baseline: ")
    assert " pt GT-known Loc [95% CI " in stats.loc[0, "verdict"] and " pt Top-1 Loc [95% CI " in stats.loc[3, "verdict"]
    assert stats["p_holm"].tolist() == pytest.approx(stats["mcnemar_p"].tolist())  # one comparison per family
    md = (folder / "results.md").read_text()
    section = md.split("## Localization", 1)[1]
    for words in ("Grad-CAM (pytorch-grad-cam", "layer4", "thresholded at 0.2", "largest 8-connected component",
                  "IoU with the ground-truth box is >= 0.5", "GT-known Loc", "Top-1 Loc", "optimistic",
                  "| baseline | 2 |", "Holm", "- hybrid vs baseline: "):
        assert words in section, words
    tex = (folder / "results.tex").read_text()
    assert r"\label{tab:localization}" in tex and r"\label{tab:localization-statistics}" in tex
    assert out["localization"].shape[0] == 2 and out["localization_statistics"].shape[0] == 6
    for run in (folder / "runs").iterdir():
        assert not list(run.glob(".localization_final.npz*"))  # no temporary left


def test_a_rerun_reads_the_per_run_files(folder: Path, data: Path, monkeypatch: pytest.MonkeyPatch,
                                         one_thread: None) -> None:
    import os

    from attnlab.report import localization as loc_mod
    from attnlab.report import write_report

    calls: list[int] = []
    real = loc_mod.localize

    def counting(*args, **kw):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(loc_mod, "localize", counting)
    kw = dict(data_root=data, n_boot=100, echo=False, make_figures=False)
    first = write_report(folder, **kw)
    assert calls == [] and len(first["localization"]) == 2  # every run's file matches its key
    (folder / "runs" / "hybrid_seed0" / "localization_final.npz").write_bytes(b"damaged")
    ckpt = folder / "runs" / "baseline_seed1" / "checkpoints" / "last.pt"
    os.utime(ckpt, ns=(ckpt.stat().st_atime_ns, ckpt.stat().st_mtime_ns + 10**9))  # a replaced checkpoint
    again = write_report(folder, **kw)
    assert len(calls) == 2 and again["localization"].equals(first["localization"])
    write_report(folder, **kw)
    assert len(calls) == 2


def test_a_run_without_a_checkpoint_has_no_localization(folder: Path, data: Path, one_thread: None) -> None:
    from attnlab.report import write_report

    shutil.rmtree(folder / "runs" / "hybrid_seed1" / "checkpoints")
    out = write_report(folder, data_root=data, n_boot=100, echo=False, make_figures=False)
    table = out["localization"].set_index("variant")
    assert table.loc["hybrid", "n_seeds"] == 1 and table.loc["hybrid", "seeds"] == "0"
    assert table.loc["baseline", "n_seeds"] == 2
    assert any("localization: no checkpoint in runs/hybrid_seed1/checkpoints: hybrid seed 1" in w
               for w in out["warnings"])
    assert out["localization_statistics"]["scope"].tolist() == ["all", "all"]  # seed 0 pairs only
    shutil.rmtree(folder / "runs" / "hybrid_seed0" / "checkpoints")
    out = write_report(folder, data_root=data, n_boot=100, echo=False, make_figures=False)
    assert out["localization"]["variant"].tolist() == ["baseline"]  # absent, not zero
    assert out["localization_statistics"].empty
    assert "| hybrid |" not in (folder / "results.md").read_text().split("## Localization", 1)[1]


def test_a_checkpoint_of_another_epoch_is_not_used(folder: Path, data: Path, one_thread: None) -> None:
    import torch

    from attnlab.report import write_report

    run = folder / "runs" / "hybrid_seed1"
    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    ckpt["epoch"] = 7
    torch.save(ckpt, run / "checkpoints" / "last.pt")
    out = write_report(folder, data_root=data, n_boot=100, echo=False, make_figures=False)
    assert out["localization"].set_index("variant").loc["hybrid", "seeds"] == "0"
    assert any("runs/hybrid_seed1/checkpoints/last.pt is from epoch 7, not the final epoch 0" in w
               for w in out["warnings"])


def test_data_without_boxes_gives_no_localization_and_a_note(folder: Path, data: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    import attnlab.report
    from attnlab.cli import main
    from attnlab.report import write_report

    for npz in (folder / "runs").glob("*/localization_*.npz"):
        npz.unlink()
    # the parquet copy of the same images: no boxes in that layout
    pq_root = tmp_path / "parquet"
    pq_root.mkdir()
    index = scan(data)
    for split, name in (("train", "train-00000-of-00001.parquet"), ("val", "valid-00000-of-00001.parquet")):
        part = index.splits[split]
        images = [{"bytes": (data / n).read_bytes(), "path": n} for n in part.names]
        pq.write_table(pa.table({"image": images, "label": part.labels}), pq_root / name)
    ds = prepare(pq_root, progress=False)
    assert ds.val.boxes is None and ds.train.boxes is None and ds.meta["boxes"] == []
    out = write_report(folder, data_root=pq_root, n_boot=100, echo=False, make_figures=False)
    assert out["localization"].empty and out["localization_statistics"].empty
    assert not (folder / "localization.csv").exists() and not (folder / "localization_statistics.csv").exists()
    assert "gt_known_loc_mean_pct" not in out["table"].columns  # the accuracy table is unchanged
    note = next(w for w in out["warnings"] if w.startswith("localization not computed"))
    assert "(parquet) has no boxes" in note and "absent, not zero" in note
    md = (folder / "results.md").read_text()
    assert "has no boxes" in md.split("## Localization", 1)[1]
    assert not list((folder / "runs").glob("*/localization_*.npz"))
    # a CIFAR-like layout and an ImageFolder tree have none either
    from attnlab.data.cifar import scan_cifar  # noqa: F401 - the layout's reader exists

    tree = tmp_path / "tree"
    for j, name in enumerate(index.splits["val"].names[:4]):
        for split in ("train", "val"):
            target = tree / split / f"c{j % 2}" / f"{j}.JPEG"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(data / name, target)
    tree_ds = prepare(tree, progress=False)
    assert tree_ds.val.boxes is None
    out = write_report(folder, dataset=tree_ds, n_boot=100, echo=False, make_figures=False)
    assert out["localization"].empty and any("(imagefolder) has no boxes" in w for w in out["warnings"])
    # no data at all: a line in results.md, no note
    out = write_report(folder, n_boot=100, echo=False, make_figures=False)
    assert "no val data was given" in (folder / "results.md").read_text()
    assert not any("localization" in w for w in out["warnings"])
    # the command line: --no-localization skips it; --loc-threshold and --loc-images reach write_report
    assert main(["report", str(folder), "--no-localization", "--no-figures", "--n-boot", "100",
                 "--data-root", str(data)]) == 0
    assert "skipped (--no-localization" in (folder / "results.md").read_text()
    assert not (folder / "localization.csv").exists() and not list((folder / "runs").glob("*/localization_*"))
    seen: dict = {}
    monkeypatch.setattr(attnlab.report, "write_report", lambda *a, **k: seen.update(k) or {"paths": {}})
    assert main(["report", str(folder), "--loc-threshold", "0.25", "--loc-images", "2"]) == 0
    assert seen["loc_threshold"] == 0.25 and seen["loc_images"] == 2 and seen["localization"] is True
