"""`attnlab models`: the variants, where their attention sits, and their parameter counts."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the variants with parameter counts and a forward check")
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--num-classes", type=int, default=200)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--variants", default="baseline,simam,ema,hybrid")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..models import count_parameters, create_model, describe, forward_check

    torch.manual_seed(0)
    print(f"{'variant':<10}{'total':>12}{'trainable':>12}{'attention':>11}  forward")
    for variant in args.variants.split(","):
        model = create_model(variant, backbone=args.backbone, num_classes=args.num_classes)
        counts = count_parameters(model)
        added = counts["total"] - counts["backbone"] - counts["head"]
        shape = forward_check(model, image_size=args.image_size)
        print(f"{variant:<10}{counts['total']:>12,}{counts['trainable']:>12,}{added:>11,}  "
              f"{tuple(shape)} finite")
    print()
    print(describe(create_model("hybrid", backbone=args.backbone, num_classes=args.num_classes)))
    return 0
