"""Pretrained backbone weights: torchvision names, timm tags, or a local file.

Loading is strict about the backbone (every tensor filled, shapes equal, nothing unknown)
and deliberate about the rest: the classification head is always new (the study swaps the
1000-class ImageNet head for a 200-class one) and attention modules keep their random
initialisation. Anything else that does not fit is an error naming the keys.
"""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import MissingWeightsFile, WeightsError
from .resnet import attention_modules, head_module, resample_stem_kernel

DEFAULT_PRETRAINED = "IMAGENET1K_V1"  # torchvision's classic weights (`pretrained=True`)
_CHECKPOINT_KEYS = ("model", "state_dict", "model_state", "model_state_dict", "module")
_PREFIXES = ("module.", "_orig_mod.", "model.")


@dataclass
class LoadReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    new_head: list[str] = field(default_factory=list)
    fresh_attention: list[str] = field(default_factory=list)
    ignored_source: list[str] = field(default_factory=list)
    missing_buffers: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"weights from {self.source}: {len(self.loaded)} backbone tensors loaded",
            f"  new head: {', '.join(self.new_head) or '-'}",
            f"  attention left at initialisation: {len(self.fresh_attention)} tensors",
        ]
        if self.ignored_source:
            lines.append(f"  not used from source (head/attention): {len(self.ignored_source)} tensors")
        if self.missing_buffers:
            lines.append(f"  counters absent in source, left at 0: {len(self.missing_buffers)}")
        return "\n".join(lines)


def is_weights_file(spec: str) -> bool:
    return os.path.sep in spec or spec.endswith((".pt", ".pth", ".bin", ".ckpt", ".safetensors")) or Path(spec).exists()


