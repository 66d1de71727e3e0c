"""A trained run as a folder in timm's hub layout: weights anyone can load.

``export_run(run_dir, out)`` writes ``model.safetensors`` (the run's state_dict, no
pickle), ``config.json`` (timm's ``architecture``, ``num_classes``, ``pretrained_cfg`` and
the ``model_args`` that rebuild the layout) and ``README.md`` (a model card: protocol,
Top-1/Top-5, parameters, GMACs, attnlab version and commit). The folder then loads with
plain timm after ``import attnlab``::

    timm.create_model("local-dir:EXPORT", pretrained=True)
    timm.create_model("resnet50_simam_ema", pretrained=True, num_classes=200,
                      pretrained_cfg_overlay=dict(file="EXPORT/model.safetensors", num_classes=200))

and as ``model.weights: EXPORT`` in an attnlab config (the backbone tensors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..engine.checkpoint import atomic_write, atomic_write_text, load_checkpoint
from ..errors import RecordError
from ..models import TIMM_NAMES, create_model, tiny_imagenet_cfg

POLICY_CHECKPOINT = {"final": "last.pt", "best": "best.pt"}
LAYOUT_KEYS = ("placements", "sites", "stages", "blocks", "attention_kwargs", "stem")


def timm_name(variant: str, backbone: str, placements: Any) -> str:
    """The registered timm name that builds this run's architecture."""
    for name, (v, b) in TIMM_NAMES.items():
        if (v, b) == (variant, backbone):
            return name
    if placements is not None:  # a sweep layout: any name of this backbone + explicit placements
        for name, (_, b) in TIMM_NAMES.items():
            if b == backbone:
                return name
    known = ", ".join(f"{v}/{b}" for v, b in TIMM_NAMES.values())
    raise RecordError(f"no timm name builds variant {variant!r} on {backbone}; exportable: {known}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordError(f"{path} does not exist: export needs a finished run folder") from None
    except (OSError, ValueError) as err:
        raise RecordError(f"{path} is not valid JSON ({err}); the run record is damaged") from None
    if not isinstance(data, dict):
        raise RecordError(f"{path} does not hold a JSON object")
    return data


def export_run(run_dir: str | Path, out: str | Path, *, policy: str = "final",
               allow_incomplete: bool = False) -> dict[str, Path]:
    """Write ``out/{model.safetensors,config.json,README.md}`` from ``run_dir``; returns the paths."""
    from safetensors.torch import save_file

    run_dir, out = Path(run_dir), Path(out)
    if policy not in POLICY_CHECKPOINT:
        raise RecordError(f"policy must be one of {list(POLICY_CHECKPOINT)}, got {policy!r}")
    summary = _read_json(run_dir / "summary.json")
    if summary.get("status") != "complete" and not allow_incomplete:
        raise RecordError(f"{run_dir / 'summary.json'} says status {summary.get('status')!r}: export a "
                          "finished run (or pass --allow-incomplete)")
    ckpt_path = run_dir / "checkpoints" / POLICY_CHECKPOINT[policy]
    ckpt = load_checkpoint(ckpt_path)
    if "model" not in ckpt or "model_args" not in ckpt:
        raise RecordError(f"{ckpt_path} is not a run checkpoint (needs 'model' and 'model_args')")
    args = dict(ckpt["model_args"])
    model = create_model(**args)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise RecordError(f"{ckpt_path}: its weights do not fit its model_args ({str(err).splitlines()[0]})") from None
    name = timm_name(args["variant"], args["backbone"], args.get("placements"))
    config = ckpt.get("config") or {}
    data_cfg = config.get("data", {}) if isinstance(config, dict) else {}
    size = (data_cfg.get("augment") or {}).get("train_size") or data_cfg.get("image_size") or 64
    with torch.device("meta"):
        meta = create_model(**args)
        pool = tuple(meta.forward_features(torch.empty(1, 3, size, size)).shape[-2:])
    entry = summary.get("final" if policy == "final" else "best") or {}
    names = summary.get("class_names") or []
    pretrained_cfg = tiny_imagenet_cfg(args.get("stem", "imagenet"), num_classes=args["num_classes"],
                                       input_size=(3, size, size), pool_size=pool, tag="attnlab",
                                       **({"label_names": list(names)} if names else {}))
    # what the timm name does not imply: a moved or custom layout, module kwargs, the stem
    model_args = {k: args[k] for k in LAYOUT_KEYS if args.get(k) not in (None, {}, [], "imagenet")}
    record = {"architecture": name, "num_classes": args["num_classes"], "num_features": model.num_features,
              "pretrained_cfg": pretrained_cfg, "model_args": model_args, "attnlab_variant": args["variant"]}

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    paths = {"model.safetensors": out / "model.safetensors", "config.json": out / "config.json",
             "README.md": out / "README.md"}
    atomic_write(paths["model.safetensors"], lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    atomic_write_text(paths["config.json"], json.dumps(record, indent=2, default=list) + "\n")
    atomic_write_text(paths["README.md"], model_card(name, args, summary, entry, config, model, size, policy,
                                                     run_dir))
    return paths


def model_card(name: str, args: dict[str, Any], summary: dict[str, Any], entry: dict[str, Any],
               config: dict[str, Any], model: torch.nn.Module, size: int, policy: str, run_dir: Path) -> str:
    """The README.md of an export: what was trained, how, how well, and how to load it."""
    from importlib.metadata import version

    import yaml

    from ..models import count_parameters
    from ..profiling import count_gmacs

    counts = count_parameters(model)
    gmacs = count_gmacs(model, size)
    env = summary.get("environment") or {}
    train = config.get("train", {}) if isinstance(config, dict) else {}
    protocol = {k: train.get(k) for k in ("epochs", "optimizer", "lr", "lr_mult", "momentum", "weight_decay",
                                          "schedule", "warmup_epochs", "freeze", "label_smoothing", "precision")
                if k in train}

    def pct(key: str) -> str:
        value = entry.get(key)
        return "n/a" if value is None else f"{100 * value:.2f}"

    lines = [
        "---", "library_name: timm", "license: mit", "tags: [image-classification, timm, attnlab]", "---", "",
        f"# {name} ({args['variant']}, trained with attnlab)", "",
        f"{args['backbone']} with attnlab's `{args['variant']}` attention layout, {args['num_classes']} classes, "
        f"input {size}x{size}, stem `{args.get('stem', 'imagenet')}`. Exported from run "
        f"`{run_dir.name}` (seed {summary.get('seed')}), {policy} epoch {entry.get('epoch')}.", "",
        "## Results (this run's validation split)", "",
        "| Top-1 (%) | Top-5 (%) | params | GMACs |", "|---:|---:|---:|---:|",
        f"| {pct('val_top1')} | {pct('val_top5')} | {counts['total']:,} | {gmacs:.3f} |", "",
        f"GMACs: multiply-accumulates of one {size}x{size} image (PyTorch FlopCounterMode, FLOPs/2). "
        "Top-k: share of all validation images (micro).", "",
        "## Protocol", "", "```yaml", yaml.safe_dump({"model": args, "train": protocol}, sort_keys=False).rstrip(),
        "```", "",
        "## Load", "", "```python", "import attnlab, timm  # importing attnlab registers the model names",
        'model = timm.create_model("local-dir:PATH/TO/THIS/FOLDER", pretrained=True)', "```", "",
        f"attnlab {version('attnlab')}, commit {env.get('commit') or 'unknown'}, torch {env.get('torch')}, "
        f"device {env.get('device_name')}.", "",
    ]
    return "\n".join(lines)
