"""Hostile and careless inputs to training and ablation: nothing in a run folder runs code, a
recorded protocol stays fixed, one process per folder, bad values stop early, NaN never
becomes a result, every expected failure is one CLI line."""

from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from attnlab.cli import main
from attnlab.config import ConfigError, from_dict, load_config
from attnlab.data.synthetic import write_synthetic
from attnlab.engine.checkpoint import atomic_write_text, load_checkpoint
from attnlab.engine.lock import FolderLock
from attnlab.engine.trainer import Trainer, TrainingDiverged
from attnlab.errors import CheckpointError, LockError, ProtocolError
from attnlab.report.attention_maps import load_checkpoint_model
from attnlab.study.grid import run_grid

MARKER = "attnlab-planted-pickle-ran"


class Planted:
    """Unpickling this runs code: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("data") / "tiny", classes=3, train_per_class=6,
                           val_per_class=3, size=64, seed=2)


def tiny(root: Path, out: Path, **train) -> dict:
    return {
        "variant": "baseline", "seed": 0, "output_dir": str(out),
        "model": {"backbone": "resnet18"},
        "data": {"root": str(root), "batch_size": 6, "eval_batch_size": 9},
        "train": {"epochs": 1, "lr": 0.01, "device": "cpu", "progress": False, "warmup_epochs": 0, **train},
    }


@pytest.fixture(scope="module")
def finished(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished 1-epoch run (shared by the read-only tests below)."""
    out = tmp_path_factory.mktemp("runs")
    Trainer(from_dict(tiny(root, out))).fit()
    return out / "baseline_seed0"


def plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump({"model": {}, "model_args": {}, "epoch": 0, "evil": Planted(marker)}, fh)


# ------------------------------------------------------------------ checkpoints

