"""The results table: one row per variant, every number traceable to the run records.

Accuracies are percent (mean and sample std over seeds; std is NaN, shown "n/a", with one
seed), deltas are percentage points against the baseline's mean. Efficiency figures come
from profile.json (params also from summary.json); training time from metrics.csv
(mean training seconds per epoch) and summary.json (``train_seconds_total``).

The val Top-1 / Top-5 and epoch of each run are summary.json's ``final`` / ``best``
entries, which ``load_runs`` has checked against metrics.csv and the predictions. With a
``profile_train.json`` (the training format, e.g. bf16 + channels_last) its batch-1
latency and throughput get their own columns, ``<field>_<format>`` (``latency_b1_ms_bf16_cl``),
never mixed into the fp32 ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import groupby
from typing import Any

import numpy as np
import pandas as pd

from .profile_json import TRAIN_FIELDS
from .records import POLICIES, RunRecord, _num, check_policy

COLUMNS = (
    "variant", "n_seeds", "seeds", "policy", "epoch",
    "top1_mean_pct", "top1_std_pct", "top1_delta_pt",
    "top5_mean_pct", "top5_std_pct", "top5_delta_pt",
    "top1_other_mean_pct",
    "params", "added_params", "gmacs", "gmacs_delta", "attention_gops",
    "epoch_seconds", "train_seconds_total",
    "latency_b1_ms", "latency_b1_p95_ms", "latency_b1_delta_ms", "throughput_img_s", "throughput_batch",
)


HFLIP_COLUMNS = ("top1_hflip_mean_pct", "top5_hflip_mean_pct")  # flip-averaged val (train.eval_hflip)


def train_columns(train_format: str) -> list[str]:
    """The extra columns of a training-format profile, e.g. ``latency_b1_ms_bf16_cl``."""
    return [f"{k}_{train_format}" for k in TRAIN_FIELDS]


def group_by_variant(runs: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    """Runs per variant, in the order given (load_runs sorts them)."""
    return {v: list(rs) for v, rs in groupby(runs, key=lambda r: r.variant)}


def results_table(
    runs: Sequence[RunRecord],
    *,
    policy: str = "final",
    profile: Mapping[str, Mapping[str, Any]] | None = None,
    baseline: str = "baseline",
    warnings: list[str] | None = None,
    train_profile: Mapping[str, Mapping[str, Any]] | None = None,
    train_format: str | None = None,
) -> pd.DataFrame:
    """One row per variant (columns: ``COLUMNS``, with ``top1_other_mean_pct`` renamed to
    ``top1_<other policy>_mean_pct``; with ``train_profile`` and ``train_format`` also
    ``train_columns(train_format)``, from that profile)."""
    check_policy(policy)
    other = next(p for p in POLICIES if p != policy)
    warnings = warnings if warnings is not None else []
    profile = profile or {}
    rows = []
    for variant, vruns in group_by_variant(runs).items():
        sel = [r.selected(policy) for r in vruns]
        top1 = _pct([s["val_top1"] for s in sel])
        top5 = _pct([s["val_top5"] for s in sel])
        prof = dict(profile.get(variant, {}))
        row: dict[str, Any] = {
            "variant": variant,
            "n_seeds": len(vruns),
            "seeds": ";".join(str(r.seed) for r in vruns),
            "policy": policy,
            "epoch": _mean([s["epoch"] for s in sel]),
            "top1_mean_pct": _mean(top1), "top1_std_pct": _std(top1),
            "top5_mean_pct": _mean(top5), "top5_std_pct": _std(top5),
            "top1_other_mean_pct": _mean(_pct([r.selected(other)["val_top1"] for r in vruns])),
            "params": _params(variant, vruns, prof, warnings),
            "added_params": prof.get("added_params"),
            "gmacs": prof.get("gmacs") if prof.get("gmacs") is not None else _summary_num(vruns, "gmacs"),
            "epoch_seconds": _mean([r.epoch_seconds for r in vruns]),
            "train_seconds_total": _mean([r.train_seconds_total for r in vruns]),
            "attention_gops": prof.get("attention_gops"),
            "latency_b1_ms": prof.get("latency_b1_ms"),
            "latency_b1_p95_ms": prof.get("latency_b1_p95_ms"),
            "throughput_img_s": prof.get("throughput_img_s"),
            "throughput_batch": prof.get("throughput_batch"),
        }
        if train_profile and train_format:
            tprof = train_profile.get(variant, {})
            row.update({f"{k}_{train_format}": tprof.get(k) for k in TRAIN_FIELDS})
        flip = [(r.summary.get(f"{policy}_hflip") or {}) for r in vruns]
        if any(isinstance(f, dict) and f for f in flip):  # train.eval_hflip: own columns, never mixed
            row["top1_hflip_mean_pct"] = _mean(_pct([_num(f.get("val_top1")) for f in flip]))
            row["top5_hflip_mean_pct"] = _mean(_pct([_num(f.get("val_top5")) for f in flip]))
        summary_added = _summary_num(vruns, "params", "added")
        if summary_added is not None:
            row["added_params"] = summary_added
        rows.append(row)
    table = pd.DataFrame(rows)
    _add_deltas(table, baseline, warnings)
    extra = train_columns(train_format) if train_profile and train_format else []
    extra += [c for c in HFLIP_COLUMNS if c in table]
    table = table.reindex(columns=list(COLUMNS) + extra)
    counts = [c for c in extra if c.startswith("throughput_batch_")]
    for col in ("params", "added_params", "throughput_batch", "n_seeds", *counts):
        table[col] = pd.to_numeric(table[col], errors="coerce").round().astype("Int64")
    return table.rename(columns={"top1_other_mean_pct": f"top1_{other}_mean_pct"})


def _add_deltas(table: pd.DataFrame, baseline: str, warnings: list[str]) -> None:
    base = table[table["variant"] == baseline]
    pairs = [("top1_delta_pt", "top1_mean_pct"), ("top5_delta_pt", "top5_mean_pct"),
             ("gmacs_delta", "gmacs"), ("latency_b1_delta_ms", "latency_b1_ms")]
    if base.empty:
        warnings.append(f"no {baseline!r} runs: delta columns left empty")
        for delta, _ in pairs:
            table[delta] = np.nan
        return
    for delta, col in pairs:
        table[delta] = pd.to_numeric(table[col], errors="coerce") - pd.to_numeric(base[col], errors="coerce").iloc[0]
    if table["added_params"].isna().any() and pd.notna(base["params"].iloc[0]):
        fill = pd.to_numeric(table["params"], errors="coerce") - base["params"].iloc[0]
        table["added_params"] = table["added_params"].where(table["added_params"].notna(), fill)


def _params(variant: str, runs: Sequence[RunRecord], prof: Mapping[str, Any], warnings: list[str]) -> int | None:
    from_summary = _summary_num(runs, "params", "total")
    from_profile = prof.get("params")
    if from_profile is not None and from_summary is not None and from_profile != from_summary:
        warnings.append(f"{variant}: params differ between profile.json ({from_profile:,}) and "
                        f"summary.json ({from_summary:,}); the table uses profile.json")
    return from_profile if from_profile is not None else from_summary


def _summary_num(runs: Sequence[RunRecord], *keys: str) -> float | int | None:
    """A summary.json figure (the first run that has it)."""
    for run in runs:
        value: Any = run.summary
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if _num(value) is not None:
            return _num(value)
    return None


def _pct(values: Sequence[float | None]) -> list[float | None]:
    return [None if v is None else 100.0 * v for v in values]


def _mean(values: Sequence[float | None]) -> float:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else float("nan")


def _std(values: Sequence[float | None]) -> float:
    """Sample std (ddof=1); NaN with fewer than two values: one seed has no spread to show."""
    vals = [v for v in values if v is not None]
    return float(np.std(vals, ddof=1)) if len(vals) >= 2 else float("nan")
