"""Experiment configuration: YAML files plus ``key=value`` overrides, validated against a schema.

The schema is a tree of dataclasses. Validation is strict so a typo never silently falls
back to a default: an unknown key is an error that names it and suggests the nearest valid
key, and a value of the wrong type is an error that names the key and the expected type.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .errors import AttnlabError


class ConfigError(AttnlabError, ValueError):
    """A configuration problem; the message names the key and how to fix it."""


@dataclass
class ModelConfig:
    backbone: str = "resnet50"
    # None = random init; torchvision name (IMAGENET1K_V1/V2), "timm:<tag>", or a local file
    weights: str | None = None
    # explicit layout (list of {kind, site, stages, blocks, kwargs}); None = the variant's
    placements: list[dict[str, Any]] | None = None
    sites: dict[str, str] = field(default_factory=dict)       # kind -> site override
    stages: list[int] | None = None
    blocks: list[int] | None = None
    attention: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> kwargs
    # imagenet: torchvision's stem (the study); low_res: pretrained 7x7 conv at stride 1, no
    # max-pool (feature maps 4x larger per side); low_res_3x3: a 3x3 stride-1 conv from the 7x7
    stem: Literal["imagenet", "low_res", "low_res_3x3"] = "imagenet"


@dataclass
class SyntheticConfig:
    """Generate the synthetic twin at ``data.root`` when it does not exist yet."""

    classes: int = 10
    train_per_class: int = 50
    val_per_class: int = 10
    size: int = 64
    seed: int = 0


@dataclass
class AugmentSettings:
    crop_padding: int = 4
    random_resized_crop: bool = False
    rrc_scale: list[float] = field(default_factory=lambda: [0.35, 1.0])
    hflip: bool = True
    train_size: int | None = None  # e.g. 224: resize every batch on the device


@dataclass
class DataConfig:
    root: str = "data/tiny-imagenet-200"   # extracted folder or the downloaded .zip
    cache_dir: str | None = None
    image_size: int | None = None         # cached resolution; None = native (64; CIFAR-100 32)
    synthetic: SyntheticConfig | None = None
    batch_size: int = 128
    eval_batch_size: int = 256
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    workers: int | None = None            # decode processes for the one-off cache build


@dataclass
class TrainConfig:
    epochs: int = 30
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01                      # base LR; each group's LR = lr * lr_mult[group]
    lr_mult: dict[str, float] = field(default_factory=dict)
    momentum: float = 0.9
    nesterov: bool = True
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 5e-4            # never applied to norm weights and biases
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = 1.0
    warmup_start: float = 0.1             # LR multiplier at step 0 of the warm-up
    min_lr_ratio: float = 0.0             # cosine floor, relative to each group's LR
    freeze: dict[str, int] = field(default_factory=dict)  # group -> epochs frozen from the start
    # a group released from a freeze ramps its LR from warmup_start x to the schedule's value
    # over this many epochs (0 = the study: straight to the scheduled LR, fresh momentum)
    unfreeze_warmup_epochs: float = 0.0
    eval_hflip: bool = False              # also score val with horizontal-flip averaging (own columns)
    label_smoothing: float = 0.0
    grad_clip: float | None = None        # max global grad norm
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    device: str = "auto"                  # auto | cpu | cuda | cuda:N
    max_steps_per_epoch: int | None = None  # cut epochs short (smoke tests)
    log_every: int = 20                   # steps between progress-bar refreshes and NaN checks
    progress: bool = True


@dataclass
class SlurmConfig:
    """Where ``attnlab ablate/tune --launcher slurm`` submits (submitit job array)."""

    partition: str | None = None
    time_min: int = 720                   # per job; a preempted or timed-out job requeues and resumes
    gpus: int = 1                         # per job (one run per job)
    cpus: int = 8
    mem_gb: int | None = None
    account: str | None = None
    max_parallel: int | None = None       # array throttle (%N)
    extra: dict[str, Any] = field(default_factory=dict)  # more sbatch options, e.g. {qos: high}


@dataclass
class TuneConfig:
    """``attnlab tune``: an Optuna search per variant, scored on a held-out part of train."""

    # dotted config key -> {log: [lo, hi]} | {float: [lo, hi]} | {int: [lo, hi]} | {choice: [...]}
    space: dict[str, dict[str, Any]] = field(default_factory=dict)
    holdout: float = 0.1                  # stratified share of train scored while tuning
    holdout_seed: int = 0
    epochs: int | None = None             # shorter trials (None: train.epochs)
    trials: int = 20
    seed: int = 0                         # sampler seed
    prune: bool = True                    # median pruning on per-epoch held-out Top-1


@dataclass
class ExperimentConfig:
    name: str | None = None               # run name; default <variant>_seed<seed>
    variant: str = "hybrid"
    seed: int = 0
    output_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # for `attnlab ablate`: the grid, and per-variant overrides of the shared protocol
    variants: list[str] = field(default_factory=lambda: ["baseline", "simam", "ema", "hybrid"])
    seeds: list[int] = field(default_factory=lambda: [0])
    variant_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    # a sweep instead of `variants`: row name -> model.placements (attnlab.sweep; --sweep sites)
    sweep: dict[str, list[dict[str, Any]]] | None = None
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    @property
    def run_name(self) -> str:
        return self.name or f"{self.variant}_seed{self.seed}"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type hint ``tp`` (converting where harmless, e.g. int -> float)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key} must not be null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {_type_name(tp)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{key} must be one of {list(choices)}, got {value!r}{extra}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {type(value).__name__} {value!r}")
        return _build(tp, value, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {type(value).__name__} {value!r}")
        _, val_tp = typing.get_args(tp) or (str, Any)
        return {str(k): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 5e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported schema type {tp!r}")


def _build(cls: type, raw: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            full = f"{prefix}.{key}" if prefix else key
            valid = [f"{prefix}.{n}" if prefix else n for n in names]
            hint = difflib.get_close_matches(full, valid, n=1, cutoff=0.5)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(f"unknown config key {full!r}{suggestion} (valid here: {', '.join(names)})")
    kwargs = {}
    for name in names:
        if name in raw:
            full = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _coerce(raw[name], hints[name], full)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. train.lr=0.01)")
    key, _, raw = text.partition("=")
    if not key.strip():
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: cannot parse the value ({err})") from None
    if isinstance(value, str) and "," in value and not raw.strip().startswith(("'", '"')):
        value = [yaml.safe_load(v) for v in value.split(",")]  # variants=a,b -> list
    return key.strip().split("."), value


def set_dotted(raw: dict[str, Any], path: list[str], value: Any) -> None:
    node = raw
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_raw(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist (bundled configs live in configs/)")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{p} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping at the top level")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML config, apply ``key=value`` overrides, validate everything."""
    raw = load_raw(path)
    for text in overrides:
        keys, value = parse_override(text)
        set_dotted(raw, keys, value)
    return from_dict(raw)


