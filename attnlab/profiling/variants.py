"""``profile_variants``: parameters, compute, latency and training step time of variants."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from ..models import create_model
from . import timing
from .attention_ops import OPS_CONVENTION, attention_ops
from .environment import environment
from .flops import MACS_CONVENTION, count_macs
from .params import parameter_profile
from .runtime import resolve_device, resolve_dtype

SCHEMA_VERSION = 1
REFERENCE_SIZE = 224  # the size papers quote GMACs at

LATENCY_CONVENTION = (
    "eval() + torch.inference_mode, warm-up calls first, then one timed call per sample: "
    "CUDA events on GPU, torch.utils.benchmark.Timer with an explicit thread count on CPU; "
    "images_per_s = batch / median; peak_mem_mb = torch.cuda.max_memory_allocated (GPU only)"
)
TRAIN_CONVENTION = (
    "one SGD step (forward, cross-entropy, backward, update) per sample; the variants take "
    "turns in rotating order in one process; ratio_to_baseline = median of per-round ratios"
)


def default_settings(device: str | torch.device) -> dict[str, Any]:
    """Measurement sizes that finish in minutes: GPU-scale on CUDA, small on a CPU."""
    if torch.device(device).type == "cuda":
        return {"latency_batches": [1, 256], "train_batch": 128, "repeats": 50, "warmup": 10}
    return {"latency_batches": [1, 16], "train_batch": 16, "repeats": 10, "warmup": 2}


def _jsonable(value: Any) -> Any:
    """``value`` with dataclasses (placements) and tuples turned into JSON types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


