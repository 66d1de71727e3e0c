"""Weakly supervised object localization (WSOL) of each run's classifier on the val boxes.

The study stops at classification; Tiny ImageNet ships a box for every val image, so the
report can also say where each variant's evidence lies. The method, as the report states it:

* **Map**: Grad-CAM (Selvaraju et al., 2017) computed by the pytorch-grad-cam library
  (``pytorch_grad_cam.GradCAM``, via ``attnlab.report.attention_maps.GradCAMRunner``) on the output
  of ``layer4`` (the last stage), for the ground-truth class (GT-known Loc) and for the
  predicted class (the figure's box). The library applies ReLU to the gradient-weighted sum
  of the channels, normalises each map to [0, 1] (min-max) and resizes it bilinearly to the
  input size. Each val image is fed exactly as the run's evaluation fed it: the val
  ``BatchLoader`` (the cached image, resized to ``data.augment.train_size`` when the run
  trained with it, ImageNet-normalised).
* **Box**: the pixels whose map value is ``>= threshold`` (``THRESHOLD`` = 0.2 of the map's
  range unless stated otherwise), their 8-connected components (``scipy.ndimage.label``),
  and the bounding box of the largest (the first in raster order on a tie). A map with no
  pixel at the threshold (an all-zero map) gives no box, which is never correct.
* **Correct**: IoU >= 0.5 (``IOU_MIN``) with the ground-truth box. Boxes are inclusive
  pixel boxes (x0, y0, x1, y1), areas count pixels; the ground-truth box is scaled to the
  input's frame (outward rounding, ``attnlab.data.tiny_imagenet.scale_boxes``).
* **GT-known Loc**: the share of val images whose box from the GT class's map is correct.
  **Top-1 Loc**: the share whose top-1 prediction is right *and* whose box is correct (with a
  right prediction the predicted class is the GT class, so it is the same box).
* **Sweep**: the same at thresholds 0.05, 0.10, ..., 0.95 (``SWEEP``). The best GT-known
  Loc over the sweep (of the mean over seeds) and its threshold are reported as such: the
  threshold is chosen on the val images it is scored on, so that figure is optimistic.

Per run, the per-image results are cached in ``<run>/localization_<policy>.npz`` (written
atomically), keyed by the checkpoint's epoch, the settings and a hash of the val data, so
a rerun of the report does not recompute them. Runs without the policy's checkpoint, and
data without boxes, get no localization figures (absent, with a note; never zero).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .comparisons import LOCALIZATION_COLUMNS, compare_indicators, comparison_pairs
from .records import _rel

METHOD = "Grad-CAM"
LIBRARY = "pytorch-grad-cam"
LAYER = "layer4"
THRESHOLD = 0.2
IOU_MIN = 0.5
SWEEP = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 .. 0.95
CACHE_VERSION = 1
NO_BOX = np.array([-1, -1, -1, -1], dtype=np.int64)
_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity

TABLE_COLUMNS = (
    "variant", "n_seeds", "seeds", "policy", "epoch", "n_images", "method", "layer", "layer_size",
    "input_size", "threshold", "iou_min",
    "gt_known_loc_mean_pct", "gt_known_loc_std_pct", "top1_loc_mean_pct", "top1_loc_std_pct",
    "top1_mean_pct", "best_gt_known_loc_mean_pct", "best_threshold",
)
SWEEP_COLUMNS = ("variant", "threshold", "n_seeds", "gt_known_loc_mean_pct", "top1_loc_mean_pct")
METRICS = {"gt_known_loc": "GT-known Loc", "top1_loc": "Top-1 Loc"}


# --------------------------------------------------------------------------- boxes


def box_from_map(cam: np.ndarray, threshold: float) -> np.ndarray:
    """The bounding box (x0, y0, x1, y1; inclusive pixels) of the largest 8-connected
    component of ``cam >= threshold``; ``NO_BOX`` (all -1) when no pixel reaches it.

    On a tie in size the component met first in raster order (row by row) wins."""
    from scipy import ndimage

    cam = np.asarray(cam)
    if cam.ndim != 2:
        raise ValueError(f"expected one H×W map, got shape {cam.shape}")
    labels, n = ndimage.label(cam >= threshold, structure=_EIGHT)
    if n == 0:
        return NO_BOX.copy()
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    largest = int(np.argmax(sizes))  # first maximum: scipy numbers components in raster order
    rows, cols = ndimage.find_objects(labels)[largest]
    return np.array([cols.start, rows.start, cols.stop - 1, rows.stop - 1], dtype=np.int64)


def boxes_from_maps(cams: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """``box_from_map`` for every map (N×H×W) and threshold: int64 (N, T, 4)."""
    cams = np.asarray(cams)
    out = np.empty((cams.shape[0], len(thresholds), 4), dtype=np.int64)
    for i, cam in enumerate(cams):
        for j, t in enumerate(thresholds):
            out[i, j] = box_from_map(cam, t)
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of inclusive pixel boxes (..., 4), broadcast; a missing box (x1 < x0) gives 0."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    w = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
    h = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)

    def area(x: np.ndarray) -> np.ndarray:
        valid = (x[..., 2] >= x[..., 0]) & (x[..., 3] >= x[..., 1]) & (x[..., 0] >= 0)
        return np.where(valid, (x[..., 2] - x[..., 0] + 1) * (x[..., 3] - x[..., 1] + 1), 0)

    area_a, area_b = area(a), area(b)
    inter = np.where((area_a > 0) & (area_b > 0), inter, 0)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


# --------------------------------------------------------------------------- per run


@dataclass
class Localization:
    """Per-image localization of one model on one val split.

    ``iou_gt[i, j]``: IoU of the box from the GT class's map at ``thresholds[j]``;
    ``box_gt`` / ``box_pred``: the boxes from the GT / predicted class's map at
    ``threshold``; every box is in the input's frame (``input_size``²)."""

    labels: np.ndarray  # (N,) int64
    pred: np.ndarray  # (N,) int64: top-1 class of the same forward pass
    thresholds: np.ndarray  # (T,) float64
    iou_gt: np.ndarray  # (N, T) float64
    gt_boxes: np.ndarray  # (N, 4) int64, the true boxes in the input frame
    box_gt: np.ndarray  # (N, 4) int64
    box_pred: np.ndarray  # (N, 4) int64
    threshold: float
    input_size: int
    layer_size: tuple[int, int]
    epoch: int | None = None
    method: str = METHOD
    layer: str = LAYER

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def _column(self, threshold: float | None) -> int:
        t = self.threshold if threshold is None else threshold
        hit = np.flatnonzero(np.isclose(self.thresholds, t, rtol=0, atol=1e-9))
        if hit.size == 0:
            raise ValueError(f"threshold {t} was not computed (have {self.thresholds.tolist()})")
        return int(hit[0])

    @property
    def top1_correct(self) -> np.ndarray:
        return self.pred == self.labels

    def gt_known_correct(self, threshold: float | None = None, iou_min: float = IOU_MIN) -> np.ndarray:
        """Per image: the GT class's box at ``threshold`` (default: the stated one) has IoU >= iou_min."""
        return self.iou_gt[:, self._column(threshold)] >= iou_min

    def top1_loc_correct(self, threshold: float | None = None, iou_min: float = IOU_MIN) -> np.ndarray:
        """Per image: top-1 right and box correct."""
        return self.top1_correct & self.gt_known_correct(threshold, iou_min)

    def correct(self, metric: str, iou_min: float = IOU_MIN) -> np.ndarray:
        if metric == "gt_known_loc":
            return self.gt_known_correct(iou_min=iou_min)
        if metric == "top1_loc":
            return self.top1_loc_correct(iou_min=iou_min)
        raise ValueError(f"unknown localization metric {metric!r}; have {list(METRICS)}")

    def sweep(self, iou_min: float = IOU_MIN) -> tuple[np.ndarray, np.ndarray]:
        """(GT-known Loc, Top-1 Loc) fractions at every threshold of ``thresholds``."""
        ok = self.iou_gt >= iou_min
        return ok.mean(axis=0), (ok & self.top1_correct[:, None]).mean(axis=0)

    @property
    def iou_pred(self) -> np.ndarray:
        return box_iou(self.box_pred, self.gt_boxes)


