"""Optimizer, learning-rate schedule and freezing, all built on the model's named groups.

Each named group (``backbone``, one per attention kind, ``head``) becomes two optimizer
param groups: one with weight decay and one without (norm weights and biases, i.e. every
tensor with fewer than two dimensions). A group's LR is ``train.lr * lr_mult[group]``; the
per-step schedule (linear warm-up, then cosine) multiplies every group's LR alike, so the
differential ratios hold throughout.

Freezing keeps ``requires_grad`` on (so DDP sees every parameter used) and instead drops
the frozen parameters' gradients before each optimizer step: the optimizer skips a
parameter whose ``grad`` is None, so frozen tensors stay bit-identical and build up no
momentum; at unfreeze their optimizer state is cleared so they start fresh. A frozen
group's scheduled LR is 0 (what it really gets, and what metrics.csv shows); on release
it jumps to the shared schedule's value, or, with ``train.unfreeze_warmup_epochs``, ramps
there linearly from ``warmup_start`` times it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from ..config import ConfigError, TrainConfig
from ..models import parameter_groups

DEFAULT_LR_MULT = {"backbone": 1.0, "head": 10.0}
DEFAULT_ATTENTION_LR_MULT = 10.0


def check_group_names(key: str, names: Iterable[str], model_groups: Iterable[str]) -> None:
    """Names in ``train.lr_mult`` / ``train.freeze`` must be groups some model can have.

    The shared protocol names every variant's groups (``ema`` for the baseline too), so a
    group this model lacks is fine; a name no model has is a typo and an error.
    """
    from ..attention import ATTENTION_REGISTRY

    known = {"backbone", "head", *ATTENTION_REGISTRY, *model_groups}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ConfigError(
            f"{key} names unknown group(s) {unknown}; groups are backbone, head and the "
            f"attention kinds {sorted(ATTENTION_REGISTRY)} (this model has {list(model_groups)})"
        )


def group_lr_mults(groups: Iterable[str], lr_mult: dict[str, float]) -> dict[str, float]:
    """LR multiplier per named group: configured value, else backbone 1, new modules 10."""
    groups = list(groups)
    check_group_names("train.lr_mult", lr_mult, groups)
    return {g: float(lr_mult.get(g, DEFAULT_LR_MULT.get(g, DEFAULT_ATTENTION_LR_MULT))) for g in groups}


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    named = parameter_groups(model)
    mults = group_lr_mults(named, cfg.lr_mult)
    check_group_names("train.freeze", cfg.freeze, named)
    param_groups = []
    for name, params in named.items():
        decay = [p for _, p in params if p.ndim >= 2]
        no_decay = [p for _, p in params if p.ndim < 2]
        for plist, wd, tag in ((decay, cfg.weight_decay, "decay"), (no_decay, 0.0, "no_decay")):
            if plist:
                param_groups.append({
                    "params": plist, "lr": cfg.lr * mults[name], "weight_decay": wd,
                    "group": name, "kind": tag,
                })
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=tuple(cfg.betas))


def lr_factor(step: int, total_steps: int, warmup_steps: int, cfg: TrainConfig) -> float:
    """Multiplier on every group's LR at optimizer step ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return cfg.warmup_start + (1.0 - cfg.warmup_start) * step / warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def release_factor(step: int, frozen_steps: int, ramp_steps: int, start: float) -> float:
    """Extra LR multiplier of a group frozen for its first ``frozen_steps`` steps: 0 while
    frozen (the LR it really has), then a linear ramp from ``start`` to 1 over ``ramp_steps``."""
    if step < frozen_steps:
        return 0.0
    if ramp_steps > 0 and step < frozen_steps + ramp_steps:
        return start + (1.0 - start) * (step - frozen_steps) / ramp_steps
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """One per-step LR lambda per param group: the shared schedule (warm-up, cosine), times
    ``release_factor`` for a group under ``train.freeze``."""
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    ramp = round(cfg.unfreeze_warmup_epochs * steps_per_epoch)

    def schedule(frozen_epochs: int):
        frozen = frozen_epochs * steps_per_epoch
        if frozen == 0:
            return lambda step: lr_factor(step, total, warmup, cfg)
        return lambda step: lr_factor(step, total, warmup, cfg) * release_factor(step, frozen, ramp, cfg.warmup_start)

    lambdas = [schedule(int(cfg.freeze.get(g.get("group"), 0))) for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


class FreezeSchedule:
    """``{group: n}``: the group's parameters stay fixed during epochs 0..n-1."""

    def __init__(self, optimizer: torch.optim.Optimizer, freeze: dict[str, int]) -> None:
        self.optimizer = optimizer
        self.freeze = dict(freeze)
        self.params: dict[str, list[nn.Parameter]] = {}
        for g in optimizer.param_groups:
            self.params.setdefault(g["group"], []).extend(g["params"])
        self.active: set[str] = set()

    def frozen_at(self, epoch: int) -> set[str]:
        """Groups of this model frozen in ``epoch`` (groups it lacks are not applicable)."""
        return {g for g, n in self.freeze.items() if epoch < n and g in self.params}

    def start_epoch(self, epoch: int) -> set[str]:
        """Set the frozen groups for ``epoch``; clear optimizer state of groups just released."""
        now = self.frozen_at(epoch)
        for group in self.active - now:
            for p in self.params.get(group, []):
                self.optimizer.state.pop(p, None)
        self.active = now
        return now

    def drop_frozen_grads(self) -> None:
        for group in self.active:
            for p in self.params.get(group, []):
                p.grad = None


def current_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """One LR per named group (its decay and no-decay halves share it)."""
    return {g["group"]: g["lr"] for g in optimizer.param_groups}
