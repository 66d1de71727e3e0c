"""Latency and step-time measurement: absolute latency per model, and interleaved ratios.

Absolute latency (``measure_latency``) uses CUDA events on a GPU and
``torch.utils.benchmark.Timer`` with an explicit thread count on a CPU, after a warm-up,
one call per sample, so the median and p95 describe single calls.

Ratios between variants (``measure_interleaved``) time the variants in rotating order
within each round, in one process, and take the median of the per-round ratios. On a
shared or throttling machine all variants see the same slow-downs, so the ratio holds
even when the absolute times drift.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..models import head_module
from .runtime import (
    autocast,
    make_batch,
    num_threads,
    place,
    resolve_device,
    resolve_dtype,
    synchronize,
)

Step = Callable[[], object]


def summarize(seconds: list[float], batch: int) -> dict[str, float | int]:
    """Median, p95, mean, min (ms) and images/s (at the median) of per-call times."""
    if not seconds:
        raise ValueError("no timing samples to summarize")
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    median = float(np.median(ms))
    return {
        "median_ms": median,
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "images_per_s": batch / (median / 1e3),
        "samples": len(seconds),
    }


def time_call(step: Step, device: torch.device) -> float:
    """Seconds one call of ``step`` takes, device-synchronised (CUDA events on a GPU)."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
    begin = time.perf_counter()
    step()
    return time.perf_counter() - begin


def inference_step(model: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> Step:
    """One eval-mode forward under ``inference_mode`` (and autocast for bf16/fp16)."""
    model.eval()
    device = x.device

    def step() -> object:
        with torch.inference_mode(), autocast(device, dtype):
            return model(x)

    return step


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype) -> Step:
    """One SGD step (forward, cross-entropy, backward, update) as a training loop runs it."""
    model.train()
    device = x.device
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def step() -> object:
        opt.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    return step


def measure_latency(
    model: nn.Module,
    *,
    batch_size: int,
    image_size: int = 64,
    device: str | torch.device = "cpu",
    dtype: str = "fp32",
    channels_last: bool = False,
    warmup: int = 3,
    repeats: int = 20,
    threads: int | None = None,
    progress: bool = False,
    label: str = "",
) -> dict[str, float | int | None]:
    """Inference latency of ``model`` (moved to ``device`` in place) at one batch size.

    Returns :func:`summarize`'s figures plus ``batch`` and ``peak_mem_mb``: the peak of
    ``torch.cuda.max_memory_allocated`` over the timed calls on a GPU (everything allocated
    on the device then: this model's weights, the input, activations, workspaces, and any
    other tensors the caller keeps there), ``None`` on a CPU, where PyTorch keeps no
    allocator statistics.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    place(model, dev, channels_last)
    x = make_batch(batch_size, image_size, dev, channels_last)
    step = inference_step(model, x, dt)
    desc = " ".join(filter(None, ["latency", label, f"b{batch_size}"]))
    bar = tqdm(total=warmup + repeats, desc=desc, leave=False, disable=not progress)
    samples: list[float] = []
    with num_threads(threads) as used_threads:
        for _ in range(warmup):
            step()
            bar.update()
        synchronize(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            for _ in range(repeats):
                samples.append(time_call(step, dev))
                bar.update()
            peak_mb: float | None = torch.cuda.max_memory_allocated(dev) / 2**20
        else:
            # Imported here: it pulls in cpp_extension, which logs a CUDA warning on import.
            from torch.utils import benchmark

            timer = benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=used_threads)
            for _ in range(repeats):
                samples.append(timer.timeit(1).median)
                bar.update()
            peak_mb = None
    bar.close()
    return {"batch": batch_size, **summarize(samples, batch_size), "peak_mem_mb": peak_mb}


def interleaved_times(
    steps: Mapping[str, Step],
    device: torch.device,
    *,
    repeats: int,
    warmup: int = 1,
    progress: bool = False,
    desc: str = "interleaved",
) -> dict[str, list[float]]:
    """Per-call seconds of each step, the steps taking turns in rotating order each round."""
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    bar = tqdm(total=(warmup + repeats) * len(names), desc=desc, leave=False, disable=not progress)
    for _ in range(warmup):
        for name in names:
            steps[name]()
            bar.update()
    synchronize(device)
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(time_call(steps[name], device))
            bar.update()
    bar.close()
    return times


def paired_ratios(times: Mapping[str, list[float]], reference: str) -> dict[str, dict[str, float]]:
    """Per variant, the median and quartiles of round-by-round time ratios to ``reference``."""
    ref = np.asarray(times[reference], dtype=np.float64)
    out = {}
    for name, values in times.items():
        r = np.asarray(values, dtype=np.float64) / ref
        out[name] = {
            "ratio": float(np.median(r)),
            "ratio_p25": float(np.percentile(r, 25)),
            "ratio_p75": float(np.percentile(r, 75)),
        }
    return out


def measure_interleaved(
    models: Mapping[str, nn.Module],
    *,
    mode: str = "train",
    batch_size: int,
    image_size: int = 64,
    device: str | torch.device = "cpu",
    dtype: str = "fp32",
    channels_last: bool = False,
    warmup: int = 1,
    repeats: int = 10,
    threads: int | None = None,
    reference: str | None = None,
    progress: bool = False,
) -> dict[str, dict[str, float | int]]:
    """Step times of several models measured side by side, with ratios to ``reference``.

    ``mode`` is ``"train"`` (SGD step: forward, loss, backward, update; models are left in
    train mode with updated weights) or ``"infer"`` (eval forward under inference_mode).
    ``reference`` defaults to ``"baseline"`` if present, else the first model. Returns per
    model :func:`summarize`'s figures plus ``batch``, ``ratio_to_reference`` (median of the
    per-round ratios) and its quartiles ``ratio_p25``/``ratio_p75``.
    """
    if mode not in ("train", "infer"):
        raise ValueError(f"mode must be 'train' or 'infer', got {mode!r}")
    if not models:
        raise ValueError("no models to time")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    reference = reference or ("baseline" if "baseline" in models else next(iter(models)))
    if reference not in models:
        raise ValueError(f"reference {reference!r} is not among the models {list(models)}")
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    x = make_batch(batch_size, image_size, dev, channels_last)
    steps: dict[str, Step] = {}
    for name, model in models.items():
        place(model, dev, channels_last)
        if mode == "train":
            classes = head_module(model)[1].out_features
            y = torch.randint(0, classes, (batch_size,), device=dev)
            steps[name] = train_step(model, x, y, dt)
        else:
            steps[name] = inference_step(model, x, dt)
    with num_threads(threads):
        times = interleaved_times(steps, dev, repeats=repeats, warmup=warmup, progress=progress,
                                  desc=f"{mode} steps")
    ratios = paired_ratios(times, reference)
    return {
        name: {
            "batch": batch_size,
            **summarize(times[name], batch_size),
            "ratio_to_reference": ratios[name]["ratio"],
            "ratio_p25": ratios[name]["ratio_p25"],
            "ratio_p75": ratios[name]["ratio_p75"],
        }
        for name in models
    }
