"""attnlab: attention-module ablation studies on CNN backbones."""

from __future__ import annotations

from . import models as _models  # noqa: F401  (registers the timm model names)
from .attention import EMA, SimAM
from .models import (
    VARIANTS,
    Placement,
    count_parameters,
    create_model,
    parameter_groups,
)

__version__ = "0.1.0"

__all__ = [
    "EMA",
    "VARIANTS",
    "Placement",
    "SimAM",
    "__version__",
    "count_parameters",
    "create_model",
    "parameter_groups",
]
