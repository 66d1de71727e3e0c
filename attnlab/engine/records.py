"""The run record (docs/run-records.md): metrics.csv, summary.json, predictions, environment."""

from __future__ import annotations

import csv
import io
import json
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import atomic_write, atomic_write_text

METRIC_COLUMNS = [
    "epoch", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5",
]
HFLIP_COLUMNS = ["val_loss_hflip", "val_top1_hflip", "val_top5_hflip"]  # train.eval_hflip only
TIMING_COLUMNS = ["frozen", "epoch_seconds", "eval_seconds", "train_images_per_s"]


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite metrics.csv from the full history (kept in the checkpoint, so resume is exact)."""
    if not rows:
        return
    lr_cols = sorted({k for r in rows for k in r if k.startswith("lr_")})
    flip_cols = [c for c in HFLIP_COLUMNS if any(c in r for r in rows)]
    cols = METRIC_COLUMNS + flip_cols + lr_cols + TIMING_COLUMNS
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k, "") for k in cols})
    atomic_write_text(path, buf.getvalue())


def read_metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Strict JSON: a NaN or inf (a diverged figure) is written as null, never as bare NaN."""
    atomic_write_text(path, json.dumps(finite_or_null(data), indent=2, default=_jsonable, allow_nan=False) + "\n")


def write_config(path: Path, cfg: Any) -> None:
    """The resolved config as YAML (atomic, like every record)."""
    import yaml

    from ..config import to_dict

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def finite_or_null(x: Any) -> Any:
    """``x`` with every non-finite float (also numpy's) replaced by None."""
    if isinstance(x, dict):
        return {k: finite_or_null(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_or_null(v) for v in x]
    if isinstance(x, (float, np.floating)) and not np.isfinite(x):
        return None
    return x


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def write_predictions(path: Path, labels: np.ndarray, top5: np.ndarray, epoch: int) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, labels=labels.astype(np.int64), top5=top5.astype(np.int64), epoch=np.int64(epoch))

    atomic_write(path, write)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device, world_size: int = 1) -> dict[str, Any]:
    import timm
    import torchvision

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": name,
        "threads": torch.get_num_threads(),
        "commit": git_commit(),
        "hostname": socket.gethostname(),
        "world_size": world_size,
    }
