"""Config loading: YAML + overrides, strict validation with helpful errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from attnlab.config import ConfigError, for_variant, load_config, save_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_bundled_configs_validate() -> None:
    paper = load_config(CONFIGS / "paper.yaml")
    assert paper.variants == ["baseline", "simam", "ema", "hybrid"]
    assert paper.train.freeze == {"ema": 3}
    assert paper.train.lr_mult["backbone"] < paper.train.lr_mult["ema"] == paper.train.lr_mult["head"]
    assert paper.model.weights == "IMAGENET1K_V1"
    assert paper.train.weight_decay == pytest.approx(5e-4)
    demo = load_config(CONFIGS / "demo.yaml")
    assert demo.train.device == "cpu" and demo.data.synthetic is not None


def test_overrides_are_typed_and_nested() -> None:
    cfg = load_config(None, ["train.lr=0.2", "variant=ema", "train.freeze={ema: 2}",
                             "model.weights=null", "variants=baseline,hybrid", "data.augment.train_size=224"])
    assert cfg.train.lr == 0.2 and isinstance(cfg.train.lr, float)
    assert cfg.variant == "ema" and cfg.train.freeze == {"ema": 2}
    assert cfg.model.weights is None
    assert cfg.variants == ["baseline", "hybrid"]
    assert cfg.data.augment.train_size == 224


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.lrr=0.1", r"unknown config key 'train.lrr'; did you mean 'train.lr'\?"),
        ("trian.epochs=3", r"unknown config key 'trian'; did you mean 'train'\?"),
        ("train.epochs=three", "train.epochs must be an integer, got str 'three'"),
        ("train.epochs=2.5", "train.epochs must be an integer"),
        ("train.optimizer=adam", r"train.optimizer must be one of \['sgd', 'adamw'\], got 'adam' \(did you mean 'adamw'\?\)"),
        ("data.augment.hflip=3", "data.augment.hflip must be true or false"),
        ("train.freeze=3", "train.freeze must be a mapping"),
        ("train.lr", "must look like key=value"),
    ],
)
def test_config_errors_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_variant_overrides_apply_to_one_variant_only(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": {"lr": 0.1}, "variant_overrides": {"ema": {"train": {"lr": 0.3}}}}))
    cfg = load_config(path)
    assert for_variant(cfg, "ema", seed=2).train.lr == 0.3
    assert for_variant(cfg, "ema", seed=2).run_name == "ema_seed2"
    assert for_variant(cfg, "hybrid").train.lr == 0.1
    path.write_text(yaml.safe_dump({"variant_overrides": {"ema": {"train": {"lrr": 0.3}}}}))
    with pytest.raises(ConfigError, match="variant_overrides.ema: unknown config key 'train.lrr'"):
        load_config(path)


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "paper.yaml", ["seed=3"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
