"""SimAM: a simple, parameter-free attention module (Yang et al., ICML 2021).

Each neuron's weight comes from the closed-form minimal energy of a linear separation of
that neuron from the other neurons of its channel:

    n = H*W - 1,   d = (x - mean_hw(x))^2,   v = sum_hw(d) / n
    out = x * sigmoid(d / (4 * (v + lambda)) + 0.5)

This is the official computation. Statistics are taken in float32 when the input is half
precision (fp16/bf16), so a squared deviation never overflows to inf and the gate never
turns NaN; the gate is cast back to the input dtype for the multiply.

This eager form is the reference. ``attnlab.attention.fused`` computes the same function in
one pass per plane (a Triton kernel pair on CUDA, or ``torch.compile``); ``SimAM(fused=...)``
or ``fused.set_fused(mode)`` choose, and ``auto`` keeps this exact path on the CPU.
"""

from __future__ import annotations

import torch
import torch.fx

from . import fused as _fused
from .base import AttentionModule
from .simam_math import check_plane, simam_gate


class SimAM(AttentionModule):
    """Parameter-free 3-D attention; ``e_lambda`` is the energy regulariser (official 1e-4).

    ``fused``: ``None`` follows ``fused.set_fused`` (default ``auto``: Triton on CUDA, this
    exact eager path on CPU); or one of ``eager``, ``compile``, ``triton``, ``auto``.
    """

    kind = "simam"

    def __init__(self, channels: int | None = None, e_lambda: float = 1e-4, fused: str | None = None) -> None:
        super().__init__()
        if not e_lambda > 0:
            raise ValueError(f"SimAM e_lambda must be > 0 (it keeps v + lambda away from 0), got {e_lambda}")
        self.e_lambda = float(e_lambda)
        self.fused = None if fused is None else _fused.resolve_name(fused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _simam_forward(self, x)  # one opaque call under FX tracing (its checks need shapes)

    def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
        mode = _fused.resolve(self.fused, x)
        if mode == "eager":
            return x * simam_gate(x, self.e_lambda)
        check_plane(x)
        return _fused.simam(x, self.e_lambda, mode)

    def extra_repr(self) -> str:
        extra = "" if self.fused is None else f", fused={self.fused}"
        return f"e_lambda={self.e_lambda:g}{extra}"


def _simam_forward(module: SimAM, x: torch.Tensor) -> torch.Tensor:
    return module._forward_impl(x)


# torch.fx (torchvision's create_feature_extractor, timm's FX features) records this call as
# one node instead of tracing shape checks and kernel choices it cannot trace.
torch.fx.wrap("_simam_forward")
