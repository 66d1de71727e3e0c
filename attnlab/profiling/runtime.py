"""Where and how measured work runs: device and dtype resolution, inputs, thread counts.

Every measurement in :mod:`attnlab.profiling` goes through these helpers so that the CPU
and CUDA paths differ in one place only. ``dtype`` names the compute precision: ``fp32``
runs in float32; ``bf16``/``fp16`` run under ``torch.autocast`` with fp32 weights, the way
mixed-precision training and inference run in practice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device) -> torch.device:
    """``torch.device`` for ``cpu``/``cuda[:n]``; a clear error when CUDA is not there."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {str(device)!r} was requested but CUDA is not available here "
                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda or 'none'}, "
                "no usable GPU visible). Run on a GPU machine or use --device cpu."
            )
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"{dev} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device("cuda", index)
    if dev.type != "cpu":
        raise ValueError(f"profiling supports cpu and cuda devices, got {str(device)!r}")
    return dev


def resolve_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {list(DTYPES)}") from None


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision for bf16/fp16, nothing for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def place(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """Move ``model`` (in place) to ``device`` and, optionally, the channels-last layout."""
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def make_batch(batch: int, image_size: int, device: torch.device, channels_last: bool) -> torch.Tensor:
    """A random fp32 image batch (autocast casts it where the model computes in half)."""
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def num_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``threads`` intra-op CPU threads (``None``: leave as is)."""
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
