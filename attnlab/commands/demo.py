"""`attnlab demo`: the README's main command (grows into the full CPU ablation)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the embedded demo (CPU scale)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from . import models

    return models.run(argparse.Namespace(backbone="resnet50", num_classes=200, image_size=64,
                                         variants="baseline,simam,ema,hybrid"))
