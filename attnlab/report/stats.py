"""Paired statistics for two classifiers scored on the same val images.

Why paired: both models see the same images, so the question is whether they disagree in
one direction more often than chance allows, not whether two independent accuracies
differ. Two tools answer it:

* a paired bootstrap of the Top-1 difference over images (a confidence interval), and
* McNemar's exact test on the discordant pairs (b: A right and B wrong, c: A wrong and
  B right), i.e. a two-sided binomial test of b out of b + c at 1/2.

With several seeds the image stays the unit of both: the per-image differences are
averaged over the paired seeds; the bootstrap resamples images once for all seeds, and
the test counts the images where A is right in more seeds than B against the reverse
(an exact sign test on independent images, which is McNemar's test when there is one
seed; pooling the discordant pairs of all seeds instead would count each image several
times as if independent). Both cover val-set sampling, not training-seed variation; the
std over seeds in the results table shows the latter.

A report tests several comparisons at once (each variant against the baseline, the hybrid
against each of its modules), so its p-values are adjusted for that family with Holm's
step-down method (:func:`holm`), which controls the family-wise error rate at alpha
without assuming the comparisons independent. A gain is called significant only when the
interval excludes 0 *and* the adjusted p < alpha. The intervals are per comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: 2 * P(X <= min(b, c)), X ~ Binomial(b + c, 1/2).

    The binomial tail is summed in exact integers (term recurrence of C(n, k)) and
    divided once, so it neither overflows nor loses precision for large b + c.
    """
    if b < 0 or c < 0 or int(b) != b or int(c) != c:
        raise ValueError(f"McNemar counts must be non-negative integers, got b={b}, c={c}")
    b, c = int(b), int(c)
    n = b + c
    k = min(b, c)
    if n == 0 or 2 * k == n:
        return 1.0
    term = total = 1  # C(n, 0)
    for i in range(k):
        term = term * (n - i) // (i + 1)  # C(n, i + 1), exact
        total += term
    return min(1.0, total / 2 ** (n - 1))  # 2 * total / 2**n, correctly rounded


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    With the m finite p-values sorted, p(1) <= ... <= p(m), the i-th smallest becomes
    ``max over j <= i of min(1, (m - j + 1) * p(j))``: monotone in p and capped at 1.
    NaN p-values stay NaN and do not count in m. E.g. [0.01, 0.04, 0.03] ->
    [0.03, 0.06, 0.06].
    """
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    if (p[ok] < 0).any() or (p[ok] > 1).any():
        raise ValueError(f"p-values must lie in [0, 1], got {p[ok].tolist()}")
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def mcnemar_chi2(b: int, c: int, *, correction: bool = True) -> tuple[float, float]:
    """McNemar's chi-square (1 dof) statistic and p-value; Edwards' continuity correction.

    The large-sample approximation of :func:`mcnemar_exact`; p = erfc(sqrt(stat / 2)).
    """
    if b < 0 or c < 0:
        raise ValueError(f"McNemar counts must be non-negative, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 0.0, 1.0
    diff = abs(b - c) - (1 if correction else 0)
    stat = max(diff, 0) ** 2 / n
    return stat, math.erfc(math.sqrt(stat / 2))


def discordant_counts(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int]:
    """(b, c): images A gets right and B wrong, and the reverse (summed over any seed axis)."""
    a, b_ = _as_bool(correct_a), _as_bool(correct_b)
    _check_same_shape(a, b_)
    return int(np.sum(a & ~b_)), int(np.sum(~a & b_))


def sign_counts(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int]:
    """Images where A beats B (seed-averaged difference > 0) and the reverse.

    With one seed this is ``discordant_counts``; ``mcnemar_exact`` of the pair is the
    paired test for any number of seeds.
    """
    d = paired_differences(correct_a, correct_b)
    return int(np.sum(d > 0)), int(np.sum(d < 0))


@dataclass(frozen=True)
class BootstrapCI:
    """Observed Top-1 difference (A - B, as a fraction) and its percentile interval."""

    delta: float
    low: float
    high: float
    confidence: float
    n_images: int
    n_seeds: int
    n_boot: int


def paired_differences(correct_a: np.ndarray, correct_b: np.ndarray) -> np.ndarray:
    """Per-image difference A - B, averaged over paired seeds: values in {k / S}."""
    a, b = _as_bool(correct_a), _as_bool(correct_b)
    _check_same_shape(a, b)
    if a.ndim == 1:
        a, b = a[None], b[None]
    if a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"expected (N,) or (seeds, N) arrays with N > 0, got shape {a.shape}")
    return (a.astype(np.int64) - b.astype(np.int64)).mean(axis=0)


def bootstrap_replicates(
    correct_a: np.ndarray, correct_b: np.ndarray, *, n_boot: int = 10_000, seed: int = 0
) -> np.ndarray:
    """``n_boot`` bootstrap replicates of the mean paired difference (images resampled).

    Resampling N images with replacement only changes how many of each difference value
    are drawn, so the replicates are drawn as multinomial counts over the 2S + 1 possible
    values: the same distribution as index resampling, at O(S) instead of O(N) per draw.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    a = _as_bool(correct_a)
    n_seeds = 1 if a.ndim == 1 else a.shape[0]
    d = paired_differences(correct_a, correct_b)
    steps = np.rint(d * n_seeds).astype(np.int64)  # integers in [-S, S]
    values, counts = np.unique(steps, return_counts=True)
    n = d.size
    draws = np.random.default_rng(seed).multinomial(n, counts / n, size=n_boot)
    return draws @ values / (n * n_seeds)


