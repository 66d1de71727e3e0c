"""Models: the backbone with attention sites, the variants, pretrained weights, timm names.

``resnet`` (blocks, stems, the timm model contract) <- ``weights`` (pretrained backbone
tensors) <- ``variants`` (placements and ``create_model``) <- ``timm`` (registration):
each module imports only those before it.
"""

from __future__ import annotations

from . import timm as _timm  # noqa: F401  (registers the timm model names)
from .blocks import BASIC_SITES, BOTTLENECK_SITES, AttentiveBasicBlock, AttentiveBottleneck
from .dense import FeaturePyramidBackbone
from .resnet import (
    BACKBONES,
    STEMS,
    AttnResNet,
    attention_modules,
    head_module,
    resample_stem_kernel,
)
from .timm import TIMM_NAMES, tiny_imagenet_cfg
from .variants import (
    DEFAULT_ATTENTION_KWARGS,
    DEFAULT_SITES,
    VARIANTS,
    Placement,
    check_forward_shapes,
    count_parameters,
    create_model,
    describe,
    forward_check,
    parameter_groups,
    variant_placements,
)
from .weights import DEFAULT_PRETRAINED, LoadReport, load_backbone_weights, read_weights_file

__all__ = [
    "BACKBONES", "BASIC_SITES", "BOTTLENECK_SITES", "DEFAULT_ATTENTION_KWARGS", "DEFAULT_PRETRAINED",
    "DEFAULT_SITES", "STEMS", "TIMM_NAMES", "VARIANTS", "AttentiveBasicBlock", "AttentiveBottleneck",
    "AttnResNet", "FeaturePyramidBackbone", "LoadReport", "Placement", "attention_modules", "check_forward_shapes", "count_parameters",
    "create_model", "describe", "forward_check", "head_module", "load_backbone_weights", "parameter_groups",
    "read_weights_file", "resample_stem_kernel", "tiny_imagenet_cfg", "variant_placements",
]