def resolve_state_dict(spec: str, backbone: str, *, progress: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """Fetch the source state_dict named by ``spec`` and a description of where it came from."""
    if spec.startswith("timm:"):
        return _timm_state_dict(spec[len("timm:"):]), spec
    if is_weights_file(spec):
        return read_weights_file(Path(spec)), str(spec)
    return _torchvision_state_dict(spec, backbone, progress=progress), f"torchvision {backbone} {spec}"


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A bare state_dict or a checkpoint dict holding one, from ``.pt/.pth`` or ``.safetensors``;
    a folder written by ``attnlab export`` (timm's hub layout) means its ``model.safetensors``."""
    if path.is_dir():
        if not (path / "model.safetensors").is_file():
            raise MissingWeightsFile(f"weights folder {path} has no model.safetensors (an `attnlab export` "
                                     "folder holds one); pass a weights file or an export folder")
        path = path / "model.safetensors"
    if not path.is_file():
        raise MissingWeightsFile(f"weights file {path} does not exist; pass the path of a .pth/.pt state_dict")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise WeightsError(f"reading {path} needs the safetensors package: pip install safetensors") from err
        obj: object = load_file(str(path))
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle errors, truncated files, non-tensor payloads
            raise WeightsError(
                f"could not read weights file {path}: {err}. It must be a torch.save'd state_dict "
                "(or a dict holding one under 'model'/'state_dict') readable with weights_only=True."
            ) from err
    return normalise_state_dict(obj, where=str(path))


def normalise_state_dict(obj: object, where: str = "weights") -> dict[str, torch.Tensor]:
    """Unwrap checkpoint dicts and strip DDP / torch.compile prefixes."""
    if isinstance(obj, Mapping):
        for key in _CHECKPOINT_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{where} does not hold a state_dict (a mapping of names to tensors)")
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        for prefix in _PREFIXES:
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def _torchvision_state_dict(name: str, backbone: str, *, progress: bool) -> dict[str, torch.Tensor]:
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(backbone)
    except (ValueError, KeyError) as err:
        raise WeightsError(f"torchvision has no weights for backbone {backbone!r}") from err
    try:
        weights = enum[name] if name != "DEFAULT" else enum.DEFAULT
    except KeyError:
        valid = [w.name for w in enum] + ["DEFAULT"]
        raise WeightsError(
            f"unknown weights {name!r} for {backbone}: use one of {valid}, 'timm:<tag>', or a local file path"
        ) from None
    cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    try:
        state = torch.hub.load_state_dict_from_url(
            weights.url, progress=progress, check_hash=True, map_location="cpu", weights_only=True
        )
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        raise WeightsError(
            f"could not download torchvision weights {backbone} {name} from {weights.url} ({err}). "
            f"Without network access, fetch that file on another machine and either pass "
            f"weights=/path/to/{cache.name} or copy it to {cache}."
        ) from err
    return normalise_state_dict(state, where=weights.url)


def _timm_state_dict(tag: str) -> dict[str, torch.Tensor]:
    import timm

    try:
        model = timm.create_model(tag, pretrained=True)
    except Exception as err:  # hub errors come in many types
        raise WeightsError(
            f"could not load timm pretrained weights {tag!r} ({type(err).__name__}: {err}). "
            "Without network access, save the model's state_dict on another machine "
            "(torch.save(timm.create_model(tag, pretrained=True).state_dict(), 'w.pth')) "
            "and pass weights=/path/to/w.pth."
        ) from err
    return dict(model.state_dict())


def load_backbone_weights(model: nn.Module, spec: str, *, progress: bool = False) -> LoadReport:
    """Copy pretrained backbone tensors from ``spec`` into ``model``; see the module docstring."""
    backbone = getattr(model, "backbone_name", "resnet50")
    source, description = resolve_state_dict(spec, backbone, progress=progress)
    target = model.state_dict()
    if getattr(model, "stem", "imagenet") == "low_res_3x3" and "conv1.weight" in source \
            and source["conv1.weight"].shape[-1] == 7 and target["conv1.weight"].shape[-1] == 3:
        source = {**source, "conv1.weight": resample_stem_kernel(source["conv1.weight"])}
    in_chans = target["conv1.weight"].shape[1]
    if "conv1.weight" in source and source["conv1.weight"].shape[1] != in_chans:
        from timm.models import adapt_input_conv  # timm's rule: sum or repeat the RGB filters

        source = {**source, "conv1.weight": adapt_input_conv(in_chans, source["conv1.weight"])}
    head_name, _ = head_module(model)
    head_keys = {k for k in target if k.startswith(head_name + ".")}
    attn_keys = {k for n, _ in attention_modules(model) for k in target if k.startswith(n + ".")}
    backbone_keys = [k for k in target if k not in head_keys and k not in attn_keys]

    def is_head_or_attention(key: str) -> bool:
        if key.startswith(head_name + ".") or key in attn_keys:
            return True
        # attention tensors saved by another attnlab model: <block>.<kind>.<param>
        parts = key.split(".")
        return len(parts) > 3 and parts[2] in _known_attention_kinds()

    report = LoadReport(source=description, new_head=sorted(head_keys), fresh_attention=sorted(attn_keys))
    missing = [k for k in backbone_keys if k not in source]
    report.missing_buffers = [k for k in missing if k.endswith("num_batches_tracked")]
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in source if k not in target and not is_head_or_attention(k)]
    mismatched = [
        f"{k}: source {tuple(source[k].shape)} vs model {tuple(target[k].shape)}"
        for k in backbone_keys
        if k in source and source[k].shape != target[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing in source ({len(missing)}): {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected in source ({len(unexpected)}): {_preview(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch ({len(mismatched)}): {_preview(mismatched)}")
    if problems:
        raise WeightsError(
            f"weights {description} do not fit backbone {backbone}: " + "; ".join(problems)
            + ". Check that the file was saved from the same backbone."
        )
    with torch.no_grad():
        for k in backbone_keys:
            if k in source:
                target[k].copy_(source[k])
                report.loaded.append(k)
    report.ignored_source = sorted(k for k in source if k not in backbone_keys)
    return report


def _known_attention_kinds() -> set[str]:
    from ..attention import ATTENTION_REGISTRY

    return set(ATTENTION_REGISTRY)


def _preview(keys: list[str], n: int = 6) -> str:
    return ", ".join(keys[:n]) + (" ..." if len(keys) > n else "")
