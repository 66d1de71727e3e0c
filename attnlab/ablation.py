"""The variant x seed grid: run every training run, skip finished ones, resume broken ones.

An ablation folder is the unit of a study (docs/run-records.md): ``runs/<variant>_seed<k>/``
per run, ``ablation.yaml`` (the shared config), ``profile.json`` and the report files.
Rerunning the same command is always safe: it picks up exactly where the last one stopped.
With ``cfg.sweep`` the rows are the sweep's layouts instead of the variants (attnlab.sweep).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .config import ExperimentConfig, save_config
from .engine.distributed import DistInfo, init_distributed
from .sweep import check_sweep, run_config, run_labels


def run_status(run_dir: Path) -> str:
    """``complete``, ``partial`` (has a checkpoint to resume from) or ``new``."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            if json.loads(summary.read_text()).get("status") == "complete":
                return "complete"
        except json.JSONDecodeError:
            pass
    return "partial" if (run_dir / "checkpoints" / "last.pt").is_file() else "new"


def run_grid(cfg: ExperimentConfig, out: str | Path, *, log=print) -> list[Path]:
    """Train every (variant, seed) of ``cfg`` under ``out/runs``; returns the run folders.

    A sweep's layouts take the variants' place; each is checked before anything trains."""
    from .engine.trainer import Trainer, open_data

    check_sweep(cfg)
    out = Path(out)
    info: DistInfo = init_distributed(cfg.train.device)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "ablation.yaml")
    grid = [(v, s) for s in cfg.seeds for v in run_labels(cfg)]
    data = None
    runs = []
    for i, (variant, seed) in enumerate(grid, 1):
        run_dir = out / "runs" / f"{variant}_seed{seed}"
        runs.append(run_dir)
        status = run_status(run_dir)
        if status == "complete":
            log(f"[{i}/{len(grid)}] {run_dir.name}: complete, skipped")
            continue
        log(f"[{i}/{len(grid)}] {run_dir.name}: {'resuming' if status == 'partial' else 'training'}")
        run_cfg = run_config(cfg, variant, seed)
        if data is None:
            data = open_data(run_cfg, info)
            check_sweep(cfg, image_size=cfg.data.augment.train_size or data.image_size,
                        num_classes=len(data.classes))
        start = time.perf_counter()
        summary = Trainer(run_cfg, run_dir=run_dir, resume=True, dataset=data).fit()
        if summary:
            log(f"    best val top-1 {summary['best']['val_top1']:.4f} (epoch {summary['best']['epoch']}), "
                f"final {summary['final']['val_top1']:.4f}, {time.perf_counter() - start:.0f} s")
    return runs


def profile_grid(cfg: ExperimentConfig, out: str | Path, *, image_size: int, num_classes: int,
                 device: str = "cpu", **kwargs: Any) -> dict[str, Any]:
    """Profile each variant (or sweep layout) of the grid once and save ``profile.json`` beside the runs."""
    from .profile import profile_variants

    m = cfg.model
    if cfg.sweep:
        result = _profile_layouts(cfg, image_size=image_size, num_classes=num_classes, device=device, **kwargs)
    else:
        result = profile_variants(
            cfg.variants, backbone=m.backbone, num_classes=num_classes, image_size=image_size, device=device,
            model_kwargs={"attention_kwargs": m.attention or None, "sites": m.sites or None,
                          "stages": m.stages, "blocks": m.blocks, "placements": m.placements},
            **kwargs,
        )
    path = Path(out) / "profile.json"
    path.write_text(json.dumps(result, indent=2))
    return result


def _profile_layouts(cfg: ExperimentConfig, **kwargs: Any) -> dict[str, Any]:
    """profile_variants once per sweep layout (each its own placements), merged into one file.

    Training steps are not timed here: profile_variants times them relative to a reference
    model of the same call, and each call holds one layout (epoch seconds are in the runs)."""
    from .profile import profile_variants

    kwargs["measure_train"] = False
    merged: dict[str, Any] | None = None
    for name, placements in cfg.sweep.items():
        result = profile_variants(
            [name], backbone=cfg.model.backbone,
            model_kwargs={"attention_kwargs": cfg.model.attention or None, "placements": placements},
            **kwargs,
        )
        if merged is None:
            merged = result
            merged["config"]["variants"] = list(cfg.sweep)
            merged["config"]["model_kwargs"] = {"attention_kwargs": cfg.model.attention or None,
                                                "sweep": cfg.sweep}
        else:
            merged["variants"].update(result["variants"])
    assert merged is not None  # check_sweep refuses an empty sweep
    return merged
