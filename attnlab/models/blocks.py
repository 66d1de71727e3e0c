"""torchvision ResNet blocks with named insertion sites for attention modules.

The blocks subclass torchvision's, so every backbone state_dict key stays identical to
torchvision's and its pretrained weights load as they are. Attention modules become extra
children of a block named by their kind (``layer1.0.simam``, ``layer1.0.ema.gn.weight``).

Sites, in forward order:

Bottleneck:  post_conv1 | post_conv2 (SimAM's official site) | post_conv3 | pre_add (after
             bn3: EMA's default, the customary residual-branch site) | post_add (after the
             residual add and ReLU)
BasicBlock:  post_conv1 | post_conv2 (after the second 3x3 conv, before bn2) | pre_add |
             post_add
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

BOTTLENECK_SITES = ("post_conv1", "post_conv2", "post_conv3", "pre_add", "post_add")
BASIC_SITES = ("post_conv1", "post_conv2", "pre_add", "post_add")


class _SiteMixin:
    """Keeps, per site, the ordered names of the attention children applied there."""

    SITES: tuple[str, ...] = ()

    def _init_sites(self) -> None:
        self.attention_sites: dict[str, list[str]] = {}

    def add_attention(self, site: str, module: nn.Module, name: str) -> None:
        if site not in self.SITES:
            raise ValueError(
                f"unknown site {site!r} for {type(self).__name__}; valid sites: {list(self.SITES)}"
            )
        if hasattr(self, name):
            raise ValueError(
                f"this block already has a child named {name!r}: the same attention kind can "
                "be placed only once per block"
            )
        self.add_module(name, module)
        self.attention_sites.setdefault(site, []).append(name)

    def site_channels(self, site: str) -> int:
        raise NotImplementedError

    def _attend(self, site: str, x: torch.Tensor) -> torch.Tensor:
        for name in self.attention_sites.get(site, ()):
            x = getattr(self, name)(x)
        return x


class AttentiveBottleneck(_SiteMixin, Bottleneck):
    SITES = BOTTLENECK_SITES

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_sites()

    def site_channels(self, site: str) -> int:
        return self.conv2.out_channels if site in ("post_conv1", "post_conv2") else self.conv3.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self._attend("post_conv1", self.conv1(x))
        out = self.relu(self.bn1(out))
        out = self._attend("post_conv2", self.conv2(out))
        out = self.relu(self.bn2(out))
        out = self._attend("post_conv3", self.conv3(out))
        out = self._attend("pre_add", self.bn3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out = self.relu(out + identity)
        return self._attend("post_add", out)


class AttentiveBasicBlock(_SiteMixin, BasicBlock):
    SITES = BASIC_SITES

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_sites()

    def site_channels(self, site: str) -> int:
        return self.conv1.out_channels if site == "post_conv1" else self.conv2.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self._attend("post_conv1", self.conv1(x))
        out = self.relu(self.bn1(out))
        out = self._attend("post_conv2", self.conv2(out))
        out = self._attend("pre_add", self.bn2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out = self.relu(out + identity)
        return self._attend("post_add", out)