def paired_bootstrap_ci(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    *,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> BootstrapCI:
    """Percentile confidence interval of Top-1(A) - Top-1(B) by a paired image bootstrap.

    ``correct_*`` are boolean arrays, (N,) for one seed or (seeds, N) for paired seeds
    (row k of A pairs with row k of B, same val order).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    d = paired_differences(correct_a, correct_b)
    reps = bootstrap_replicates(correct_a, correct_b, n_boot=n_boot, seed=seed)
    tail = (1 - confidence) / 2
    low, high = np.quantile(reps, [tail, 1 - tail])
    n_seeds = 1 if np.ndim(correct_a) == 1 else np.shape(correct_a)[0]
    return BootstrapCI(float(d.mean()), float(low), float(high), confidence, d.size, n_seeds, n_boot)


def is_significant(low: float, high: float, p: float, alpha: float) -> bool:
    """True only if the interval excludes 0 and p < alpha (NaN anywhere: False)."""
    if any(math.isnan(v) for v in (low, high, p)):
        return False
    return (low > 0 or high < 0) and p < alpha


def format_p(p: float) -> str:
    """p with 3 significant digits, so rounding never makes 0.0496 read as 0.05."""
    if math.isnan(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3g}"


def verdict(
    a: str,
    b: str,
    ci: BootstrapCI,
    p: float,
    *,
    alpha: float = 0.05,
    p_note: str = "",
    p_holm: float | None = None,
) -> str:
    """One plain-language line, e.g. ``hybrid vs simam: +0.80 pt Top-1 [95% CI -0.20, +1.70],
    McNemar p=0.11 — not significant (the interval includes 0)``.

    With ``p_holm`` (the family-adjusted p, see :func:`holm`) the line shows both, e.g.
    ``McNemar p=0.011, Holm p=0.033``, and the verdict uses the adjusted one.
    """
    level = f"{ci.confidence * 100:g}%"
    p_part = f"McNemar {_p_eq(p)}{p_note}"
    decide, p_name = p, "p"
    if p_holm is not None:
        p_part += f", Holm {_p_eq(p_holm)}"
        decide, p_name = p_holm, "Holm p"
    head = (
        f"{a} vs {b}: {100 * ci.delta:+.2f} pt Top-1 "
        f"[{level} CI {100 * ci.low:+.2f}, {100 * ci.high:+.2f}], {p_part}"
    )
    if is_significant(ci.low, ci.high, decide, alpha):
        better = "better" if ci.delta > 0 else "worse"
        return f"{head} — significant: {a} is {better} than {b}"
    reasons = []
    if not (ci.low > 0 or ci.high < 0):
        reasons.append("the interval includes 0")
    if math.isnan(decide):
        reasons.append("no p-value")
    elif not decide < alpha:
        reasons.append(f"{p_name} ≥ {alpha:g}")
    return f"{head} — not significant ({' and '.join(reasons) or 'undefined'})"


def _p_eq(p: float) -> str:
    txt = format_p(p)
    return f"p{'' if txt.startswith('<') else '='}{txt}"


def _as_bool(x: np.ndarray) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError("correctness arrays must be boolean (or 0/1)")
        arr = arr.astype(bool)
    return arr


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"paired comparison needs the same images in the same order: shapes {a.shape} and {b.shape}"
        )
