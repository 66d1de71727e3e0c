"""The attention modules' elementwise and reduction work, which MAC counters leave out.

FlopCounterMode (and fvcore/thop) count multiply-adds of convs and matmuls only, so SimAM
shows as free. Here each attention module's remaining work is counted by a formula from its
input shape (collected with forward hooks on a meta-device copy). The formulas count the
module's *official computation* (the papers' reference code), not how attnlab's kernels
schedule it: attnlab's EMA reads GAP(x1) from ``gn.bias`` and so skips one reduction, and
fused SimAM makes one pass per plane; such savings show in latency, not here, so the count
stays comparable across implementations. The convention:

* an elementwise op (add, subtract, multiply, divide, square, exp, sigmoid) costs one op
  per output element; sigmoid and exp count as one op each;
* a reduction (sum, mean, max) costs one op per input element (n − 1 adds plus the divide
  of a mean, rounded to n);
* a conv's bias add is elementwise work (FlopCounterMode counts the conv's MACs only);
* GroupNorm costs 7 ops per element (mean and variance: 2 reductions; subtract, square,
  scale by 1/std, affine multiply, affine add: 5 elementwise) plus 2 per group (+eps, rsqrt);
* softmax costs 5 ops per element (max and sum: 2 reductions; subtract, exp, divide: 3);
* reshapes, transposes, concatenation and splits are free;
* conv and matmul multiply-adds are *not* counted here (FlopCounterMode has them), so the
  two counts add up without double counting.

SimAM on a (B, C, H, W) input, T = BCHW elements, per (sample, channel) plane of M = HW:
mean (M), subtract (M), square (M), sum (M), divide by n, + λ, × 4 (1 each), divide (M),
+ 0.5 (M), sigmoid (M), multiply (M): elementwise 6T + 3BC, reductions 2T.

EMA with G groups, c' = C/G, N = BG folded samples, P = HW: pools over W and H (2T),
1x1-conv bias and sigmoid gates on the (H + W)-long descriptors (2·BC(H + W)), two gating
multiplies (2T), GroupNorm(c', c') (5T + 2T + 2BC), 3x3-conv bias (T), two GAPs (2T), two
softmaxes over c' (3·2BC + 2·2BC), sum of the two matmul products (NP), sigmoid (NP), final
multiply (T): elementwise 9T + 2BC(H + W) + 8BC + 2NP, reductions 6T + 4BC.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..models import attention_modules
from .flops import meta_copy

OPS_CONVENTION = (
    "attention elementwise/reduction ops per image: 1 op per output element of each "
    "elementwise op (sigmoid, exp = 1), 1 op per input element of each reduction, conv "
    "bias adds included, GroupNorm 7/element + 2/group, softmax 5/element; conv/matmul "
    "multiply-adds excluded (they are in GMACs); of each module's official computation; "
    "see attnlab/profiling/attention_ops.py and docs/efficiency.md"
)


@dataclass(frozen=True)
class OpCount:
    """Elementwise and reduction operations of one module call."""

    elementwise: int
    reduction: int

    @property
    def total(self) -> int:
        return self.elementwise + self.reduction


def simam_ops(module: nn.Module, shape: Sequence[int]) -> OpCount:
    """SimAM on a (B, C, H, W) input: 6T + 3BC elementwise, 2T reduction."""
    b, c, h, w = shape
    t = b * c * h * w
    return OpCount(elementwise=6 * t + 3 * b * c, reduction=2 * t)


def ema_ops(module: nn.Module, shape: Sequence[int]) -> OpCount:
    """EMA on a (B, C, H, W) input with ``module.groups`` groups (formula in the module doc)."""
    b, c, h, w = shape
    t, bc, n, p = b * c * h * w, b * c, b * module.groups, h * w
    return OpCount(elementwise=9 * t + 2 * bc * (h + w) + 8 * bc + 2 * n * p, reduction=6 * t + 4 * bc)


# attention kind -> formula(module, input shape). A new attention module adds one line.
OPS_FORMULAS: dict[str, Callable[[nn.Module, Sequence[int]], OpCount]] = {
    "simam": simam_ops,
    "ema": ema_ops,
}


def attention_ops(model: nn.Module, image_size: int, *, batch: int = 1) -> dict[str, object]:
    """Elementwise and reduction ops of all attention modules in one forward pass.

    Returns ``{"elementwise", "reduction", "total": int, "gops": float, "by_kind":
    {kind: {"modules", "elementwise", "reduction", "total"}}, "uncounted": [kinds]}``;
    kinds without a formula in ``OPS_FORMULAS`` are listed under ``uncounted``.
    """
    meta = meta_copy(model)
    calls: list[tuple[nn.Module, tuple[int, ...]]] = []

    def record(module: nn.Module, inputs: tuple, _output: object) -> None:
        calls.append((module, tuple(inputs[0].shape)))

    handles = [m.register_forward_hook(record) for _, m in attention_modules(meta)]
    try:
        with torch.no_grad():
            meta(torch.empty(batch, 3, image_size, image_size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()

    by_kind: dict[str, dict[str, int]] = {}
    uncounted: list[str] = []
    for module, shape in calls:
        kind = getattr(module, "kind", "attention")
        formula = OPS_FORMULAS.get(kind)
        if formula is None:
            if kind not in uncounted:
                uncounted.append(kind)
            continue
        ops = formula(module, shape)
        entry = by_kind.setdefault(kind, {"modules": 0, "elementwise": 0, "reduction": 0, "total": 0})
        entry["modules"] += 1
        entry["elementwise"] += ops.elementwise
        entry["reduction"] += ops.reduction
        entry["total"] += ops.total
    elementwise = sum(e["elementwise"] for e in by_kind.values())
    reduction = sum(e["reduction"] for e in by_kind.values())
    return {
        "elementwise": elementwise,
        "reduction": reduction,
        "total": elementwise + reduction,
        "gops": (elementwise + reduction) / 1e9,
        "by_kind": by_kind,
        "uncounted": uncounted,
    }
