"""Efficiency profile: parameters, GMACs, attention elementwise work, latency, step time.

One job per module: ``params`` (exact counts), ``flops`` (FlopCounterMode MACs),
``attention_ops`` (the elementwise/reduction work MAC counters miss), ``timing`` (latency
and interleaved step-time ratios), ``runtime`` (device, dtype, threads), ``environment``,
``variants`` (``profile_variants``) and ``table`` (``format_profile_table``).
Counting conventions and measured figures: docs/efficiency.md.
"""

from __future__ import annotations

from .attention_ops import OPS_CONVENTION, OPS_FORMULAS, OpCount, attention_ops, ema_ops, simam_ops
from .environment import environment
from .flops import MACS_CONVENTION, count_gmacs, count_macs
from .params import parameter_profile
from .runtime import resolve_device, resolve_dtype
from .table import format_profile_table
from .timing import measure_interleaved, measure_latency, paired_ratios, summarize
from .variants import compute_profile, default_settings, profile_variants

__all__ = [
    "MACS_CONVENTION",
    "OPS_CONVENTION",
    "OPS_FORMULAS",
    "OpCount",
    "attention_ops",
    "compute_profile",
    "count_gmacs",
    "count_macs",
    "default_settings",
    "ema_ops",
    "environment",
    "format_profile_table",
    "measure_interleaved",
    "measure_latency",
    "paired_ratios",
    "parameter_profile",
    "profile_variants",
    "resolve_device",
    "resolve_dtype",
    "simam_ops",
    "summarize",
]
