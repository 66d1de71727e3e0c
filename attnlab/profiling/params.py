"""Parameter counts for the efficiency profile, from the model's own parameter groups."""

from __future__ import annotations

from torch import nn

from ..models import count_parameters


def parameter_profile(model: nn.Module) -> dict[str, int]:
    """``total``, ``trainable``, ``added`` (by all attention modules) and one count per group.

    Groups are :func:`attnlab.models.parameter_groups`'s: ``backbone``, one per attention
    kind (``simam`` is 0, ``ema`` is 10c'^2 + 4c' per module) and ``head``. Every figure is
    an exact integer, so the report can print it as is and tests can compare it exactly.
    """
    counts = count_parameters(model)
    counts["added"] = counts["total"] - counts["backbone"] - counts["head"]
    return counts
