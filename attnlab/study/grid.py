"""The variant x seed grid: run every training run, skip finished ones, resume broken ones.

An ablation folder is the unit of a study (docs/run-records.md): ``runs/<variant>_seed<k>/``
per run, ``ablation.yaml`` (the shared config), ``profile.json`` and the report files.
Rerunning the same command is always safe: it picks up exactly where the last one stopped.
With ``cfg.sweep`` the rows are the sweep's layouts instead of the variants (``study.sweep``);
the runs come from ``study.plan`` and are run by a ``study.executors`` executor.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from ..config import ConfigError, ExperimentConfig, load_config
from ..engine import records
from ..engine.checkpoint import atomic_write_text, remove_stale_temps
from ..engine.distributed import DistInfo, init_distributed, run_on_main
from ..engine.lock import FolderLock
from ..engine.protocol import (
    ablation_protocol,
    check_protocol,
    data_identity,
    recorded_protocol,
    run_protocol,
    write_protocol,
)
from .executors import Executor, InProcessExecutor, run_status  # noqa: F401  (run_status: API)
from .plan import RunSpec, plan_runs
from .sweep import check_sweep


def _merged_record(cfg: ExperimentConfig, out: Path) -> ExperimentConfig:
    """ablation.yaml's content: this config, with the grid grown by earlier invocations'
    variants and seeds (a folder's record lists every run it holds)."""
    path = out / "ablation.yaml"
    if not path.is_file() or cfg.sweep:
        return cfg
    try:
        old = load_config(path)
    except ConfigError:
        return cfg
    merged = copy.deepcopy(cfg)
    merged.variants = list(dict.fromkeys([*old.variants, *cfg.variants]))
    merged.seeds = list(dict.fromkeys([*old.seeds, *cfg.seeds]))
    return merged


def check_grid(cfg: ExperimentConfig, out: Path, data: Any, precision: str, specs: list[RunSpec],
               restart: set[str] = frozenset()) -> dict[str, Any]:
    """Before anything trains: the folder's shared protocol and each existing run's own
    protocol must equal this config's (``restart``: run names whose records are discarded).
    Returns the shared protocol, to record."""
    identity = data_identity(data)
    fix = "Rerun with the recorded values, or run the new protocol in a new --out folder"
    shared = ablation_protocol(cfg, data=identity)
    check_protocol(out, shared, fix=fix)
    for spec in specs:
        if spec.name in restart or not spec.run_dir.is_dir():
            continue
        recorded = recorded_protocol(spec.run_dir)
        if recorded is None:
            continue
        protocol = run_protocol(spec.cfg, data=identity, precision=precision)
        check_protocol(spec.run_dir, protocol, recorded=recorded,
                       fix=f"{fix}; or discard this run with --restart {spec.name}")
    return shared


def run_grid(cfg: ExperimentConfig, out: str | Path, *, log=print, restart: list[str] | None = None,
             wait: bool = False, executor: Executor | None = None,
             tuned: dict[str, dict[str, Any]] | None = None) -> list[Path]:
    """Train every run of the plan of ``cfg`` under ``out/runs``; returns the run folders.

    Before any run starts: the folder is locked for this process, every row is built on the
    meta device at the training size, and the shared and per-run protocols are checked
    against the records; ``restart`` names runs to discard first. ``executor`` runs the
    plan (default: one after another in this process); ``tuned`` adds ``<variant>_tuned``
    rows (``attnlab ablate --tuned``)."""
    from ..engine.trainer import (
        discard_run,
        model_args,
        open_data,
        precision_name,
        preflight,
        resolve_device,
    )

    check_sweep(cfg)
    out = Path(out)
    info: DistInfo = init_distributed(cfg.train.device)
    specs = plan_runs(cfg, out, tuned=tuned)
    restart_set = set(restart or ())
    unknown = sorted(restart_set - {s.name for s in specs})
    if unknown:
        raise ConfigError(f"--restart names run(s) {unknown} that are not in this grid "
                          f"(runs: {', '.join(s.name for s in specs)})")
    lock = FolderLock(out, wait=wait)
    run_on_main(info, lock.acquire)
    try:
        data = open_data(specs[0].cfg, info)
        size = cfg.data.augment.train_size or data.image_size
        check_sweep(cfg, image_size=size, num_classes=len(data.classes))
        for spec in {s.label: s for s in specs}.values():  # every row builds, before any trains
            preflight(model_args(spec.cfg, len(data.classes)), size)
        precision = precision_name(cfg.train.precision, resolve_device(cfg.train.device, info))

        def record() -> None:
            shared = check_grid(cfg, out, data, precision, specs, restart_set)
            remove_stale_temps(out, recursive=False)  # each run cleans its own folder under its lock
            for name in sorted(restart_set):
                log(f"--restart {name}: discarding its records")
                discard_run(out / "runs" / name)
            write_protocol(out, shared)
            records.write_config(out / "ablation.yaml", _merged_record(cfg, out))

        run_on_main(info, record)
        (executor or InProcessExecutor()).run(specs, data=data, log=log)
        return [s.run_dir for s in specs]
    finally:
        lock.release()


def training_format(cfg: ExperimentConfig, device: str) -> tuple[str, bool]:
    """(dtype, channels_last) the runs trained in on ``device`` (``auto`` precision resolved)."""
    import torch

    from ..engine.trainer import precision_name

    return precision_name(cfg.train.precision, torch.device(device)), cfg.train.channels_last


def profile_grid(cfg: ExperimentConfig, out: str | Path, *, image_size: int, num_classes: int,
                 device: str = "cpu", filename: str = "profile.json", **kwargs: Any) -> dict[str, Any]:
    """Profile each variant (or sweep layout) of the grid once and save ``filename`` beside the runs.

    ``kwargs`` go to ``profile_variants`` (e.g. ``dtype="bf16", channels_last=True``)."""
    from ..profiling import profile_variants

    m = cfg.model
    if cfg.sweep:
        result = _profile_layouts(cfg, image_size=image_size, num_classes=num_classes, device=device, **kwargs)
    else:
        result = profile_variants(
            cfg.variants, backbone=m.backbone, num_classes=num_classes, image_size=image_size, device=device,
            model_kwargs={"attention_kwargs": m.attention or None, "sites": m.sites or None,
                          "stages": m.stages, "blocks": m.blocks, "placements": m.placements,
                          "stem": m.stem},
            **kwargs,
        )
    atomic_write_text(Path(out) / filename, json.dumps(result, indent=2))
    return result


def _profile_layouts(cfg: ExperimentConfig, **kwargs: Any) -> dict[str, Any]:
    """profile_variants once per sweep layout (each its own placements), merged into one file.

    Training steps are not timed here: profile_variants times them relative to a reference
    model of the same call, and each call holds one layout (epoch seconds are in the runs)."""
    from ..profiling import profile_variants

    kwargs["measure_train"] = False
    merged: dict[str, Any] | None = None
    for name, placements in cfg.sweep.items():
        result = profile_variants(
            [name], backbone=cfg.model.backbone,
            model_kwargs={"attention_kwargs": cfg.model.attention or None, "placements": placements,
                          "stem": cfg.model.stem},
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
