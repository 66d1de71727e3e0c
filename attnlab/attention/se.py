"""SE: Squeeze-and-Excitation (Hu et al., CVPR 2018), timm's ``SEModule`` with SENet's defaults.

Squeeze: global average pool to one value per channel. Excite: 1x1 conv C -> C/r (bias),
ReLU, 1x1 conv C/r -> C (bias), sigmoid; the input is scaled channel-wise by the result.
SENet uses r = 16 with C/r = C // r hidden units (no rounding to a multiple of 8, which
timm applies by default), so the module adds ``2*C*(C//r) + C//r + C`` parameters.
Customary ResNet site: after the last BN of the residual branch, before the add.
"""

from __future__ import annotations

from timm.layers import SEModule

from .base import AttentionModule


def reduced_channels(channels: int, reduction: int, module: str) -> int:
    """``channels // reduction`` hidden units, or a clear error when that would be zero.

    Shared by the modules whose channel gate is SE's bottleneck MLP (SE, CBAM).
    """
    if reduction < 1:
        raise ValueError(f"{module} reduction must be >= 1, got {reduction}")
    hidden = channels // reduction
    if hidden < 1:
        raise ValueError(
            f"{module} with reduction={reduction} needs at least {reduction} channels, got "
            f"{channels}: its hidden layer would have 0 units. Use reduction <= {channels}."
        )
    return hidden


class SE(AttentionModule, SEModule):
    """Squeeze-and-Excitation; ``reduction`` is SENet's r (hidden units = channels // r)."""

    kind = "se"

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__(channels, rd_channels=reduced_channels(channels, reduction, "SE"))
        self.channels = channels
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"