def test_own_checkpoints_load_with_weights_only(finished: Path) -> None:
    ckpt = torch.load(finished / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 0 and "rng" in ckpt and ckpt["config"]["variant"] == "baseline"


def test_planted_pickle_is_refused_everywhere(tmp_path: Path, root: Path, one_thread) -> None:
    marker = tmp_path / MARKER
    bad = tmp_path / "last.pt"
    plant(bad, marker)
    with pytest.raises(CheckpointError, match=r"last\.pt cannot be used: it holds Python objects"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="refused unread"):
        load_checkpoint_model(bad)
    # resume of a run folder whose last.pt was replaced
    out = tmp_path / "runs"
    cfg = from_dict(tiny(root, out))
    Trainer(cfg).fit()
    plant(out / "baseline_seed0" / "checkpoints" / "last.pt", marker)
    with pytest.raises(CheckpointError, match="baseline_seed0/checkpoints/last.pt"):
        Trainer(cfg, resume=True)
    assert not marker.exists(), "unpickling ran the planted code"


def test_truncated_checkpoint_is_one_clear_error(tmp_path: Path, finished: Path) -> None:
    data = (finished / "checkpoints" / "last.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=r"cut\.pt cannot be used: it is truncated or not a checkpoint"):
        load_checkpoint(cut)


def test_records_honour_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # no temp left


def test_finished_run_files_are_readable_by_the_group(finished: Path) -> None:
    mode = stat.S_IMODE((finished / "summary.json").stat().st_mode)
    assert mode == 0o666 & ~_umask()


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


# ------------------------------------------------------------------ protocol

def test_resume_with_another_protocol_stops_and_keeps_the_record(tmp_path: Path, root: Path, one_thread) -> None:
    out = tmp_path / "runs"
    raw = tiny(root, out, epochs=2)
    Trainer(from_dict(raw)).fit()
    run = out / "baseline_seed0"
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    changed = tiny(root, out, epochs=3, lr=0.05)
    with pytest.raises(ProtocolError) as info:
        Trainer(from_dict(changed), resume=True)
    message = str(info.value)
    assert "2 key(s) differ" in message and "\n" not in message
    assert "train.epochs: 2 (recorded) -> 3 (now)" in message
    assert "train.lr: 0.01 (recorded) -> 0.05 (now)" in message
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    # operational keys may change: a resume of the finished run with other log settings is fine
    ok = tiny(root, out, epochs=2, log_every=1)
    ok["data"]["eval_batch_size"] = 4
    Trainer(from_dict(ok), resume=True).fit()
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["log_every"] == 1


def test_train_without_resume_refuses_a_used_folder_and_restart_discards(tmp_path: Path, finished: Path, root: Path,
                                                                         one_thread) -> None:
    out = finished.parent
    with pytest.raises(FileExistsError, match="--resume to continue it, --restart to discard it"):
        Trainer(from_dict(tiny(root, out)))
    run = tmp_path / "r"
    Trainer(from_dict(tiny(root, tmp_path)), run_dir=run).fit()
    (run / "notes.txt").write_text("mine")
    trainer = Trainer(from_dict(tiny(root, tmp_path, lr=0.02)), run_dir=run, restart=True)
    assert not (run / "summary.json").exists() and (run / "notes.txt").read_text() == "mine"
    trainer.fit()
    assert json.loads((run / "protocol.json").read_text())["protocol"]["train.lr"] == 0.02


def test_a_different_dataset_at_the_same_path_is_another_protocol(tmp_path: Path, one_thread) -> None:
    data = write_synthetic(tmp_path / "d", classes=3, train_per_class=6, val_per_class=3, size=64, seed=2)
    Trainer(from_dict(tiny(data, tmp_path / "runs"))).fit()
    import shutil

    shutil.rmtree(data)
    write_synthetic(data, classes=4, train_per_class=6, val_per_class=3, size=64, seed=2)
    with pytest.raises(ProtocolError, match=r"data\.identity: .*3 classes.* -> .*4 classes"):
        Trainer(from_dict(tiny(data, tmp_path / "runs")), resume=True)


def grid(root: Path, out: Path, **train) -> dict:
    raw = tiny(root, out, **train)
    raw.pop("variant"), raw.pop("seed")
    raw["variants"], raw["seeds"] = ["baseline", "simam"], [0]
    return raw


def test_ablate_rerun_with_another_protocol_changes_nothing(tmp_path: Path, root: Path, one_thread) -> None:
    out = tmp_path / "abl"
    run_grid(from_dict(grid(root, out)), out, log=lambda *_: None)
    record = (out / "ablation.yaml").read_bytes()
    summaries = {p: p.read_bytes() for p in out.glob("runs/*/summary.json")}
    with pytest.raises(ProtocolError, match=r"abl/protocol\.json records another protocol.*train\.lr: 0\.01 "
                                            r"\(recorded\) -> 0\.05 \(now\).*new --out folder"):
        run_grid(from_dict(grid(root, out, lr=0.05)), out, log=lambda *_: None)
    assert (out / "ablation.yaml").read_bytes() == record
    assert {p: p.read_bytes() for p in out.glob("runs/*/summary.json")} == summaries
    # a per-variant override changes that run's protocol only, and --restart retrains it
    raw = grid(root, out)
    raw["variant_overrides"] = {"simam": {"train": {"lr": 0.005}}}
    with pytest.raises(ProtocolError, match=r"simam_seed0/protocol\.json .*--restart simam_seed0"):
        run_grid(from_dict(raw), out, log=lambda *_: None)
    logs: list[str] = []
    run_grid(from_dict(raw), out, log=logs.append, restart=["simam_seed0"])
    assert any("baseline_seed0: complete, skipped" in m for m in logs)
    assert any("simam_seed0: training" in m for m in logs)
    # growing the grid by a seed keeps every run it already had in ablation.yaml
    raw["seeds"] = [1]
    raw["variants"] = ["baseline"]
    run_grid(from_dict(raw), out, log=lambda *_: None)
    saved = load_config(out / "ablation.yaml")
    assert saved.seeds == [0, 1] and saved.variants == ["baseline", "simam"]


# ------------------------------------------------------------------ locks, temp files

def test_a_held_folder_is_refused_with_the_holder(tmp_path: Path, root: Path) -> None:
    run = tmp_path / "runs" / "baseline_seed0"
    with FolderLock(run):
        with pytest.raises(LockError, match=rf"in use by process {os.getpid()} on .*--wait"):
            Trainer(from_dict(tiny(root, tmp_path / "runs")))
        with pytest.raises(LockError, match="abl is in use"), FolderLock(tmp_path / "abl"):
            run_grid(from_dict(grid(root, tmp_path / "abl")), tmp_path / "abl", log=lambda *_: None)
    assert not run.exists(), "a lock on a folder nothing was written to leaves no folder behind"


def test_lock_is_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    code = ("import sys, time; from attnlab.engine.lock import FolderLock; "
            "lock = FolderLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LockError, match=f"process {proc.pid}"):
            FolderLock(tmp_path).acquire()
    finally:
        proc.kill()
        proc.wait()
    with FolderLock(tmp_path) as lock:  # kill -9 released it
        assert lock.held


def test_stale_temp_files_are_removed_on_the_next_start(tmp_path: Path, finished: Path, root: Path,
                                                        one_thread) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    stale = [run / "checkpoints" / ".last.pt.1a2b3c4d.tmp", run / ".summary.json.00ff00ff.tmp"]
    for path in stale:
        path.write_bytes(b"x" * 1000)
    Trainer(from_dict(tiny(root, tmp_path)), run_dir=run, resume=True).fit()
    assert not any(p.exists() for p in stale)


def test_decode_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    code = (
        "import os, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "import multiprocessing as mp\n"
        "from attnlab.data.cache import _die_with_parent\n"
        "pool = ProcessPoolExecutor(2, mp_context=mp.get_context('fork'), initializer=_die_with_parent,"
        " initargs=(os.getpid(),))\n"
        "futures = [pool.submit(time.sleep, 60) for _ in range(2)]\n"
        "time.sleep(1.0)\n"
        "print(' '.join(str(p) for p in pool._processes), flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert len(workers) == 2
    proc.kill()
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_running(p) for p in workers):
        time.sleep(0.2)
    assert not any(_running(p) for p in workers), "decode workers outlived their parent"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


# ------------------------------------------------------------------ values and divergence

@pytest.mark.parametrize("override,message", [
    ("train.epochs=0", r"train\.epochs must be >= 1, got 0"),
    ("train.epochs=-1", r"train\.epochs must be >= 1, got -1"),
    ("train.warmup_epochs=-1", r"train\.warmup_epochs must be >= 0, got -1"),
    ("train.lr=.nan", r"train\.lr must be a finite number, got nan"),
    ("train.lr=-0.1", r"train\.lr must be > 0, got -0\.1"),
    ("train.log_every=0", r"train\.log_every must be >= 1, got 0"),
    ("train.label_smoothing=2", r"train\.label_smoothing must be in \[0, 1\), got 2"),
    ("train.max_steps_per_epoch=-1", r"train\.max_steps_per_epoch must be >= 1, got -1"),
    ("train.momentum=1", r"train\.momentum must be in \[0, 1\), got 1"),
    ("data.batch_size=0", r"data\.batch_size must be >= 1, got 0"),
    ("train.lr_mult={ema: -1}", r"train\.lr_mult\.ema must be >= 0, got -1"),
    ("train.freeze={ema: -2}", r"train\.freeze\.ema must be >= 0, got -2"),
    ("seeds=[0,0]", r"seeds must not repeat"),
    ("train.warmup_epochs=40", r"train\.warmup_epochs must be <= train\.epochs \(30\), got 40"),
])
def test_out_of_range_values_are_config_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_range_errors_in_variant_overrides_name_the_variant() -> None:
    with pytest.raises(ConfigError, match=r"variant_overrides\.ema: train\.lr must be > 0, got 0"):
        from_dict({"variant_overrides": {"ema": {"train": {"lr": 0}}}})


def test_nan_validation_loss_is_a_divergence(tmp_path: Path, root: Path, one_thread) -> None:
    cfg = from_dict(tiny(root, tmp_path, epochs=2))
    trainer = Trainer(cfg)

    def poison_eval(module, inputs, output):  # finite while training, NaN in eval mode
        return output if module.training else output * float("nan")
    trainer.model.fc.register_forward_hook(poison_eval)
    with pytest.raises(TrainingDiverged, match=r"validation loss is nan after epoch 0.*--restart"):
        trainer.fit()
    run = tmp_path / "baseline_seed0"
    summary = json.loads((run / "summary.json").read_text(), parse_constant=_no_nan)
    assert summary["status"] == "failed" and summary["epochs_done"] == 0
    assert not (run / "checkpoints" / "best.pt").exists() and not (run / "checkpoints" / "last.pt").exists()


def _no_nan(text: str) -> float:
    raise AssertionError(f"summary.json holds a bare {text}")


def test_divergence_advice_works_when_followed(tmp_path: Path, root: Path, one_thread) -> None:
    out = tmp_path / "runs"
    cfg = from_dict(tiny(root, out, epochs=2))
    trainer = Trainer(cfg)

    def poison(module, inputs, output):
        return output * float("nan") if trainer.history else output
    trainer.model.fc.register_forward_hook(poison)
    with pytest.raises(TrainingDiverged, match=r"train \.\.\. --restart"):
        trainer.fit()
    # the advice: other settings and --restart (the old LR is not silently carried over)
    summary = Trainer(from_dict(tiny(root, out, epochs=2, lr=0.005)), restart=True).fit()
    assert summary["status"] == "complete"
    ckpt = load_checkpoint(out / "baseline_seed0" / "checkpoints" / "last.pt")
    assert ckpt["config"]["train"]["lr"] == 0.005


# ------------------------------------------------------------------ CLI

def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["train", "train.epochs=0"], r"^attnlab train: error: train\.epochs must be >= 1, got 0$"),
    (["train", "variant=nope", "data.root=/nonexistent-attnlab"], r"^attnlab train: error: "),
    (["ablate", "--config", "/nonexistent-attnlab.yaml"], r"^attnlab ablate: error: config file .* does not exist"),
    (["ablate", "--config", "CONFIG", "variants=[baseline,nope]"], r"^attnlab ablate: error: model nope .*cannot be built"),
    (["ablate", "--config", "CONFIG", "variants=[ema]", "model.attention={ema: {factor: 7}}"], r"^attnlab ablate: error: model .*factor"),
    (["ablate", "--config", "CONFIG", "model.backbone=resnet7"], r"^attnlab ablate: error: model .*resnet7"),
    (["ablate", "--config", "CONFIG", "train.lr=-1"], r"^attnlab ablate: error: train\.lr must be > 0, got -1"),
])
def test_cli_errors_are_one_line(tmp_path: Path, root: Path, capsys: pytest.CaptureFixture[str],
                                 argv: list[str], message: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(grid(root, tmp_path / "abl")))
    argv = [str(config) if a == "CONFIG" else a for a in argv]
    code, err = _cli(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert __import__("re").search(message, err.strip()), err


def test_cli_read_only_output_and_debug(tmp_path: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() == 0:
        import unittest.mock as mock

        denied = PermissionError(13, "Permission denied")
        patch = mock.patch("attnlab.engine.lock.os.open", side_effect=denied)
    else:
        import contextlib

        patch = contextlib.nullcontext()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny(root, ro)))
    with patch:
        code, err = _cli(capsys, "train", "--config", str(config))
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("attnlab train: error: cannot write ") and "baseline_seed0" in err
    assert "choose a writable output folder" in err
    with patch:
        code, err = _cli(capsys, "--debug", "train", "--config", str(config))
    assert code == 2 and "Traceback" in err and err.rstrip().splitlines()[-1].startswith("attnlab train: error:")


