"""`attnlab train`: one run of one variant (also under `torchrun -m attnlab train`)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train one variant (key=value overrides after the options)",
        description="Train one run. Example: attnlab train --config configs/demo.yaml variant=hybrid train.epochs=3",
    )
    p.add_argument("--config", help="YAML config (configs/paper.yaml, configs/demo.yaml)")
    p.add_argument("--resume", action="store_true", help="continue the run in its folder from checkpoints/last.pt")
    p.add_argument("--restart", action="store_true",
                   help="discard the run's records in its folder and start over (e.g. after a divergence)")
    p.add_argument("--wait", action="store_true", help="if another process holds the run folder, wait for it")
    p.add_argument("--run-dir", help="run folder (default: <output_dir>/<variant>_seed<seed>)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=0.02")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError, load_config
    from ..engine.trainer import train

    if args.resume and args.restart:
        raise ConfigError("--resume and --restart exclude each other: continue the run, or discard it")
    cfg = load_config(args.config, args.overrides)

    summary = train(cfg, run_dir=args.run_dir, resume=args.resume, restart=args.restart, wait=args.wait)
    if summary:
        best, final = summary["best"], summary["final"]
        print(json.dumps({"variant": summary["variant"], "best": best, "final": final,
                          "train_seconds_total": round(summary["train_seconds_total"], 1)}, indent=2))
    return 0
