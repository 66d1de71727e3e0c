"""Paired bootstrap, McNemar and verdicts against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attnlab.report import stats


def _pair(n: int, a_only: int, b_only: int, both: int) -> tuple[np.ndarray, np.ndarray]:
    """Correctness arrays with the given discordant and concordant-right counts."""
    a = np.zeros(n, bool)
    b = np.zeros(n, bool)
    a[:a_only] = True
    b[a_only:a_only + b_only] = True
    a[a_only + b_only:a_only + b_only + both] = True
    b[a_only + b_only:a_only + b_only + both] = True
    return a, b


# ------------------------------------------------------------------ McNemar
def test_mcnemar_exact_b10_c2_is_0_0386() -> None:
    # n = 12, tail = C(12,0) + C(12,1) + C(12,2) = 1 + 12 + 66 = 79; p = 2 * 79 / 4096
    assert stats.mcnemar_exact(10, 2) == 158 / 4096
    assert round(stats.mcnemar_exact(10, 2), 4) == 0.0386


@pytest.mark.parametrize(("b", "c", "p"), [
    (0, 5, 2 / 32),          # 2 * (1/2)^5
    (0, 6, 2 / 64),
    (1, 6, 2 * (1 + 7) / 128),
    (0, 1, 1.0),             # 2 * 1/2
    (0, 0, 1.0),             # no discordant pairs: no evidence
    (7, 7, 1.0),
    (3, 4, 1.0),             # 2 * P(X <= 3 | n=7) = 2 * 64/128 = 1
])
def test_mcnemar_exact_small_cases(b: int, c: int, p: float) -> None:
    assert stats.mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)
    assert stats.mcnemar_exact(c, b) == stats.mcnemar_exact(b, c)


def test_mcnemar_exact_large_counts_match_log_space_sum() -> None:
    b, c = 5200, 4900
    n = b + c
    logs = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2) for k in range(c + 1)]
    top = max(logs)
    expected = 2 * math.exp(top) * sum(math.exp(v - top) for v in logs)
    assert stats.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)
    assert 0 < stats.mcnemar_exact(b, c) < 0.05
    assert stats.mcnemar_exact(60_000, 0) == 0.0  # underflows to 0, no overflow error


def test_mcnemar_rejects_bad_counts() -> None:
    with pytest.raises(ValueError):
        stats.mcnemar_exact(-1, 3)
    with pytest.raises(ValueError):
        stats.mcnemar_exact(1.5, 3)


@pytest.mark.parametrize(("b", "c", "p"), [
    (3, 1, 0.3173105078629141),    # stat (3-1)^2/4 = 1: P(|Z| > 1)
    (12, 4, 0.04550026389635842),  # stat 64/16 = 4: P(|Z| > 2)
    (5, 5, 1.0),
])
def test_mcnemar_chi2_without_correction_known_normal_tails(b: int, c: int, p: float) -> None:
    assert stats.mcnemar_chi2(b, c, correction=False)[1] == pytest.approx(p, rel=1e-9)


def test_mcnemar_chi2_continuity_correction() -> None:
    stat, p = stats.mcnemar_chi2(13, 4)  # (|13-4| - 1)^2 / 17 = 64/17
    assert stat == pytest.approx(64 / 17)
    stat, p = stats.mcnemar_chi2(12, 3)  # (9 - 1)^2 / 15
    assert stat == pytest.approx(64 / 15)
    # with many discordant pairs the corrected chi-square approximates the exact test
    assert stats.mcnemar_chi2(40, 60)[1] == pytest.approx(stats.mcnemar_exact(40, 60), rel=0.02)


def test_discordant_counts() -> None:
    a, b = _pair(50, 7, 3, 20)
    assert stats.discordant_counts(a, b) == (7, 3)
    assert stats.discordant_counts(np.stack([a, a]), np.stack([b, b])) == (14, 6)
    with pytest.raises(ValueError, match="same images"):
        stats.discordant_counts(a, b[:-1])


def test_sign_counts_over_seeds() -> None:
    a, b = _pair(50, 7, 3, 20)
    assert stats.sign_counts(a, b) == stats.discordant_counts(a, b) == (7, 3)
    # image 0: A wins in both seeds; image 1: one win each (a tie); image 2: B wins once
    a2 = np.array([[1, 1, 0, 1], [1, 0, 0, 0]], bool)
    b2 = np.array([[0, 0, 1, 1], [0, 1, 0, 0]], bool)
    assert stats.sign_counts(a2, b2) == (1, 1)


# ---------------------------------------------------------------- bootstrap
def test_bootstrap_degenerate_cases() -> None:
    ci = stats.paired_bootstrap_ci(np.ones(30, bool), np.zeros(30, bool), n_boot=500)
    assert (ci.delta, ci.low, ci.high) == (1.0, 1.0, 1.0)
    same = np.arange(40) % 3 == 0
    ci = stats.paired_bootstrap_ci(same, same, n_boot=500)
    assert (ci.delta, ci.low, ci.high) == (0.0, 0.0, 0.0)
    assert not stats.is_significant(ci.low, ci.high, 1.0, 0.05)


def test_bootstrap_two_images_distribution_is_binomial() -> None:
    # d = [1, 0]: a resample of 2 images has mean 1, 0.5, 0 with probability 1/4, 1/2, 1/4
    reps = stats.bootstrap_replicates(np.array([True, False]), np.array([False, False]), n_boot=40_000)
    freq = {v: np.mean(reps == v) for v in (0.0, 0.5, 1.0)}
    assert set(np.unique(reps)) <= {0.0, 0.5, 1.0}
    assert freq[0.0] == pytest.approx(0.25, abs=0.01)
    assert freq[0.5] == pytest.approx(0.50, abs=0.01)
    assert freq[1.0] == pytest.approx(0.25, abs=0.01)


def test_bootstrap_interval_matches_normal_approximation() -> None:
    a, b = _pair(2000, 300, 200, 900)
    ci = stats.paired_bootstrap_ci(a, b, n_boot=20_000, seed=1)
    assert ci.delta == pytest.approx(0.05)
    se = math.sqrt((500 / 2000 - 0.05**2) / 2000)  # sd of d = +-1/0 values, over sqrt(N)
    assert ci.low == pytest.approx(0.05 - 1.95996 * se, abs=0.0015)
    assert ci.high == pytest.approx(0.05 + 1.95996 * se, abs=0.0015)
    assert (ci.n_images, ci.n_seeds, ci.confidence) == (2000, 1, 0.95)


def test_bootstrap_matches_index_resampling() -> None:
    """The multinomial shortcut has the distribution of classic index resampling."""
    a, b = _pair(300, 40, 25, 100)
    fast = stats.bootstrap_replicates(a, b, n_boot=20_000, seed=3)
    rng = np.random.default_rng(4)
    d = a.astype(int) - b.astype(int)
    slow = d[rng.integers(0, d.size, size=(20_000, d.size))].mean(axis=1)
    assert fast.mean() == pytest.approx(slow.mean(), abs=0.001)
    assert fast.std() == pytest.approx(slow.std(), rel=0.03)


def test_bootstrap_is_deterministic_per_seed() -> None:
    a, b = _pair(500, 30, 20, 200)
    assert stats.paired_bootstrap_ci(a, b, seed=7, n_boot=1000) == stats.paired_bootstrap_ci(a, b, seed=7, n_boot=1000)


def test_bootstrap_pools_seeds_by_averaging_per_image_differences() -> None:
    a1, b1 = _pair(400, 30, 10, 100)
    a2, b2 = _pair(400, 10, 10, 100)
    ci = stats.paired_bootstrap_ci(np.stack([a1, a2]), np.stack([b1, b2]), n_boot=2000)
    assert ci.delta == pytest.approx((20 / 400 + 0 / 400) / 2)
    assert ci.n_seeds == 2
    # two identical seeds carry no more information than one: the same interval
    one = stats.paired_bootstrap_ci(a1, b1, n_boot=2000, seed=5)
    two = stats.paired_bootstrap_ci(np.stack([a1, a1]), np.stack([b1, b1]), n_boot=2000, seed=5)
    assert (two.delta, two.low, two.high) == pytest.approx((one.delta, one.low, one.high))


def test_bootstrap_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="same images"):
        stats.paired_bootstrap_ci(np.ones(5, bool), np.ones(6, bool))
    with pytest.raises(ValueError, match="boolean"):
        stats.paired_bootstrap_ci(np.full(5, 2), np.ones(5))
    with pytest.raises(ValueError, match="confidence"):
        stats.paired_bootstrap_ci(np.ones(5, bool), np.ones(5, bool), confidence=95)


# ----------------------------------------------------------------- verdicts
def _ci(delta: float, low: float, high: float) -> stats.BootstrapCI:
    return stats.BootstrapCI(delta, low, high, 0.95, 10_000, 1, 10_000)


def test_verdict_wording_not_significant_when_interval_crosses_zero() -> None:
    text = stats.verdict("hybrid", "simam", _ci(0.008, -0.002, 0.017), 0.11)
    assert text == ("hybrid vs simam: +0.80 pt Top-1 [95% CI -0.20, +1.70], McNemar p=0.11 — "
                    "not significant (the interval includes 0 and p ≥ 0.05)")


def test_interval_crossing_zero_is_never_significant_even_with_tiny_p() -> None:
    text = stats.verdict("ema", "baseline", _ci(0.01, -0.0001, 0.02), 1e-6)
    assert "not significant (the interval includes 0)" in text
    assert not stats.is_significant(-0.0001, 0.02, 1e-6, 0.05)
    assert not stats.is_significant(0.0, 0.02, 1e-6, 0.05)  # touching 0 counts as including it


def test_p_at_or_above_alpha_is_never_significant() -> None:
    assert not stats.is_significant(0.001, 0.02, 0.05, 0.05)
    assert "not significant (p ≥ 0.05)" in stats.verdict("a", "b", _ci(0.01, 0.001, 0.02), 0.05)
    assert not stats.is_significant(0.001, 0.02, float("nan"), 0.05)


def test_significant_gain_and_drop() -> None:
    gain = stats.verdict("hybrid", "baseline", _ci(0.02, 0.01, 0.03), 0.0004)
    assert gain.endswith("McNemar p<0.001 — significant: hybrid is better than baseline")
    drop = stats.verdict("simam", "baseline", _ci(-0.02, -0.03, -0.01), 0.02, p_note=" (images pooled over 3 seeds)")
    assert "McNemar p=0.02 (images pooled over 3 seeds) — significant: simam is worse than baseline" in drop


def test_verdict_agrees_with_rule_on_random_cases() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(20, 200))
        a, b = rng.random(n) < rng.random(), rng.random(n) < rng.random()
        ci = stats.paired_bootstrap_ci(a, b, n_boot=300, seed=int(rng.integers(1000)))
        p = stats.mcnemar_exact(*stats.discordant_counts(a, b))
        text = stats.verdict("a", "b", ci, p)
        crosses = ci.low <= 0 <= ci.high
        assert ("— significant" in text) == (not crosses and p < 0.05)
        if crosses:
            assert "not significant" in text


def test_format_p_never_rounds_across_alpha() -> None:
    assert stats.format_p(0.0496) == "0.0496"
    assert stats.format_p(0.0004) == "<0.001"
    assert stats.format_p(float("nan")) == "n/a"


# -------------------------------------------------------------------- Holm
def test_holm_known_values() -> None:
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06], rtol=1e-12)
    np.testing.assert_allclose(stats.holm([0.02]), [0.02])
    np.testing.assert_allclose(stats.holm([0.5, 0.4, 0.001]), [0.8, 0.8, 0.003], rtol=1e-12)


def test_holm_caps_at_one_keeps_order_and_ties() -> None:
    adj = stats.holm([0.3, 0.6, 0.9, 0.2])
    np.testing.assert_allclose(adj, [0.9, 1.0, 1.0, 0.8], rtol=1e-12)
    np.testing.assert_allclose(stats.holm([0.01, 0.01]), [0.02, 0.02])
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.random(int(rng.integers(1, 12))) ** 3
        adj = stats.holm(p)
        order = np.argsort(p)
        assert (np.diff(adj[order]) >= 0).all()  # monotone in p
        assert ((adj >= p) & (adj <= 1)).all()
        assert (adj <= np.minimum(1, p.size * p) + 1e-15).all()  # never above Bonferroni


def test_holm_leaves_nan_out_of_the_family() -> None:
    adj = stats.holm([0.01, float("nan"), 0.04, 0.03])
    assert np.isnan(adj[1])
    np.testing.assert_allclose(adj[[0, 2, 3]], [0.03, 0.06, 0.06], rtol=1e-12)  # m = 3, not 4
    assert np.isnan(stats.holm([float("nan")])).all() and stats.holm([]).size == 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.holm([0.5, 1.5])


def test_verdict_with_holm_shows_both_and_decides_on_holm() -> None:
    ci = _ci(0.02, 0.005, 0.035)
    text = stats.verdict("hybrid", "baseline", ci, 0.011, p_holm=0.033)
    assert text == ("hybrid vs baseline: +2.00 pt Top-1 [95% CI +0.50, +3.50], McNemar p=0.011, Holm p=0.033 — "
                    "significant: hybrid is better than baseline")
    text = stats.verdict("ema", "baseline", ci, 0.02, p_holm=0.06, p_note=" (images pooled over 2 seeds)")
    assert "McNemar p=0.02 (images pooled over 2 seeds), Holm p=0.06 — not significant (Holm p ≥ 0.05)" in text
    both = stats.verdict("a", "b", _ci(0.01, -0.01, 0.03), 0.2, p_holm=0.6)
    assert both.endswith("not significant (the interval includes 0 and Holm p ≥ 0.05)")
