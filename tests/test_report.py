"""The report on fake ablation folders with known numbers (format: docs/run-records.md)."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attnlab import stats
from attnlab.cli import main
from attnlab.report import comparison_pairs, read_profile, write_report

N, K, EPOCHS = 400, 8, 4
LABELS = np.arange(N) % K
CLASS_NAMES = [f"class_{k}" for k in range(K)]
BASE_PARAMS, EMA_PARAMS = 23_917_832, 198_368
# (variant, seed) -> (images switched on, switched off) against that seed's baseline mask
CHANGES = {
    ("simam", 0): (5, 5), ("ema", 0): (12, 2), ("hybrid", 0): (30, 10),
    ("simam", 1): (6, 4), ("ema", 1): (8, 8), ("hybrid", 1): (20, 10),
}


def _top5(correct1: np.ndarray, correct5: np.ndarray) -> np.ndarray:
    rows = []
    for i, y in enumerate(LABELS):
        wrong = [int((y + j) % K) for j in range(1, 6)]
        if correct1[i]:
            rows.append([int(y), *wrong[:4]])
        elif correct5[i]:
            rows.append([wrong[0], int(y), *wrong[1:4]])
        else:
            rows.append(wrong)
    return np.asarray(rows, dtype=np.int64)


def _final_mask(variant: str, seed: int) -> np.ndarray:
    base = np.roll(np.arange(N) < 200, 37 * seed)
    if variant == "baseline":
        return base
    on, off = CHANGES[(variant, seed)]
    mask = base.copy()
    mask[np.flatnonzero(~base)[:on]] = True
    mask[np.flatnonzero(base)[:off]] = False
    return mask


def make_run(root: Path, variant: str, seed: int, *, status: str = "complete", preds: bool = True) -> None:
    run = root / "runs" / f"{variant}_seed{seed}"
    (run / "predictions").mkdir(parents=True)
    final = _final_mask(variant, seed)
    best = final.copy()
    best[np.flatnonzero(~final)[: 8 + seed]] = True  # the best epoch is better than the last
    best_epoch = 1 + seed % 2
    extra5 = np.arange(N) % 3 == 0
    top1 = {e: 0.05 * (e + 1) for e in range(EPOCHS)}
    top1[best_epoch], top1[EPOCHS - 1] = best.mean(), final.mean()
    top5 = {e: top1[e] + 0.1 for e in range(EPOCHS)}
    top5[best_epoch], top5[EPOCHS - 1] = (best | extra5).mean(), (final | extra5).mean()
    secs = [10.0 + seed + 0.5 * e + len(variant) for e in range(EPOCHS)]
    with open(run / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr_backbone",
                    "lr_head", "frozen", "epoch_seconds", "eval_seconds", "train_images_per_s"])
        for e in range(EPOCHS):
            w.writerow([e, 1.0, 0.5, 2.0 - e * 0.1, top1[e], top5[e], 0.01, 0.1, "", secs[e], 1.5, 1000.0])
    if preds:
        for name, mask, epoch in (("best", best, best_epoch), ("last", final, EPOCHS - 1)):
            np.savez(run / "predictions" / f"{name}.npz", labels=LABELS, top5=_top5(mask, mask | extra5), epoch=epoch)
    added = EMA_PARAMS if variant in ("ema", "hybrid") else 0
    summary = {
        "status": status, "variant": variant, "seed": seed, "epochs": EPOCHS, "best_epoch": best_epoch,
        "best": {"epoch": best_epoch, "val_top1": top1[best_epoch], "val_top5": top5[best_epoch], "val_loss": 1.0},
        "final": {"epoch": EPOCHS - 1, "val_top1": top1[EPOCHS - 1], "val_top5": top5[EPOCHS - 1], "val_loss": 1.0},
        "train_seconds_total": sum(secs) + 3.0, "epoch_seconds_mean": float(np.mean(secs)),
        "params": {"total": BASE_PARAMS + added, "trainable": BASE_PARAMS + added, "added": added},
        "class_names": CLASS_NAMES, "environment": {"device": "cpu"},
    }
    (run / "summary.json").write_text(json.dumps(summary))


PROFILE = {
    "schema": 1,
    "config": {"image_size": 64, "sizes": [64, 224], "latency_batches": [1, 256]},
    "environment": {"device": "cuda:0", "device_name": "Fake GPU", "dtype": "bf16", "channels_last": True},
    "reference": "baseline",
    "variants": {
        v: {
            "params": {"total": BASE_PARAMS + added, "added": added, "backbone": 1, "head": 2},
            "compute": {"64": {"gmacs": 1.3 + i * 0.01, "attention_gops": 0.001 * i, "macs": 1},
                        "224": {"gmacs": 4.1 + i * 0.1, "attention_gops": 0.01 * i, "macs": 1}},
            "latency": {"1": {"batch": 1, "median_ms": 3.0 + i, "p95_ms": 3.5 + i, "images_per_s": 300.0},
                        "256": {"batch": 256, "median_ms": 100.0 + i, "p95_ms": 110.0, "images_per_s": 2560.0 - 10 * i}},
            "train": {"batch": 128, "median_ms": 50.0, "images_per_s": 9999.0},
        }
        for i, (v, added) in enumerate([("baseline", 0), ("simam", 0), ("ema", EMA_PARAMS), ("hybrid", EMA_PARAMS)])
    },
}


@pytest.fixture
def ablation(tmp_path: Path) -> Path:
    for seed in (0, 1):
        for v in ("baseline", "simam", "ema", "hybrid"):
            make_run(tmp_path, v, seed)
    (tmp_path / "profile.json").write_text(json.dumps(PROFILE))
    return tmp_path


def _expected(root: Path, variant: str, policy: str) -> dict[str, float]:
    """Recompute one row from the raw files, without the report code."""
    top1, top5, epochs, epoch_secs, totals = [], [], [], [], []
    other1 = []
    for run in sorted((root / "runs").glob(f"{variant}_seed*")):
        with open(run / "metrics.csv") as fh:
            rows = list(csv.DictReader(fh))
        best = max(rows, key=lambda r: float(r["val_top1"]))
        pick, other = (rows[-1], best) if policy == "final" else (best, rows[-1])
        top1.append(100 * float(pick["val_top1"]))
        top5.append(100 * float(pick["val_top5"]))
        other1.append(100 * float(other["val_top1"]))
        epochs.append(int(pick["epoch"]))
        epoch_secs.append(statistics.mean(float(r["epoch_seconds"]) for r in rows))
        totals.append(json.loads((run / "summary.json").read_text())["train_seconds_total"])
    prof = PROFILE["variants"][variant]
    return {
        "n_seeds": len(top1), "epoch": statistics.mean(epochs),
        "top1_mean_pct": statistics.mean(top1), "top1_std_pct": statistics.stdev(top1),
        "top5_mean_pct": statistics.mean(top5), "top5_std_pct": statistics.stdev(top5),
        f"top1_{'best' if policy == 'final' else 'final'}_mean_pct": statistics.mean(other1),
        "params": prof["params"]["total"], "added_params": prof["params"]["added"],
        "gmacs": prof["compute"]["64"]["gmacs"], "attention_gops": prof["compute"]["64"]["attention_gops"],
        "epoch_seconds": statistics.mean(epoch_secs), "train_seconds_total": statistics.mean(totals),
        "latency_b1_ms": prof["latency"]["1"]["median_ms"], "latency_b1_p95_ms": prof["latency"]["1"]["p95_ms"],
        "throughput_img_s": prof["latency"]["256"]["images_per_s"], "throughput_batch": 256,
    }


@pytest.mark.parametrize("policy", ["final", "best"])
def test_every_number_in_results_csv_is_recomputed(ablation: Path, policy: str) -> None:
    write_report(ablation, policy=policy, n_boot=300, make_figures=False, echo=False)
    table = pd.read_csv(ablation / "results.csv")
    assert list(table["variant"]) == ["baseline", "simam", "ema", "hybrid"]
    base = _expected(ablation, "baseline", policy)
    checked = set()
    for _, row in table.iterrows():
        exp = _expected(ablation, row["variant"], policy)
        exp["top1_delta_pt"] = exp["top1_mean_pct"] - base["top1_mean_pct"]
        exp["top5_delta_pt"] = exp["top5_mean_pct"] - base["top5_mean_pct"]
        exp["gmacs_delta"] = exp["gmacs"] - base["gmacs"]
        exp["latency_b1_delta_ms"] = exp["latency_b1_ms"] - base["latency_b1_ms"]
        for key, value in exp.items():
            assert row[key] == pytest.approx(value, rel=1e-12, abs=1e-12), (row["variant"], key)
            checked.add(key)
        assert row["seeds"] == "0;1" and row["policy"] == policy
    numeric = {c for c in table.columns if c not in ("variant", "seeds", "policy")}
    assert numeric == checked  # no column escapes the recomputation


def test_default_policy_is_final_and_stated(ablation: Path) -> None:
    out = write_report(ablation, n_boot=300, make_figures=False, echo=False)
    assert set(out["table"]["policy"]) == {"final"}
    md = (ablation / "results.md").read_text()
    assert "at the final epoch (no epoch is chosen on the val set" in md
    best = write_report(ablation, policy="best", n_boot=300, make_figures=False, echo=False)
    assert "at the epoch with the best val Top-1" in best["markdown"]
    assert "optimistically biased" in best["markdown"]


def test_statistics_match_hand_counts(ablation: Path) -> None:
    out = write_report(ablation, n_boot=2000, make_figures=False, echo=False)
    st = pd.read_csv(ablation / "statistics.csv")
    pooled = st[st["scope"] == "all"]
    assert [tuple(p) for p in pooled[["a", "b"]].to_numpy()] == [
        ("simam", "baseline"), ("ema", "baseline"), ("hybrid", "baseline"), ("hybrid", "simam"), ("hybrid", "ema")]
    row = st[(st["a"] == "hybrid") & (st["b"] == "baseline") & (st["scope"] == "seed 0")].iloc[0]
    assert (row["a_better_images"], row["b_better_images"], row["n_images"]) == (30, 10, N)
    assert row["delta_pt"] == pytest.approx(100 * 20 / N)
    assert row["mcnemar_p"] == pytest.approx(stats.mcnemar_exact(30, 10), rel=1e-12)
    seed1 = st[(st["a"] == "hybrid") & (st["b"] == "baseline") & (st["scope"] == "seed 1")].iloc[0]
    assert (seed1["a_better_images"], seed1["b_better_images"]) == (20, 10)
    all_ = pooled[(pooled["a"] == "hybrid") & (pooled["b"] == "baseline")].iloc[0]
    # pooled: each image's difference averaged over the two seeds. By construction
    # seed 0: +1 on images 200..229, -1 on 0..9; seed 1: +1 on 0..19, -1 on 37..46, so
    # images 10..19 and 200..229 favour hybrid (40), 37..46 favour baseline (10), 0..9 cancel.
    d = np.mean([_final_mask("hybrid", s).astype(int) - _final_mask("baseline", s) for s in (0, 1)], axis=0)
    assert (int((d > 0).sum()), int((d < 0).sum())) == (40, 10)
    assert all_["delta_pt"] == pytest.approx(100 * (20 + 10) / 2 / N)
    assert (all_["a_better_images"], all_["b_better_images"], all_["n_seeds"]) == (40, 10, 2)
    assert all_["mcnemar_p"] == pytest.approx(stats.mcnemar_exact(40, 10), rel=1e-12)
    assert "(images pooled over 2 seeds)" in all_["verdict"]
    # the statistics' Top-1 difference is the table's delta (both from the final epoch)
    table = out["table"].set_index("variant")
    assert all_["delta_pt"] == pytest.approx(table.loc["hybrid", "top1_delta_pt"])


def test_interval_crossing_zero_never_called_significant(ablation: Path) -> None:
    write_report(ablation, n_boot=2000, make_figures=False, echo=False)
    st = pd.read_csv(ablation / "statistics.csv")
    assert len(st) == 15  # 5 pairs x (pooled + 2 seeds)
    for _, r in st.iterrows():
        crosses = r["ci_low_pt"] <= 0 <= r["ci_high_pt"]
        assert bool(r["significant"]) == (not crosses and r["mcnemar_p"] < 0.05)
        assert ("— significant" in r["verdict"]) == bool(r["significant"])
    simam = st[(st["a"] == "simam") & (st["scope"] == "all")].iloc[0]
    assert simam["delta_pt"] == pytest.approx(100 * (0 + 2) / 2 / N)
    assert not simam["significant"] and "not significant" in simam["verdict"]
    md = (ablation / "results.md").read_text()
    assert "simam vs baseline: +0.25 pt Top-1" in md


def test_single_seed_std_is_na_not_zero(tmp_path: Path) -> None:
    for v in ("baseline", "hybrid"):
        make_run(tmp_path, v, 0)
    out = write_report(tmp_path, n_boot=300, make_figures=False, echo=False)
    table = pd.read_csv(tmp_path / "results.csv")
    assert table["top1_std_pct"].isna().all() and table["top5_std_pct"].isna().all()
    assert "± n/a" in out["markdown"] and "± 0.00" not in out["markdown"]
    # no profile.json: efficiency from summary.json where it exists, else n/a
    assert list(table["params"]) == [BASE_PARAMS, BASE_PARAMS + EMA_PARAMS]
    assert list(table["added_params"]) == [0, EMA_PARAMS]
    assert table["gmacs"].isna().all() and table["latency_b1_ms"].isna().all()
    assert any("no profile.json" in w for w in out["warnings"])
    hybrid = out["statistics"].iloc[0]
    assert (hybrid["scope"], hybrid["p_rule"]) == ("all", "McNemar exact")
    assert hybrid["mcnemar_p"] == stats.mcnemar_exact(30, 10)
    assert "pooled" not in hybrid["verdict"]


def test_markdown_and_latex_tables(ablation: Path) -> None:
    out = write_report(ablation, n_boot=300, make_figures=False, echo=False)
    md = out["markdown"]
    table = out["table"].set_index("variant")
    hybrid = table.loc["hybrid"]
    assert f"{hybrid['top1_mean_pct']:.2f} ± {hybrid['top1_std_pct']:.2f}" in md
    assert "| hybrid | 2 |" in md and "23,917,832" in md and "198,368" in md
    assert "2,530 (batch 256)" in md and "6.00 (p95 6.50)" in md
    assert "## Statistics" in md and "- hybrid vs simam:" in md
    tex = (ablation / "results.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 2 and r"\toprule" in tex and r"\pm" in tex
    assert "23,917,832" in tex and "Top-1 (\\%)" in tex
    assert "±" not in tex and "Δ" not in tex  # escaped for LaTeX


def test_per_class_delta(ablation: Path) -> None:
    out = write_report(ablation, n_boot=300, make_figures=False, echo=False)
    pc = pd.read_csv(ablation / "per_class_hybrid_vs_baseline.csv")
    assert list(pc["name"]) == CLASS_NAMES and (pc["n_images"] == N // K).all()
    exp_h = np.mean([[_final_mask("hybrid", s)[LABELS == k].mean() for k in range(K)] for s in (0, 1)], axis=0)
    exp_b = np.mean([[_final_mask("baseline", s)[LABELS == k].mean() for k in range(K)] for s in (0, 1)], axis=0)
    np.testing.assert_allclose(pc["delta_pt"], 100 * (exp_h - exp_b), atol=1e-9)
    # the classes' mean change equals the overall change (equal class sizes)
    assert pc["delta_pt"].mean() == pytest.approx(out["table"].set_index("variant").loc["hybrid", "top1_delta_pt"])


def test_figures_are_written_as_pngs(ablation: Path) -> None:
    out = write_report(ablation, n_boot=300, echo=False)
    names = {"val_top1.png", "top1_vs_gmacs.png", "top1_vs_latency.png", "per_class_hybrid_vs_baseline.png"}
    assert names <= {p.name for p in (ablation / "figures").iterdir()}
    for name in names:
        data = (ablation / "figures" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert all(Path(p).is_file() for p in out["paths"].values())


def test_incomplete_and_unpaired_runs(tmp_path: Path) -> None:
    make_run(tmp_path, "baseline", 0)
    make_run(tmp_path, "hybrid", 0)
    make_run(tmp_path, "hybrid", 1)  # no baseline seed 1: unpaired, left out of statistics
    make_run(tmp_path, "ema", 0, status="running")
    make_run(tmp_path, "simam", 0, preds=False)
    out = write_report(tmp_path, n_boot=300, make_figures=False, echo=False)
    assert list(out["table"]["variant"]) == ["baseline", "simam", "hybrid"]
    assert any("ema_seed0" in w and "not complete" in w for w in out["warnings"])
    assert any("simam_seed0" in w for w in out["warnings"])
    st = out["statistics"]
    hb = st[(st["a"] == "hybrid") & (st["b"] == "baseline")]
    assert list(hb["scope"]) == ["all"] and hb.iloc[0]["n_seeds"] == 1
    included = write_report(tmp_path, n_boot=300, make_figures=False, echo=False, include_incomplete=True)
    assert "ema" in list(included["table"]["variant"])


def test_comparison_pairs() -> None:
    assert comparison_pairs(["baseline", "simam", "ema", "hybrid"]) == [
        ("simam", "baseline"), ("ema", "baseline"), ("hybrid", "baseline"), ("hybrid", "simam"), ("hybrid", "ema")]
    assert comparison_pairs(["baseline", "ema"]) == [("ema", "baseline")]
    assert comparison_pairs(["simam", "hybrid"]) == [("hybrid", "simam")]


def test_profile_json_other_layouts(tmp_path: Path) -> None:
    flat = {"variants": [{"variant": "baseline", "params": 10, "gmacs": 1.5, "latency_b1_ms": 2.5,
                          "throughput": {"batch": 128, "images_per_s": 900.0}}]}
    (tmp_path / "a.json").write_text(json.dumps(flat))
    got, _, warnings = read_profile(tmp_path / "a.json")
    assert warnings == []
    want = {"params": 10, "gmacs": 1.5, "latency_b1_ms": 2.5, "throughput_img_s": 900.0, "throughput_batch": 128}
    assert {k: got["baseline"][k] for k in want} == want
    listed = {"baseline": {"macs": 2.0e9, "latency": [{"batch": 1, "median_s": 0.004}, {"batch": 64, "images_per_s": 5e3}]}}
    (tmp_path / "b.json").write_text(json.dumps(listed))
    got = read_profile(tmp_path / "b.json")[0]["baseline"]
    assert got["gmacs"] == 2.0 and got["latency_b1_ms"] == pytest.approx(4.0)
    assert (got["throughput_img_s"], got["throughput_batch"], got["params"]) == (5e3, 64, None)
    (tmp_path / "c.json").write_text("{not json")
    assert read_profile(tmp_path / "c.json")[0] == {} and read_profile(tmp_path / "c.json")[2]
    assert read_profile(tmp_path / "missing.json") == ({}, {}, [])


def test_cli_report(ablation: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(ablation), "--n-boot", "200", "--no-figures", "--policy", "best"]) == 0
    printed = capsys.readouterr().out
    assert "| Variant |" in printed and "hybrid vs baseline:" in printed and "wrote results.csv" in printed
    assert set(pd.read_csv(ablation / "results.csv")["policy"]) == {"best"}


def test_best_epoch_ignores_nan_and_takes_the_earliest_tie(tmp_path: Path) -> None:
    from attnlab.report import load_runs

    make_run(tmp_path, "baseline", 0)
    path = tmp_path / "runs" / "baseline_seed0" / "metrics.csv"
    m = pd.read_csv(path)
    m.loc[0, "val_top1"] = float("nan")
    m.loc[2, "val_top1"] = m.loc[1, "val_top1"]  # tie between epochs 1 and 2
    m.to_csv(path, index=False)
    (run,), _ = load_runs(tmp_path)
    assert run.selected("best")["epoch"] == 1
    assert run.selected("final")["epoch"] == EPOCHS - 1