def _thresholds(threshold: float, sweep: Sequence[float]) -> np.ndarray:
    if not 0 <= threshold <= 1:
        raise ValueError(f"the localization threshold must lie in [0, 1], got {threshold}")
    return np.asarray(sorted({round(float(t), 6) for t in (*sweep, threshold)}), dtype=np.float64)


def localize(model: Any, split: Any, *, input_size: int | None = None, threshold: float = THRESHOLD,
             sweep: Sequence[float] = SWEEP, layer: str = LAYER, batch_size: int = 64) -> Localization:
    """Grad-CAM boxes of ``model`` for every image of ``split`` (a ``CachedSplit`` with boxes).

    Batches come from the val ``BatchLoader`` on the model's device, resized to
    ``input_size`` when it differs from the cached size (as the run's evaluation did)."""
    import torch

    from ..data.loader import AugmentConfig, BatchLoader
    from ..data.tiny_imagenet import scale_boxes
    from .attention_maps import GradCAMRunner

    if getattr(split, "boxes", None) is None:
        raise ValueError("this split has no boxes: localization needs them")
    n, size = len(split), int(split.images.shape[1])
    input_size = int(input_size or size)
    thresholds = _thresholds(threshold, sweep)
    at = int(np.flatnonzero(np.isclose(thresholds, round(threshold, 6)))[0])
    device = next(model.parameters()).device
    augment = AugmentConfig(train_size=input_size if input_size != size else None)
    loader = BatchLoader(split, batch_size=batch_size, train=False, device=device, augment=augment)
    gt_boxes = scale_boxes(np.asarray(split.boxes), np.full((n, 2), size), input_size)
    labels = np.asarray(split.labels, dtype=np.int64)
    pred = np.zeros(n, dtype=np.int64)
    iou_gt = np.zeros((n, len(thresholds)), dtype=np.float64)
    box_gt = np.zeros((n, 4), dtype=np.int64)
    box_pred = np.zeros((n, 4), dtype=np.int64)
    with GradCAMRunner(model, layer) as runner:
        for images, ys, idx in loader:
            idx_np = idx.cpu().numpy()
            maps, logits = runner.run(images, ys)
            top1 = logits.argmax(dim=1).cpu().numpy()
            pred[idx_np] = top1
            boxes = boxes_from_maps(maps, thresholds)  # (B, T, 4)
            iou_gt[idx_np] = box_iou(boxes, gt_boxes[idx_np][:, None, :])
            box_gt[idx_np] = boxes[:, at]
            box_pred[idx_np] = boxes[:, at]
            wrong = np.flatnonzero(top1 != ys.cpu().numpy())
            if wrong.size:  # the predicted class's own map, for the figure
                sel = torch.as_tensor(wrong, device=images.device)
                pmaps, _ = runner.run(images[sel], torch.as_tensor(top1[wrong]))
                box_pred[idx_np[wrong]] = [box_from_map(m, thresholds[at]) for m in pmaps]
        layer_size = runner.layer_size or (0, 0)
    return Localization(labels, pred, thresholds, iou_gt, gt_boxes, box_gt, box_pred, float(thresholds[at]),
                        input_size, (int(layer_size[0]), int(layer_size[1])), layer=layer)


