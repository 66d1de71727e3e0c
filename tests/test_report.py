"""The report on fake ablation folders with known numbers (format: docs/run-records.md)."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attnlab.cli import main
from attnlab.errors import RecordError
from attnlab.report import comparison_pairs, read_profile, stats, write_report
from attnlab.report.profile_json import format_label

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
    loss = {e: 2.0 - e * 0.1 for e in range(EPOCHS)}
    secs = [10.0 + seed + 0.5 * e + len(variant) for e in range(EPOCHS)]
    with open(run / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr_backbone",
                    "lr_head", "frozen", "epoch_seconds", "eval_seconds", "train_images_per_s"])
        for e in range(EPOCHS):
            w.writerow([e, 1.0, 0.5, loss[e], top1[e], top5[e], 0.01, 0.1, "", secs[e], 1.5, 1000.0])
    if preds:
        for name, mask, epoch in (("best", best, best_epoch), ("last", final, EPOCHS - 1)):
            np.savez(run / "predictions" / f"{name}.npz", labels=LABELS, top5=_top5(mask, mask | extra5), epoch=epoch)
    added = EMA_PARAMS if variant in ("ema", "hybrid") else 0
    summary = {
        "status": status, "variant": variant, "seed": seed, "epochs": EPOCHS, "epochs_done": EPOCHS,
        "best_epoch": best_epoch,
        "best": {"epoch": best_epoch, "val_top1": top1[best_epoch], "val_top5": top5[best_epoch],
                 "val_loss": loss[best_epoch]},
        "final": {"epoch": EPOCHS - 1, "val_top1": top1[EPOCHS - 1], "val_top5": top5[EPOCHS - 1],
                  "val_loss": loss[EPOCHS - 1]},
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
    """Recompute one row from the raw files, without the report code: accuracies and epochs
    are summary.json's ``final`` / ``best`` entries (the authoritative figures)."""
    top1, top5, epochs, epoch_secs, totals = [], [], [], [], []
    other1 = []
    for run in sorted((root / "runs").glob(f"{variant}_seed*")):
        with open(run / "metrics.csv") as fh:
            rows = list(csv.DictReader(fh))
        summary = json.loads((run / "summary.json").read_text())
        pick, other = (summary["final"], summary["best"]) if policy == "final" else (summary["best"], summary["final"])
        top1.append(100 * pick["val_top1"])
        top5.append(100 * pick["val_top5"])
        other1.append(100 * other["val_top1"])
        epochs.append(pick["epoch"])
        epoch_secs.append(statistics.mean(float(r["epoch_seconds"]) for r in rows))
        totals.append(summary["train_seconds_total"])
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
        assert bool(r["significant"]) == (not crosses and r["p_holm"] < 0.05)
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


def test_best_and_final_come_from_summary_json(tmp_path: Path) -> None:
    """A NaN or a tie at another epoch of metrics.csv changes nothing: the summary decides."""
    from attnlab.report import load_runs

    make_run(tmp_path, "baseline", 0)
    path = tmp_path / "runs" / "baseline_seed0" / "metrics.csv"
    m = pd.read_csv(path)
    m.loc[0, "val_top1"] = float("nan")
    m.loc[2, "val_top1"] = m.loc[1, "val_top1"]  # tie between epochs 1 and 2
    m.to_csv(path, index=False)
    summary = json.loads((path.parent / "summary.json").read_text())
    (run,), warnings = load_runs(tmp_path)
    assert warnings == []
    assert run.selected("best") == summary["best"] and run.selected("best")["epoch"] == 1
    assert run.selected("final") == summary["final"] and run.selected("final")["epoch"] == EPOCHS - 1


# ------------------------------------------------------- damaged records (issue item 7)
def _report(root: Path, **kw) -> dict:
    return write_report(root, n_boot=kw.pop("n_boot", 300), make_figures=False, echo=False, **kw)


