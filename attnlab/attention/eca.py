"""ECA: Efficient Channel Attention (Wang et al., CVPR 2020), timm's ``EcaModule``.

Global average pool, then a 1-D convolution of size k across neighbouring channels (no
bias, no dimensionality reduction), sigmoid, channel-wise scale. k adapts to the channel
count as in the paper, ``t = int((log2(C) + beta) / gamma)``, k = t if t is odd else t + 1
(timm also keeps k >= 3); gamma = 2, beta = 1. In ResNets that gives k = 3 for 64
channels, 5 for 128-1024 and 7 for 2048. Parameters per module: k.
Customary ResNet site: after the last BN of the residual branch, before the add.
"""

from __future__ import annotations

from timm.layers import EcaModule

from .base import AttentionModule


class ECA(AttentionModule, EcaModule):
    """Efficient channel attention; ``kernel_size=None`` picks k from ``channels``."""

    kind = "eca"

    def __init__(
        self, channels: int, kernel_size: int | None = None, gamma: float = 2.0, beta: float = 1.0
    ) -> None:
        if kernel_size is None:
            super().__init__(channels, gamma=gamma, beta=beta)
        else:
            if kernel_size < 1 or kernel_size % 2 == 0:
                raise ValueError(f"ECA kernel_size must be odd and >= 1, got {kernel_size}")
            super().__init__(None, kernel_size=kernel_size)
        self.channels = channels
        self.kernel_size = self.conv.kernel_size[0]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"
