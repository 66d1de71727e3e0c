"""``write_report``: an ablation folder in, the paper's tables, statistics and figures out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import RecordError
from ..models import VARIANTS
from . import figures
from .comparisons import compare_variants, per_class_delta
from .localization import IOU_MIN, LAYER, METHOD, THRESHOLD, box_iou, localization_report
from .profile_json import read_profile, read_train_profile
from .records import POLICIES, RunRecord, check_policy, load_runs
from .render import display_rows, localization_rows, markdown_table, results_latex, results_markdown
from .table import group_by_variant, results_table

LOCALIZATION_FILES = ("localization.csv", "localization_sweep.csv", "localization_statistics.csv",
                      "figures/localization_boxes.png")


def write_report(
    ablation_dir: str | Path,
    *,
    data_root: str | Path | None = None,
    images: Any = None,
    policy: str = "final",
    alpha: float = 0.05,
    n_boot: int = 10_000,
    seed: int = 0,
    baseline: str = "baseline",
    make_figures: bool = True,
    n_images: int = 4,
    block: str | None = None,
    include_incomplete: bool = False,
    device: str = "cpu",
    echo: bool = True,
    strict: bool = False,
    localization: bool = True,
    dataset: Any = None,
    loc_threshold: float = THRESHOLD,
    loc_images: int = 4,
    loc_batch_size: int = 64,
) -> dict[str, Any]:
    """Write results.{csv,md,tex}, statistics.csv, per-class CSVs and figures/*.png, and with
    val data that has boxes the localization files (localization.csv, localization_sweep.csv,
    localization_statistics.csv, figures/localization_boxes.png).

    Args:
        policy: ``final`` (default: last epoch, no selection on val) or ``best`` (the epoch
            with the best val Top-1, the usual but optimistic choice).
        alpha: significance level; intervals are (1 - alpha) percentile intervals.
        images: val images for the attention-map figure (uint8 N×H×W×3, or a normalised
            float N×3×H×W tensor); ``data_root`` loads them with ``attnlab.data.cache``.
        block: module block for the attention maps (e.g. ``layer2.3``); default: the
            deepest with a map of at least 7×7.
        include_incomplete: also report ``running`` / ``failed`` runs whose records check
            out (never a run without summary.json).
        strict: raise ``RecordError`` (naming the file) instead of leaving out a run whose
            records are missing, damaged or disagree; by default such a run is left out of
            every table, statistic and figure, with a note.
        localization: weakly supervised localization per variant (``attnlab.report.localization``:
            Grad-CAM on layer4 from each run's checkpoint of the policy, GT-known and Top-1 Loc
            at ``loc_threshold``, IoU >= 0.5, plus a threshold sweep), when the val data has
            boxes; the data comes from ``dataset`` (a ``CachedDataset`` or its val
            ``CachedSplit``) or ``data_root``. Per-image results are cached per run
            (``localization_<policy>.npz``). Without boxes or checkpoints the figures are
            absent, with a note. ``loc_images``: rows of the boxes figure (the metric always
            uses the whole val split); ``loc_batch_size``: images per Grad-CAM batch.

    The final figures are each run's summary.json ``final`` / ``best`` entries, checked
    against metrics.csv and the per-image predictions (``attnlab.report.records``).
    Raises ``RecordError`` if no run is usable.

    Returns ``{"table", "statistics", "per_class", "localization", "localization_statistics",
    "markdown", "paths", "warnings"}``; ``table``, ``statistics`` and the localization entries
    are DataFrames (the localization ones empty when it was not computed), ``paths`` maps a
    name to the file written.
    """
    check_policy(policy)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0 <= loc_threshold <= 1:
        raise ValueError(f"loc_threshold must be in [0, 1], got {loc_threshold}")
    root = Path(ablation_dir)
    runs, warnings = load_runs(root, include_incomplete=include_incomplete, strict=strict)
    if not runs:
        if not warnings:
            raise RecordError(f"no usable runs under {root / 'runs'}: it holds no run folders; run `attnlab ablate` first")
        more = f" ({len(warnings) - 1} other run folder(s) left out too)" if len(warnings) > 1 else ""
        raise RecordError(f"no usable runs under {root / 'runs'}: {warnings[0]}{more}")
    variants = list(group_by_variant(runs))
    profile, meta, pw = read_profile(root / "profile.json", variants)
    warnings += pw
    if not (root / "profile.json").is_file():
        warnings.append("no profile.json: GMACs, latency and throughput are n/a (run `attnlab profile --json`)")
    train_profile, train_format, tw = read_train_profile(root / "profile_train.json", variants)
    warnings += tw
    other = next(p for p in POLICIES if p != policy)

    table = results_table(runs, policy=policy, profile=profile, baseline=baseline, warnings=warnings,
                          train_profile=train_profile, train_format=train_format)
    comps = compare_variants(runs, policy=policy, alpha=alpha, n_boot=n_boot, seed=seed,
                             baseline=baseline, warnings=warnings)
    paths: dict[str, Path] = {}
    per_class: dict[str, pd.DataFrame] = {}
    for a in (v for v in variants if len(VARIANTS.get(v, ())) >= 2):
        pc = per_class_delta(runs, a, baseline, policy=policy, warnings=warnings)
        if pc is not None:
            per_class[f"{a}_vs_{baseline}"] = pc
            paths[f"per_class_{a}_vs_{baseline}.csv"] = _write_csv(pc, root / f"per_class_{a}_vs_{baseline}.csv")
    if localization:
        loc = localization_report(runs, policy=policy, data_root=data_root, dataset=dataset,
                                  threshold=loc_threshold, device=device, batch_size=loc_batch_size, alpha=alpha,
                                  n_boot=n_boot, seed=seed, baseline=baseline, warnings=warnings)
    else:
        loc = {"results": {}, "table": pd.DataFrame(), "statistics": pd.DataFrame(), "sweep": pd.DataFrame(),
               "reason": "skipped (--no-localization / localization=False)"}
    loc["threshold"], loc["iou_min"] = loc_threshold, IOU_MIN
    if loc["results"]:
        paths["localization.csv"] = _write_csv(loc["table"], root / "localization.csv")
        paths["localization_sweep.csv"] = _write_csv(loc["sweep"], root / "localization_sweep.csv")
        paths["localization_statistics.csv"] = _write_csv(loc["statistics"], root / "localization_statistics.csv")
    else:  # an earlier report's files would contradict this one's results.md
        for name in LOCALIZATION_FILES:
            (root / name).unlink(missing_ok=True)
    if make_figures:
        paths.update(_figures(root, runs, table, per_class, policy, baseline, warnings))
        paths.update(_attention_figure(root, runs, policy, data_root, images, n_images, block, device, warnings))
        if loc["results"] and loc_images > 0:
            paths.update(_localization_figure(root, loc, loc_images, loc_threshold))

    paths["results.csv"] = _write_csv(table, root / "results.csv")
    paths["statistics.csv"] = _write_csv(comps, root / "statistics.csv")
    kw = dict(policy=policy, other=other, baseline=baseline, alpha=alpha, n_boot=n_boot, meta=meta)
    md = results_markdown(table, comps, notes=warnings, localization=loc, **kw)
    paths["results.md"] = _write_text(md, root / "results.md")
    paths["results.tex"] = _write_text(results_latex(table, comps, localization=loc, **kw), root / "results.tex")
    if echo:
        print(markdown_table(*display_rows(table, baseline)))
        if not comps.empty:
            print()
            print("\n".join(comps.loc[comps["scope"] == "all", "verdict"]))
        if loc["results"]:
            print()
            print(markdown_table(*localization_rows(loc["table"])))
            lstats = loc["statistics"]
            if not lstats.empty:
                print("\n".join(lstats.loc[lstats["scope"] == "all", "verdict"]))
        for w in warnings:
            print(f"note: {w}")
    return {"table": table, "statistics": comps, "per_class": per_class, "localization": loc["table"],
            "localization_statistics": loc["statistics"], "markdown": md, "paths": paths, "warnings": warnings}


def _figures(root: Path, runs: list[RunRecord], table: pd.DataFrame, per_class: dict[str, pd.DataFrame],
             policy: str, baseline: str, warnings: list[str]) -> dict[str, Path]:
    out_dir = root / "figures"
    paths: dict[str, Path] = {}
    curves = {v: [r.metrics for r in rs if not r.metrics.empty] for v, rs in group_by_variant(runs).items()}
    paths["figures/val_top1.png"] = figures.plot_val_curves(curves, out_dir / "val_top1.png")
    for col, label, name in (("gmacs", "GMACs", "top1_vs_gmacs.png"),
                             ("latency_b1_ms", "latency at batch 1 (ms)", "top1_vs_latency.png")):
        path = figures.plot_accuracy_vs_cost(table, col, label, out_dir / name)
        if path is None:
            warnings.append(f"figures/{name} not drawn: no {col} figures (profile.json)")
        else:
            paths[f"figures/{name}"] = path
    for key, pc in per_class.items():
        a = key.split("_vs_")[0]
        name = f"per_class_{key}.png"
        paths[f"figures/{name}"] = figures.plot_per_class_delta(pc, a, baseline, out_dir / name)
    return paths


def _attention_figure(root: Path, runs: list[RunRecord], policy: str, data_root: str | Path | None,
                      images: Any, n_images: int, block: str | None, device: str,
                      warnings: list[str]) -> dict[str, Path]:
    if images is None and data_root is None:
        return {}
    import torch

    from .attention_maps import (
        attention_panels,
        denormalize_images,
        load_checkpoint_model,
        normalize_images,
        select_images,
    )

    models = {}
    for variant, vruns in group_by_variant(runs).items():
        ckpt = vruns[0].checkpoint(policy)
        if ckpt is None:
            warnings.append(f"attention maps: no checkpoint for {variant} (seed {vruns[0].seed})")
            continue
        models[variant] = load_checkpoint_model(ckpt, device)
    if not models:
        warnings.append("attention maps not drawn: no checkpoints")
        return {}
    titles = None
    if images is None:  # the uint8 val cache, at the runs' data.image_size and data.cache_dir
        from .localization import val_data

        split, _, names = val_data(runs[0], data_root)
        idx = select_images(np.asarray(split.labels), n_images)
        images = np.asarray(split.images)[idx]
        names = names or []
        labels = np.asarray(split.labels)[idx]
        titles = [f"val {i}: {names[y][:18] if y < len(names) else y}" for i, y in zip(idx, labels, strict=True)]
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        x = images[:n_images].float()
    else:
        x = normalize_images(np.asarray(images)[:n_images])
    panels = attention_panels(models, x, block=block)
    path = figures.plot_attention_maps(denormalize_images(x), panels, root / "figures" / "attention_maps.png",
                                       titles=titles)
    return {"figures/attention_maps.png": path}


def _edges(boxes: np.ndarray, scale: float) -> np.ndarray:
    """Inclusive pixel boxes -> pixel-edge coordinates times ``scale``; NaN rows for no box."""
    boxes = np.asarray(boxes, dtype=np.float64)
    out = np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] + 1, boxes[:, 3] + 1], axis=1) * scale
    out[boxes[:, 0] < 0] = np.nan
    return out


def _localization_figure(root: Path, loc: dict[str, Any], n_images: int, threshold: float) -> dict[str, Path]:
    """A few val images per variant (first seed): true box green, the predicted class's box red."""
    from .attention_maps import select_images

    split = loc["split"]
    labels = np.asarray(split.labels)
    idx = select_images(labels, n_images)
    images = np.asarray(split.images)[idx]
    size = images.shape[1]
    columns = []
    for variant, by_seed in loc["results"].items():
        seed = min(by_seed)
        result = by_seed[seed]
        iou = box_iou(result.box_pred[idx], result.gt_boxes[idx])
        right = result.top1_correct[idx]
        captions = [f"IoU {v:.2f}, top-1 {'right' if ok else 'wrong'}" for v, ok in zip(iou, right, strict=True)]
        columns.append((f"{variant} (seed {seed})", _edges(result.box_pred[idx], size / result.input_size), captions))
    names = loc.get("class_names") or []
    titles = [f"val {i}: {str(names[y])[:18] if y < len(names) else y}" for i, y in zip(idx, labels[idx], strict=True)]
    caption = (f"green: true box; red: the bounding box of the largest component of the predicted class's {METHOD} "
               f"({LAYER}) >= {threshold:g}; correct if IoU >= {IOU_MIN:g}")
    path = figures.plot_localization_boxes(images, _edges(np.asarray(split.boxes)[idx], 1.0), columns,
                                           root / "figures" / "localization_boxes.png", titles=titles,
                                           caption=caption)
    return {"figures/localization_boxes.png": path}


def _write_csv(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def _write_text(text: str, path: Path) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