def data_key(split: Any) -> str:
    """A hash of the val images, labels and boxes (what a cached result is valid for)."""
    h = hashlib.blake2b(digest_size=16)
    images = np.asarray(split.images)
    h.update(repr((images.shape, str(images.dtype))).encode())
    step = 1024
    for start in range(0, images.shape[0], step):
        h.update(np.ascontiguousarray(images[start:start + step]).tobytes())
    h.update(np.ascontiguousarray(split.labels, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(split.boxes, dtype=np.int64).tobytes())
    return h.hexdigest()


def _settings(*, epoch: int, input_size: int, threshold: float, thresholds: np.ndarray, layer: str,
              key: str) -> dict[str, Any]:
    return {"version": CACHE_VERSION, "method": METHOD, "layer": layer, "epoch": int(epoch),
            "input_size": int(input_size), "threshold": float(threshold),
            "thresholds": [float(t) for t in thresholds], "data_key": key}


def save_localization(path: Path, loc: Localization, settings: Mapping[str, Any]) -> None:
    """Write ``loc`` and its cache key atomically (``engine.checkpoint.atomic_write``)."""
    import json

    from ..engine.checkpoint import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh, settings=np.array(json.dumps(dict(settings), sort_keys=True)), labels=loc.labels,
                pred=loc.pred, thresholds=loc.thresholds, iou_gt=loc.iou_gt, gt_boxes=loc.gt_boxes,
                box_gt=loc.box_gt, box_pred=loc.box_pred, layer_size=np.asarray(loc.layer_size, dtype=np.int64))

    atomic_write(path, write)


