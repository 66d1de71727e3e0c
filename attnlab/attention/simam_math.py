"""SimAM's function itself, shared by the module and its fused kernels (no import cycle).

Per (sample, channel) plane with M = H*W and n = M - 1: ``d = (x - mean x)^2``,
``v = sum d / n``, ``out = x * sigmoid(d / (4 (v + lambda)) + 0.5)``.
"""

from __future__ import annotations

import torch


def check_plane(x: torch.Tensor) -> int:
    """n = H*W - 1, the variance's divisor; a 1x1 map (n = 0) is refused, never NaN."""
    h, w = x.shape[-2:]
    n = h * w - 1
    if n < 1:
        raise ValueError(
            f"SimAM needs a feature map with at least 2 spatial positions, got {h}x{w} "
            f"(input shape {tuple(x.shape)}): its variance divides by H*W-1, so a 1x1 map "
            "would give NaN. Remove SimAM from this stage, or use a larger input size."
        )
    return n


def simam_gate(x: torch.Tensor, e_lambda: float) -> torch.Tensor:
    """The sigmoid gate SimAM multiplies ``x`` with (same shape and dtype as ``x``)."""
    n = check_plane(x)
    xs = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    d = (xs - xs.mean(dim=(-2, -1), keepdim=True)).pow(2)
    v = d.sum(dim=(-2, -1), keepdim=True) / n
    gate = torch.sigmoid(d / (4 * (v + e_lambda)) + 0.5)
    return gate.to(x.dtype)