@contextlib.contextmanager
def _cudnn_benchmark(device: torch.device) -> Iterator[None]:
    """cuDNN autotuning on for CUDA measurements (fixed shapes), restored afterwards."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = before or device.type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def compute_profile(model: torch.nn.Module, image_size: int) -> dict[str, Any]:
    """MACs (FlopCounterMode) and attention elementwise/reduction ops of one image."""
    macs = count_macs(model, image_size)
    ops = attention_ops(model, image_size)
    return {
        "gmacs": macs["total"] / 1e9,
        "gmacs_attention": macs["attention"] / 1e9,
        "macs": macs["total"],
        "macs_attention": macs["attention"],
        "macs_attention_by_kind": macs["by_kind"],
        # None, not a partial sum, when some attention kind has no formula (n/a in tables)
        "attention_gops": None if ops["uncounted"] else ops["gops"],
        "attention_ops": ops,
    }


def profile_variants(
    variants: Sequence[str] = ("baseline", "simam", "ema", "hybrid"),
    *,
    backbone: str = "resnet50",
    num_classes: int = 200,
    image_size: int = 64,
    device: str = "cpu",
    dtype: str = "fp32",
    channels_last: bool = False,
    latency_batches: Sequence[int] | None = None,
    train_batch: int | None = None,
    repeats: int | None = None,
    warmup: int | None = None,
    threads: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    measure_latency: bool = True,
    measure_train: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Profile each variant; every figure is JSON-able (``json.dumps`` round-trips it).

    ``None`` for ``latency_batches``, ``train_batch``, ``repeats``, ``warmup`` takes
    :func:`default_settings` for the device; ``threads=None`` keeps torch's current count.

    Schema::

        {"schema": 1,
         "config": {variants, backbone, num_classes, image_size, sizes, latency_batches,
                    train_batch, repeats, warmup, model_kwargs, seed},
         "conventions": {"gmacs", "attention_ops", "latency", "train": str},
         "environment": {device, device_name, dtype, autocast, channels_last, threads,
                         cpu_count, torch, torchvision, timm, python, platform, cuda,
                         cudnn, cudnn_benchmark, attention_impl: {simam, ema_strategy},
                         commit, commit_dirty},
         "reference": "baseline",            # the train ratio's denominator
         "variants": {name: {
             "params": {"total", "trainable", "added", "backbone", <kind>..., "head": int},
             "compute": {"<size>": {            # sizes = [image_size, 224], per image
                 "gmacs", "gmacs_attention": float, "macs", "macs_attention": int,
                 "macs_attention_by_kind": {kind: int},
                 "attention_gops": float | None, # elementwise + reduction, 1e9 ops;
                                                 # None if a kind has no formula
                 "attention_ops": {"elementwise", "reduction", "total": int, "gops": float,
                                   "by_kind": {kind: {modules, elementwise, reduction,
                                                      total}}, "uncounted": [kind]}}},
             "latency": {"<batch>": {"batch", "median_ms", "p95_ms", "mean_ms", "min_ms",
                                     "images_per_s", "samples", "peak_mem_mb"}},  # {} if off
             "train": {"batch", "median_ms", "p95_ms", "mean_ms", "min_ms", "images_per_s",
                       "samples", "ratio_to_baseline", "ratio_p25", "ratio_p75"} | None}}}
    """
    variants = list(variants)
    if not variants:
        raise ValueError("no variants to profile")
    dev = resolve_device(device)
    resolve_dtype(dtype)
    settings = default_settings(dev)
    batches = [int(b) for b in (latency_batches if latency_batches is not None else settings["latency_batches"])]
    train_batch = int(train_batch if train_batch is not None else settings["train_batch"])
    repeats = int(repeats if repeats is not None else settings["repeats"])
    warmup = int(warmup if warmup is not None else settings["warmup"])
    threads = int(threads if threads is not None else torch.get_num_threads())
    sizes = list(dict.fromkeys([image_size, REFERENCE_SIZE]))
    kwargs = dict(model_kwargs or {})

    torch.manual_seed(seed)
    models = {v: create_model(v, backbone=backbone, num_classes=num_classes, **kwargs) for v in variants}
    per_variant: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        per_variant[name] = {
            "params": parameter_profile(model),
            "compute": {str(s): compute_profile(model, s) for s in sizes},
            "latency": {},
            "train": None,
        }
    reference = "baseline" if "baseline" in models else variants[0]
    with _cudnn_benchmark(dev):
        if measure_latency:
            for name, model in models.items():
                for batch in batches:
                    per_variant[name]["latency"][str(batch)] = timing.measure_latency(
                        model, batch_size=batch, image_size=image_size, device=dev, dtype=dtype,
                        channels_last=channels_last, warmup=warmup, repeats=repeats,
                        threads=threads, progress=progress, label=name,
                    )
                if dev.type == "cuda":  # one model on the GPU at a time: peak memory is its own
                    model.to("cpu")
                    torch.cuda.empty_cache()
        if measure_train:
            steps = timing.measure_interleaved(
                models, mode="train", batch_size=train_batch, image_size=image_size, device=dev,
                dtype=dtype, channels_last=channels_last, warmup=warmup, repeats=repeats,
                threads=threads, reference=reference, progress=progress,
            )
            for name, figures in steps.items():
                figures["ratio_to_baseline"] = figures.pop("ratio_to_reference")
                per_variant[name]["train"] = figures
        env = environment(dev, dtype, channels_last, threads)
    del models
    return {
        "schema": SCHEMA_VERSION,
        "config": {
            "variants": variants, "backbone": backbone, "num_classes": num_classes,
            "image_size": image_size, "sizes": sizes, "latency_batches": batches,
            "train_batch": train_batch, "repeats": repeats, "warmup": warmup,
            "model_kwargs": _jsonable(kwargs), "seed": seed,
            "measure_latency": measure_latency, "measure_train": measure_train,
        },
        "conventions": {
            "gmacs": MACS_CONVENTION, "attention_ops": OPS_CONVENTION,
            "latency": LATENCY_CONVENTION, "train": TRAIN_CONVENTION,
        },
        "environment": env,
        "reference": reference,
        "variants": per_variant,
    }
