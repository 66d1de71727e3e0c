"""The study's variants: which attention modules sit where, and ``create_model``.

``create_model("hybrid")`` is ResNet-50 with SimAM after conv2 (before bn2) and EMA after
bn3 (before the residual add) in each of its 16 bottlenecks, a fresh 200-class head, and
randomly initialised attention modules. Placements (which module, at which site, in which
stages and blocks) are data, so alternative insertion positions are a config change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..attention import ATTENTION_REGISTRY, build_attention
from .resnet import BACKBONES, STEMS, AttnResNet, attention_modules, head_module
from .weights import load_backbone_weights


@dataclass(frozen=True)
class Placement:
    """Attention module ``kind`` at ``site`` of the selected blocks.

    ``stages`` are 1-based (layer1..layer4); ``blocks`` are 0-based indices within each
    selected stage, ``None`` meaning every block. Several placements at one site are
    applied in the order given (so SimAM then EMA back to back is two placements).
    """

    kind: str
    site: str
    stages: tuple[int, ...] = (1, 2, 3, 4)
    blocks: tuple[int, ...] | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_any(cls, spec: Placement | Mapping[str, Any]) -> Placement:
        if isinstance(spec, Placement):
            return spec
        unknown = set(spec) - {"kind", "site", "stages", "blocks", "kwargs"}
        if unknown or "kind" not in spec or "site" not in spec:
            raise ValueError(
                f"a placement needs keys kind and site (optional: stages, blocks, kwargs); got {dict(spec)}"
            )
        blocks = spec.get("blocks")
        return cls(
            kind=spec["kind"],
            site=spec["site"],
            stages=tuple(spec.get("stages", (1, 2, 3, 4))),
            blocks=None if blocks is None else tuple(blocks),
            kwargs=dict(spec.get("kwargs") or {}),
        )


# Each kind's default site. SimAM: after the block's last 3x3 conv, before its BN (SimAM's
# own ResNet code, its official site). EMA's published code has no ResNet integration, so
# EMA goes where SE, CBAM, ECA and coordinate attention customarily sit: after the residual
# branch's last BN, before the add (the customary residual-branch site, not an official
# one). The same names exist in bottleneck and basic blocks (see attnlab.blocks).
DEFAULT_SITES: dict[str, str] = {
    "simam": "post_conv2",
    "ema": "pre_add",
    "se": "pre_add",
    "cbam": "pre_add",
    "eca": "pre_add",
    "ca": "pre_add",
}

# variant name -> attention kinds, in the order they act within a block. Listed in the
# modules' lineage (SE -> CBAM -> ECA -> CA -> SimAM -> EMA -> hybrid): reports sort
# variants in this order, so the hybrid comes after the modules it builds on.
VARIANTS: dict[str, tuple[str, ...]] = {
    "baseline": (),
    "se": ("se",),
    "cbam": ("cbam",),
    "eca": ("eca",),
    "ca": ("ca",),
    "simam": ("simam",),
    "ema": ("ema",),
    "hybrid": ("simam", "ema"),
}

# The defaults each kind is built with, spelled out so a run's config records them.
DEFAULT_ATTENTION_KWARGS: dict[str, dict[str, Any]] = {
    "simam": {"e_lambda": 1e-4},
    "ema": {"factor": 32},
    "se": {"reduction": 16},
    "cbam": {"reduction": 16, "spatial_kernel": 7},
    "eca": {"gamma": 2.0, "beta": 1.0},  # kernel size adapted to the channel count
    "ca": {"reduction": 32, "min_channels": 8},
}

def variant_placements(
    variant: str,
    *,
    sites: Mapping[str, str] | None = None,
    stages: Iterable[int] | None = None,
    blocks: Iterable[int] | None = None,
) -> list[Placement]:
    """The placements of a named variant, with optional site/stage/block overrides."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {list(VARIANTS)}")
    sites = {**DEFAULT_SITES, **(sites or {})}
    stage_t = tuple(stages) if stages is not None else (1, 2, 3, 4)
    block_t = tuple(blocks) if blocks is not None else None
    return [Placement(kind, sites[kind], stage_t, block_t) for kind in VARIANTS[variant]]


