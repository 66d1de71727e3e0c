"""The plan: a config in, the list of runs out (name, row label, seed, resolved config, folder).

Everything that multiplies runs expands here, once: the variants (or a sweep's layouts)
times the seeds, and with ``tuned`` each variant's tuned parameters as an extra row
``<variant>_tuned``. Executors only run a plan; the report only reads what it produced.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError, ExperimentConfig, from_dict, set_dotted, to_dict
from .sweep import run_config, run_labels

TUNED_SUFFIX = "_tuned"


@dataclass(frozen=True)
class RunSpec:
    """One run of a plan."""

    label: str            # the table row: a variant, a sweep layout, or <variant>_tuned
    seed: int
    cfg: ExperimentConfig  # the run's resolved config (what its config.yaml will record)
    run_dir: Path

    @property
    def name(self) -> str:
        return self.run_dir.name


def apply_params(cfg: ExperimentConfig, params: Mapping[str, Any]) -> ExperimentConfig:
    """``cfg`` with dotted-key parameters set (validated like any config)."""
    raw = to_dict(cfg)
    for key, value in params.items():
        set_dotted(raw, key.split("."), copy.deepcopy(value))
    return from_dict(raw)


def tuned_config(cfg: ExperimentConfig, variant: str, seed: int, params: Mapping[str, Any]) -> ExperimentConfig:
    """The run config of ``variant`` with its tuned parameters, labelled ``<variant>_tuned``.

    The label becomes the run's variant name and the layout is spelled out as placements
    (as a sweep does), so the run record says exactly what was built and trained."""
    from ..models import variant_placements

    base = apply_params(run_config(cfg, variant, seed), params)
    raw = to_dict(base)
    m = base.model
    layout = m.placements if m.placements is not None else [
        {"kind": p.kind, "site": p.site, "stages": list(p.stages),
         "blocks": None if p.blocks is None else list(p.blocks)}
        for p in variant_placements(variant, sites=m.sites or None, stages=m.stages, blocks=m.blocks)]
    raw["model"].update(placements=layout, sites={}, stages=None, blocks=None)
    raw["variant"] = variant + TUNED_SUFFIX
    return from_dict(raw)


def plan_runs(cfg: ExperimentConfig, out: str | Path, *,
              tuned: Mapping[str, Mapping[str, Any]] | None = None) -> list[RunSpec]:
    """Every run of the grid, seed-major: the shared-protocol rows, then any tuned rows."""
    out = Path(out)
    specs: list[RunSpec] = []
    for seed in cfg.seeds:
        for label in run_labels(cfg):
            specs.append(RunSpec(label, seed, run_config(cfg, label, seed), out / "runs" / f"{label}_seed{seed}"))
        for variant, params in (tuned or {}).items():
            if cfg.sweep:
                raise ConfigError("--tuned applies to variants, not to a sweep's layouts")
            label = variant + TUNED_SUFFIX
            specs.append(RunSpec(label, seed, tuned_config(cfg, variant, seed, params),
                                 out / "runs" / f"{label}_seed{seed}"))
    return specs
