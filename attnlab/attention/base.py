"""Common base for attention modules so the model can find and group them by kind."""

from __future__ import annotations

from torch import nn


class AttentionModule(nn.Module):
    """An attention module that maps a feature map to one of the same shape.

    ``kind`` is the registry name (``"simam"``, ``"ema"``...). The model uses it to put each
    module's parameters into a named group (for learning rates and freezing) without any
    string matching on parameter names.
    """

    kind: str = "attention"
