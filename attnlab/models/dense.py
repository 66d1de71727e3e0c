"""The variants as backbones for detection and segmentation (the study's limit 5).

``FeaturePyramidBackbone`` is a timm ``features_only`` model (stages 1-4) under
torchvision's ``FeaturePyramidNetwork`` with the extra max-pool level: five maps of
``out_channels`` each, what torchvision's Faster R-CNN, RetinaNet and Mask R-CNN expect::

    import attnlab
    from torchvision.models.detection import FasterRCNN
    backbone = attnlab.models.FeaturePyramidBackbone("resnet50_simam_ema", pretrained=True)
    model = FasterRCNN(backbone, num_classes=91)
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn


class FeaturePyramidBackbone(nn.Module):
    """timm features_only body (attention included) + FPN; ``out_channels`` as torchvision wants."""

    def __init__(self, name: str = "resnet50_simam_ema", *, out_channels: int = 256,
                 out_indices: tuple[int, ...] = (1, 2, 3, 4), **kwargs: Any) -> None:
        import timm
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        super().__init__()
        self.body = timm.create_model(name, features_only=True, out_indices=out_indices, **kwargs)
        self.fpn = FeaturePyramidNetwork(self.body.feature_info.channels(), out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))
