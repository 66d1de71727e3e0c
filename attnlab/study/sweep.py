"""Insertion-site sweeps: one model per layout, each trained as its own run, one table row each.

The study fixes where SimAM and EMA sit (its "positions are fixed" limitation). A sweep
turns that into an experiment: ``ExperimentConfig.sweep`` maps a row name to a placements
list (the format of ``model.placements``), and ``attnlab ablate`` trains every
(layout, seed) as ``runs/<layout>_seed<k>/`` with ``variant`` = the layout name, so the
report puts the layouts side by side, with deltas and paired statistics against the
reference layout (``default`` when present).

``site_layouts`` is the built-in sweep (``attnlab ablate --sweep sites``) for the hybrid.
Every layout is checked before anything trains: it must build on the config's backbone
(on the meta device: no memory, no weights), and at the training resolution its modules
must accept their feature maps (SimAM refuses a 1x1 map), so a bad layout late in a long
sweep stops the sweep at once, by name.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from ..config import ConfigError, ExperimentConfig, for_variant, from_dict, to_dict

REFERENCE = "default"  # the layout deltas and statistics are taken against
SITE_LAYOUT_NAMES = (
    "default",            # SimAM after conv2 (before bn2), EMA after bn3 (before the add): the study
    "simam_ema_pre_add",   # both after bn3, SimAM then EMA
    "ema_simam_pre_add",   # both after bn3, EMA then SimAM
    "stages_3_4",          # default sites, deep stages only
    "stages_1_2",          # default sites, shallow stages only
    "last_block",          # default sites, the last block of each stage only
    "simam_ema_post_add",  # both after the residual add (and ReLU), SimAM then EMA
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _pair(simam_site: str, ema_site: str, **select: Any) -> list[dict[str, Any]]:
    return [{"kind": "simam", "site": simam_site, **select}, {"kind": "ema", "site": ema_site, **select}]


def site_layouts(backbone: str = "resnet50") -> dict[str, list[dict[str, Any]]]:
    """The built-in sweep of the hybrid's insertion layouts, in ``SITE_LAYOUT_NAMES`` order.

    ``last_block`` depends on the backbone's depth (ResNet-50: blocks 2, 3, 5, 2)."""
    from ..models import BACKBONES

    if backbone not in BACKBONES:
        raise ConfigError(f"model.backbone: unknown backbone {backbone!r}; known: {list(BACKBONES)}")
    depths = BACKBONES[backbone][1]
    last = [p for kind in ("simam", "ema") for stage, n in enumerate(depths, 1)
            for p in _pair("post_conv2", "pre_add", stages=[stage], blocks=[n - 1]) if p["kind"] == kind]
    layouts = {
        "default": _pair("post_conv2", "pre_add"),
        "simam_ema_pre_add": _pair("pre_add", "pre_add"),
        "ema_simam_pre_add": _pair("pre_add", "pre_add")[::-1],
        "stages_3_4": _pair("post_conv2", "pre_add", stages=[3, 4]),
        "stages_1_2": _pair("post_conv2", "pre_add", stages=[1, 2]),
        "last_block": last,
        "simam_ema_post_add": _pair("post_add", "post_add"),
    }
    return layouts


BUILTIN_SWEEPS: dict[str, Callable[[str], dict[str, list[dict[str, Any]]]]] = {"sites": site_layouts}


def builtin_sweep(name: str, backbone: str) -> dict[str, list[dict[str, Any]]]:
    if name not in BUILTIN_SWEEPS:
        raise ConfigError(f"unknown sweep {name!r}; built-in sweeps: {', '.join(BUILTIN_SWEEPS)}")
    return BUILTIN_SWEEPS[name](backbone)


def run_labels(cfg: ExperimentConfig) -> list[str]:
    """The grid's row names: the sweep's layouts if there is a sweep, else the variants."""
    return list(cfg.sweep) if cfg.sweep else list(cfg.variants)


def reference(cfg: ExperimentConfig) -> str:
    """The row deltas and statistics compare against: ``default`` in a sweep (else its first
    layout), ``baseline`` otherwise."""
    if not cfg.sweep:
        return "baseline"
    return REFERENCE if REFERENCE in cfg.sweep else next(iter(cfg.sweep))


def run_config(cfg: ExperimentConfig, label: str, seed: int) -> ExperimentConfig:
    """The config of one run: ``for_variant``, plus, in a sweep, the layout's placements
    (the run's config.yaml then records exactly what was built, and no sweep)."""
    run_cfg = for_variant(cfg, label, seed)
    if not cfg.sweep:
        return run_cfg
    raw = to_dict(run_cfg)
    raw["model"].update(placements=copy.deepcopy(cfg.sweep[label]), sites={}, stages=None, blocks=None)
    raw["sweep"] = None
    return from_dict(raw)


def check_sweep(cfg: ExperimentConfig, *, image_size: int | None = None, num_classes: int = 2) -> None:
    """Raise ``ConfigError`` naming the first layout that is invalid: a bad name, a name of a
    variant with a different layout, a placement that does not build, or (with
    ``image_size``) a module that refuses its feature map at that input size."""
    if cfg.sweep is None:
        return
    if not cfg.sweep:
        raise ConfigError("sweep is empty: give at least one layout (row name -> placements), "
                          "or use attnlab ablate --sweep sites")
    from ..models import VARIANTS, Placement, variant_placements

    for name, placements in cfg.sweep.items():
        if not _NAME.match(name):
            raise ConfigError(f"sweep.{name}: a layout name becomes a folder name (runs/<name>_seed<k>); "
                              "use letters, digits, '_', '-' and '.', starting with a letter or digit")
        try:
            layout = [Placement.from_any(p) for p in placements]
        except (ValueError, TypeError) as err:
            raise ConfigError(f"sweep.{name}: {err}") from None
        if name in VARIANTS and layout != variant_placements(name):
            raise ConfigError(f"sweep.{name}: named like the variant {name!r} but placed differently; "
                              "the report would treat it as that variant. Rename the layout")
        model = _build_on_meta(cfg, name, placements, num_classes)
        if image_size is not None:
            _check_forward(model, name, image_size)


def _build_on_meta(cfg: ExperimentConfig, name: str, placements: list[dict[str, Any]], num_classes: int):
    import torch

    from ..models import create_model

    try:
        with torch.device("meta"):
            return create_model(name, backbone=cfg.model.backbone, num_classes=num_classes,
                                placements=placements, attention_kwargs=cfg.model.attention or None,
                                stem=cfg.model.stem)
    except ValueError as err:
        raise ConfigError(f"sweep.{name}: {err}") from None


def _check_forward(model: Any, name: str, image_size: int) -> None:
    """Shape-only forward on the meta device; the error names the layout and the failing module."""
    from ..models import check_forward_shapes

    try:
        check_forward_shapes(model, image_size)
    except ValueError as err:
        raise ConfigError(f"sweep.{name}: {err}") from None
