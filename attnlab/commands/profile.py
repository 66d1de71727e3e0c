"""`attnlab profile`: parameters, GMACs, attention work, latency and step time per variant."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="efficiency profile: parameters, GMACs, attention elementwise work, latency, step time",
        description="Profile the variants. Defaults for batches/repeats depend on the device "
        "(cpu: latency batches 1,16, train batch 16, 10 repeats, 2 warm-up; cuda: 1,256, 128, 50, 10).",
    )
    p.add_argument("--variants", default="baseline,simam,ema,hybrid")
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--num-classes", type=int, default=200)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:n]")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="bf16/fp16 run under torch.autocast")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--latency-batches", type=_ints, default=None, metavar="B1,B2",
                   help="inference batch sizes to time")
    p.add_argument("--train-batch", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None, help="timed calls per figure")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first")
    p.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default: torch's)")
    p.add_argument("--model-kwargs", type=_json_object, default=None, metavar="JSON",
                   help='extra create_model arguments, e.g. \'{"attention_kwargs": {"ema": {"factor": 16}}}\'')
    p.add_argument("--no-latency", action="store_true", help="skip inference latency")
    p.add_argument("--no-train", action="store_true", help="skip training step times")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write every figure as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..profiling import format_profile_table, profile_variants

    try:
        result = profile_variants(
            [v.strip() for v in args.variants.split(",") if v.strip()],
            backbone=args.backbone, num_classes=args.num_classes, image_size=args.image_size,
            device=args.device, dtype=args.dtype, channels_last=args.channels_last,
            latency_batches=args.latency_batches, train_batch=args.train_batch,
            repeats=args.repeats, warmup=args.warmup, threads=args.threads,
            model_kwargs=args.model_kwargs, measure_latency=not args.no_latency,
            measure_train=not args.no_train, progress=sys.stderr.isatty(),
        )
    except (ValueError, RuntimeError) as err:  # a variant, size or device this machine cannot profile
        from ..errors import AttnlabError

        raise AttnlabError(str(err)) from None
    print(format_profile_table(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0
