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
"""

from __future__ import annotations

import torch
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
        gx = x.reshape(b * g, cg, h, w)
        # 1x1 branch: directional pooling, shared 1x1 conv, split into H and W gates.
        x_h = gx.mean(dim=3, keepdim=True)                      # (bg, cg, h, 1)
        x_w = gx.mean(dim=2, keepdim=True).transpose(2, 3)      # (bg, cg, w, 1)
        hw = self.conv1x1(torch.cat([x_h, x_w], dim=2))
        a_h, a_w = torch.split(hw, [h, w], dim=2)
        x1 = self.gn(gx * a_h.sigmoid() * a_w.transpose(2, 3).sigmoid())
        # 3x3 branch.
        x2 = self.conv3x3(gx)
        # Cross-spatial learning: softmax_c(GAP(one)) @ flat(other), both ways.
        q1 = torch.softmax(x1.mean(dim=(2, 3)), dim=-1).unsqueeze(1)   # (bg, 1, cg)
        q2 = torch.softmax(x2.mean(dim=(2, 3)), dim=-1).unsqueeze(1)
        weights = torch.matmul(q1, x2.reshape(b * g, cg, h * w)) + torch.matmul(
            q2, x1.reshape(b * g, cg, h * w)
        )
        weights = weights.reshape(b * g, 1, h, w)
        return (gx * weights.sigmoid().to(gx.dtype)).reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, factor={self.groups}"
