"""The report: reads an ablation folder (docs/run-records.md), writes tables, statistics
and figures. One job per module:

* ``records``      run folders: summary.json (authoritative), checked against metrics.csv
                   and the predictions; damaged runs are left out with a note
* ``profile_json`` profile.json's (and profile_train.json's) efficiency figures, read defensively
* ``table``        the results table (one row per variant)
* ``comparisons``  paired statistics between variants, per-class changes
* ``localization`` weakly supervised localization (Grad-CAM boxes vs the val boxes) per run
* ``render``       Markdown and LaTeX
* ``writer``       ``write_report``: all of the above, plus the figures
"""

from __future__ import annotations

from .comparisons import compare_indicators, compare_variants, comparison_pairs, per_class_delta
from .localization import Localization, box_from_map, box_iou, localization_report, localize
from .profile_json import read_profile
from .records import POLICIES, Predictions, RunRecord, load_runs, read_run
from .table import results_table
from .writer import write_report

__all__ = [
    "POLICIES",
    "Localization",
    "Predictions",
    "RunRecord",
    "box_from_map",
    "box_iou",
    "compare_indicators",
    "compare_variants",
    "comparison_pairs",
    "load_runs",
    "localization_report",
    "localize",
    "per_class_delta",
    "read_profile",
    "read_run",
    "results_table",
    "write_report",
]
