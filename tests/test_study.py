"""The study layer: plans, executors (in process, --jobs N processes, submitit), --status,
tuning on a held-out train split, and tuned rows beside the shared protocol."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from attnlab.cli import main
from attnlab.config import from_dict
from attnlab.data.open import open_data
from attnlab.data.synthetic import write_synthetic
from attnlab.errors import AttnlabError
from attnlab.study.executors import (
    InProcessExecutor,
    ProcessExecutor,
    SlurmExecutor,
    TrainJob,
    run_status,
)
from attnlab.study.grid import run_grid
from attnlab.study.plan import plan_runs
from attnlab.study.tune import holdout_indices, read_best_params, tune_variant

TIMING = {"epoch_seconds", "eval_seconds", "train_images_per_s"}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("data") / "tiny", classes=3, train_per_class=8,
                           val_per_class=3, size=64, seed=3)


def grid(root: Path, out: Path, **train) -> dict:
    return {
        "variants": ["baseline", "simam"], "seeds": [0], "output_dir": str(out),
        "model": {"backbone": "resnet18"},
        "data": {"root": str(root), "batch_size": 6, "eval_batch_size": 9},
        "train": {"epochs": 2, "lr": 0.01, "device": "cpu", "progress": False, "warmup_epochs": 0, **train},
    }


def rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(fh)]


def test_plan_expands_variants_seeds_and_tuned_rows(root: Path, tmp_path: Path) -> None:
    raw = grid(root, tmp_path)
    raw["seeds"] = [0, 1]
    specs = plan_runs(from_dict(raw), tmp_path, tuned={"simam": {"train.lr": 0.03}})
    assert [s.name for s in specs] == ["baseline_seed0", "simam_seed0", "simam_tuned_seed0",
                                       "baseline_seed1", "simam_seed1", "simam_tuned_seed1"]
    tuned = specs[2].cfg
    assert tuned.variant == "simam_tuned" and tuned.train.lr == 0.03 and specs[1].cfg.train.lr == 0.01
    assert tuned.model.placements == [{"kind": "simam", "site": "post_conv2", "stages": [1, 2, 3, 4], "blocks": None}]


def test_jobs_2_gives_the_metrics_of_jobs_1(root: Path, tmp_path: Path, one_thread) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    run_grid(from_dict(grid(root, one)), one, log=lambda *_: None)
    logs: list[str] = []
    run_grid(from_dict(grid(root, two)), two, log=logs.append, executor=ProcessExecutor(2, threads=1, poll_s=0.2))
    for name in ("baseline_seed0", "simam_seed0"):
        assert run_status(two / "runs" / name) == "complete"
        assert rows(two / "runs" / name) == rows(one / "runs" / name), name
        assert (two / "runs" / name / "train.log").is_file()
    assert sum("started (pid" in m for m in logs) == 2 and any("ETA" in m or "final" in m for m in logs)
    # rerunning with --jobs finds everything complete
    logs.clear()
    run_grid(from_dict(grid(root, two)), two, log=logs.append, executor=ProcessExecutor(2, threads=1))
    assert all("complete, skipped" in m for m in logs)


def test_status_lists_each_run(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread) -> None:
    out = tmp_path / "abl"
    raw = grid(root, out, epochs=1)
    raw["variants"] = ["baseline"]
    run_grid(from_dict(raw), out, log=lambda *_: None)
    raw["variants"] = ["baseline", "simam"]
    (out / "ablation.yaml").write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    assert main(["ablate", "--status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "baseline_seed0" in text and "complete" in text and "simam_seed0" in text and "new" in text
    assert "1 complete, 1 new" in text
    assert main(["ablate", "--status", str(tmp_path / "nowhere")]) == 2


def test_a_submitit_job_killed_mid_run_is_resumed_by_rerunning(root: Path, tmp_path: Path, monkeypatch,
                                                              one_thread) -> None:
    """Through submitit's local executor (a real job process, no Slurm needed)."""
    import time

    monkeypatch.setenv("ATTNLAB_THREADS", "1")
    raw = grid(root, tmp_path / "ref", epochs=3)
    raw["variants"] = ["baseline"]
    reference = tmp_path / "ref"
    run_grid(from_dict(raw), reference, log=lambda *_: None)
    out = tmp_path / "slurm"
    raw["output_dir"] = str(out)
    cfg = from_dict(raw)
    executor = SlurmExecutor(out / "slurm", cfg.slurm, cluster="local", wait=False)
    run_grid(cfg, out, log=lambda *_: None, executor=executor)
    run = out / "runs" / "baseline_seed0"
    deadline = time.time() + 120
    while not (run / "checkpoints" / "last.pt").is_file() and time.time() < deadline:
        time.sleep(0.05)
    executor.jobs[0].cancel()  # the node dies after the first epoch's checkpoint
    while executor.jobs[0].state not in ("CANCELLED", "FAILED", "DONE", "COMPLETED", "INTERRUPTED") \
            and time.time() < deadline:
        time.sleep(0.1)
    assert run_status(run) in ("partial", "failed"), "the job finished before it could be killed"
    logs: list[str] = []
    run_grid(cfg, out, log=logs.append, executor=SlurmExecutor(out / "slurm", cfg.slurm, cluster="local"))
    assert run_status(run) == "complete" and any("done (job" in m for m in logs)
    assert rows(run) == rows(reference / "runs" / "baseline_seed0")  # resumed exactly
    again = TrainJob("c.yaml", "run").checkpoint()
    assert isinstance(again.function, TrainJob) and again.function.run_dir == "run"  # requeue resumes the run


