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
the official structure and with a float64 reimplementation) along one of two paths:

* ``fold`` (eager mode): the official structure, with groups folded into the batch (a
  free view of an NCHW tensor), the GroupNorm kernel and batched matmuls. A channels_last
  input is copied to NCHW and the output back: two full-size copies, but about 80 fewer
  dispatched ops per module per training step than the view path (counted with
  ``benchmarks/train_throughput.py --ops``): fewer kernel launches, which is what an
  eager step on small maps is bound by (``--micro`` times both paths on a GPU).
* ``view`` (inside ``torch.compile``): no copy at all. The groups stay a view
  ``(b, g, c', h, w)`` of the input; the shared 1x1 conv acts on the two pooled maps
  separately; GroupNorm (one channel per group: each channel normalised over (h, w)) is
  computed in place of layout as x1 = (gated - mean) * scale + beta and x1 is never
  materialised; the 3x3 conv is a grouped conv with the shared kernel repeated per group;
  the cross-spatial sums are products summed over channels, one fused Inductor reduction.

Both use one identity: GAP(x1), which the cross-spatial softmax needs, is exactly
``gn.bias`` (x1's spatial mean), so that softmax needs no pass over x1.
``EMA.strategy`` (``auto``, ``fold``, ``view``) overrides the choice, for benchmarks.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .base import AttentionModule


class EMA(AttentionModule):
    """Efficient Multi-Scale Attention; ``factor`` is the number of channel groups."""

    kind = "ema"
    strategy = "auto"  # "auto" | "fold" | "view": which forward path (module docstring)

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
        return _ema_forward(self, x)  # one opaque call under FX tracing (its checks need shapes)

    def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if c != self.channels:
            raise ValueError(f"EMA was built for {self.channels} channels but got input {tuple(x.shape)}")
        if self._path(x) == "view":
            return self._forward_view(x)
        if x.is_contiguous():
            return self._forward_fold(x)
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        return self._forward_fold(x.contiguous()).contiguous(memory_format=fmt)

    def _path(self, x: torch.Tensor) -> str:
        if self.strategy != "auto":
            return self.strategy
        return "view" if torch.compiler.is_compiling() else "fold"

    def _forward_fold(self, x: torch.Tensor) -> torch.Tensor:
        """The official structure on a contiguous NCHW ``x`` (groups folded into the batch)."""
        b, c, h, w = x.shape
        g, cg = self.groups, c // self.groups
        gx = x.view(b * g, cg, h, w)
        x_h = gx.mean(dim=3, keepdim=True)                      # (bg, c', h, 1)
        x_w = gx.mean(dim=2, keepdim=True).transpose(2, 3)      # (bg, c', w, 1)
        a_h, a_w = torch.split(self.conv1x1(torch.cat([x_h, x_w], dim=2)), [h, w], dim=2)
        x1 = self.gn(gx * a_h.sigmoid() * a_w.transpose(2, 3).sigmoid())
        x2 = self.conv3x3(gx)
        acc = _accumulation_dtype(x)
        q1 = torch.softmax(self.gn.bias.to(acc), dim=0)                            # = softmax(GAP(x1))
        q2 = torch.softmax(x2.mean(dim=(2, 3)), dim=-1, dtype=acc).unsqueeze(1)    # (bg, 1, c')
        spatial = torch.matmul(q1.to(x2.dtype), x2.view(b * g, cg, h * w)) + torch.matmul(
            q2.to(x1.dtype), x1.view(b * g, cg, h * w)
        ).squeeze(1)
        gate = spatial.view(b * g, 1, h, w).sigmoid().to(x.dtype)
        return (gx * gate).view(b, c, h, w)

    def _forward_view(self, x: torch.Tensor) -> torch.Tensor:
        """The same function on a (b, g, c', h, w) view of ``x``: no copy, layout kept."""
        b, c, h, w = x.shape
        g, cg = self.groups, c // self.groups
        x5 = x.view(b, g, cg, h, w)  # splitting C is a view in NCHW and channels_last alike
        # 1x1 branch: the shared 1x1 conv on the H- and W-pooled maps separately.
        w1 = self.conv1x1.weight.flatten(1)
        gate_h = torch.sigmoid(F.linear(x5.mean(dim=4).transpose(-1, -2), w1, self.conv1x1.bias))
        gate_w = torch.sigmoid(F.linear(x5.mean(dim=3).transpose(-1, -2), w1, self.conv1x1.bias))
        gated = x5 * gate_h.transpose(-1, -2).unsqueeze(-1) * gate_w.transpose(-1, -2).unsqueeze(-2)
        # GroupNorm(c', c'): x1 = xm * scale + beta, with xm = gated - its spatial mean.
        xm, scale = _centre_scale(gated, self.gn.weight, self.gn.eps)
        beta = self.gn.bias
        x2 = self._conv3x3(x, x5)
        acc = xm.dtype
        q1 = torch.softmax(beta.to(acc), dim=0)                                     # (c',)
        q2 = torch.softmax(x2.mean(dim=(-2, -1)), dim=-1, dtype=acc)               # (b, g, c')
        # sum_c q1 x2 + sum_c q2 x1, as products summed over c' (one fused reduction).
        coef = (q2 * scale.flatten(2))[..., None, None]                            # (b, g, c', 1, 1)
        const = (q2 * beta.to(acc)).sum(-1)[..., None, None]                       # (b, g, 1, 1)
        spatial = torch.addcmul(x2 * q1[:, None, None], xm, coef).sum(dim=2) + const
        return (x5 * spatial.sigmoid().to(x.dtype).unsqueeze(2)).view(b, c, h, w)

    def _conv3x3(self, x: torch.Tensor, x5: torch.Tensor) -> torch.Tensor:
        """The shared 3x3 conv on every group, as (b, g, c', h, w), without copying ``x``."""
        b, g, cg, h, w = x5.shape
        conv = self.conv3x3
        if x.is_contiguous():  # NCHW: folding the groups into the batch is a view
            return conv(x.view(b * g, cg, h, w)).view(b, g, cg, h, w)
        # otherwise the same kernel on each group is a grouped conv with it repeated
        weight = conv.weight.repeat(g, 1, 1, 1)
        bias = None if conv.bias is None else conv.bias.repeat(g)
        return F.conv2d(x, weight, bias, padding=1, groups=g).view(b, g, cg, h, w)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, factor={self.groups}"


def ema_reference(module: EMA, x: torch.Tensor, *, gate_only: bool = False) -> torch.Tensor:
    """The official EMA computation, step by step (cat/split, GAP of both branches, reshapes).

    The readable statement of the math: the fast paths are tested against it, the
    benchmarks time it, and ``gate_only=True`` returns the cross-spatial gate (B, G, H, W)
    that attention maps show (the module's output is the grouped input times this gate).
    """
    b, c, h, w = x.shape
    g, cg = module.groups, c // module.groups
    gx = x.reshape(b * g, cg, h, w)
    x_h = gx.mean(dim=3, keepdim=True)
    x_w = gx.mean(dim=2, keepdim=True).transpose(2, 3)
    a_h, a_w = torch.split(module.conv1x1(torch.cat([x_h, x_w], dim=2)), [h, w], dim=2)
    x1 = module.gn(gx * a_h.sigmoid() * a_w.transpose(2, 3).sigmoid())
    x2 = module.conv3x3(gx)
    q1 = torch.softmax(x1.mean(dim=(2, 3)), dim=-1).unsqueeze(1)
    q2 = torch.softmax(x2.mean(dim=(2, 3)), dim=-1).unsqueeze(1)
    weights = torch.matmul(q1, x2.reshape(b * g, cg, h * w)) + torch.matmul(q2, x1.reshape(b * g, cg, h * w))
    gate = weights.reshape(b * g, 1, h, w).sigmoid().to(gx.dtype)
    if gate_only:
        return gate.reshape(b, g, h, w)
    return (gx * gate).reshape(b, c, h, w)


def _accumulation_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _centre_scale(gated: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GroupNorm with one channel per group, split as (x - mean, weight / sqrt(var + eps)).

    Statistics in float32 for half inputs (as GroupNorm under autocast); the layout of
    ``gated`` is kept (GroupNorm on CUDA would copy channels_last input to NCHW).
    """
    gf = gated.to(_accumulation_dtype(gated))
    var, mean = torch.var_mean(gf, dim=(-2, -1), unbiased=False, keepdim=True)
    scale = torch.rsqrt(var + eps) * weight.to(gf.dtype)[:, None, None]
    return gf - mean, scale


def _ema_forward(module: EMA, x: torch.Tensor) -> torch.Tensor:
    return module._forward_impl(x)


# torch.fx (torchvision's create_feature_extractor, timm's FX features) records this call as
# one node instead of tracing shape checks and the choice of path it cannot trace.
torch.fx.wrap("_ema_forward")
