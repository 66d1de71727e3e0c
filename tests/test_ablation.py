"""The ablation grid end to end on tiny data: records, report, and resuming an interrupted grid."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from attnlab.config import from_dict
from attnlab.data.synthetic import write_synthetic
from attnlab.engine import trainer as trainer_mod
from attnlab.report import write_report
from attnlab.study.grid import run_grid, run_status

TIMING = {"epoch_seconds", "eval_seconds", "train_images_per_s"}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("data") / "tiny", classes=4, train_per_class=6,
                           val_per_class=4, size=64, seed=1)


def grid_config(root: Path, out: Path) -> dict:
    return {
        "variants": ["baseline", "hybrid"],
        "seeds": [0],
        "output_dir": str(out),
        "model": {"backbone": "resnet18", "attention": {"ema": {"factor": 8}}},
        "data": {"root": str(root), "batch_size": 8, "eval_batch_size": 16},
        "train": {"epochs": 2, "lr": 0.02, "freeze": {"ema": 1}, "device": "cpu", "progress": False},
    }


def rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(fh)]


def test_grid_then_report(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "abl"
    cfg = from_dict(grid_config(root, out))
    runs = run_grid(cfg, out, log=lambda *_: None)
    assert [r.name for r in runs] == ["baseline_seed0", "hybrid_seed0"]
    assert all(run_status(r) == "complete" for r in runs)
    assert (out / "ablation.yaml").is_file()
    result = write_report(out, make_figures=False, echo=False)
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 2
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        assert summary["environment"]["world_size"] == 1
    assert result["table"].shape[0] == 2
    # a second call finds everything complete and trains nothing
    messages: list[str] = []
    run_grid(cfg, out, log=messages.append)
    assert all("complete, skipped" in m for m in messages)


def test_interrupted_grid_resumes_to_the_same_results(root: Path, tmp_path: Path, monkeypatch) -> None:
    straight = tmp_path / "straight"
    run_grid(from_dict(grid_config(root, straight)), straight, log=lambda *_: None)

    broken = tmp_path / "broken"
    cfg = from_dict(grid_config(root, broken))
    original = trainer_mod.Trainer.train_one_epoch

    def die_in_hybrid_epoch_1(self, epoch):
        if self.cfg.variant == "hybrid" and epoch == 1:
            raise KeyboardInterrupt  # as if the process were stopped mid-grid
        return original(self, epoch)

    monkeypatch.setattr(trainer_mod.Trainer, "train_one_epoch", die_in_hybrid_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        run_grid(cfg, broken, log=lambda *_: None)
    assert run_status(broken / "runs" / "baseline_seed0") == "complete"
    assert run_status(broken / "runs" / "hybrid_seed0") == "partial"
    monkeypatch.setattr(trainer_mod.Trainer, "train_one_epoch", original)

    messages: list[str] = []
    run_grid(cfg, broken, log=messages.append)
    assert "baseline_seed0: complete, skipped" in messages[0]
    assert "hybrid_seed0: resuming" in messages[1]
    for name in ["baseline_seed0", "hybrid_seed0"]:
        assert rows(broken / "runs" / name) == rows(straight / "runs" / name)
        a = torch.load(straight / "runs" / name / "checkpoints" / "last.pt", weights_only=False)["model"]
        b = torch.load(broken / "runs" / name / "checkpoints" / "last.pt", weights_only=False)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)
