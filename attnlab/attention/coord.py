"""CA: Coordinate Attention (Hou et al., CVPR 2021), timm's ``CoordAttn`` with the paper's setup.

Average over W and over H gives a C x H and a C x W strip; both go, concatenated along the
spatial axis, through one shared 1x1 conv C -> m (bias) + BatchNorm + h-swish; split again,
a 1x1 conv m -> C (bias) + sigmoid per direction gives an H-gate and a W-gate that
multiply the input. As in the official code m = max(8, C // 32) and every conv has a bias
(timm's defaults differ: m from C/16 * 2/3 rounded to 8, no biases), so the submodule names
(``conv1, bn1, conv_h, conv_w``) and shapes match the official state_dict.
Parameters: ``3*C*m + 3*m + 2*C``. (conv1's bias, kept for the official state_dict, feeds
BatchNorm: in training mode the batch mean removes it, so its gradient is zero up to rounding.)
Customary ResNet site: after the last BN of the residual branch, before the add.

timm ships ``CoordAttn`` from release 1.0.23 on; with an older timm, building this module
is an error that says so (the rest of attnlab works).
"""

from __future__ import annotations

import timm
from torch import nn

from .base import AttentionModule

try:
    from timm.layers.coord_attn import CoordAttn as _CoordAttn
except ImportError:  # timm < 1.0.23
    _CoordAttn = None

_Base: type[nn.Module] = _CoordAttn if _CoordAttn is not None else nn.Module


class CoordAttention(AttentionModule, _Base):  # type: ignore[misc, valid-type]
    """Coordinate attention; hidden width ``max(min_channels, channels // reduction)``."""

    kind = "ca"

    def __init__(self, channels: int, reduction: int = 32, min_channels: int = 8) -> None:
        if _CoordAttn is None:
            raise ImportError(
                f"coordinate attention uses timm.layers.coord_attn.CoordAttn, added in timm "
                f"1.0.23; this environment has timm {timm.__version__}: pip install 'timm>=1.0.23'"
            )
        if reduction < 1 or min_channels < 1:
            raise ValueError(
                f"CoordAttention reduction and min_channels must be >= 1, got {reduction}, {min_channels}"
            )
        hidden = max(min_channels, channels // reduction)
        super().__init__(channels, rd_channels=hidden, bias=True, act_layer=nn.Hardswish)
        self.channels = channels
        self.hidden = hidden

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden={self.hidden}"
