"""Register the study's models with timm, so ``timm.create_model("resnet50_simam_ema")`` works.

``pretrained=True`` loads torchvision's ImageNet weights into the backbone (see
``attnlab.weights.DEFAULT_PRETRAINED``); pass ``weights=`` for another source.
"""

from __future__ import annotations

from typing import Any

from timm.models import register_model

from .models import AttnResNet, create_model

_TIMM_ONLY_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "features_only")


def _create(variant: str, backbone: str, pretrained: bool, **kwargs: Any) -> AttnResNet:
    for key in _TIMM_ONLY_KWARGS:
        kwargs.pop(key, None)
    if pretrained and "weights" not in kwargs:
        from .weights import DEFAULT_PRETRAINED

        kwargs["weights"] = DEFAULT_PRETRAINED
    kwargs.setdefault("num_classes", 1000)
    return create_model(variant, backbone=backbone, **kwargs)


@register_model
def resnet50_simam(pretrained: bool = False, **kwargs: Any) -> AttnResNet:
    """ResNet-50 with SimAM after conv2 of every bottleneck."""
    return _create("simam", "resnet50", pretrained, **kwargs)


@register_model
def resnet50_ema(pretrained: bool = False, **kwargs: Any) -> AttnResNet:
    """ResNet-50 with EMA (factor 32) after bn3 of every bottleneck."""
    return _create("ema", "resnet50", pretrained, **kwargs)


@register_model
def resnet50_simam_ema(pretrained: bool = False, **kwargs: Any) -> AttnResNet:
    """ResNet-50 with the SimAM-EMA hybrid: SimAM after conv2, EMA after bn3."""
    return _create("hybrid", "resnet50", pretrained, **kwargs)


@register_model
def resnet18_simam_ema(pretrained: bool = False, **kwargs: Any) -> AttnResNet:
    """ResNet-18 with the hybrid: SimAM after each basic block's second conv, EMA after bn2."""
    return _create("hybrid", "resnet18", pretrained, **kwargs)


@register_model
def resnet34_simam_ema(pretrained: bool = False, **kwargs: Any) -> AttnResNet:
    """ResNet-34 with the hybrid: SimAM after each basic block's second conv, EMA after bn2."""
    return _create("hybrid", "resnet34", pretrained, **kwargs)