def load_localization(path: Path, settings: Mapping[str, Any]) -> Localization | None:
    """The cached result if ``path`` holds one for exactly these ``settings``, else None."""
    import json

    if not path.is_file():
        return None
    try:
        with np.load(path) as npz:  # allow_pickle stays False
            stored = json.loads(str(npz["settings"]))
            if stored != json.loads(json.dumps(dict(settings), sort_keys=True)):
                return None
            arrays = {k: npz[k] for k in ("labels", "pred", "thresholds", "iou_gt", "gt_boxes", "box_gt",
                                          "box_pred", "layer_size")}
    except Exception:  # noqa: BLE001 - a damaged or foreign file is recomputed
        return None
    n, t = arrays["labels"].shape[0], len(settings["thresholds"])
    shapes = {"pred": (n,), "thresholds": (t,), "iou_gt": (n, t), "gt_boxes": (n, 4), "box_gt": (n, 4),
              "box_pred": (n, 4), "layer_size": (2,)}
    if arrays["labels"].ndim != 1 or any(arrays[k].shape != s for k, s in shapes.items()):
        return None
    return Localization(
        arrays["labels"].astype(np.int64), arrays["pred"].astype(np.int64), arrays["thresholds"].astype(np.float64),
        arrays["iou_gt"].astype(np.float64), arrays["gt_boxes"].astype(np.int64), arrays["box_gt"].astype(np.int64),
        arrays["box_pred"].astype(np.int64), float(settings["threshold"]), int(settings["input_size"]),
        (int(arrays["layer_size"][0]), int(arrays["layer_size"][1])), epoch=int(settings["epoch"]),
        layer=str(settings["layer"]))


# --------------------------------------------------------------------------- tables


def localization_table(results: Mapping[str, Mapping[int, Localization]], *, policy: str,
                       top1: Mapping[str, float] | None = None, iou_min: float = IOU_MIN) -> pd.DataFrame:
    """One row per variant: mean ± sample std over seeds (NaN std with one seed) of GT-known
    and Top-1 Loc at the stated threshold, and the best GT-known Loc over the sweep of the
    seed-mean curve with its threshold (chosen on val: optimistic)."""
    rows = []
    for variant, by_seed in results.items():
        if not by_seed:
            continue
        locs = [by_seed[s] for s in sorted(by_seed)]
        gt = [100 * float(loc.gt_known_correct(iou_min=iou_min).mean()) for loc in locs]
        t1 = [100 * float(loc.top1_loc_correct(iou_min=iou_min).mean()) for loc in locs]
        curve = np.mean([loc.sweep(iou_min)[0] for loc in locs], axis=0) * 100
        best = int(np.argmax(curve))
        first = locs[0]
        rows.append({
            "variant": variant, "n_seeds": len(locs), "seeds": ";".join(str(s) for s in sorted(by_seed)),
            "policy": policy, "epoch": float(np.mean([loc.epoch for loc in locs if loc.epoch is not None]))
            if any(loc.epoch is not None for loc in locs) else math.nan,
            "n_images": len(first), "method": f"{first.method} ({LIBRARY})", "layer": first.layer,
            "layer_size": f"{first.layer_size[0]}x{first.layer_size[1]}", "input_size": first.input_size,
            "threshold": first.threshold, "iou_min": iou_min,
            "gt_known_loc_mean_pct": float(np.mean(gt)), "gt_known_loc_std_pct": _std(gt),
            "top1_loc_mean_pct": float(np.mean(t1)), "top1_loc_std_pct": _std(t1),
            "top1_mean_pct": (top1 or {}).get(variant, 100 * float(np.mean([loc.top1_correct.mean() for loc in locs]))),
            "best_gt_known_loc_mean_pct": float(curve[best]), "best_threshold": float(first.thresholds[best]),
        })
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def sweep_table(results: Mapping[str, Mapping[int, Localization]], *, iou_min: float = IOU_MIN) -> pd.DataFrame:
    """Per variant and threshold: GT-known and Top-1 Loc (%), mean over seeds."""
    rows = []
    for variant, by_seed in results.items():
        if not by_seed:
            continue
        locs = [by_seed[s] for s in sorted(by_seed)]
        curves = [loc.sweep(iou_min) for loc in locs]
        gt = np.mean([c[0] for c in curves], axis=0) * 100
        t1 = np.mean([c[1] for c in curves], axis=0) * 100
        for j, t in enumerate(locs[0].thresholds):
            rows.append({"variant": variant, "threshold": float(t), "n_seeds": len(locs),
                         "gt_known_loc_mean_pct": float(gt[j]), "top1_loc_mean_pct": float(t1[j])})
    return pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))


