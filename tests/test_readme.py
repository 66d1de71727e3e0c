"""The README's parameter figures are what the code builds (counted on the meta device)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from attnlab.models import count_parameters, create_model

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def added(variant: str, backbone: str = "resnet50") -> int:
    with torch.device("meta"):
        counts = count_parameters(create_model(variant, backbone=backbone, num_classes=200))
    return counts["total"] - counts["backbone"] - counts["head"]


def table_rows(heading: str) -> dict[str, list[str]]:
    """variant -> cells of the first markdown table after ``heading``."""
    text = README[README.index(heading):]
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        if rows and not line.startswith("|"):
            break
        m = re.match(r"^\| `(\w+)`\s*\|(.*)\|$", line)
        if m:
            rows[m[1]] = [c.strip() for c in m[2].split("|")]
    return rows


def number(cell: str) -> int:
    return int(cell.replace(",", ""))


def test_four_variant_table_and_total() -> None:
    rows = table_rows("## The four variants")
    assert set(rows) == {"baseline", "simam", "ema", "hybrid"}
    for variant, cells in rows.items():
        assert number(cells[-1]) == added(variant), variant
    with torch.device("meta"):
        total = count_parameters(create_model("baseline", num_classes=200))["total"]
    assert f"has {total:,} parameters" in README


@pytest.mark.parametrize("variant", ["se", "cbam", "eca", "ca", "simam", "ema", "hybrid"])
def test_lineage_table(variant: str) -> None:
    cells = table_rows("**The lineage as variants.**")[variant]
    assert number(cells[2]) == added(variant)


def test_resnet18_figures() -> None:
    line = README[README.index("On ResNet-18 the"):][:300]
    for variant in ("se", "cbam", "eca", "ca"):
        assert f"`{variant}` {added(variant, 'resnet18'):,}" in line
    assert f"`ema` and `hybrid` {added('ema', 'resnet18'):,}" in line