def _rewrite_json(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _rewrite_npz(path: Path, **arrays: object) -> None:
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    data.update(arrays)
    for key in [k for k, v in data.items() if v is None]:
        del data[key]
    np.savez(path, **data)


def _flip_one_top1(path: Path) -> None:
    with np.load(path) as z:
        top5, labels = z["top5"].copy(), z["labels"]
    i = int(np.flatnonzero(top5[:, 0] == labels)[0])
    top5[i, 0] = (labels[i] + 7) % K  # one right answer made wrong: Top-1 off by 1/N
    _rewrite_npz(path, top5=top5)


def _corrupt_middle(path: Path) -> None:
    """Overwrite bytes inside the archive's first member (the zip headers stay valid)."""
    data = bytearray(path.read_bytes())
    data[200:260] = np.random.default_rng(2).bytes(60)
    path.write_bytes(bytes(data))


def _metrics_rows(path: Path, n: int) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: 1 + n]))


def _metrics_cell(path: Path, epoch: int, column: str, value: object) -> None:
    m = pd.read_csv(path, keep_default_na=False)
    m[column] = m[column].astype(object)
    m.loc[m["epoch"] == epoch, column] = value
    m.to_csv(path, index=False)


def _final_top1(run: Path) -> float:
    return json.loads((run / "summary.json").read_text())["final"]["val_top1"]