def test_holdout_is_stratified_disjoint_and_fixed() -> None:
    labels = np.repeat(np.arange(4), [10, 20, 3, 1])
    keep, held = holdout_indices(labels, 0.1, seed=0)
    assert not set(keep) & set(held) and len(keep) + len(held) == len(labels)
    assert [int((labels[held] == c).sum()) for c in range(4)] == [1, 2, 1, 0]
    assert np.array_equal(held, holdout_indices(labels, 0.1, seed=0)[1])
    assert not np.array_equal(held, holdout_indices(labels, 0.1, seed=1)[1])


class NoVal:
    """Stands in for the val split while tuning: any use of it fails the test."""

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        raise AssertionError(f"the val split was read while tuning ({name})")

    def __len__(self) -> int:
        raise AssertionError("the val split was read while tuning (len)")


def test_tuning_never_reads_val_and_resumes(root: Path, tmp_path: Path, one_thread) -> None:
    raw = grid(root, tmp_path / "unused", epochs=2)
    raw["tune"] = {"space": {"train.lr": {"log": [0.001, 0.05]}, "train.lr_mult.head": {"choice": [1, 10]}},
                   "holdout": 0.25, "epochs": 1, "prune": False}
    cfg = from_dict(raw)
    data = open_data(cfg)
    data.val = NoVal()
    out = tmp_path / "tune"
    study = tune_variant(cfg, "baseline", out, data, trials=2, log=lambda *_: None)
    assert len(study.trials) == 2 and (out / "optuna.journal").is_file()
    best = yaml.safe_load((out / "baseline" / "best_params.yaml").read_text())
    assert set(best["params"]) == {"train.lr", "train.lr_mult.head"} and 0.001 <= best["params"]["train.lr"] <= 0.05
    trial = json.loads((out / "baseline" / "trial_000" / "summary.json").read_text())
    assert trial["epochs"] == 1
    assert len(open(out / "baseline" / "trials.csv").read().splitlines()) == 3
    assert (out / "baseline" / "optimization_history.png").is_file()
    study = tune_variant(cfg, "baseline", out, data, trials=3, log=lambda *_: None)  # continues the journal
    assert len(study.trials) == 3
    assert read_best_params(out, ["baseline"])["baseline"] == study.best_params


def test_tuned_rows_train_and_report_beside_the_shared_protocol(root: Path, tmp_path: Path, one_thread) -> None:
    from attnlab.report import write_report

    out = tmp_path / "abl"
    raw = grid(root, out, epochs=1)
    raw["variants"] = ["baseline"]
    run_grid(from_dict(raw), out, log=lambda *_: None, tuned={"baseline": {"train.lr": 0.02}})
    saved = yaml.safe_load((out / "runs" / "baseline_tuned_seed0" / "config.yaml").read_text())
    assert saved["variant"] == "baseline_tuned" and saved["train"]["lr"] == 0.02
    table = write_report(out, make_figures=False, echo=False)["table"]
    assert table["variant"].tolist() == ["baseline", "baseline_tuned"]
    with pytest.raises(Exception, match=r"best_params\.yaml does not exist"):
        read_best_params(tmp_path / "none", ["hybrid"])


def test_inprocess_executor_is_the_default(root: Path, tmp_path: Path) -> None:
    assert isinstance(__import__("attnlab.study.executors", fromlist=["make_executor"]).make_executor("local"),
                      InProcessExecutor)
    with pytest.raises(AttnlabError, match="needs 2 GPUs"):
        ProcessExecutor(2, gpus=[0])


def test_tuned_rows_are_compared_with_their_shared_rows_and_among_themselves() -> None:
    from attnlab.report.comparisons import comparison_pairs

    rows = ["baseline", "simam", "ema", "hybrid", "baseline_tuned", "ema_tuned", "hybrid_tuned"]
    pairs = comparison_pairs(rows)
    assert pairs[:5] == [("simam", "baseline"), ("ema", "baseline"), ("hybrid", "baseline"),
                         ("hybrid", "simam"), ("hybrid", "ema")]
    assert ("ema_tuned", "baseline_tuned") in pairs and ("hybrid_tuned", "ema_tuned") in pairs
    assert ("hybrid_tuned", "hybrid") in pairs and ("baseline_tuned", "baseline") in pairs
    assert ("hybrid_tuned", "baseline") not in pairs  # tuned rows are not mixed into the shared family
