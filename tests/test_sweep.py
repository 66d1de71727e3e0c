"""Site sweeps: the built-in layouts, their validation, per-run configs, and a tiny sweep end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from attnlab.attention import EMA, SimAM
from attnlab.cli import main
from attnlab.config import ConfigError, from_dict
from attnlab.data.synthetic import write_synthetic
from attnlab.models import Placement, create_model, variant_placements
from attnlab.study.sweep import (
    SITE_LAYOUT_NAMES,
    check_sweep,
    reference,
    run_config,
    run_labels,
    site_layouts,
)


def _meta_model(placements: list[dict], backbone: str = "resnet50"):
    with torch.device("meta"):
        return create_model("hybrid", backbone=backbone, placements=placements)


def _count(model, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def test_builtin_layouts_place_what_they_say() -> None:
    layouts = site_layouts("resnet50")
    assert tuple(layouts) == SITE_LAYOUT_NAMES
    assert [Placement.from_any(p) for p in layouts["default"]] == variant_placements("hybrid")
    # ResNet-50 has 3, 4, 6, 3 bottlenecks: (SimAM, EMA) modules per layout
    expected = {"default": 16, "simam_ema_pre_add": 16, "ema_simam_pre_add": 16, "stages_3_4": 9,
                "stages_1_2": 7, "last_block": 4, "simam_ema_post_add": 16}
    for name, n in expected.items():
        model = _meta_model(layouts[name])
        assert (_count(model, SimAM), _count(model, EMA)) == (n, n), name
    sites = {name: _meta_model(layouts[name]).layer3[0].attention_sites for name in
             ("default", "simam_ema_pre_add", "ema_simam_pre_add", "simam_ema_post_add")}
    assert sites["default"] == {"post_conv2": ["simam"], "pre_add": ["ema"]}
    assert sites["simam_ema_pre_add"] == {"pre_add": ["simam", "ema"]}
    assert sites["ema_simam_pre_add"] == {"pre_add": ["ema", "simam"]}
    assert sites["simam_ema_post_add"] == {"post_add": ["simam", "ema"]}
    last = _meta_model(layouts["last_block"])
    assert [hasattr(b, "simam") for b in last.layer3] == [False] * 5 + [True]
    assert [hasattr(b, "ema") for b in last.layer4] == [False, False, True]
    assert site_layouts("resnet18")["last_block"][0] == {"kind": "simam", "site": "post_conv2",
                                                         "stages": [1], "blocks": [1]}


def _cfg(sweep: dict | None, **extra) -> object:
    return from_dict({"model": {"backbone": "resnet18"}, "sweep": sweep, **extra})


def _sweep_error(sweep: dict, **kw) -> str:
    with pytest.raises(ConfigError) as info:
        check_sweep(_cfg(sweep), **kw)
    return str(info.value)


def test_invalid_layouts_are_named() -> None:
    assert _sweep_error({}).startswith("sweep is empty")
    assert _sweep_error({"a/b": []}).startswith("sweep.a/b: a layout name becomes a folder name")
    assert _sweep_error({"x": [{"kind": "simam", "site": "post_conv3"}]}) == (
        "sweep.x: unknown site 'post_conv3' for AttentiveBasicBlock in resnet18; valid sites: "
        "['post_conv1', 'post_conv2', 'pre_add', 'post_add']")
    assert _sweep_error({"x": [{"kind": "ema", "site": "pre_add", "stages": [5]}]}) == (
        "sweep.x: placement ema@pre_add: stage 5 is not in 1..4")
    assert _sweep_error({"x": [{"kind": "simam"}]}).startswith("sweep.x: a placement needs keys kind and site")
    assert _sweep_error({"hybrid": [{"kind": "ema", "site": "post_add"}]}).startswith(
        "sweep.hybrid: named like the variant 'hybrid' but placed differently")
    check_sweep(_cfg({"baseline": [], "hybrid": site_layouts("resnet18")["default"]}))  # the same layouts: fine


def test_simam_on_a_1x1_map_is_caught_before_training() -> None:
    layouts = site_layouts("resnet18")
    cfg = _cfg({"stages_1_2": layouts["stages_1_2"], "last_block": layouts["last_block"]})
    check_sweep(cfg, image_size=64)
    with pytest.raises(ConfigError) as info:
        check_sweep(cfg, image_size=32)  # CIFAR's native size: layer4 is 1x1
    msg = str(info.value)
    assert msg.startswith("sweep.last_block: fails at layer4.1.simam on 32x32 inputs: SimAM needs a "
                          "feature map with at least 2 spatial positions, got 1x1")


def test_run_config_carries_the_layout() -> None:
    layouts = site_layouts("resnet18")
    cfg = _cfg({"default": layouts["default"], "stages_3_4": layouts["stages_3_4"]},
               model={"backbone": "resnet18", "sites": {"ema": "post_add"}},
               variant_overrides={"stages_3_4": {"train": {"lr": 0.5}}})
    assert run_labels(cfg) == ["default", "stages_3_4"] and reference(cfg) == "default"
    run = run_config(cfg, "stages_3_4", 2)
    assert run.variant == "stages_3_4" and run.seed == 2 and run.run_name == "stages_3_4_seed2"
    assert run.model.placements == layouts["stages_3_4"] and run.model.sites == {} and run.sweep is None
    assert run.train.lr == 0.5 and run_config(cfg, "default", 0).train.lr == cfg.train.lr
    plain = from_dict({"variants": ["baseline", "ema"]})
    assert run_labels(plain) == ["baseline", "ema"] and reference(plain) == "baseline"
    assert run_config(plain, "ema", 1).model.placements is None


def _write_config(path: Path, data_root: Path, sweep: dict | None) -> Path:
    cfg = {
        "seeds": [0],
        "model": {"backbone": "resnet18"},
        "data": {"root": str(data_root), "batch_size": 8, "eval_batch_size": 16},
        "train": {"epochs": 1, "lr": 0.05, "warmup_epochs": 0.0, "device": "cpu", "progress": False,
                  "precision": "fp32", "log_every": 1},
    }
    if sweep is not None:
        cfg["sweep"] = sweep
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_cli_sweep_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import attnlab.commands.ablate as ablate

    seen = {}
    monkeypatch.setattr(ablate, "run_study", lambda cfg, out, **kw: seen.update(cfg=cfg, out=out) or 0)
    config = _write_config(tmp_path / "c.yaml", tmp_path / "data", None)
    assert main(["ablate", "--config", str(config), "--sweep", "sites", "--out", str(tmp_path / "o")]) == 0
    assert seen["cfg"].sweep == site_layouts("resnet18")
    assert main(["ablate", "--config", str(config), "--sweep", "sites", "--variants", "baseline"]) == 2
    assert "--variants does not apply to a sweep" in capsys.readouterr().err


def test_tiny_sweep_end_to_end(tmp_path: Path, one_thread: None) -> None:
    data = write_synthetic(tmp_path / "data", classes=3, train_per_class=8, val_per_class=4, size=64, seed=0)
    layouts = site_layouts("resnet18")
    sweep = {"default": layouts["default"], "ema_simam_pre_add": layouts["ema_simam_pre_add"]}
    config = _write_config(tmp_path / "sweep.yaml", data, sweep)
    out = tmp_path / "ablation"
    assert main(["ablate", "--config", str(config), "--out", str(out), "--no-profile"]) == 0

    finals = {}
    for name in sweep:
        run = out / "runs" / f"{name}_seed0"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "complete" and summary["variant"] == name
        assert yaml.safe_load((run / "config.yaml").read_text())["model"]["placements"] == sweep[name]
        ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
        model = create_model(**ckpt["model_args"])
        model.load_state_dict(ckpt["model"])
        assert model.layer2[1].attention_sites == (
            {"post_conv2": ["simam"], "pre_add": ["ema"]} if name == "default" else {"pre_add": ["ema", "simam"]})
        finals[name] = 100 * summary["final"]["val_top1"]

    table = pd.read_csv(out / "results.csv")
    assert table["variant"].tolist() == ["default", "ema_simam_pre_add"]  # one row per layout, sweep order
    assert table["n_seeds"].tolist() == [1, 1]
    assert table["top1_mean_pct"].tolist() == pytest.approx([finals["default"], finals["ema_simam_pre_add"]])
    assert table["top1_delta_pt"].tolist() == pytest.approx(
        [0.0, finals["ema_simam_pre_add"] - finals["default"]])
    stats = pd.read_csv(out / "statistics.csv")
    assert stats[["a", "b"]].values.tolist() == [["ema_simam_pre_add", "default"]]
    assert "| ema_simam_pre_add |" in (out / "results.md").read_text()
    assert yaml.safe_load((out / "ablation.yaml").read_text())["sweep"] == sweep


def test_profile_has_one_entry_per_layout(tmp_path: Path) -> None:
    from attnlab.report.profile_json import read_profile
    from attnlab.study.grid import profile_grid

    layouts = site_layouts("resnet18")
    cfg = _cfg({"default": layouts["default"], "last_block": layouts["last_block"]})
    result = profile_grid(cfg, tmp_path, image_size=64, num_classes=3, measure_latency=False)
    assert result["config"]["variants"] == ["default", "last_block"]
    prof, _, warnings = read_profile(tmp_path / "profile.json", ["default", "last_block"])
    assert warnings == []
    # ResNet-18 + EMA (factor 32) in all 8 blocks adds 7,040 parameters; the last block of each stage half
    assert prof["default"]["added_params"] == 7040 and prof["last_block"]["added_params"] == 3520
    assert prof["last_block"]["gmacs"] < prof["default"]["gmacs"]
