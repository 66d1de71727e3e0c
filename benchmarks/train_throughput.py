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
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from attnlab.attention import fused as fz
from attnlab.profiling.throughput import (
    RUNGS,
    Rung,
    Setup,
    add_graphs,
    build_setups,
    count_ops,
    environment,
    latency,
    measure,
    micro,
    release,
)


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
