"""Attention overhead: training and inference step-time ratios of simam, ema and hybrid to
the baseline ResNet, measured side by side (interleaved, rotating order) in one process.

Absolute times on a shared machine drift; the per-round ratios do not, because every variant
sees the same conditions within a round. Prints a table and, with --json, writes every figure
plus the environment.

    python benchmarks/attention_overhead.py                       # CPU, small batches
    python benchmarks/attention_overhead.py --device cuda --dtype bf16 --channels-last
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from attnlab.models import create_model
from attnlab.profiling import environment, measure_interleaved, resolve_device


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="baseline,simam,ema,hybrid")
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--num-classes", type=int, default=200)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--train-batch", type=int, default=None, help="default: 16 on cpu, 128 on cuda")
    p.add_argument("--infer-batch", type=int, default=None, help="default: 16 on cpu, 256 on cuda")
    p.add_argument("--repeats", type=int, default=None, help="rounds; default: 10 on cpu, 50 on cuda")
    p.add_argument("--warmup", type=int, default=None, help="default: 2 on cpu, 10 on cuda")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def _iqr(figures: dict) -> str:
    return f"[{figures['ratio_p25']:.3f}, {figures['ratio_p75']:.3f}]"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
    except (RuntimeError, ValueError) as err:
        print(f"attention_overhead: error: {err}", file=sys.stderr)
        return 2
    cuda = device.type == "cuda"
    train_batch = args.train_batch or (128 if cuda else 16)
    infer_batch = args.infer_batch or (256 if cuda else 16)
    repeats = args.repeats or (50 if cuda else 10)
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    threads = args.threads or torch.get_num_threads()
    torch.backends.cudnn.benchmark = cuda

    torch.manual_seed(0)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    models = {v: create_model(v, backbone=args.backbone, num_classes=args.num_classes) for v in variants}
    common = dict(image_size=args.image_size, device=device, dtype=args.dtype,
                  channels_last=args.channels_last, warmup=warmup, repeats=repeats,
                  threads=threads, progress=sys.stderr.isatty())
    infer = measure_interleaved(models, mode="infer", batch_size=infer_batch, **common)
    train = measure_interleaved(models, mode="train", batch_size=train_batch, **common)
    env = environment(device, args.dtype, args.channels_last, threads)

    print(f"{args.backbone}, {args.image_size}x{args.image_size}, {env['device']} "
          f"({env['device_name']}), {args.dtype}, channels_last={args.channels_last}, "
          f"{threads} threads, torch {env['torch']}; {repeats} interleaved rounds after {warmup} warm-up")
    print(f"{'variant':<10}{'infer ms':>10}{'ratio':>8}{'[p25, p75]':>17}"
          f"{'train ms':>11}{'ratio':>8}{'[p25, p75]':>17}")
    print(f"{'':<10}{'b' + str(infer_batch):>10}{'':>25}{'b' + str(train_batch):>11}")
    for v in variants:
        i, t = infer[v], train[v]
        print(f"{v:<10}{i['median_ms']:>10.2f}{i['ratio_to_reference']:>8.3f}"
              f"{_iqr(i):>17}"
              f"{t['median_ms']:>11.2f}{t['ratio_to_reference']:>8.3f}"
              f"{_iqr(t):>17}")
    if args.json is not None:
        record = {"config": {**vars(args), "json": str(args.json), "threads": threads, "train_batch": train_batch,
                             "infer_batch": infer_batch, "repeats": repeats, "warmup": warmup},
                  "environment": env, "infer": infer, "train": train}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
