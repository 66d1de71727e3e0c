"""The environment a measurement was taken in, so every figure can be read in context."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux) or ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_commit() -> str | None:
    """The checked-out commit of the attnlab source tree, if it is a git checkout."""
    out = _git("rev-parse", "HEAD")
    return out.strip() if out and out.strip() else None


def git_dirty() -> bool | None:
    """Whether the checkout differs from that commit (edited or untracked files)."""
    out = _git("status", "--porcelain")
    return None if out is None else bool(out.strip())


def attention_implementation(device: torch.device) -> dict[str, str]:
    """Which SimAM/EMA code path runs by default on ``device`` (they differ in speed only)."""
    from ..attention import EMA, fused

    probe = torch.empty(1, 1, 2, 2, device=device)
    return {"simam": fused.resolve(None, probe), "ema_strategy": EMA.strategy}


def environment(device: torch.device, dtype: str, channels_last: bool, threads: int) -> dict[str, object]:
    """Device, precision, layout, threads and library versions, JSON-able."""
    import torchvision

    try:
        import timm

        timm_version: str | None = timm.__version__
    except ImportError:  # pragma: no cover - timm is a dependency
        timm_version = None
    cuda = device.type == "cuda"
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_name(),
        "dtype": dtype,
        "autocast": dtype != "fp32",
        "channels_last": channels_last,
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark) if cuda else None,
        "attention_impl": attention_implementation(device),
        "commit": git_commit(),
        "commit_dirty": git_dirty(),
    }
