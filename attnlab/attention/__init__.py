"""Attention modules, looked up by name: one file per module, one registry line each."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .base import AttentionModule
from .cbam import CBAM
from .coord import CoordAttention
from .eca import ECA
from .ema import EMA, ema_reference
from .fused import fused_mode, set_fused
from .se import SE
from .simam import SimAM

# name -> factory(channels, **kwargs). A new module is one file plus one line here.
ATTENTION_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "simam": SimAM,
    "ema": EMA,
    "se": SE,
    "cbam": CBAM,
    "eca": ECA,
    "ca": CoordAttention,
}


def register_attention(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make a module available to ``create_model`` placements under ``name``."""
    ATTENTION_REGISTRY[name] = factory


def build_attention(name: str, channels: int, **kwargs) -> nn.Module:
    """Instantiate attention module ``name`` for a feature map with ``channels`` channels."""
    try:
        factory = ATTENTION_REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown attention module {name!r}; known: {sorted(ATTENTION_REGISTRY)}"
        ) from None
    return factory(channels, **kwargs)


__all__ = [
    "ema_reference",
    "fused_mode",
    "set_fused",
    "ATTENTION_REGISTRY",
    "AttentionModule",
    "CBAM",
    "CoordAttention",
    "ECA",
    "EMA",
    "SE",
    "SimAM",
    "build_attention",
    "register_attention",
]
