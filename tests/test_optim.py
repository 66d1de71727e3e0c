"""Differential learning rates, weight-decay exclusions, the schedule, and freezing."""

from __future__ import annotations

import math

import pytest
import torch

from attnlab.config import ConfigError, TrainConfig
from attnlab.engine.optim import (
    FreezeSchedule,
    build_optimizer,
    build_scheduler,
    current_lrs,
    lr_factor,
)
from attnlab.models import create_model, parameter_groups


@pytest.fixture(scope="module")
def hybrid() -> torch.nn.Module:
    return create_model("hybrid", backbone="resnet18", num_classes=10, attention_kwargs={"ema": {"factor": 8}})


def test_group_lrs_and_weight_decay(hybrid) -> None:
    cfg = TrainConfig(lr=0.01, lr_mult={"backbone": 1.0, "ema": 10.0, "head": 5.0}, weight_decay=1e-4)
    opt = build_optimizer(hybrid, cfg)
    assert current_lrs(opt) == {"backbone": 0.01, "ema": pytest.approx(0.1), "head": pytest.approx(0.05)}
    for g in opt.param_groups:
        if g["kind"] == "no_decay":
            assert g["weight_decay"] == 0.0 and all(p.ndim < 2 for p in g["params"])
        else:
            assert g["weight_decay"] == 1e-4 and all(p.ndim >= 2 for p in g["params"])
    named = parameter_groups(hybrid)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for params in named.values() for _, p in params}
    bn_bias = hybrid.bn1.bias
    assert any(bn_bias is p for g in opt.param_groups if g["kind"] == "no_decay" for p in g["params"])


def test_default_multipliers_favour_new_modules(hybrid) -> None:
    lrs = current_lrs(build_optimizer(hybrid, TrainConfig(lr=0.02)))
    assert lrs == {"backbone": 0.02, "ema": pytest.approx(0.2), "head": pytest.approx(0.2)}


def test_unknown_groups_are_config_errors(hybrid) -> None:
    with pytest.raises(ConfigError, match=r"train.lr_mult names unknown group\(s\) \['emma'\]"):
        build_optimizer(hybrid, TrainConfig(lr_mult={"emma": 2.0}))
    with pytest.raises(ConfigError, match=r"train.freeze names unknown group\(s\) \['bakbone'\]"):
        build_optimizer(hybrid, TrainConfig(freeze={"bakbone": 3}))


def test_shared_protocol_applies_to_variants_without_the_group() -> None:
    baseline = create_model("baseline", backbone="resnet18", num_classes=10)
    opt = build_optimizer(baseline, TrainConfig(lr_mult={"ema": 10.0, "head": 10.0}, freeze={"ema": 3}))
    assert set(current_lrs(opt)) == {"backbone", "head"}
    assert FreezeSchedule(opt, {"ema": 3}).start_epoch(0) == set()  # not applicable, no error


def test_schedule_values_at_known_steps() -> None:
    cfg = TrainConfig(warmup_epochs=1, warmup_start=0.1, min_lr_ratio=0.0, schedule="cosine", epochs=10)
    total, warm = 100, 10
    assert lr_factor(0, total, warm, cfg) == pytest.approx(0.1)
    assert lr_factor(5, total, warm, cfg) == pytest.approx(0.55)
    assert lr_factor(10, total, warm, cfg) == pytest.approx(1.0)
    assert lr_factor(55, total, warm, cfg) == pytest.approx(0.5)
    assert lr_factor(100, total, warm, cfg) == pytest.approx(0.0, abs=1e-12)
    floor = TrainConfig(min_lr_ratio=0.1, warmup_epochs=0)
    assert lr_factor(50, 100, 0, floor) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(7, 100, 0, TrainConfig(schedule="constant", warmup_epochs=0)) == 1.0


def test_scheduler_keeps_group_ratios(hybrid) -> None:
    cfg = TrainConfig(lr=0.1, epochs=2, warmup_epochs=0.5, lr_mult={"ema": 10.0, "head": 10.0})
    opt = build_optimizer(hybrid, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=4)
    for _ in range(3):
        opt.step()
        sched.step()
    lrs = current_lrs(opt)
    assert lrs["ema"] / lrs["backbone"] == pytest.approx(10.0)
    assert lrs["backbone"] == pytest.approx(0.1 * lr_factor(3, 8, 2, cfg))


def _train_steps(model, opt, freeze: FreezeSchedule, steps: int) -> None:
    for _ in range(steps):
        loss = model(torch.randn(2, 3, 32, 32)).logsumexp(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        freeze.drop_frozen_grads()
        opt.step()


def test_frozen_group_bit_identical_then_trains_with_fresh_state() -> None:
    torch.manual_seed(0)
    model = create_model("ema", backbone="resnet18", num_classes=4, attention_kwargs={"ema": {"factor": 8}})
    cfg = TrainConfig(lr=0.05, momentum=0.9, weight_decay=1e-3, freeze={"ema": 2})
    opt = build_optimizer(model, cfg)
    freeze = FreezeSchedule(opt, cfg.freeze)
    ema_params = [p for _, p in parameter_groups(model)["ema"]]
    start = [p.detach().clone() for p in ema_params]
    backbone_start = model.conv1.weight.detach().clone()
    for epoch in range(2):
        assert freeze.start_epoch(epoch) == {"ema"}
        _train_steps(model, opt, freeze, 2)
        assert all(torch.equal(p, s) for p, s in zip(ema_params, start, strict=True))
        assert all(p not in opt.state for p in ema_params)
    assert not torch.equal(model.conv1.weight, backbone_start)
    assert freeze.start_epoch(2) == set()
    loss = model(torch.randn(2, 3, 32, 32)).logsumexp(1).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    freeze.drop_frozen_grads()
    w = ema_params[2]  # a conv weight (decayed group)
    grad, before = w.grad.clone(), w.detach().clone()
    opt.step()
    assert not torch.equal(w, before)
    # fresh optimizer state: the momentum buffer holds exactly this one step's gradient
    torch.testing.assert_close(opt.state[w]["momentum_buffer"], grad + 1e-3 * before)
