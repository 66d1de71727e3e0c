"""Multiply-accumulates from PyTorch's own ``FlopCounterMode``.

FlopCounterMode counts 2 FLOPs per multiply-add of convolutions, linear layers and matrix
products (conv, mm, addmm, bmm, baddbmm, attention kernels) and nothing for elementwise or
reduction ops, so BatchNorm, ReLU, pooling, residual adds and all of SimAM count as zero.
We report MACs = FLOPs / 2, the convention behind "ResNet-50 = 4.1 GFLOPs". The attention
modules' elementwise and reduction work is counted separately by
:mod:`attnlab.profiling.attention_ops`.

Counting runs on a copy of the model on the ``meta`` device: shapes only, no arithmetic,
no memory, and the caller's model is left untouched.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..models import attention_modules

MACS_CONVENTION = (
    "GMACs = torch.utils.flop_counter.FlopCounterMode FLOPs / 2 / 1e9, per image (batch 1): "
    "conv, linear and matmul multiply-adds only; elementwise and reduction ops (BatchNorm, "
    "ReLU, pooling, residual adds, SimAM, EMA's gates/GroupNorm/softmax) are not included"
)


def meta_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` on the meta device (shape-only execution).

    Attention modules run their reference path there (SimAM eager, EMA ``fold``, the
    official structure), whichever fast path is selected for real runs: counts describe
    the computation, and a Triton kernel could not run on meta tensors anyway.
    """
    meta = copy.deepcopy(model).to("meta").eval()
    for _, module in attention_modules(meta):
        if getattr(module, "kind", None) == "simam" and hasattr(module, "fused"):
            module.fused = "eager"
        if getattr(module, "kind", None) == "ema" and hasattr(module, "strategy"):
            module.strategy = "fold"
    return meta


def count_macs(model: nn.Module, image_size: int, *, batch: int = 1) -> dict[str, object]:
    """Exact MAC counts of one forward pass at ``image_size``².

    Returns ``{"total": int, "attention": int, "by_kind": {kind: int}}``: ``attention`` is
    the part spent inside attention modules (EMA's 1x1/3x3 convs and its two matmuls), so
    ``total`` minus it is the backbone's share.
    """
    meta = meta_copy(model)
    x = torch.empty(batch, 3, image_size, image_size, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(x)
    per_module = counter.get_flop_counts()
    by_kind: dict[str, int] = {}
    for name, module in attention_modules(meta):
        key = next((k for k in per_module if k.endswith("." + name)), None)
        flops = sum(per_module[key].values()) if key is not None else 0
        kind = getattr(module, "kind", "attention")
        by_kind[kind] = by_kind.get(kind, 0) + flops // 2
    return {
        "total": counter.get_total_flops() // 2,
        "attention": sum(by_kind.values()),
        "by_kind": by_kind,
    }


def count_gmacs(model: nn.Module, image_size: int) -> float:
    """GMACs of one image at ``image_size``² (ResNet-50, 1000 classes, 224²: ≈ 4.1)."""
    return count_macs(model, image_size)["total"] / 1e9
