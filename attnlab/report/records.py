"""Reading an ablation folder's run records (format: docs/run-records.md).

Only reads; every figure the report prints is traceable to one of these files. Missing or
malformed pieces become warnings and empty cells, never invented numbers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..models import VARIANTS

POLICIES = ("final", "best")
# policy -> (summary.json key, predictions / checkpoint file stem)
_POLICY_FILES = {"final": ("final", "last"), "best": ("best", "best")}
_RUN_DIR = re.compile(r"^(?P<variant>.+)_seed(?P<seed>\d+)$")


@dataclass(frozen=True)
class Predictions:
    """Per-image val predictions of one run at one epoch."""

    labels: np.ndarray  # (N,) int64
    top5: np.ndarray  # (N, 5) int64, by decreasing score
    epoch: int | None

    @property
    def top1_correct(self) -> np.ndarray:
        return self.top5[:, 0] == self.labels

    @property
    def top5_correct(self) -> np.ndarray:
        return (self.top5 == self.labels[:, None]).any(axis=1)


@dataclass
class RunRecord:
    """One run folder: its metrics per epoch, its summary, and where its files are."""

    path: Path
    variant: str
    seed: int
    status: str
    metrics: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)

    def selected(self, policy: str) -> dict[str, float | int | None]:
        """val_top1 / val_top5 / val_loss / epoch at the policy's epoch.

        ``final``: the last row of metrics.csv; ``best``: the row with the highest val
        Top-1 (earliest on ties). Without metrics.csv, summary.json's entry is used.
        """
        check_policy(policy)
        if not self.metrics.empty and "val_top1" in self.metrics:
            m = self.metrics.sort_values("epoch", kind="stable").reset_index(drop=True)
            # NaN (a diverged epoch) is never the best; np.argmax alone would pick it
            best = int(m["val_top1"].astype(float).fillna(-np.inf).to_numpy().argmax())
            i = len(m) - 1 if policy == "final" else best
            row = m.iloc[i]
            return {k: _num(row.get(k)) for k in ("val_top1", "val_top5", "val_loss", "epoch")}
        entry = self.summary.get(_POLICY_FILES[policy][0]) or {}
        return {k: _num(entry.get(k)) for k in ("val_top1", "val_top5", "val_loss", "epoch")}

    def predictions(self, policy: str) -> Predictions | None:
        path = self.path / "predictions" / f"{_POLICY_FILES[policy][1]}.npz"
        if not path.is_file():
            return None
        with np.load(path) as z:
            labels = np.asarray(z["labels"], dtype=np.int64)
            top5 = np.asarray(z["top5"], dtype=np.int64)
            epoch = int(z["epoch"]) if "epoch" in z.files else None
        if top5.ndim == 1:
            top5 = top5[:, None]
        if top5.shape[0] != labels.shape[0]:
            raise ValueError(f"{path}: top5 has {top5.shape[0]} rows but labels {labels.shape[0]}")
        return Predictions(labels, top5, epoch)

    def checkpoint(self, policy: str) -> Path | None:
        """The policy's checkpoint, else the other one, else None."""
        stems = [_POLICY_FILES[policy][1]] + [s for _, s in _POLICY_FILES.values()]
        for stem in dict.fromkeys(stems):
            path = self.path / "checkpoints" / f"{stem}.pt"
            if path.is_file():
                return path
        return None

    @property
    def epoch_seconds(self) -> float | None:
        """Mean training seconds per epoch (metrics.csv, else summary.json)."""
        if "epoch_seconds" in self.metrics and self.metrics["epoch_seconds"].notna().any():
            return float(self.metrics["epoch_seconds"].mean())
        return _num(self.summary.get("epoch_seconds_mean"))

    @property
    def train_seconds_total(self) -> float | None:
        """summary.json's ``train_seconds_total``, else the sum of metrics.csv's
        ``epoch_seconds`` (training only, like the engine's total)."""
        total = _num(self.summary.get("train_seconds_total"))
        if total is not None:
            return total
        if "epoch_seconds" not in self.metrics or self.metrics["epoch_seconds"].isna().all():
            return None
        return float(self.metrics["epoch_seconds"].sum())

    @property
    def class_names(self) -> list[str] | None:
        names = self.summary.get("class_names")
        return [str(n) for n in names] if isinstance(names, list) else None


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")


def load_runs(ablation_dir: str | Path, *, include_incomplete: bool = False) -> tuple[list[RunRecord], list[str]]:
    """All run records under ``<ablation_dir>/runs/`` (sorted by variant order, then seed),
    and warnings about what was skipped or inconsistent."""
    root = Path(ablation_dir) / "runs"
    if not root.is_dir():
        raise FileNotFoundError(f"{ablation_dir} has no runs/ folder (expected runs/<variant>_seed<k>/)")
    runs: list[RunRecord] = []
    warnings: list[str] = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        run = _load_run(path, warnings)
        if run is None:
            continue
        if run.status != "complete" and not include_incomplete:
            warnings.append(f"skipped {path.name}: status {run.status!r} (not complete)")
            continue
        runs.append(run)
    seen: set[tuple[str, int]] = set()
    for run in runs:
        if (run.variant, run.seed) in seen:
            raise ValueError(f"two runs of variant {run.variant!r} with seed {run.seed} under {root}")
        seen.add((run.variant, run.seed))
    runs.sort(key=lambda r: (variant_sort_key(r.variant), r.seed))
    return runs, warnings


def variant_sort_key(variant: str) -> tuple[int, str]:
    """The study's order (baseline, simam, ema, hybrid), then the built-in sweep's layouts in
    its order (official first), then any others by name."""
    from ..sweep import SITE_LAYOUT_NAMES

    order = list(VARIANTS) + [n for n in SITE_LAYOUT_NAMES if n not in VARIANTS]
    return (order.index(variant), "") if variant in order else (len(order), variant)


def _load_run(path: Path, warnings: list[str]) -> RunRecord | None:
    metrics_path, summary_path = path / "metrics.csv", path / "summary.json"
    if not metrics_path.is_file() and not summary_path.is_file():
        warnings.append(f"skipped {path.name}: neither metrics.csv nor summary.json")
        return None
    summary: dict[str, Any] = {}
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
        except json.JSONDecodeError as err:
            warnings.append(f"{path.name}/summary.json is not valid JSON ({err}); ignored")
    metrics = pd.read_csv(metrics_path) if metrics_path.is_file() else pd.DataFrame()
    if metrics_path.is_file() and metrics.empty:
        warnings.append(f"{path.name}/metrics.csv has no epochs")
    match = _RUN_DIR.match(path.name)
    variant = summary.get("variant") or (match["variant"] if match else None)
    seed = summary.get("seed", int(match["seed"]) if match else None)
    if variant is None or seed is None:
        warnings.append(f"skipped {path.name}: no variant/seed in summary.json or folder name")
        return None
    status = str(summary.get("status", "complete" if not summary_path.is_file() else "unknown"))
    if not summary_path.is_file():
        warnings.append(f"{path.name} has no summary.json; treated as complete")
    return RunRecord(path, str(variant), int(seed), status, metrics, summary)


def _num(value: Any) -> float | int | None:
    """A finite number or None (NaN, missing and non-numeric all become None)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(f):
        return None
    return int(f) if isinstance(value, (int, np.integer)) else f
