"""What the attention modules look at: SimAM's 3-D weights, EMA's spatial map, Grad-CAM.

Everything is read through forward hooks on an unmodified model:

* SimAM: the sigmoid gate ``simam_gate(x, e_lambda)`` of the hooked input, averaged over
  channels: one H×W map per image (the module multiplies its input by exactly this gate).
* EMA: the sigmoid of the cross-spatial weights, one H×W map per channel group, averaged
  over groups. It is recomputed from the hooked input with the module's own layers
  (``ema_group_maps``); the tests check that input × map reproduces the module's output,
  so a change to EMA's forward cannot silently desynchronise the two.
* Grad-CAM (Selvaraju et al., 2017) on ``layer4``'s output for the predicted (or a given)
  class, computed by the pytorch-grad-cam library (``pytorch_grad_cam.GradCAM``):
  ReLU(Σ_c mean_hw(∂score/∂A_c) · A_c), min-max normalised per image and bilinearly
  resized to the input size (``grad_cam``; the localization metric uses the same maps).

By default the maps come from the deepest module whose feature map is at least 7×7
(layer2 at 64×64 input, layer4 at 224×224), so they have some spatial detail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..attention import EMA, SimAM
from ..attention.ema import ema_reference
from ..attention.simam import simam_gate

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 N×H×W×3 images to float N×3×H×W, normalised with ImageNet mean/std."""
    x = torch.as_tensor(np.asarray(images))
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def denormalize_images(x: torch.Tensor) -> np.ndarray:
    """Inverse of ``normalize_images`` (for display): uint8 N×H×W×3."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    img = (x.detach().cpu().float() * std + mean).clamp(0, 1) * 255
    return img.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def load_checkpoint_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from a run checkpoint: ``create_model(**model_args)`` + its state_dict.

    Read with ``weights_only=True`` (``engine.checkpoint.load_checkpoint``): a checkpoint
    holding anything but tensors and plain containers is refused unread.
    """
    from ..engine.checkpoint import load_checkpoint

    return model_from_checkpoint(load_checkpoint(path), path, device)


def model_from_checkpoint(ckpt: Mapping, path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The model of an already loaded run checkpoint (``load_checkpoint``), in eval mode."""
    from ..errors import CheckpointError
    from ..models import create_model

    if "model_args" not in ckpt or "model" not in ckpt:
        raise CheckpointError(f"{path} is not a run checkpoint (needs keys 'model_args' and 'model')")
    args = dict(ckpt["model_args"])
    args.pop("weights", None)  # the trained state_dict replaces any pretrained weights
    model = create_model(**args)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


@torch.no_grad()
def ema_group_maps(module: EMA, x: torch.Tensor) -> torch.Tensor:
    """EMA's cross-spatial gate for input ``x``: B×G×H×W, values in (0, 1) (see ``ema_reference``)."""
    return ema_reference(module, x, gate_only=True)


def _pick(candidates: Sequence[tuple[str, torch.Tensor]], block: str | None, min_size: int) -> tuple[str, torch.Tensor] | None:
    """The map of module ``block`` (a name prefix like ``layer2.3``), else the deepest
    with H, W >= min_size, else the largest."""
    if not candidates:
        return None
    if block is not None:
        for name, m in candidates:
            if name == block or name.startswith(block + "."):
                return name, m
        raise ValueError(f"no attention module of this kind in block {block!r}; have {[n for n, _ in candidates]}")
    big = [(n, m) for n, m in candidates if min(m.shape[-2:]) >= min_size]
    if big:
        return big[-1]
    return max(candidates, key=lambda nm: nm[1].shape[-1] * nm[1].shape[-2])


@torch.no_grad()
def attention_maps(model: nn.Module, images: torch.Tensor, *, block: str | None = None,
                   min_size: int = 7) -> dict[str, tuple[str, torch.Tensor]]:
    """One forward pass; ``{"simam": (module name, B×h×w), "ema": (...)}`` for the kinds
    the model has. SimAM: channel-mean of its gate; EMA: group-mean of its spatial gate."""
    captured: dict[str, list[tuple[str, torch.Tensor]]] = {"simam": [], "ema": []}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, SimAM):
            def hook(mod, inp, out, name=name):  # type: ignore[no-untyped-def]
                captured["simam"].append((name, simam_gate(inp[0], mod.e_lambda).float().mean(dim=1).cpu()))
        elif isinstance(module, EMA):
            def hook(mod, inp, out, name=name):  # type: ignore[no-untyped-def]
                captured["ema"].append((name, ema_group_maps(mod, inp[0]).float().mean(dim=1).cpu()))
        else:
            continue
        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(images)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out = {}
    for kind, cands in captured.items():
        picked = _pick(cands, block, min_size)
        if picked is not None:
            out[kind] = picked
    return out