def create_model(
    variant: str = "hybrid",
    *,
    backbone: str = "resnet50",
    num_classes: int = 200,
    weights: str | None = None,
    placements: Sequence[Placement | Mapping[str, Any]] | None = None,
    sites: Mapping[str, str] | None = None,
    stages: Iterable[int] | None = None,
    blocks: Iterable[int] | None = None,
    attention_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    stem: str = "imagenet",
    in_chans: int = 3,
    drop_rate: float = 0.0,
    global_pool: str = "avg",
    progress: bool = False,
    verbose: bool = False,
) -> AttnResNet:
    """Build a study model.

    Args:
        variant: a key of ``VARIANTS``: the study's ``baseline``, ``simam``, ``ema``,
            ``hybrid``, or one of the lineage modules ``se``, ``cbam``, ``eca``, ``ca`` (ignored
            for the attention layout when ``placements`` is given, but kept as the model's label).
        backbone: a key of ``BACKBONES``.
        weights: ``None``; a torchvision weight name (``IMAGENET1K_V1``, ``IMAGENET1K_V2``,
            ``DEFAULT``); ``timm:<pretrained tag>``; or a local file (state_dict or
            checkpoint dict). Backbone tensors are loaded exactly, the head is new and the
            attention modules keep their random initialisation.
        placements: explicit layout; otherwise the variant's kinds at their default sites,
            moved by ``sites`` (kind -> site) and limited to ``stages`` / ``blocks``.
        attention_kwargs: kind -> constructor kwargs (e.g. ``{"ema": {"factor": 16}}``).
        stem: ``imagenet`` (the study), ``low_res`` (pretrained 7x7 conv at stride 1, no
            max-pool) or ``low_res_3x3`` (see ``STEMS``).
        in_chans, drop_rate, global_pool: timm's common model kwargs (input channels; dropout
            before the classifier; ``avg``, ``max``, ``avgmax``, ``catavgmax`` or ``''``).
        num_classes: 0 gives no classifier (the model returns pooled features).
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; known: {list(BACKBONES)}")
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; known: {list(STEMS)}")
    if placements is None:
        layout = variant_placements(variant, sites=sites, stages=stages, blocks=blocks)
    else:
        layout = [Placement.from_any(p) for p in placements]
    kwargs_by_kind = {k: dict(v) for k, v in DEFAULT_ATTENTION_KWARGS.items()}
    for kind, kw in (attention_kwargs or {}).items():
        kwargs_by_kind.setdefault(kind, {}).update(kw)

    model = AttnResNet(backbone, variant, layout, stem=stem, num_classes=num_classes, in_chans=in_chans,
                       drop_rate=drop_rate, global_pool=global_pool)
    for placement in layout:
        _insert(model, placement, kwargs_by_kind.get(placement.kind, {}))
    if weights is not None:
        report = load_backbone_weights(model, weights, progress=progress)
        if verbose:
            print(report)
    return model


def _insert(model: AttnResNet, placement: Placement, base_kwargs: Mapping[str, Any]) -> None:
    if placement.kind not in ATTENTION_REGISTRY:
        raise ValueError(f"unknown attention module {placement.kind!r}; known: {sorted(ATTENTION_REGISTRY)}")
    stages = model.stages
    for stage in placement.stages:
        if not 1 <= stage <= len(stages):
            raise ValueError(f"placement {placement.kind}@{placement.site}: stage {stage} is not in 1..{len(stages)}")
        layer = stages[stage - 1]
        block_ids = range(len(layer)) if placement.blocks is None else placement.blocks
        for b in block_ids:
            if not 0 <= b < len(layer):
                raise ValueError(
                    f"placement {placement.kind}@{placement.site}: block {b} does not exist in "
                    f"stage {stage} of {model.backbone_name} (it has blocks 0..{len(layer) - 1})"
                )
            block = layer[b]
            if placement.site not in block.SITES:
                raise ValueError(
                    f"unknown site {placement.site!r} for {type(block).__name__} in "
                    f"{model.backbone_name}; valid sites: {list(block.SITES)}"
                )
            channels = block.site_channels(placement.site)
            try:
                module = build_attention(placement.kind, channels, **{**base_kwargs, **placement.kwargs})
            except ValueError as err:
                raise ValueError(
                    f"cannot place {placement.kind} at layer{stage}.{b}.{placement.site} of "
                    f"{model.backbone_name} ({channels} channels): {err}"
                ) from err
            block.add_attention(placement.site, module, placement.kind)


def parameter_groups(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """The model's parameters as named groups: ``backbone``, one per attention kind, ``head``.

    Every parameter lands in exactly one group. Attention kinds without parameters (SimAM)
    still get their (empty) group, so code that sets per-group learning rates or freezing
    can name them.
    """
    kinds = list(getattr(model, "attention_kinds", []))
    owner: dict[int, str] = {}
    for _, module in attention_modules(model):
        kind = getattr(module, "kind", "attention")
        if kind not in kinds:
            kinds.append(kind)
        for p in module.parameters():
            owner[id(p)] = kind
    _, head = head_module(model)
    for p in head.parameters():
        owner[id(p)] = "head"
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {"backbone": []}
    groups.update({k: [] for k in kinds})
    groups["head"] = []
    for name, p in model.named_parameters():
        groups[owner.get(id(p), "backbone")].append((name, p))
    return groups


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total, trainable, and per-group parameter counts (exact integers)."""
    counts = {"total": sum(p.numel() for p in model.parameters())}
    counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for group, params in parameter_groups(model).items():
        counts[group] = sum(p.numel() for _, p in params)
    return counts


def describe(model: AttnResNet) -> str:
    """One line per placement: where each attention kind sits, for logs and the README."""
    lines = [f"{model.backbone_name} / {model.variant}"]
    for p in model.placements:
        where = "all blocks" if p.blocks is None else f"blocks {list(p.blocks)}"
        lines.append(f"  {p.kind:<6} at {p.site:<10} stages {list(p.stages)}, {where}")
    return "\n".join(lines)


def check_forward_shapes(model: nn.Module, image_size: int) -> None:
    """Run a shape-only forward pass on the meta device; raise ValueError naming the module that fails.

    Catches placements that cannot work at a resolution (SimAM on a 1x1 map, say) before
    any data is read or any time is spent. ``model`` must live on the meta device.
    """
    entered: list[str] = []
    handles = [m.register_forward_pre_hook(lambda mod, args, n=n: entered.append(n))
               for n, m in attention_modules(model)]
    try:
        with torch.no_grad():
            model.eval()(torch.empty(2, 3, image_size, image_size, device="meta"))
    except NotImplementedError:  # an op without a meta kernel: nothing can be concluded
        return
    except (ValueError, RuntimeError) as err:
        where = f" at {entered[-1]}" if entered else ""
        raise ValueError(f"fails{where} on {image_size}x{image_size} inputs: {err}") from None
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def forward_check(model: nn.Module, image_size: int = 64, batch: int = 2) -> torch.Size:
    """Run one forward pass on random input and check the output is finite."""
    model.eval()
    out = model(torch.randn(batch, 3, image_size, image_size))
    if not torch.isfinite(out).all():
        raise RuntimeError("forward pass produced NaN or inf")
    return out.shape
