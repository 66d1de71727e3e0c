"""The training-throughput ladder behind ``benchmarks/train_throughput.py``: models, rungs,
interleaved timing, the attention micro-benchmark, op counts and latency.

The script is a thin command line over this module; see its docstring for the rungs and
the method. Functions take the script's parsed options (any object with those attributes).
"""

from __future__ import annotations

import argparse  # noqa: F401  (settings objects are argparse Namespaces)
import contextlib
import functools
import gc
import os
import platform
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..attention import EMA, SimAM
from ..attention import fused as fz
from ..attention.ema import ema_reference
from ..config import TrainConfig
from ..engine.optim import build_optimizer
from ..models import create_model

RUNGS = ("eager-fp32", "eager-bf16-cl", "eager-bf16-cl-graph", "compile-bf16-cl", "compile-bf16-cl-graph")


@dataclass(frozen=True)
class Rung:
    name: str
    bf16: bool
    channels_last: bool
    compile: bool
    graph: bool

    @classmethod
    def parse(cls, name: str) -> Rung:
        if name not in RUNGS:
            raise SystemExit(f"unknown rung {name!r}; known: {', '.join(RUNGS)}")
        return cls(name, "bf16" in name, "-cl" in name, name.startswith("compile"), name.endswith("-graph"))


# ------------------------------------------------------------------------ helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_block(fn: Callable[[], Any], n: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` over ``n`` back-to-back calls (CUDA events on a GPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / n
    begin = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - begin) / n


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    # cache_enabled=False: required inside CUDA graph capture; each weight is used once per
    # step in these models, so the cache would save nothing anyway.
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "device": str(device),
        "fused_simam": fz.get_fused(),
    }
    try:
        env["cpu"] = next(
            line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        env["cpu"] = platform.processor()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, sm_count=props.multi_processor_count,
                   gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
        with contextlib.suppress(ImportError):
            import triton

            env["triton"] = triton.__version__
    return env


# -------------------------------------------------------------------- train steps
MODIFIERS = ("legacy-ema", "eager-simam")


def build_variant(name: str, args: argparse.Namespace) -> nn.Module:
    """``create_model(variant)``; ``+legacy-ema`` / ``+eager-simam`` swap in the earlier
    implementations (EMA's first structure, SimAM's eager path) to measure what changed."""
    variant, *mods = name.split("+")
    unknown = set(mods) - set(MODIFIERS)
    if unknown:
        raise SystemExit(f"unknown variant modifier(s) {sorted(unknown)}; known: {MODIFIERS}")
    model = create_model(variant, backbone=args.backbone, num_classes=args.num_classes)
    for module in model.modules():
        if isinstance(module, EMA) and "legacy-ema" in mods:
            module.forward = functools.partial(legacy_ema_forward, module)
        if isinstance(module, SimAM) and "eager-simam" in mods:
            module.fused = "eager"
    return model



class Setup:
    """One variant on one rung: model, optimizer, static inputs and a ``step()``."""

    def __init__(self, variant: str, rung: Rung, args: argparse.Namespace, device: torch.device) -> None:
        self.variant, self.rung, self.device = variant, rung, device
        torch.manual_seed(0)
        model = build_variant(variant, args).to(device)
        self.fmt = torch.channels_last if rung.channels_last else torch.contiguous_format
        self.model = model.to(memory_format=self.fmt).train()
        self.optimizer = build_optimizer(self.model, TrainConfig(lr=0.01))
        self.net: nn.Module = torch.compile(self.model) if rung.compile else self.model
        side = args.upsample_from or args.image_size
        self.size = args.image_size
        self.inputs = [
            (torch.randn(args.batch, 3, side, side, device=device).contiguous(memory_format=self.fmt),
             torch.randint(0, args.num_classes, (args.batch,), device=device))
            for _ in range(2)
        ]
        self.calls = 0
        self.compile_s: float | None = None
        self.graph: torch.cuda.CUDAGraph | None = None

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size:  # upsample on the device, as the loader's train_size does
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
            x = x.contiguous(memory_format=self.fmt)
        with autocast(self.device, self.rung.bf16):
            loss = F.cross_entropy(self.net(x), y)
        loss.backward()
        return loss

    def eager_step(self) -> None:
        x, y = self.inputs[self.calls % 2]
        self.calls += 1
        self.optimizer.zero_grad(set_to_none=True)
        self._forward_backward(x, y)
        self.optimizer.step()

    def step(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self.eager_step()

    def warm_up(self, steps: int) -> None:
        start = time.perf_counter()
        self.eager_step()  # the first call compiles when the rung compiles
        sync(self.device)
        if self.rung.compile:
            self.compile_s = time.perf_counter() - start
        for _ in range(max(0, steps - 1)):
            self.eager_step()
        if self.rung.graph:
            self.capture()
        sync(self.device)

    def capture(self) -> None:
        """Whole-step CUDA graph (PyTorch's documented whole-network capture recipe)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.eager_step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        x, y = self.inputs[0]  # static inputs: a real loader would copy each batch into them
        with torch.cuda.graph(graph):
            self._forward_backward(x, y)
            self.optimizer.step()
        self.graph = graph


def build_setups(rung: Rung, args: argparse.Namespace, device: torch.device) -> tuple[dict[str, Setup], dict[str, str]]:
    setups: dict[str, Setup] = {}
    errors: dict[str, str] = {}
    for v in args.variants:
        try:
            s = Setup(v, rung, args, device)
            s.warm_up(args.warmup)
            setups[v] = s
        except Exception as err:  # one failing variant must not cost the others' figures
            errors[v] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
        gc.collect()
    return setups, errors


def add_graphs(setups: dict[str, Setup], rung: Rung) -> tuple[dict[str, Setup], dict[str, str]]:
    """The same models (compiled ones too, so nothing recompiles), steps captured as graphs."""
    kept, errors = {}, {}
    for v, s in setups.items():
        try:
            s.rung = rung
            s.capture()
            kept[v] = s
        except Exception as err:
            errors[v] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
    return kept, errors


def measure(setups: dict[str, Setup], errors: dict[str, str], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    times: dict[str, list[float]] = {v: [] for v in setups}
    order = list(setups)
    for r in range(args.rounds):
        k = r % max(1, len(order))
        for v in order[k:] + order[:k]:  # rotate who goes first
            times[v].append(time_block(setups[v].step, args.steps, device))
    out: dict[str, Any] = {"variants": {}, "errors": errors}
    base = times.get("baseline")
    for v, ts in times.items():
        med = statistics.median(ts)
        fig: dict[str, Any] = {
            "step_ms": med * 1e3, "step_ms_rounds": [t * 1e3 for t in ts],
            "images_per_s": args.batch / med, "compile_s": setups[v].compile_s,
        }
        if base:
            ratios = [t / b for t, b in zip(ts, base, strict=True)]
            fig["ratio_vs_baseline"] = statistics.median(ratios)
            fig["ratio_vs_baseline_range"] = [min(ratios), max(ratios)]
        out["variants"][v] = fig
    return out


def release(setups: dict[str, Setup], device: torch.device, compiled: bool) -> None:
    setups.clear()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if compiled:
        torch._dynamo.reset()


# ----------------------------------------------------------------- micro benchmark
def legacy_ema_forward(m: EMA, x: torch.Tensor) -> torch.Tensor:
    """EMA as first written: the official structure (fold groups into the batch, cat/split)."""
    return ema_reference(m, x)


def _with_strategy(m: EMA, strategy: str, x: torch.Tensor) -> torch.Tensor:
    m.strategy = strategy
    try:
        return m(x)
    finally:
        del m.strategy  # back to the class default


def site_shapes(image_size: int) -> list[tuple[int, int, int, int]]:
    """(stage, blocks, channels at post_conv2, side) of ResNet-50's four stages."""
    side = image_size // 4
    return [(1, 3, 64, side), (2, 4, 128, side // 2), (3, 6, 256, side // 4), (4, 3, 512, side // 8)]


def micro(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """fwd+bwd ms of each attention implementation at each site; SimAM's GB/s vs its floor."""
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    fmt = torch.channels_last if args.micro_layout == "cl" else torch.contiguous_format
    simam_modes = ["eager"] + (["compile"] if cuda or args.micro_compile else []) + (["triton"] if cuda else [])
    rows: list[dict[str, Any]] = []
    for stage, blocks, ch, side in site_shapes(args.image_size):
        for kind, channels in (("simam", ch), ("ema", ch * 4)):
            x = torch.randn(args.batch, channels, side, side, device=device, dtype=dtype)
            x = x.contiguous(memory_format=fmt).requires_grad_()
            g = torch.randn_like(x)
            impls: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
            if kind == "simam":
                for mode in simam_modes:
                    impls[mode] = SimAM(fused=mode)
            else:
                m = EMA(channels, 32).to(device=device, dtype=dtype, memory_format=fmt)
                impls["auto"] = m  # the path EMA picks by itself (module docstring)
                for strategy in ("fold", "view"):
                    impls[strategy] = lambda t, m=m, s=strategy: _with_strategy(m, s, t)
                impls["legacy"] = lambda t, m=m: legacy_ema_forward(m, t)
                if args.micro_compile:
                    impls["compile"] = torch.compile(m)
            for name, fn in impls.items():
                def call(fn=fn, x=x, g=g) -> None:
                    fn(x).backward(g)
                try:
                    for _ in range(3):
                        call()
                    sec = statistics.median(time_block(call, args.micro_steps, device) for _ in range(5))
                except Exception as err:
                    rows.append({"stage": stage, "kind": kind, "impl": name, "error": f"{type(err).__name__}: {err}"})
                    continue
                row = {"stage": stage, "blocks": blocks, "kind": kind, "impl": name,
                       "shape": list(x.shape), "ms": sec * 1e3, "ms_all_blocks": sec * 1e3 * blocks}
                if kind == "simam":  # floor: read x, write y; read x and grad, write dx
                    row["gb_per_s"] = 5 * x.numel() * x.element_size() / sec / 1e9
                rows.append(row)
    torch._dynamo.reset()
    return {"dtype": str(dtype), "layout": args.micro_layout, "batch": args.batch, "rows": rows}


# ------------------------------------------------------------------ dispatched ops
class _OpCounter(TorchDispatchMode):
    """Counts ATen ops as dispatched: in eager mode on a GPU each is about one kernel launch."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.total += 1
        if func.overloadpacket.__name__ in ("clone", "copy_", "_to_copy", "contiguous", "cat"):
            self.copies += 1
        return func(*args, **(kwargs or {}))


def count_ops(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """ATen ops per eager training step (forward, backward, optimizer) for each variant."""
    out: dict[str, Any] = {}
    for rung in (Rung.parse("eager-fp32"), Rung.parse("eager-bf16-cl")):
        for v in args.variants:
            s = Setup(v, rung, argparse.Namespace(**{**vars(args), "batch": 2}), device)
            s.eager_step()  # optimizer state exists from here on
            with _OpCounter() as counter:
                s.eager_step()
            out.setdefault(rung.name, {})[v] = {"ops": counter.total, "copy_ops": counter.copies}
    return out


# ------------------------------------------------------------------ inference latency
def latency(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Batch-``--latency-batch`` eval forward, bf16 autocast + channels_last: eager, CUDA graph."""
    out: dict[str, Any] = {"batch": args.latency_batch, "calls": args.latency_calls, "variants": {}}
    for v in args.variants:
        torch.manual_seed(0)
        model = build_variant(v, args).to(device)
        model = model.to(memory_format=torch.channels_last).eval()
        x = torch.randn(args.latency_batch, 3, args.image_size, args.image_size, device=device)
        x = x.contiguous(memory_format=torch.channels_last)
        bf16 = device.type == "cuda"

        def forward(model=model, x=x, bf16=bf16) -> torch.Tensor:
            with torch.inference_mode(), autocast(device, bf16):
                return model(x)

        figs: dict[str, Any] = {}
        calls: dict[str, Callable[[], Any]] = {"eager": forward}
        if device.type == "cuda":
            try:
                calls["graph"] = _graphed(forward)
            except Exception as err:
                figs["graph_error"] = f"{type(err).__name__}: {err}"
        for name, fn in calls.items():
            for _ in range(10):
                fn()
            ms = sorted(time_block(fn, 1, device) * 1e3 for _ in range(args.latency_calls))
            figs[name] = {"median_ms": statistics.median(ms), "p95_ms": ms[int(0.95 * (len(ms) - 1))]}
        out["variants"][v] = figs
        del model, calls
        gc.collect()
    return out


def _graphed(fn: Callable[[], Any]) -> Callable[[], Any]:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


# ---------------------------------------------------------------------------- main
