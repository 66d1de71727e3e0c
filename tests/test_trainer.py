"""The training engine end to end on tiny data: records, exact resume, NaN handling, DDP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from attnlab.config import ConfigError, from_dict
from attnlab.data.synthetic import write_synthetic
from attnlab.engine.trainer import Trainer, TrainingDiverged, build_model
from attnlab.models import parameter_groups

TIMING = {"epoch_seconds", "eval_seconds", "train_images_per_s"}


def tiny_config(root: Path, out: Path, **train) -> dict:
    return {
        "variant": "hybrid",
        "seed": 3,
        "output_dir": str(out),
        "model": {"backbone": "resnet18", "attention": {"ema": {"factor": 8}}},
        "data": {"root": str(root), "batch_size": 8, "eval_batch_size": 16,
                 "augment": {"crop_padding": 4, "hflip": True}},
        "train": {"epochs": 3, "lr": 0.05, "freeze": {"ema": 2}, "warmup_epochs": 0.5,
                  "device": "cpu", "progress": False, "log_every": 2, **train},
    }


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("data") / "tiny", classes=4, train_per_class=8,
                           val_per_class=5, size=64, seed=0)


class Crash(Exception):
    """Stands in for a kill: raised inside a step, nothing after it runs."""


def crash_at(epoch: int, step: int):
    def hook(e: int, s: int) -> None:
        if (e, s) == (epoch, step):
            raise Crash(f"killed at epoch {e} step {s}")
    return hook


def metric_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(fh)]


def test_run_record_and_freeze(dataset_root: Path, tmp_path: Path) -> None:
    cfg = from_dict(tiny_config(dataset_root, tmp_path))
    trainer = Trainer(cfg)
    init = build_model(cfg, 4).state_dict()
    summary = trainer.fit()
    run = tmp_path / "hybrid_seed3"
    for name in ["config.yaml", "metrics.csv", "summary.json", "predictions/best.npz", "predictions/last.npz",
                 "checkpoints/last.pt", "checkpoints/best.pt"]:
        assert (run / name).is_file(), name
    assert list((run / "tb").iterdir())
    rows = metric_rows(run)
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert [r["frozen"] for r in rows] == ["ema", "ema", ""]
    assert [float(r["lr_ema"]) for r in rows[:2]] == [0.0, 0.0]  # the LR a frozen group really has
    assert float(rows[2]["lr_ema"]) / float(rows[2]["lr_backbone"]) == pytest.approx(10.0)
    saved = json.loads((run / "summary.json").read_text())
    assert saved["status"] == "complete" and saved["epochs_done"] == 3
    assert saved["params"]["added"] == sum(p.numel() for _, p in parameter_groups(trainer.model)["ema"])
    assert saved["environment"]["torch"] == torch.__version__
    assert summary["best"]["val_top1"] == max(float(r["val_top1"]) for r in rows)
    preds = np.load(run / "predictions" / "last.npz")
    assert preds["top5"].shape == (20, 5) and preds["labels"].tolist() == trainer.data.val.labels.tolist()
    assert float(rows[-1]["val_top1"]) == pytest.approx((preds["top5"][:, 0] == preds["labels"]).mean())
    assert float(rows[-1]["val_top5"]) == pytest.approx((preds["top5"] == preds["labels"][:, None]).any(1).mean())
    # EMA trained only in epoch 2: the checkpoint of epoch 1 would show it untouched, and
    # the final weights differ from the initial ones.
    final = trainer.model.state_dict()
    ema_keys = [k for k in final if ".ema." in k]
    assert any(not torch.equal(final[k], init[k]) for k in ema_keys)
    with pytest.raises(FileExistsError, match="pass --resume"):
        Trainer(cfg)


def test_killed_runs_resume_exactly(dataset_root: Path, tmp_path: Path) -> None:
    straight = Trainer(from_dict(tiny_config(dataset_root, tmp_path / "a")))
    straight.fit()

    cfg = from_dict(tiny_config(dataset_root, tmp_path / "b"))
    first = Trainer(cfg)
    first.step_hooks.append(crash_at(1, 2))            # mid-epoch, during the freeze
    with pytest.raises(Crash):
        first.fit()
    assert json.loads((tmp_path / "b/hybrid_seed3/summary.json").read_text())["status"] == "failed"
    second = Trainer(cfg, resume=True)
    assert second.start_epoch == 1
    second.step_hooks.append(crash_at(2, 0))           # first step after the unfreeze
    with pytest.raises(Crash):
        second.fit()
    third = Trainer(cfg, resume=True)
    assert third.start_epoch == 2
    third.fit()

    assert metric_rows(tmp_path / "b/hybrid_seed3") == metric_rows(tmp_path / "a/hybrid_seed3")
    a, b = straight.model.state_dict(), third.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights must be bit-identical"


def test_nan_loss_stops_with_last_good_checkpoint(dataset_root: Path, tmp_path: Path) -> None:
    cfg = from_dict(tiny_config(dataset_root, tmp_path, epochs=2, freeze={}))
    trainer = Trainer(cfg)

    def poison(module, inputs, output):
        if trainer.history:  # epoch 1 onwards
            return output * float("nan")
    handle = trainer.model.fc.register_forward_hook(poison)
    with pytest.raises(TrainingDiverged, match=r"NaN/inf in epoch 1.*checkpoints/last.pt \(epoch 0\) is intact"):
        trainer.fit()
    handle.remove()
    ckpt = torch.load(tmp_path / "hybrid_seed3/checkpoints/last.pt", weights_only=True)
    assert ckpt["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    summary = json.loads((tmp_path / "hybrid_seed3/summary.json").read_text())
    assert summary["status"] == "failed" and "TrainingDiverged" in summary["error"]


@pytest.mark.slow
def test_ddp_on_two_gloo_processes(dataset_root: Path, tmp_path: Path) -> None:
    raw = tiny_config(dataset_root, tmp_path, epochs=2, freeze={"ema": 2})
    raw["data"]["batch_size"] = 8  # global: 4 per rank
    cfg_path = tmp_path / "ddp.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "attnlab", "train", "--config", str(cfg_path)],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "hybrid_seed3"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["environment"]["world_size"] == 2
    assert len(metric_rows(run)) == 2
    preds = np.load(run / "predictions" / "last.npz")
    assert preds["labels"].shape == (20,)
    # EMA frozen for the whole run under DDP: bit-identical to the seeded initial model
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    init = build_model(from_dict(raw), 4).state_dict()
    ema = [k for k in init if ".ema." in k]
    assert ema and all(torch.equal(ckpt["model"][k], init[k]) for k in ema)
    assert not torch.equal(ckpt["model"]["conv1.weight"], init["conv1.weight"])
    # the val figures are those of the saved weights and buffers: one process scoring last.pt agrees
    single = Trainer(from_dict(raw), run_dir=run, resume=True)
    val = single.evaluate()
    single.close()
    reported = metric_rows(run)[-1]
    assert float(reported["val_loss"]) == pytest.approx(val["loss"], rel=1e-5)
    assert float(reported["val_top1"]) == pytest.approx(val["top1"], abs=1e-9)
    assert len(single.train_loader) == summary_steps(run)  # same steps per epoch as the 2 ranks


def summary_steps(run: Path) -> int:
    """Optimizer steps per epoch recorded by the run (its LR schedule's length / epochs)."""
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    return ckpt["scheduler"]["last_epoch"] // (ckpt["epoch"] + 1)


def test_impossible_placement_stops_before_training(tmp_path: Path) -> None:
    root = write_synthetic(tmp_path / "small", classes=2, train_per_class=4, val_per_class=1, size=32, seed=0)
    raw = tiny_config(root, tmp_path)
    raw["data"]["image_size"] = 32
    with pytest.raises(ConfigError, match=r"fails at layer4\.0\.simam on 32x32 inputs.*data.augment.train_size"):
        Trainer(from_dict(raw))
    assert not (tmp_path / "hybrid_seed3").exists()