# Valid ranges of numeric keys, checked on every config read (``*`` matches any map key or
# list index). Every float must also be finite. A value outside its range is an error that
# names the key, the value and the range, before any data or model is touched.
RANGES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "seed": (">= 0", lambda v: v >= 0),
    "seeds.*": (">= 0", lambda v: v >= 0),
    "data.image_size": (">= 8", lambda v: v >= 8),
    "data.batch_size": (">= 1", lambda v: v >= 1),
    "data.eval_batch_size": (">= 1", lambda v: v >= 1),
    "data.workers": (">= 1", lambda v: v >= 1),
    "data.synthetic.classes": (">= 2", lambda v: v >= 2),
    "data.synthetic.train_per_class": (">= 1", lambda v: v >= 1),
    "data.synthetic.val_per_class": (">= 1", lambda v: v >= 1),
    "data.synthetic.size": (">= 8", lambda v: v >= 8),
    "data.augment.crop_padding": (">= 0", lambda v: v >= 0),
    "data.augment.rrc_scale.*": ("in (0, 1]", lambda v: 0 < v <= 1),
    "data.augment.train_size": (">= 8", lambda v: v >= 8),
    "train.epochs": (">= 1", lambda v: v >= 1),
    "train.lr": ("> 0", lambda v: v > 0),
    "train.lr_mult.*": (">= 0", lambda v: v >= 0),
    "train.momentum": ("in [0, 1)", lambda v: 0 <= v < 1),
    "train.betas.*": ("in [0, 1)", lambda v: 0 <= v < 1),
    "train.weight_decay": (">= 0", lambda v: v >= 0),
    "train.warmup_epochs": (">= 0", lambda v: v >= 0),
    "train.warmup_start": ("in [0, 1]", lambda v: 0 <= v <= 1),
    "train.min_lr_ratio": ("in [0, 1]", lambda v: 0 <= v <= 1),
    "train.freeze.*": (">= 0", lambda v: v >= 0),
    "train.unfreeze_warmup_epochs": (">= 0", lambda v: v >= 0),
    "train.label_smoothing": ("in [0, 1)", lambda v: 0 <= v < 1),
    "train.grad_clip": ("> 0", lambda v: v > 0),
    "train.max_steps_per_epoch": (">= 1", lambda v: v >= 1),
    "train.log_every": (">= 1", lambda v: v >= 1),
    "slurm.time_min": (">= 1", lambda v: v >= 1),
    "slurm.gpus": (">= 0", lambda v: v >= 0),
    "slurm.cpus": (">= 1", lambda v: v >= 1),
    "tune.holdout": ("in (0, 0.5]", lambda v: 0 < v <= 0.5),
    "tune.epochs": (">= 1", lambda v: v >= 1),
    "tune.trials": (">= 1", lambda v: v >= 1),
}


