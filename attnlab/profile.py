"""``attnlab.profile``: the efficiency profile's public API (implemented in ``attnlab.profiling``)."""

from __future__ import annotations

from .profiling import *  # noqa: F403
from .profiling import __all__  # noqa: F401
