"""CBAM: Convolutional Block Attention Module (Woo et al., ECCV 2018), timm's ``CbamModule``.

Channel gate, then spatial gate:

* channel: one shared MLP (1x1 conv C -> C/r, ReLU, 1x1 conv C/r -> C) applied to the
  global average- and max-pooled input; sigmoid of the sum scales each channel.
* spatial: mean and max over channels, stacked (2 maps), k x k conv (no bias) + BatchNorm,
  sigmoid scales each position.

Defaults follow the official code: r = 16 (C // r hidden units), k = 7, and biases in the
MLP (the official ``nn.Linear`` layers have them; timm's default leaves them out).
Parameters: ``2*C*(C//r) + C//r + C`` (as SE) ``+ 2*k*k + 2`` (spatial conv and BN affine).
timm stacks the spatial maps as [mean, max], the official code as [max, mean]: the same
module up to the order of the spatial conv's two input channels.
Customary ResNet site: after the last BN of the residual branch, before the add.
"""

from __future__ import annotations

from timm.layers.cbam import CbamModule

from .base import AttentionModule
from .se import reduced_channels


class CBAM(AttentionModule, CbamModule):
    """Channel then spatial attention; ``reduction`` r as in SE, ``spatial_kernel`` odd."""

    kind = "cbam"

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7) -> None:
        if spatial_kernel < 1 or spatial_kernel % 2 == 0:
            raise ValueError(
                f"CBAM spatial_kernel must be odd and >= 1 (same-size output), got {spatial_kernel}"
            )
        super().__init__(
            channels,
            rd_channels=reduced_channels(channels, reduction, "CBAM"),
            spatial_kernel_size=spatial_kernel,
            mlp_bias=True,
        )
        self.channels = channels
        self.reduction = reduction
        self.spatial_kernel = spatial_kernel

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, spatial_kernel={self.spatial_kernel}"