class GradCAMRunner:
    """pytorch-grad-cam's ``GradCAM`` on one model and layer, for many batches.

    ``run(images, targets)`` returns (maps N×H×W float32 numpy, logits N×C): the library's
    Grad-CAM for class ``targets[i]`` of image ``i`` (ReLU of the gradient-weighted sum of the
    layer's channels, min-max normalised per image, resized bilinearly to the input's H×W
    with OpenCV, normalised again: values in [0, 1], an all-zero map stays 0) and the logits
    of the same forward pass. ``layer_size`` is the layer's own h×w from the last batch.
    Use it as a context manager (or call ``close``) to remove its hooks.
    """

    def __init__(self, model: nn.Module, layer: str = "layer4"):
        from pytorch_grad_cam import GradCAM

        try:
            target_layer = model.get_submodule(layer)
        except AttributeError:
            raise ValueError(f"the model has no module {layer!r} for Grad-CAM") from None
        self.model, self.layer = model, layer
        self.was_training = model.training
        self.layer_size: tuple[int, int] | None = None
        self._hook = target_layer.register_forward_hook(self._record_size)
        self.cam = GradCAM(model=model, target_layers=[target_layer])  # puts the model in eval mode

    def _record_size(self, module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        self.layer_size = (int(output.shape[-2]), int(output.shape[-1]))

    def run(self, images: torch.Tensor, targets: torch.Tensor | Sequence[int]) -> tuple[np.ndarray, torch.Tensor]:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        classes = [int(t) for t in torch.as_tensor(targets).reshape(-1).tolist()]
        if len(classes) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(classes)} target classes")
        with torch.enable_grad():
            maps = self.cam(input_tensor=images, targets=[ClassifierOutputTarget(c) for c in classes])
        logits = self.cam.outputs.detach()
        self.cam.outputs = None  # drop the graph
        return np.asarray(maps, dtype=np.float32).reshape(images.shape[0], *images.shape[-2:]), logits

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(images.to(next(self.model.parameters()).device))

    def close(self) -> None:
        self.cam.activations_and_grads.release()
        self._hook.remove()
        self.model.zero_grad(set_to_none=True)
        self.model.train(self.was_training)

    def __enter__(self) -> GradCAMRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def grad_cam(model: nn.Module, images: torch.Tensor, *, target: torch.Tensor | None = None,
             layer: str = "layer4") -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM of ``layer`` by pytorch-grad-cam (``GradCAMRunner``): (B×H×W maps at the
    input size, in [0, 1], on the CPU; target classes). ``target`` defaults to the predicted class."""
    with GradCAMRunner(model, layer) as runner:
        if target is None:
            target = runner.predict(images).argmax(dim=1)
        maps, _ = runner.run(images, target)
    return torch.from_numpy(maps), torch.as_tensor(target).detach().cpu()


def attention_panels(models: Mapping[str, nn.Module], images: torch.Tensor, *, block: str | None = None,
                     min_size: int = 7) -> list[tuple[str, np.ndarray]]:
    """Figure columns: each variant's SimAM and EMA maps, then a Grad-CAM per variant."""
    panels: list[tuple[str, np.ndarray]] = []
    for variant, model in models.items():
        device = next(model.parameters()).device
        for kind, (name, maps) in attention_maps(model, images.to(device), block=block, min_size=min_size).items():
            label = {"simam": "SimAM weights", "ema": "EMA spatial"}[kind]
            panels.append((f"{variant}: {label}\n{name.rsplit('.', 1)[0]}", maps.numpy()))
    for variant, model in models.items():
        device = next(model.parameters()).device
        cam, _ = grad_cam(model, images.to(device))
        panels.append((f"{variant}: Grad-CAM\nlayer4, predicted class", cam.cpu().numpy()))
    return panels


def select_images(labels: np.ndarray, n: int) -> np.ndarray:
    """``n`` val indices spread evenly over the split (deterministic, distinct classes
    where the val order allows)."""
    if n < 1 or len(labels) == 0:
        return np.zeros(0, dtype=np.int64)
    idx = np.linspace(0, len(labels) - 1, num=min(n, len(labels))).round().astype(np.int64)
    return np.unique(idx)