# name -> (damage done to runs/hybrid_seed0, file the note must name, words it must hold)
DAMAGE = {
    "metrics truncated to 2 epochs": (lambda r: _metrics_rows(r / "metrics.csv", 2), "metrics.csv", "truncated"),
    "metrics cut mid-row": (lambda r: (r / "metrics.csv").write_bytes((r / "metrics.csv").read_bytes()[:-25]),
                            "metrics.csv", "metrics.csv"),
    "metrics missing": (lambda r: (r / "metrics.csv").unlink(), "metrics.csv", "missing"),
    "metrics empty": (lambda r: (r / "metrics.csv").write_text(""), "metrics.csv", "empty"),
    "metrics final row disagrees": (lambda r: _metrics_cell(r / "metrics.csv", EPOCHS - 1, "val_top1",
                                                            _final_top1(r) + 1e-5), "metrics.csv", "val_top1"),
    "metrics cell not a number": (lambda r: _metrics_cell(r / "metrics.csv", 1, "val_top5", "0.4x"),
                                  "metrics.csv", "not a number"),
    "metrics epoch beats best": (lambda r: _metrics_cell(r / "metrics.csv", 0, "val_top1", 0.99),
                                 "metrics.csv", "above summary.json's best"),
    "metrics without the best epoch": (lambda r: _metrics_cell(r / "metrics.csv", 1, "epoch", 7),
                                       "metrics.csv", "no row for epoch 1"),
    "summary not JSON": (lambda r: (r / "summary.json").write_text('{"status": "complete", "fin'),
                         "summary.json", "not valid JSON"),
    "summary without final": (lambda r: _rewrite_json(r / "summary.json", lambda d: d.pop("final")),
                              "summary.json", "no 'final' entry"),
    "summary NaN Top-1": (lambda r: _rewrite_json(r / "summary.json", lambda d: d["final"].update(val_top1=float("nan"))),
                          "summary.json", "not finite"),
    "summary null loss": (lambda r: _rewrite_json(r / "summary.json", lambda d: d["best"].update(val_loss=None)),
                          "summary.json", "best.val_loss"),
    "summary of another run": (lambda r: _rewrite_json(r / "summary.json", lambda d: d.update(variant="simam")),
                               "summary.json", "not of its folder"),
    "npz random bytes": (lambda r: (r / "predictions/last.npz").write_bytes(np.random.default_rng(0).bytes(3000)),
                         "predictions/last.npz", "not an .npz archive"),
    "npz member corrupted": (lambda r: _corrupt_middle(r / "predictions/last.npz"), "predictions/last.npz",
                             "cannot be read"),
    "npz cut in half": (lambda r: (r / "predictions/last.npz").write_bytes(
        (r / "predictions/last.npz").read_bytes()[:2000]), "predictions/last.npz", "cannot be read"),
    "npz pickled labels": (lambda r: _rewrite_npz(r / "predictions/last.npz", labels=np.array([{"x": 1}], dtype=object)),
                           "predictions/last.npz", "cannot be read"),
    "npz without epoch": (lambda r: _rewrite_npz(r / "predictions/last.npz", epoch=None),
                          "predictions/last.npz", "lacks epoch"),
    "npz wrong shape": (lambda r: _rewrite_npz(r / "predictions/last.npz", top5=np.zeros((N, 3), np.int64)),
                        "predictions/last.npz", "shape"),
    "npz disagrees with summary": (lambda r: _flip_one_top1(r / "predictions/last.npz"),
                                   "predictions/last.npz", "val_top1"),
    "npz from another epoch": (lambda r: _rewrite_npz(r / "predictions/last.npz", epoch=np.int64(2)),
                               "predictions/last.npz", "from epoch 2"),
    "best npz random bytes": (lambda r: (r / "predictions/best.npz").write_bytes(np.random.default_rng(1).bytes(500)),
                              "predictions/best.npz", "not an .npz archive"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_run_is_excluded_everywhere_with_a_note(ablation: Path, damage: str) -> None:
    do, name, words = DAMAGE[damage]
    run = ablation / "runs" / "hybrid_seed0"
    do(run)
    out = _report(ablation)  # policy final: a damaged best.npz matters too (its Top-1 is printed)
    notes = [w for w in out["warnings"] if f"runs/hybrid_seed0/{name}" in w]
    assert len(notes) == 1 and words in notes[0] and "excluded hybrid_seed0" in notes[0], out["warnings"]
    assert "\n" not in notes[0]
    table = out["table"].set_index("variant")
    assert (table.loc["hybrid", "n_seeds"], table.loc["hybrid", "seeds"]) == (1, "1")
    assert table.loc["hybrid", "top1_mean_pct"] == 100 * _final_top1(ablation / "runs" / "hybrid_seed1")
    hybrid_stats = out["statistics"][out["statistics"]["a"] == "hybrid"]
    assert set(hybrid_stats["n_seeds"]) == {1} and set(hybrid_stats["scope"]) == {"all"}
    assert f"- {notes[0]}" in (ablation / "results.md").read_text()
    # strict: the same problem stops the report, one line naming the file
    with pytest.raises(RecordError, match=f"runs/hybrid_seed0/{name}") as err:
        _report(ablation, strict=True)
    assert "\n" not in str(err.value)


def test_truncated_metrics_cli_notes_then_strict_fails(ablation: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _metrics_rows(ablation / "runs" / "hybrid_seed0" / "metrics.csv", 2)
    assert main(["report", str(ablation), "--n-boot", "200", "--no-figures"]) == 0
    printed = capsys.readouterr().out
    note = next(line for line in printed.splitlines() if "runs/hybrid_seed0/metrics.csv" in line)
    assert note.startswith("note: excluded hybrid_seed0") and "has 2 epoch rows but summary.json records 4" in note
    assert "| hybrid | 1 |" in printed
    try:
        rc = main(["report", str(ablation), "--n-boot", "200", "--no-figures", "--strict"])
    except RecordError as err:  # a CLI that leaves AttnlabError to the caller
        message = str(err)
    else:  # a CLI that prints `attnlab report: error: <message>` and exits 2
        assert rc == 2
        message = capsys.readouterr().err
    assert "runs/hybrid_seed0/metrics.csv" in message and "truncated" in message


def test_a_run_without_summary_json_is_not_complete(ablation: Path) -> None:
    (ablation / "runs" / "ema_seed1" / "summary.json").unlink()
    for include in (False, True):  # include_incomplete never takes a run without a summary
        out = _report(ablation, include_incomplete=include)
        assert out["table"].set_index("variant").loc["ema", "seeds"] == "0"
        note = next(w for w in out["warnings"] if "runs/ema_seed1/summary.json" in w)
        assert "missing" in note and "not complete" in note
    with pytest.raises(RecordError, match="runs/ema_seed1/summary.json is missing"):
        _report(ablation, strict=True)


def test_incomplete_runs_need_a_valid_summary_too(tmp_path: Path) -> None:
    make_run(tmp_path, "baseline", 0)
    make_run(tmp_path, "ema", 0, status="failed")
    _metrics_rows(tmp_path / "runs" / "ema_seed0" / "metrics.csv", 1)
    out = _report(tmp_path, include_incomplete=True)
    assert list(out["table"]["variant"]) == ["baseline"]
    assert any("runs/ema_seed0/metrics.csv" in w and "truncated" in w for w in out["warnings"])
    with pytest.raises(RecordError, match="runs/ema_seed0/summary.json: status 'failed'"):
        _report(tmp_path, strict=True)


def test_tiny_differences_within_tolerance_are_kept(ablation: Path) -> None:
    run = ablation / "runs" / "hybrid_seed0"
    _metrics_cell(run / "metrics.csv", EPOCHS - 1, "val_top1", _final_top1(run) + 1e-9)  # CSV rounding
    out = _report(ablation)
    assert out["table"].set_index("variant").loc["hybrid", "seeds"] == "0;1"
    assert not any("hybrid_seed0" in w for w in out["warnings"])


def test_a_good_run_reports_exactly_its_summary(tmp_path: Path) -> None:
    make_run(tmp_path, "baseline", 0)
    make_run(tmp_path, "hybrid", 0)
    for policy, other in (("final", "best"), ("best", "final")):
        row = _report(tmp_path, policy=policy)["table"].set_index("variant").loc["hybrid"]
        summary = json.loads((tmp_path / "runs" / "hybrid_seed0" / "summary.json").read_text())
        assert row["top1_mean_pct"] == 100 * summary[policy]["val_top1"]
        assert row["top5_mean_pct"] == 100 * summary[policy]["val_top5"]
        assert row["epoch"] == summary[policy]["epoch"]
        assert row[f"top1_{other}_mean_pct"] == 100 * summary[other]["val_top1"]


def test_missing_predictions_keep_the_run_out_of_statistics_only(tmp_path: Path) -> None:
    make_run(tmp_path, "baseline", 0)
    make_run(tmp_path, "hybrid", 0, preds=False)
    out = _report(tmp_path)
    assert list(out["table"]["variant"]) == ["baseline", "hybrid"]
    assert out["statistics"].empty
    assert any("no final predictions in hybrid_seed0" in w for w in out["warnings"])


def test_no_usable_runs_is_a_one_line_record_error(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="has no runs/ folder"):
        _report(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(RecordError, match="no usable runs.*no run folders"):
        _report(tmp_path)
    for v in ("baseline", "hybrid"):
        make_run(tmp_path, v, 0)
        (tmp_path / "runs" / f"{v}_seed0" / "metrics.csv").write_text("epoch,val_top1\n")
    with pytest.raises(RecordError) as err:
        _report(tmp_path)
    message = str(err.value)
    assert "\n" not in message and "no usable runs" in message
    assert "runs/baseline_seed0/metrics.csv" in message and "1 other run folder(s) left out too" in message


# ----------------------------------------------------------- Holm correction (item 8)
def test_p_holm_adjusts_each_family_and_decides_the_verdict(ablation: Path) -> None:
    _report(ablation, n_boot=2000)
    st = pd.read_csv(ablation / "statistics.csv")
    assert list(st.columns).index("p_holm") == list(st.columns).index("mcnemar_p") + 1
    families = dict(list(st.groupby("scope")))
    assert set(families) == {"all", "seed 0", "seed 1"} and len(families["all"]) == 5
    for fam in families.values():
        np.testing.assert_allclose(fam["p_holm"], stats.holm(fam["mcnemar_p"].to_numpy()), rtol=1e-12)
    pooled = families["all"]
    smallest = pooled.loc[pooled["mcnemar_p"].idxmin()]
    assert smallest["p_holm"] == pytest.approx(min(1.0, 5 * smallest["mcnemar_p"]), rel=1e-12)
    for _, r in st.iterrows():
        assert f"McNemar p={stats.format_p(r['mcnemar_p'])}" in r["verdict"] or r["mcnemar_p"] < 0.001
        assert f", Holm p={stats.format_p(r['p_holm'])}" in r["verdict"] or r["p_holm"] < 0.001
    # significant before the correction, not after: the verdict says why
    crosses = (st["ci_low_pt"] <= 0) & (st["ci_high_pt"] >= 0)
    rescued = st[~crosses & (st["mcnemar_p"] < 0.05) & (st["p_holm"] >= 0.05)]
    assert len(rescued) >= 1
    for _, r in rescued.iterrows():
        assert not r["significant"] and r["verdict"].endswith("— not significant (Holm p ≥ 0.05)")
    md = (ablation / "results.md").read_text()
    assert "Holm-Bonferroni adjusted over the 5 comparisons of this table" in md
    assert "Holm p < 0.05" in md and "| McNemar p | Holm p | Verdict |" in md
    assert "Holm-Bonferroni adjusted over the 5 comparisons" in (ablation / "results.tex").read_text()


# -------------------------------------------------- profile at the training format (item 3)
def _train_profile() -> dict:
    train = json.loads(json.dumps(PROFILE))
    train["config"].update(dtype="bf16", channels_last=True)
    for i, entry in enumerate(train["variants"].values()):
        entry["latency"]["1"].update(median_ms=1.0 + 0.5 * i, p95_ms=1.25 + 0.5 * i)
        entry["latency"]["256"].update(images_per_s=9000.0 - 100 * i)
    return train


def test_training_format_profile_gets_its_own_columns(ablation: Path) -> None:
    (ablation / "profile_train.json").write_text(json.dumps(_train_profile()))
    out = _report(ablation)
    table = pd.read_csv(ablation / "results.csv").set_index("variant")
    extra = ["latency_b1_ms_bf16_cl", "latency_b1_p95_ms_bf16_cl", "throughput_img_s_bf16_cl", "throughput_batch_bf16_cl"]
    assert list(table.columns[-4:]) == extra
    for i, v in enumerate(["baseline", "simam", "ema", "hybrid"]):
        fp32 = PROFILE["variants"][v]["latency"]
        assert (table.loc[v, "latency_b1_ms"], table.loc[v, "throughput_img_s"]) == (fp32["1"]["median_ms"],
                                                                                      fp32["256"]["images_per_s"])
        assert table.loc[v, "latency_b1_ms_bf16_cl"] == 1.0 + 0.5 * i
        assert table.loc[v, "latency_b1_p95_ms_bf16_cl"] == 1.25 + 0.5 * i
        assert table.loc[v, "throughput_img_s_bf16_cl"] == 9000.0 - 100 * i
        assert table.loc[v, "throughput_batch_bf16_cl"] == 256
    md = out["markdown"]
    assert "Latency b1 (ms, bf16, channels_last)" in md and "Throughput (img/s, bf16, channels_last)" in md
    assert "| 2.50 (p95 2.75) | 8,700 (batch 256) |" in md  # hybrid, the last two cells of its row
    assert "training format (bf16, channels_last) from profile_train.json" in md
    assert not any("profile_train" in w for w in out["warnings"])


def test_no_training_format_profile_no_extra_columns(ablation: Path) -> None:
    out = _report(ablation)
    assert not [c for c in out["table"].columns if c.startswith("latency_b1_ms_")]
    assert "profile_train" not in out["markdown"]
    assert not any("profile_train" in w for w in out["warnings"])
    (ablation / "profile_train.json").write_text("{oops")
    out = _report(ablation)
    assert not [c for c in out["table"].columns if c.startswith("latency_b1_ms_")]
    assert any("profile_train.json is not valid JSON" in w for w in out["warnings"])


def test_format_label() -> None:
    assert format_label({"dtype": "bf16", "channels_last": True}) == "bf16_cl"
    assert format_label({"dtype": "torch.float16", "channels_last": False}) == "fp16"
    assert format_label({"dtype": "fp32", "channels_last": True}) == "fp32_cl"
    assert format_label({}) == "train"