def _leaves(node: Any, prefix: str = ""):
    """(dotted key, value) for every leaf of a nested dict/list."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{prefix}.{i}")
    else:
        yield prefix, node


def _range_for(key: str) -> tuple[str, Callable[[Any], bool]] | None:
    parts = key.split(".")
    for pattern, rule in RANGES.items():
        pat = pattern.split(".")
        if len(pat) == len(parts) and all(p in ("*", k) for p, k in zip(pat, parts, strict=True)):
            return rule
    return None


def check_ranges(cfg: ExperimentConfig) -> None:
    """Every numeric value within its declared range, and every float finite."""
    raw = to_dict(cfg)
    for key, value in _leaves({k: v for k, v in raw.items() if k != "variant_overrides"}):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value}")
        rule = _range_for(key)
        if rule is not None and not rule[1](value):
            raise ConfigError(f"{key} must be {rule[0]}, got {value}")
    scale = cfg.data.augment.rrc_scale
    if len(scale) != 2 or scale[0] > scale[1]:
        raise ConfigError(f"data.augment.rrc_scale must be two values [lo, hi] with lo <= hi, got {cfg.data.augment.rrc_scale}")
    if len(cfg.train.betas) != 2:
        raise ConfigError(f"train.betas must be two values [beta1, beta2], got {cfg.train.betas}")
    if cfg.train.warmup_epochs > cfg.train.epochs:
        raise ConfigError(f"train.warmup_epochs must be <= train.epochs ({cfg.train.epochs}), got {cfg.train.warmup_epochs}")
    if not cfg.seeds:
        raise ConfigError("seeds must list at least one seed, e.g. seeds=[0]")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"seeds must not repeat, got {cfg.seeds}")
    if not cfg.variants and cfg.sweep is None:
        raise ConfigError("variants must list at least one variant, e.g. variants=[baseline,hybrid]")


def from_dict(raw: dict[str, Any]) -> ExperimentConfig:
    cfg = _build(ExperimentConfig, raw)
    check_ranges(cfg)
    # per-variant overrides must themselves be valid against the schema
    for variant, extra in cfg.variant_overrides.items():
        try:
            check_ranges(_build(ExperimentConfig, deep_merge(to_dict(cfg), extra)))
        except ConfigError as err:
            raise ConfigError(f"variant_overrides.{variant}: {err}") from None
    return cfg


def for_variant(cfg: ExperimentConfig, variant: str, seed: int | None = None) -> ExperimentConfig:
    """The config of one run of the grid: the shared protocol plus that variant's overrides."""
    raw = to_dict(cfg)
    raw = deep_merge(raw, cfg.variant_overrides.get(variant, {}))
    raw["variant"] = variant
    if seed is not None:
        raw["seed"] = seed
    raw["name"] = None
    return from_dict(raw)


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
