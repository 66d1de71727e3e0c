"""The backbone: torchvision's ResNet with attention sites, a choice of stem, and the
interface timm's tooling expects of a model.

State_dict keys equal torchvision's (so its weights load as they are); the attention
modules are extra children of the blocks (``layer1.0.ema.gn.weight``). Besides the
classifier forward, the model has timm's contract: ``num_classes``, ``num_features``,
``feature_info``, ``forward_features``, ``forward_head(x, pre_logits=...)``,
``forward_intermediates``, ``get_classifier``, ``reset_classifier``,
``set_grad_checkpointing``, and the common kwargs ``in_chans``, ``drop_rate`` and
``global_pool``, so feature extraction, detection backbones and hub loading work on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from timm.layers import SelectAdaptivePool2d
from torch import nn
from torchvision.models.resnet import ResNet

from .blocks import AttentiveBasicBlock, AttentiveBottleneck

# backbone name -> (block, blocks per stage, extra ResNet kwargs); names follow torchvision.
BACKBONES: dict[str, tuple[type[nn.Module], list[int], dict[str, int]]] = {
    "resnet18": (AttentiveBasicBlock, [2, 2, 2, 2], {}),
    "resnet34": (AttentiveBasicBlock, [3, 4, 6, 3], {}),
    "resnet50": (AttentiveBottleneck, [3, 4, 6, 3], {}),
    "resnet101": (AttentiveBottleneck, [3, 4, 23, 3], {}),
    "resnet152": (AttentiveBottleneck, [3, 8, 36, 3], {}),
    "resnext50_32x4d": (AttentiveBottleneck, [3, 4, 6, 3], {"groups": 32, "width_per_group": 4}),
}

# The stem (conv1 + max-pool): ``imagenet`` is torchvision's (7x7 stride-2 conv, 3x3
# stride-2 max-pool: /4 before layer1, the study). ``low_res`` keeps the pretrained 7x7
# kernels but runs them at stride 1 and drops the max-pool, so every feature map is 4x
# larger per side (layer4 8x8 at 64x64 instead of 2x2), the low-resolution recipe of
# published Tiny ImageNet fine-tuning. ``low_res_3x3`` is a 3x3 stride-1 conv instead, whose
# kernels are the pretrained 7x7 ones resampled (``resample_stem_kernel``); an attnlab
# option, not a published recipe (those train a fresh 3x3 conv).
STEMS = ("imagenet", "low_res", "low_res_3x3")


def resample_stem_kernel(weight: torch.Tensor, size: int = 3) -> torch.Tensor:
    """A pretrained 7x7 stem kernel as a ``size`` x ``size`` one.

    Area resampling (adaptive average pooling) keeps the filter's shape at the coarser
    scale: at 64x64 an object spans about 64/224 of the pixels it did in ImageNet, so a 7x7
    ImageNet filter covers what a 2-3 px filter covers here. Each (output, input) kernel is
    then shifted by a constant so its sum, the response to a flat patch, equals the 7x7
    kernel's: the BatchNorm after conv1 sees inputs on the scale it was trained for.
    """
    small = torch.nn.functional.adaptive_avg_pool2d(weight.float(), size)
    shift = (weight.float().sum((2, 3), keepdim=True) - small.sum((2, 3), keepdim=True)) / (size * size)
    return (small + shift).to(weight.dtype)


class AttnResNet(ResNet):
    """torchvision's ResNet (same state_dict keys) that records how it was built."""

    head_name = "fc"

    def __init__(self, backbone: str, variant: str, placements: Sequence[Any], *, stem: str = "imagenet",
                 num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                 global_pool: str = "avg") -> None:
        block, layers, extra = BACKBONES[backbone]
        super().__init__(block, layers, num_classes=max(num_classes, 1), **extra)
        self.backbone_name = backbone
        self.variant = variant
        self.placements = tuple(placements)
        self.stem = stem
        self.in_chans = in_chans
        self.drop_rate = float(drop_rate)
        width = self.conv1.out_channels
        if stem == "low_res_3x3" or in_chans != 3:  # a new conv1 (pretrained ones are adapted on load)
            size = 3 if stem == "low_res_3x3" else 7
            self.conv1 = nn.Conv2d(in_chans, width, kernel_size=size, stride=2, padding=size // 2, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        if stem != "imagenet":
            self.conv1.stride = (1, 1)
            self.maxpool = nn.Identity()
        self.num_features = self.head_hidden_size = self.fc.in_features
        self.num_classes = num_classes
        self.grad_checkpointing = False
        self.avgpool = _pool(global_pool)  # no tensors: the same state_dict keys
        if num_classes <= 0 or self.avgpool.feat_mult() != 1:  # else keep torchvision's (same RNG draws)
            self.fc = self._classifier(num_classes)
        stem_reduction = 1 if stem != "imagenet" else 2
        pool_reduction = 1 if stem != "imagenet" else 2
        channels = [self.layer1[-1].site_channels("post_add"), self.layer2[-1].site_channels("post_add"),
                    self.layer3[-1].site_channels("post_add"), self.layer4[-1].site_channels("post_add")]
        self.feature_info = [{"num_chs": width, "reduction": stem_reduction, "module": "relu"}]
        reduction = stem_reduction * pool_reduction
        for i, chs in enumerate(channels):
            reduction *= 1 if i == 0 else 2
            self.feature_info.append({"num_chs": chs, "reduction": reduction, "module": f"layer{i + 1}"})

    # ------------------------------------------------------------- structure
    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    @property
    def attention_kinds(self) -> list[str]:
        return list(dict.fromkeys(p.kind for p in self.placements))

    # ------------------------------------------------------------- timm's contract
    def _classifier(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        return nn.Linear(self.num_features * self.avgpool.feat_mult(), num_classes)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new head for ``num_classes`` (0: none, the model returns pooled features)."""
        self.num_classes = num_classes
        if global_pool is not None:
            self.avgpool = _pool(global_pool)
        self.fc = self._classifier(num_classes)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {"stem": r"^conv1|bn1|maxpool", "blocks": r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)"}

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(self.conv1(x)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.forward_stem(x))
        for stage in self.stages:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                from timm.models import checkpoint_seq

                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.avgpool(x)
        if self.drop_rate:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False) -> Any:
        """timm's intermediate-feature API: index 0 is the stem, 1-4 the stages."""
        from timm.models._features import feature_take_indices

        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take, max_index = feature_take_indices(5, indices)
        intermediates = []
        x = self.forward_stem(x)
        if 0 in take:
            intermediates.append(x)
        x = self.maxpool(x)
        stages = self.stages[:max_index] if stop_early else self.stages
        for i, stage in enumerate(stages, 1):
            x = stage(x)
            if i in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        from timm.models._features import feature_take_indices

        take, max_index = feature_take_indices(5, indices)
        for i in range(max(max_index, 1) + 1, 5):
            setattr(self, f"layer{i}", nn.Identity())
        if prune_head:
            self.reset_classifier(0, "")
        return take


def _pool(pool_type: str) -> SelectAdaptivePool2d:
    """timm's selectable global pool; ``''`` keeps the feature map (no pooling, no flatten)."""
    return SelectAdaptivePool2d(pool_type=pool_type, flatten=bool(pool_type))


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """All attention modules of ``model`` with their qualified names."""
    from ..attention import AttentionModule

    return [(n, m) for n, m in model.named_modules() if isinstance(m, AttentionModule)]


def head_module(model: nn.Module) -> tuple[str, nn.Module]:
    name = getattr(model, "head_name", "fc")
    return name, model.get_submodule(name)
