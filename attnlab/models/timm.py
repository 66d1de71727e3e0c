"""The study's models as timm models: ``timm.create_model("resnet50_simam_ema")`` after
``import attnlab``, with a real ``pretrained_cfg``, ``features_only``, and timm's loading.

Each name is built by timm's own ``build_model_with_cfg``, so timm's tooling works on it:
data-config resolution (``timm.data.resolve_data_config``), ``features_only=True`` with
``out_indices`` (a ``FeatureListNet`` over the stem and the four stages), ``pretrained=True``
from a file (``pretrained_cfg_overlay=dict(file=...)``) or an exported folder
(``timm.create_model("local-dir:DIR")``, see ``attnlab export``).

Two pretrained tags per name:

* ``tv_in1k`` (the default): the backbone from torchvision's ImageNet weights
  (``IMAGENET1K_V1``, loaded by attnlab's strict backbone loader); attention modules and
  head are new. 224x224, 1000 classes.
* ``tiny_imagenet``: the study's trained models (64x64, 200 classes). No weights are
  published: pass the file written by ``attnlab export``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import (
    build_model_with_cfg,
    generate_default_cfgs,
    register_model,
    resolve_pretrained_cfg,
)

from .resnet import AttnResNet
from .variants import create_model
from .weights import DEFAULT_PRETRAINED

# name -> (variant, backbone, docstring)
TIMM_NAMES: dict[str, tuple[str, str]] = {
    "resnet50_simam": ("simam", "resnet50"),
    "resnet50_ema": ("ema", "resnet50"),
    "resnet50_simam_ema": ("hybrid", "resnet50"),
    "resnet18_simam_ema": ("hybrid", "resnet18"),
    "resnet34_simam_ema": ("hybrid", "resnet34"),
    "resnet50_se": ("se", "resnet50"),
    "resnet50_cbam": ("cbam", "resnet50"),
    "resnet50_eca": ("eca", "resnet50"),
    "resnet50_ca": ("ca", "resnet50"),
}
# timm kwargs these models do not have: refused by name rather than silently dropped
UNSUPPORTED_KWARGS = ("drop_path_rate", "drop_block_rate", "output_stride", "act_layer", "norm_layer",
                      "img_size", "aa_layer", "block_args", "zero_init_last")


def tiny_imagenet_cfg(stem: str = "imagenet", **extra: Any) -> dict[str, Any]:
    """The pretrained_cfg of a model trained by the study's protocol (64x64, 200 classes)."""
    side = 2 if stem == "imagenet" else 8
    return {"url": "", "num_classes": 200, "input_size": (3, 64, 64), "pool_size": (side, side),
            "crop_pct": 1.0, "interpolation": "bilinear", "mean": IMAGENET_DEFAULT_MEAN,
            "std": IMAGENET_DEFAULT_STD, "first_conv": "conv1", "classifier": "fc",
            "license": "mit", **extra}


def _in1k_cfg() -> dict[str, Any]:
    return {"url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
            "crop_pct": 0.875, "interpolation": "bilinear", "mean": IMAGENET_DEFAULT_MEAN,
            "std": IMAGENET_DEFAULT_STD, "first_conv": "conv1", "classifier": "fc", "license": "mit",
            "origin_url": "https://pytorch.org/vision/stable/models.html",
            "notes": ("backbone: torchvision IMAGENET1K_V1, loaded by attnlab; attention modules and head new",)}


default_cfgs = generate_default_cfgs({
    **{f"{name}.tv_in1k": _in1k_cfg() for name in TIMM_NAMES},
    **{f"{name}.tiny_imagenet": tiny_imagenet_cfg() for name in TIMM_NAMES},
})


def _create(name: str, pretrained: bool = False, **kwargs: Any) -> AttnResNet:
    variant, backbone = TIMM_NAMES[name]
    for key in UNSUPPORTED_KWARGS:
        if key in kwargs:
            raise ValueError(
                f"{name} does not support {key}={kwargs[key]!r}; its options are num_classes, in_chans, "
                "drop_rate, global_pool, stem, weights, placements, sites, stages, blocks, attention_kwargs"
            )
    cfg = resolve_pretrained_cfg(name, pretrained_cfg=kwargs.pop("pretrained_cfg", None),
                                 pretrained_cfg_overlay=kwargs.pop("pretrained_cfg_overlay", None))
    has_file = bool(cfg.file or cfg.state_dict or cfg.url or cfg.hf_hub_id)
    if pretrained and not has_file:
        if cfg.tag != "tv_in1k":
            raise ValueError(
                f"{name}.{cfg.tag} has no published weights: pass the folder or file `attnlab export` "
                "wrote, e.g. pretrained_cfg_overlay=dict(file='export/model.safetensors') or "
                "timm.create_model('local-dir:export', pretrained=True)"
            )
        kwargs.setdefault("weights", DEFAULT_PRETRAINED)  # attnlab's strict backbone loader
    for key in ("cache_dir", "pretrained_model_args"):
        kwargs.pop(key, None)
    return build_model_with_cfg(
        partial(create_model, variant, backbone=backbone), name, pretrained=pretrained and has_file,
        pretrained_cfg=cfg, **kwargs,
    )


def _register(name: str) -> None:
    variant, backbone = TIMM_NAMES[name]

    def entry(pretrained: bool = False, **kwargs: Any) -> AttnResNet:
        return _create(name, pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = f"{backbone} with attnlab's {variant!r} variant (attention at its default sites)."
    entry.__module__ = __name__
    globals()[name] = register_model(entry)


for _name in TIMM_NAMES:
    _register(_name)
