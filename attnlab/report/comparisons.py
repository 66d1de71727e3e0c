"""Paired comparisons between variants from the saved per-image val predictions.

Which pairs: every variant against the baseline, and each multi-module variant (hybrid)
against each of its single modules (simam, ema). Runs pair by seed (A seed k with B seed
k, same val order). With several seeds the pooled row averages each image's difference
over the seeds, and both the interval and the test take the image as the unit (see
attnlab.report.stats: the test is McNemar's exact test on the images where one variant wins on
the seed average). Per-seed rows, each an ordinary McNemar test, are kept beside it.

The p-values are adjusted for multiple comparisons with Holm's step-down method
(``p_holm``, see attnlab.report.stats.holm): the pooled rows (scope ``all``) form one family,
the rows of each seed another. Verdicts and ``significant`` use ``p_holm``.

``compare_indicators`` is the same machinery for any per-image correctness indicator (the
localization report's GT-known Loc and Top-1 Loc): rows carry a ``metric``, and each
metric's rows are Holm families of their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..models import VARIANTS
from . import stats
from .records import Predictions, RunRecord
from .table import group_by_variant

COLUMNS = ("a", "b", "scope", "n_seeds", "n_images", "top1_a_pct", "top1_b_pct", "delta_pt", "ci_low_pt",
           "ci_high_pt", "confidence", "a_better_images", "b_better_images", "mcnemar_p", "p_holm", "p_rule",
           "significant", "verdict")
LOCALIZATION_COLUMNS = ("metric", "a", "b", "scope", "n_seeds", "n_images", "a_pct", "b_pct", "delta_pt",
                        "ci_low_pt", "ci_high_pt", "confidence", "a_better_images", "b_better_images",
                        "mcnemar_p", "p_holm", "p_rule", "significant", "verdict")


TUNED_SUFFIX = "_tuned"  # rows of `attnlab ablate --tuned` (attnlab.study.plan)


def comparison_pairs(variants: Sequence[str], baseline: str = "baseline") -> list[tuple[str, str]]:
    """(A, B) pairs to test, A - B: each variant vs the baseline, then hybrid vs its parts;
    with tuned rows, the same among the tuned rows (vs ``baseline_tuned``), then each tuned
    row vs its shared-protocol row."""
    shared = [v for v in variants if not v.endswith(TUNED_SUFFIX)]
    tuned = [v for v in variants if v.endswith(TUNED_SUFFIX)]
    pairs = _family(shared, baseline, lambda v: v)
    pairs += _family(tuned, baseline + TUNED_SUFFIX, lambda v: v[: -len(TUNED_SUFFIX)])
    pairs += [(v, v[: -len(TUNED_SUFFIX)]) for v in tuned if v[: -len(TUNED_SUFFIX)] in shared]
    return pairs


def _family(variants: Sequence[str], baseline: str, base_name) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    pairs = [(v, baseline) for v in variants if baseline in variants and v != baseline]
    for v in variants:
        kinds = VARIANTS.get(base_name(v), ())
        if len(kinds) < 2:
            continue
        for w in variants:
            parts = VARIANTS.get(base_name(w), ())
            if len(parts) == 1 and parts[0] in kinds:
                pairs.append((v, w))
    return pairs


def paired_predictions(
    runs_a: Sequence[RunRecord], runs_b: Sequence[RunRecord], policy: str, warnings: list[str]
) -> dict[int, tuple[Predictions, Predictions]]:
    """seed -> (A's, B's) predictions, for seeds both have with matching val labels."""
    b_by_seed = {r.seed: r for r in runs_b}
    out = {}
    for ra in runs_a:
        rb = b_by_seed.get(ra.seed)
        if rb is None:
            continue
        pa, pb = ra.predictions(policy), rb.predictions(policy)
        if pa is None or pb is None:
            missing = [r.path.name for r, p in ((ra, pa), (rb, pb)) if p is None]
            warnings.append(f"no {policy} predictions in {', '.join(missing)}: seed {ra.seed} left out of {ra.variant} vs {rb.variant}")
            continue
        if pa.labels.shape != pb.labels.shape or not np.array_equal(pa.labels, pb.labels):
            warnings.append(f"{ra.path.name} and {rb.path.name} have different val labels/order: not paired")
            continue
        out[ra.seed] = (pa, pb)
    return out


def compare_variants(
    runs: Sequence[RunRecord],
    *,
    policy: str = "final",
    alpha: float = 0.05,
    n_boot: int = 10_000,
    seed: int = 0,
    baseline: str = "baseline",
    warnings: list[str] | None = None,
) -> pd.DataFrame:
    """One row per pair with the pooled result (scope ``all``), plus per-seed rows.

    ``mcnemar_p`` is each comparison's own p; ``p_holm`` is Holm-adjusted within its
    family (all ``all`` rows; the rows of one seed); ``significant`` and ``verdict`` use
    ``p_holm``."""
    warnings = warnings if warnings is not None else []
    groups = group_by_variant(runs)
    rows = []
    for a, b in comparison_pairs(list(groups), baseline):
        pairs = paired_predictions(groups[a], groups[b], policy, warnings)
        if not pairs:
            warnings.append(f"{a} vs {b}: no paired predictions, no statistics")
            continue
        seeds = sorted(pairs)
        ca = np.stack([pairs[s][0].top1_correct for s in seeds])
        cb = np.stack([pairs[s][1].top1_correct for s in seeds])
        rows += _pair_rows(a, b, seeds, ca, cb, alpha, n_boot, seed)
    _adjust_and_decide(rows, alpha)
    for r in rows:
        r["top1_a_pct"], r["top1_b_pct"] = r.pop("a_pct"), r.pop("b_pct")
    return pd.DataFrame(rows, columns=list(COLUMNS))


def compare_indicators(
    correct: dict[str, dict[int, np.ndarray]],
    pairs: Sequence[tuple[str, str]],
    *,
    metric: str,
    label: str,
    alpha: float = 0.05,
    n_boot: int = 10_000,
    seed: int = 0,
    warnings: list[str] | None = None,
) -> list[dict]:
    """``compare_variants`` for any per-image indicator: ``correct[variant][seed]`` is a
    boolean (N,) array in the fixed val order. Runs pair by seed; rows (columns
    ``LOCALIZATION_COLUMNS``) carry ``metric``; the pooled rows of one metric form one Holm
    family, each seed's rows of that metric another; verdicts name ``label``
    (e.g. ``GT-known Loc``) instead of Top-1."""
    rows: list[dict] = []
    for a, b in pairs:
        sa, sb = correct.get(a, {}), correct.get(b, {})
        seeds = sorted(s for s in sa if s in sb and np.shape(sa[s]) == np.shape(sb[s]))
        if not seeds:
            if warnings is not None:
                warnings.append(f"localization: {a} vs {b}: no paired runs, no statistics")
            continue
        ca = np.stack([np.asarray(sa[s], dtype=bool) for s in seeds])
        cb = np.stack([np.asarray(sb[s], dtype=bool) for s in seeds])
        rows += _pair_rows(a, b, seeds, ca, cb, alpha, n_boot, seed)
    _adjust_and_decide(rows, alpha, label=label)
    for r in rows:
        r["metric"] = metric
    return rows


def _pair_rows(a: str, b: str, seeds: Sequence[int], ca: np.ndarray, cb: np.ndarray, alpha: float, n_boot: int,
               seed: int) -> list[dict]:
    """The pooled row, and with several seeds one row per seed."""
    rows = [_row(a, b, "all", ca, cb, alpha, n_boot, seed)]
    if len(seeds) > 1:
        rows.extend(_row(a, b, f"seed {s}", ca[i], cb[i], alpha, n_boot, seed) for i, s in enumerate(seeds))
    return rows


def _adjust_and_decide(rows: list[dict], alpha: float, *, label: str = "Top-1") -> None:
    """Holm-adjust each scope's p-values (one family per scope), then significance and verdicts."""
    for family in {r["scope"] for r in rows}:
        members = [r for r in rows if r["scope"] == family]
        for r, adjusted in zip(members, stats.holm([r["mcnemar_p"] for r in members]), strict=True):
            r["p_holm"] = float(adjusted)
    for r in rows:
        ci = r.pop("_ci")
        r["significant"] = stats.is_significant(ci.low, ci.high, r["p_holm"], alpha)
        text = stats.verdict(r["a"], r["b"], ci, r["mcnemar_p"], alpha=alpha, p_note=r.pop("_note"),
                             p_holm=r["p_holm"])
        if label != "Top-1":  # stats.verdict names Top-1: name this metric instead
            text = text.replace(" pt Top-1 [", f" pt {label} [", 1)
        r["verdict"] = text


