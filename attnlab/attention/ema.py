"""EMA: Efficient Multi-Scale Attention with cross-spatial learning (Ouyang et al., ICASSP 2023).

Channels are split into ``factor`` groups of c' = C / factor channels that are folded into
the batch. Two branches see each group:

* 1x1 branch: average over W and over H, concatenated along the spatial axis, one shared
  1x1 conv, split back into an H-gate and a W-gate (sigmoids); the gated input goes
  through GroupNorm(c', c').
* 3x3 branch: a 3x3 conv on the grouped input.

Cross-spatial learning: each branch's globally pooled channel descriptor, softmaxed over
channels, is multiplied with the other branch's flattened map; the two products are summed
into one H x W map per group, whose sigmoid gates the grouped input.

The submodule names (``gn``, ``conv1x1``, ``conv3x3``) match the official implementation,
so its state_dicts load unchanged. Parameters per module: 10 c'^2 + 4 c'.

The forward computes the official function (tests compare it, forward and backward, with
the official structure and with a float64 reimplementation) in an order that moves fewer
bytes: the groups stay a view ``(b, g, c', h, w)`` of the input (no copy of a
channels_last tensor, and the output keeps the input's layout); the shared 1x1 conv acts
on the two pooled maps separately (no concat and split); GroupNorm's output
x1 = (gated - mean) * scale + beta is never materialised outside the NCHW eager path, and
its spatial mean, which the cross-spatial softmax needs, is exactly ``gn.bias``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import AttentionModule


class EMA(AttentionModule):
    """Efficient Multi-Scale Attention; ``factor`` is the number of channel groups."""

    kind = "ema"

    def __init__(self, channels: int, factor: int = 32) -> None:
        super().__init__()
        if factor < 1:
            raise ValueError(f"EMA factor (number of channel groups) must be >= 1, got {factor}")
        if channels // factor == 0:
            raise ValueError(
                f"EMA with factor={factor} needs at least {factor} channels, got {channels}: "
                f"each of the {factor} groups would be empty. Use factor <= {channels}."
            )
        if channels % factor:
            divisors = [g for g in range(1, min(channels, 64) + 1) if channels % g == 0]
            raise ValueError(
                f"EMA channels ({channels}) must be divisible by factor ({factor}) to split "
                f"them into equal groups; factors that divide {channels}: {divisors}"
            )
        self.channels = channels
        self.groups = factor
        cg = channels // factor
        self.gn = nn.GroupNorm(cg, cg)
        self.conv1x1 = nn.Conv2d(cg, cg, kernel_size=1, stride=1, padding=0)
        self.conv3x3 = nn.Conv2d(cg, cg, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if c != self.channels:
            raise ValueError(f"EMA was built for {self.channels} channels but got input {tuple(x.shape)}")
        g = self.groups
        cg = c // g
        # (b, g, c', h, w): splitting the channel axis is a view in NCHW and channels_last
        # alike, unlike folding the groups into the batch (a full copy for channels_last).
        x5 = x.view(b, g, cg, h, w)
        # 1x1 branch: the shared 1x1 conv acts on each pooled position on its own, so it is
        # applied to the H- and W-pooled maps separately (no concat, no split).
        w1 = self.conv1x1.weight.flatten(1)
        gate_h = torch.sigmoid(F.linear(x5.mean(dim=4).transpose(-1, -2), w1, self.conv1x1.bias))
        gate_w = torch.sigmoid(F.linear(x5.mean(dim=3).transpose(-1, -2), w1, self.conv1x1.bias))
        gated = x5 * gate_h.transpose(-1, -2).unsqueeze(-1) * gate_w.transpose(-1, -2).unsqueeze(-2)
        # GroupNorm(c', c') normalises each channel over (h, w): x1 = xm * scale + beta.
        xm, scale = _centre_scale(gated, self.gn.weight, self.gn.eps)
        beta = self.gn.bias
        # 3x3 branch.
        x2 = self._conv3x3(x, x5)
        # Cross-spatial learning. GAP(x1) is exactly beta (x1's spatial mean), so the
        # softmax of branch 1 needs no pass over x1; the other uses x2's channel means.
        acc = xm.dtype  # float32 for half inputs, else the input's own precision
        q1 = torch.softmax(beta.to(acc), dim=0)                                     # (c',)
        q2 = torch.softmax(x2.mean(dim=(-2, -1)), dim=-1, dtype=acc)               # (b, g, c')
        spatial = _cross_spatial(q1, x2, q2, xm, scale, beta)                       # (b, g, h, w)
        gate = spatial.sigmoid().to(x.dtype).unsqueeze(2)
        return (x5 * gate).view(b, c, h, w)

    def _conv3x3(self, x: torch.Tensor, x5: torch.Tensor) -> torch.Tensor:
        """The shared 3x3 conv on every group, as (b, g, c', h, w), without copying ``x``."""
        b, g, cg, h, w = x5.shape
        conv = self.conv3x3
        if x.is_contiguous():  # NCHW: folding the groups into the batch is a view
            return conv(x.view(b * g, cg, h, w)).view(b, g, cg, h, w)
        # channels_last: the same kernel on each group is a grouped conv with it repeated
        weight = conv.weight.repeat(g, 1, 1, 1)
        bias = None if conv.bias is None else conv.bias.repeat(g)
        return F.conv2d(x, weight, bias, padding=1, groups=g).view(b, g, cg, h, w)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, factor={self.groups}"


def _centre_scale(gated: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GroupNorm with one channel per group, split as (x - mean, weight / sqrt(var + eps)).

    Statistics in float32 for half inputs (as GroupNorm under autocast); the layout of
    ``gated`` is kept (GroupNorm on CUDA would copy channels_last input to NCHW).
    """
    gf = gated.float() if gated.dtype in (torch.float16, torch.bfloat16) else gated
    var, mean = torch.var_mean(gf, dim=(-2, -1), unbiased=False, keepdim=True)
    scale = torch.rsqrt(var + eps) * weight.to(gf.dtype)[:, None, None]
    return gf - mean, scale


def _cross_spatial(
    q1: torch.Tensor, x2: torch.Tensor, q2: torch.Tensor, xm: torch.Tensor, scale: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """sum_c q1[c] x2[c] + sum_c q2[c] x1[c] per (sample, group, h, w), x1 = xm * scale + beta.

    NCHW tensors in eager mode: two batched matmuls on views (as the official module).
    Otherwise (channels_last, or inside torch.compile) an elementwise product summed over
    the channels: no copy in eager mode, and one fused reduction under Inductor.
    """
    b, g, cg, h, w = x2.shape
    if x2.is_contiguous() and xm.is_contiguous() and not torch.compiler.is_compiling():
        x1 = torch.addcmul(beta.to(xm.dtype)[:, None, None], xm, scale)
        s1 = torch.matmul(q1.to(x2.dtype), x2.view(b * g, cg, h * w))                # (bg, hw)
        s2 = torch.matmul(q2.view(b * g, 1, cg).to(x1.dtype), x1.view(b * g, cg, h * w))
        return (s1 + s2.squeeze(1)).view(b, g, h, w)
    coef = (q2 * scale.flatten(2))[..., None, None]                               # (b, g, c', 1, 1)
    const = (q2 * beta.to(q2.dtype)).sum(-1)[..., None, None]                          # (b, g, 1, 1)
    return torch.addcmul(x2 * q1[:, None, None], xm, coef).sum(dim=2) + const
