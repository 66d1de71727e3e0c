"""Training images/s per variant along an optimisation ladder, measured side by side in one run.

Rungs (each adds to the one before):

  eager-fp32             NCHW, float32, eager PyTorch
  eager-bf16-cl          bf16 autocast + channels_last (SimAM fused per ``--fused``)
  eager-bf16-cl-graph    the whole step (forward, backward, optimizer) as one CUDA graph
  compile-bf16-cl        torch.compile(model)
  compile-bf16-cl-graph  the compiled step captured in one CUDA graph

The graph rungs run on CUDA only. A step is what the trainer does: ``create_model``, the
optimizer from ``build_optimizer(model, TrainConfig())`` (SGD, nesterov, the study's
param groups), cross-entropy, autocast where selected. Inputs are synthetic random tensors
already on the device (two sets, alternated), so this is the model's rate alone; the data
pipeline's own rate is ``benchmarks/data_pipeline.py``. With ``--upsample-from 64`` the
64x64 batch is upsampled to ``--image-size`` on the device inside the step.

Within a rung the variants are timed in rotating order, round after round; a variant's
step-time ratio to the baseline is the median of its per-round ratios, so drift on a
shared machine cancels. Speed-ups are each variant's median step time on ``eager-fp32``
over its median on the rung. A variant name may carry ``+legacy-ema`` and/or
``+eager-simam`` (e.g. ``hybrid+legacy-ema+eager-simam``): the same model with the earlier
EMA structure / SimAM's eager path, to measure what the kernels changed. ``--micro`` adds the attention modules alone at every
ResNet-50 site shape (SimAM eager/compile/triton; EMA's fold and view paths and the
legacy structure), ``--latency`` the eval forward latency (eager and CUDA graph), ``--ops``
the ATen ops one eager training step dispatches (about one kernel launch each on a GPU).

    python benchmarks/train_throughput.py --device cpu --batch 8 --rounds 3     # small, CPU
    python benchmarks/train_throughput.py --device cuda --json out.json         # H100
    python benchmarks/train_throughput.py --device cuda --no-ladder --micro --latency
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import platform
import statistics
import sys
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

from attnlab.attention import EMA, SimAM
from attnlab.attention import fused as fz
from attnlab.attention.ema import ema_reference
from attnlab.config import TrainConfig
from attnlab.engine.optim import build_optimizer
from attnlab.models import create_model

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
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:n]")
    p.add_argument("--variants", default="baseline,simam,ema,hybrid")
    p.add_argument("--rungs", default=None, help=f"comma list; default: all that apply ({', '.join(RUNGS)})")
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--num-classes", type=int, default=200)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--upsample-from", type=int, default=None, help="make batches at this side, upsample on the device")
    p.add_argument("--batch", type=int, default=None, help="default: 256 on cuda, 8 on cpu")
    p.add_argument("--steps", type=int, default=None, help="steps per timed block (default: 20 cuda, 2 cpu)")
    p.add_argument("--rounds", type=int, default=None, help="timed blocks per variant (default: 5 cuda, 3 cpu)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 10 cuda, 2 cpu)")
    p.add_argument("--fused", default=fz.get_fused(), choices=fz.MODES, help="SimAM implementation")
    p.add_argument("--threads", type=int, default=None, help="CPU intra-op threads")
    p.add_argument("--micro", action="store_true", help="also time the attention modules alone")
    p.add_argument("--latency", action="store_true", help="also time eval forward latency (eager, CUDA graph)")
    p.add_argument("--latency-batch", type=int, default=1)
    p.add_argument("--latency-calls", type=int, default=None, help="timed calls (default: 200 cuda, 10 cpu)")
    p.add_argument("--ops", action="store_true", help="also count ATen ops per eager training step")
    p.add_argument("--no-ladder", action="store_true", help="only the --micro / --latency / --ops sections")
    p.add_argument("--micro-layout", default="cl", choices=["cl", "nchw"])
    p.add_argument("--micro-compile", action="store_true",
                   help="include torch.compile of EMA (and of SimAM on CPU): slow to compile")
    p.add_argument("--micro-steps", type=int, default=None, help="calls per timed block (default: 20 cuda, 3 cpu)")
    p.add_argument("--json", type=Path, default=None, help="write every figure here (rewritten after each rung)")
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device.startswith("cuda")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    defaults = {"batch": (256, 8), "steps": (20, 2), "rounds": (5, 3), "warmup": (10, 2), "micro_steps": (20, 3),
                "latency_calls": (200, 10)}
    for key, (on_gpu, on_cpu) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, on_gpu if cuda else on_cpu)
    names = args.rungs.split(",") if args.rungs else [r for r in RUNGS if cuda or not r.endswith("-graph")]
    args.rungs = [Rung.parse(n.strip()) for n in names]
    if not cuda and any(r.graph for r in args.rungs):
        raise SystemExit("graph rungs need CUDA")
    return args


def print_table(result: dict[str, Any]) -> None:
    fp32 = result["rungs"].get("eager-fp32", {}).get("variants", {})
    width = max([9] + [len(v) for r in result["rungs"].values() for v in [*r["variants"], *r["errors"]]])
    print(f"\n{'rung':<23} {'variant':<{width}} {'step ms':>9} {'img/s':>9} {'vs base':>8} {'speed-up':>9} {'compile s':>9}")
    for rung, res in result["rungs"].items():
        for v, f in res["variants"].items():
            up = fp32[v]["step_ms"] / f["step_ms"] if v in fp32 else float("nan")
            ratio = f.get("ratio_vs_baseline", float("nan"))
            comp = f"{f['compile_s']:.0f}" if f.get("compile_s") else ""
            print(f"{rung:<23} {v:<{width}} {f['step_ms']:>9.2f} {f['images_per_s']:>9,.0f} {ratio:>8.3f} {up:>8.2f}x {comp:>9}")
        for v, e in res["errors"].items():
            print(f"{rung:<23} {v:<{width}} FAILED: {e[:200]}")
    if "micro" in result:
        print(f"\nattention modules alone (fwd+bwd, {result['micro']['dtype']}, {result['micro']['layout']}, batch {result['micro']['batch']})")
        for row in result["micro"]["rows"]:
            if "error" in row:
                print(f"  stage {row['stage']} {row['kind']:<5} {row['impl']:<8} FAILED: {row['error'][:150]}")
                continue
            bw = f"{row['gb_per_s']:8.0f} GB/s" if "gb_per_s" in row else ""
            print(f"  stage {row['stage']} {row['kind']:<5} {row['impl']:<8} {str(row['shape']):<22} "
                  f"{row['ms']:8.3f} ms  x{row['blocks']} blocks = {row['ms_all_blocks']:8.3f} ms {bw}")
    if "ops" in result:
        print("\nATen ops per eager training step (about one kernel launch each on a GPU; copies in brackets)")
        for rung, per in result["ops"].items():
            print(f"  {rung:<15} " + "  ".join(f"{v} {c['ops']} ({c['copy_ops']})" for v, c in per.items()))
    if "latency" in result:
        lat = result["latency"]
        print(f"\neval latency, batch {lat['batch']} (median / p95 ms over {lat['calls']} calls)")
        for v, figs in lat["variants"].items():
            parts = [f"{k} {f['median_ms']:.3f} / {f['p95_ms']:.3f}" for k, f in figs.items() if isinstance(f, dict)]
            print(f"  {v:<9} " + "   ".join(parts) + (f"   graph FAILED: {figs['graph_error'][:120]}" if "graph_error" in figs else ""))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    fz.set_fused(args.fused)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    side = f"{args.upsample_from}->{args.image_size}" if args.upsample_from else str(args.image_size)
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "environment": environment(device), "batch": args.batch, "image_size": side,
        "steps_per_block": args.steps, "rounds": args.rounds, "warmup": args.warmup,
        "input": "synthetic random tensors already on the device", "rungs": {},
    }

    def save() -> None:
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2))

    print(f"{result['environment'].get('gpu') or result['environment']['cpu']}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, batch {args.batch}, {side}px, SimAM fused={args.fused}", flush=True)
    if args.micro:
        result["micro"] = micro(args, device)
        save()
    if args.latency:
        result["latency"] = latency(args, device)
        save()
    if args.ops:
        result["ops"] = count_ops(args, device)
        save()
    if not args.no_ladder:
        setups: dict[str, Setup] = {}
        held: Rung | None = None  # the rung whose models are still alive
        for rung in args.rungs:
            start = time.perf_counter()
            base = Rung.parse(rung.name.removesuffix("-graph")) if rung.graph else rung
            if rung.graph and held == base:
                setups, errors = add_graphs(setups, rung)
            else:
                release(setups, device, held is not None and held.compile)
                setups, errors = build_setups(rung, args, device)
            held = base
            result["rungs"][rung.name] = measure(setups, errors, args, device)
            result["rungs"][rung.name]["wall_s"] = time.perf_counter() - start
            save()
            print(f"[{rung.name}] done in {time.perf_counter() - start:.0f} s", flush=True)
        release(setups, device, held is not None and held.compile)
    print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