def compare_localization(results: Mapping[str, Mapping[int, Localization]], *, alpha: float = 0.05,
                         n_boot: int = 10_000, seed: int = 0, baseline: str = "baseline",
                         iou_min: float = IOU_MIN, warnings: list[str] | None = None) -> pd.DataFrame:
    """Paired statistics of GT-known Loc and Top-1 Loc between variants: the pairs, bootstrap,
    McNemar test and Holm adjustment of ``statistics.csv`` (``comparisons.compare_indicators``),
    on the per-image correct-localization indicator; each metric is its own Holm family."""
    warnings = warnings if warnings is not None else []
    pairs = comparison_pairs([v for v, r in results.items() if r], baseline)
    rows: list[dict[str, Any]] = []
    for metric, label in METRICS.items():
        correct = {v: {s: loc.correct(metric, iou_min) for s, loc in by_seed.items()} for v, by_seed in results.items()}
        rows += compare_indicators(correct, pairs, metric=metric, label=label, alpha=alpha, n_boot=n_boot,
                                   seed=seed, warnings=warnings if metric == "gt_known_loc" else None)
    return pd.DataFrame(rows, columns=list(LOCALIZATION_COLUMNS))


def method_text(table: pd.DataFrame, *, threshold: float = THRESHOLD, iou_min: float = IOU_MIN) -> str:
    """The method, as the report's caption states it."""
    sizes = ", ".join(sorted(set(table["layer_size"].astype(str)))) if not table.empty else "n/a"
    inputs = ", ".join(str(int(s)) for s in sorted(set(table["input_size"]))) if not table.empty else "n/a"
    return (
        f"Weakly supervised localization on the val boxes: {METHOD} ({LIBRARY}, pytorch_grad_cam.GradCAM) on "
        f"{LAYER} (the last stage; {sizes} at {inputs}×{inputs} input), for the ground-truth class "
        "(GT-known Loc) and the predicted class; the map is upsampled bilinearly to the input size and "
        f"min-max normalised to [0, 1], thresholded at {threshold:g} (map >= {threshold:g}), and the box is the "
        "bounding box of the largest 8-connected component. A box is correct when its IoU with the "
        f"ground-truth box is >= {iou_min:g}. GT-known Loc: share of val images with a correct box from the "
        "GT class's map; Top-1 Loc: share with the right top-1 class and a correct box. Mean ± sample std "
        "over seeds. Best over the threshold sweep "
        f"{SWEEP[0]:g}–{SWEEP[-1]:g} (step 0.05): the highest GT-known Loc of the seed-mean curve and the "
        "threshold where it is reached, chosen on the same val images (optimistic)."
    )


def _std(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) >= 2 else math.nan


# --------------------------------------------------------------------------- the report's part