def test_cli_locked_folder(tmp_path: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(grid(root, tmp_path / "abl")))
    with FolderLock(tmp_path / "abl"):
        code, err = _cli(capsys, "ablate", "--config", str(config), "--no-profile", "--no-report")
    assert code == 2 and err.startswith("attnlab ablate: error: ") and "is in use by process" in err


# ------------------------------------------------------------------ measurement

def test_training_format_and_a_profile_in_it(tmp_path: Path) -> None:
    from attnlab.report.profile_json import read_train_profile
    from attnlab.study.grid import profile_grid, training_format

    paper = load_config(Path(__file__).resolve().parents[1] / "configs" / "paper.yaml")
    assert training_format(paper, "cuda") == ("bf16", True)  # auto precision on CUDA
    assert training_format(paper, "cpu") == ("fp32", True)
    cfg = from_dict({"variants": ["baseline"], "model": {"backbone": "resnet18"},
                     "train": {"precision": "bf16", "channels_last": True}})
    profile_grid(cfg, tmp_path, image_size=32, num_classes=3, filename="profile_train.json", dtype="bf16",
                 channels_last=True, measure_train=False, latency_batches=(1,), repeats=2, warmup=1)
    saved = json.loads((tmp_path / "profile_train.json").read_text())
    assert saved["environment"]["dtype"] == "bf16" and saved["environment"]["channels_last"] is True
    assert saved["variants"]["baseline"]["latency"]
    assert not (tmp_path / "profile.json").exists()
    figures, label, warnings = read_train_profile(tmp_path / "profile_train.json", ["baseline"])
    assert label == "bf16_cl" and figures["baseline"]["latency_b1_ms"] > 0 and not warnings