def _row(a: str, b: str, scope: str, ca: np.ndarray, cb: np.ndarray, alpha: float, n_boot: int,
         seed: int) -> dict:
    ci = stats.paired_bootstrap_ci(ca, cb, confidence=1 - alpha, n_boot=n_boot, seed=seed)
    a_wins, b_wins = stats.sign_counts(ca, cb)
    p = stats.mcnemar_exact(a_wins, b_wins)
    if ci.n_seeds == 1:
        rule, note = "McNemar exact", ""
    else:
        rule = f"McNemar exact on images won over {ci.n_seeds} seeds (sign test)"
        note = f" (images pooled over {ci.n_seeds} seeds)"
    return {
        "a": a, "b": b, "scope": scope, "n_seeds": ci.n_seeds, "n_images": ci.n_images,
        "a_pct": 100 * float(np.mean(ca)), "b_pct": 100 * float(np.mean(cb)),
        "delta_pt": 100 * ci.delta, "ci_low_pt": 100 * ci.low, "ci_high_pt": 100 * ci.high,
        "confidence": ci.confidence, "a_better_images": a_wins, "b_better_images": b_wins,
        "mcnemar_p": p, "p_holm": math.nan, "p_rule": rule, "significant": False, "verdict": "",
        "_ci": ci, "_note": note,
    }


def per_class_delta(
    runs: Sequence[RunRecord], a: str, b: str, *, policy: str = "final", warnings: list[str] | None = None
) -> pd.DataFrame | None:
    """Per-class Top-1 (%) of A and B and A - B (pt), averaged over paired seeds."""
    warnings = warnings if warnings is not None else []
    groups = group_by_variant(runs)
    if a not in groups or b not in groups:
        return None
    pairs = paired_predictions(groups[a], groups[b], policy, warnings)
    if not pairs:
        return None
    seeds = sorted(pairs)
    labels = pairs[seeds[0]][0].labels
    n_classes = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=n_classes)
    acc = {}
    for side, variant in ((0, a), (1, b)):
        per_seed = [np.bincount(labels, weights=pairs[s][side].top1_correct, minlength=n_classes) for s in seeds]
        with np.errstate(invalid="ignore", divide="ignore"):
            acc[variant] = 100 * np.mean(per_seed, axis=0) / counts
    names = groups[a][0].class_names or groups[b][0].class_names
    if names is None or len(names) < n_classes:
        names = [str(i) for i in range(n_classes)]
    return pd.DataFrame({
        "class": np.arange(n_classes), "name": names[:n_classes], "n_images": counts,
        f"top1_{a}_pct": acc[a], f"top1_{b}_pct": acc[b], "delta_pt": acc[a] - acc[b],
    })