def _absent(reason: str) -> dict[str, Any]:
    return {"results": {}, "table": pd.DataFrame(columns=list(TABLE_COLUMNS)),
            "sweep": pd.DataFrame(columns=list(SWEEP_COLUMNS)),
            "statistics": pd.DataFrame(columns=list(LOCALIZATION_COLUMNS)), "reason": reason, "split": None,
            "class_names": None}


def _get(mapping: Any, *keys: str) -> Any:
    for key in keys:
        mapping = mapping.get(key) if isinstance(mapping, Mapping) else None
    return mapping


def _run_config(run: Any) -> dict[str, Any]:
    """The run's resolved ``config.yaml`` ({} if missing or unreadable)."""
    import yaml

    try:
        cfg = yaml.safe_load((run.path / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _open_val(dataset: Any, data_root: str | Path | None, size: int | None,
              cache_dir: str | None) -> tuple[Any, str, list[str] | None]:
    """(val split, what it is, class names): ``dataset`` (a CachedDataset or a CachedSplit),
    else ``data_root`` opened through the cache at the run's ``data.image_size``."""
    if dataset is not None:
        split = getattr(dataset, "val", dataset)
        meta = getattr(dataset, "meta", None)
        kind = str(meta.get("source_kind", "given")) if isinstance(meta, Mapping) else "given"
        return split, kind, list(getattr(dataset, "class_names", []) or []) or None
    from ..data.cache import prepare

    ds = prepare(data_root, cache_dir, size=size, progress=False)
    return ds.val, str(ds.meta.get("source_kind", "dataset")), list(ds.class_names)


def val_data(run: Any, data_root: str | Path | None, dataset: Any = None) -> tuple[Any, str, list[str] | None]:
    """(val split, source kind, class names) for ``run``: ``dataset`` if given, else
    ``data_root`` through the cache at the run's ``data.image_size`` and ``data.cache_dir``."""
    cfg = _run_config(run)
    cache_dir = _get(cfg, "data", "cache_dir")
    return _open_val(dataset, data_root, _int_or_none(_get(cfg, "data", "image_size")),
                     cache_dir if isinstance(cache_dir, str) else None)


def _signature(path: Path) -> str:
    """The checkpoint file's identity (name, size, mtime): a replaced file is recomputed."""
    st = path.stat()
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


def localization_report(
    runs: Sequence[Any],
    *,
    policy: str = "final",
    data_root: str | Path | None = None,
    dataset: Any = None,
    threshold: float = THRESHOLD,
    iou_min: float = IOU_MIN,
    device: str = "cpu",
    batch_size: int = 64,
    alpha: float = 0.05,
    n_boot: int = 10_000,
    seed: int = 0,
    baseline: str = "baseline",
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """Localization of every run (``RunRecord``) at ``policy``'s checkpoint on the val boxes.

    Per run: ``run.checkpoint(policy)``, which must hold the policy's epoch (summary.json);
    the input size and cache come from the run's config.yaml (``data.image_size``,
    ``data.augment.train_size``, ``data.cache_dir``). A run's ``localization_<policy>.npz``
    is reused while its key (epoch, checkpoint file, settings, data hash) matches, without
    loading the checkpoint. Returns ``{"results": {variant: {seed: Localization}}, "table",
    "sweep", "statistics", "reason", "split", "class_names"}``; ``reason`` says why there are
    no figures (no data given, data without boxes, no checkpoint), else None. Per-run
    problems become notes in ``warnings``; such a run has no localization figures, never zero."""
    from ..errors import AttnlabError

    warnings = warnings if warnings is not None else []
    thresholds = _thresholds(threshold, SWEEP)
    if dataset is None and data_root is None:
        return _absent("not computed: no val data was given (pass --data-root, or data_root= / dataset= "
                       "in Python: the dataset whose val split has boxes)")
    todo: list[tuple[Any, Path, dict[str, Any]]] = []
    for run in runs:
        path = run.checkpoint(policy)
        if path is None:
            warnings.append(f"localization: no checkpoint in {_rel(run.path / 'checkpoints')}: {run.variant} seed "
                            f"{run.seed} has no localization figures")
            continue
        todo.append((run, path, _run_config(run)))
    if not todo:
        return _absent(f"not computed: no run has a checkpoint of its {policy} epoch")
    try:
        split, kind, names = val_data(todo[0][0], data_root, dataset)
    except AttnlabError as err:
        warnings.append(f"localization not computed: the val data cannot be read: {err}")
        return _absent(f"not computed: the val data cannot be read ({err})")
    if getattr(split, "boxes", None) is None:
        reason = (f"not computed: the val data ({kind}) has no boxes; only Tiny ImageNet's "
                  "val/val_annotations.txt (and its synthetic twin) has them, so localization is absent, not zero")
        warnings.append(f"localization {reason}")
        return _absent(reason)
    key = data_key(split)
    labels = np.asarray(split.labels, dtype=np.int64)
    results: dict[str, dict[int, Localization]] = {}
    for run, path, cfg in todo:
        preds = run.predictions(policy)
        if preds is not None and (preds.labels.shape != labels.shape or not np.array_equal(preds.labels, labels)):
            warnings.append(f"localization: {run.path.name}'s predictions hold other val labels than the data given "
                            "(another dataset or order?): left out")
            continue
        epoch = int(run.selected(policy)["epoch"])
        input_size = (_int_or_none(_get(cfg, "data", "augment", "train_size"))
                      or _int_or_none(_get(cfg, "data", "image_size")) or int(split.images.shape[1]))
        settings = _settings(epoch=epoch, input_size=input_size, threshold=threshold, thresholds=thresholds,
                             layer=LAYER, key=key)
        settings["checkpoint"] = _signature(path)
        cache = run.path / f"localization_{policy}.npz"
        loc = load_localization(cache, settings)
        if loc is None:
            loc = _compute(run, path, epoch, input_size, split, threshold, device, batch_size, policy, warnings)
            if loc is None:
                continue
            try:
                save_localization(cache, loc, settings)
            except AttnlabError as err:
                warnings.append(f"localization: not cached ({err})")
        if preds is not None:
            differ = int(np.sum(preds.top1_correct != loc.top1_correct))
            if differ:
                warnings.append(f"localization: {run.path.name}: the checkpoint's recomputed top-1 is right/wrong "
                                f"differently from its predictions file on {differ} of {len(loc)} images (numerics "
                                "of another device or precision); Top-1 Loc uses the recomputed classes")
        results.setdefault(run.variant, {})[run.seed] = loc
    if not results:
        return _absent("not computed: no run could be localized (see the notes)")
    table = localization_table(results, policy=policy, iou_min=iou_min)
    sweep = sweep_table(results, iou_min=iou_min)
    comps = compare_localization(results, alpha=alpha, n_boot=n_boot, seed=seed, baseline=baseline,
                                 iou_min=iou_min, warnings=warnings)
    return {"results": results, "table": table, "sweep": sweep, "statistics": comps, "reason": None,
            "split": split, "class_names": names}


def _compute(run: Any, path: Path, epoch: int, input_size: int, split: Any, threshold: float, device: str,
             batch_size: int, policy: str, warnings: list[str]) -> Localization | None:
    """Load the run's checkpoint (``weights_only``), check its epoch, localize; None with a note."""
    from ..engine.checkpoint import load_checkpoint
    from ..errors import AttnlabError
    from .attention_maps import model_from_checkpoint

    try:
        ckpt = load_checkpoint(path)
    except AttnlabError as err:
        warnings.append(f"localization: {run.variant} seed {run.seed} left out: {err}")
        return None
    if ckpt.get("epoch") != epoch:
        warnings.append(f"localization: {_rel(path)} is from epoch {ckpt.get('epoch')}, not the {policy} epoch "
                        f"{epoch}: {run.variant} seed {run.seed} has no localization figures")
        return None
    try:
        model = model_from_checkpoint(ckpt, path, device)
        loc = localize(model, split, input_size=input_size, threshold=threshold, batch_size=batch_size)
    except (AttnlabError, ValueError, KeyError, RuntimeError) as err:
        warnings.append(f"localization: {run.variant} seed {run.seed} left out: {' '.join(str(err).split())}")
        return None
    loc.epoch = epoch
    return loc
