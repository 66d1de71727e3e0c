"""The variant x seed grid: run every training run, skip finished ones, resume broken ones.

An ablation folder is the unit of a study (docs/run-records.md): ``runs/<variant>_seed<k>/``
per run, ``ablation.yaml`` (the shared config), ``profile.json`` and the report files.
Rerunning the same command is always safe: it picks up exactly where the last one stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .config import ExperimentConfig, for_variant, save_config
from .engine.distributed import DistInfo, init_distributed


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
    """Train every (variant, seed) of ``cfg`` under ``out/runs``; returns the run folders."""
    from .engine.trainer import Trainer, open_data

    out = Path(out)
    info: DistInfo = init_distributed("cuda" if cfg.train.device.startswith("cuda") else "cpu")
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "ablation.yaml")
    grid = [(v, s) for s in cfg.seeds for v in cfg.variants]
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
        run_cfg = for_variant(cfg, variant, seed)
        if data is None:
            data = open_data(run_cfg, info)
        start = time.perf_counter()
        summary = Trainer(run_cfg, run_dir=run_dir, resume=True, dataset=data).fit()
        if summary:
            log(f"    best val top-1 {summary['best']['val_top1']:.4f} (epoch {summary['best']['epoch']}), "
                f"final {summary['final']['val_top1']:.4f}, {time.perf_counter() - start:.0f} s")
    return runs


def profile_grid(cfg: ExperimentConfig, out: str | Path, *, image_size: int, num_classes: int,
                 device: str = "cpu", **kwargs: Any) -> dict[str, Any]:
    """Profile each variant of the grid once and save ``profile.json`` beside the runs."""
    from .profile import profile_variants

    m = cfg.model
    result = profile_variants(
        cfg.variants, backbone=m.backbone, num_classes=num_classes, image_size=image_size, device=device,
        model_kwargs={"attention_kwargs": m.attention or None, "sites": m.sites or None,
                      "stages": m.stages, "blocks": m.blocks, "placements": m.placements},
        **kwargs,
    )
    path = Path(out) / "profile.json"
    path.write_text(json.dumps(result, indent=2))
    return result
