"""`attnlab demo`: the README's main command — the whole ablation at CPU scale, in minutes.

It writes a small synthetic dataset in the exact Tiny ImageNet layout, trains the four
variants through the real code path (ResNet-50, the study's protocol shortened), profiles
them, writes the report and prints the results table. Pretrained weights cannot be
downloaded here, so it starts from random weights unless ``--weights FILE`` is given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole 4-variant ablation on synthetic data at CPU scale")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--weights", help="local pretrained backbone file (default: random init)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=2")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from .ablate import run_study

    out = Path(args.out)
    overrides = [f"output_dir={out}", f"data.root={out / 'tiny-imagenet-synthetic'}", *args.overrides]
    if args.weights:
        overrides.append(f"model.weights={args.weights}")
    cfg = load_config(CONFIG, overrides)
    if cfg.model.weights is None:
        print("note: pretrained ImageNet weights cannot be downloaded here, so the demo trains "
              "from random weights (pass --weights FILE to use a local ResNet-50 state_dict).")
    print(f"demo: {len(cfg.variants)} variants x {len(cfg.seeds)} seed(s), {cfg.train.epochs} epochs each, "
          f"synthetic data at {cfg.data.root}; results in {out}/")
    # CPU-scale measurements: enough repeats for a median and p95 without dominating the demo
    code = run_study(cfg, out, profile_kwargs={"latency_batches": (1, 8), "train_batch": 8, "repeats": 5, "warmup": 1})
    print()
    print(what_these_numbers_are(cfg))
    return code


def what_these_numbers_are(cfg) -> str:
    """The demo's last line: what its figures can and cannot say."""
    init = "random init" if cfg.model.weights is None else f"weights {cfg.model.weights}"
    seeds = "one seed" if len(cfg.seeds) == 1 else f"{len(cfg.seeds)} seeds"
    return (f"demo: synthetic data, {init}, {cfg.train.epochs} epochs, {seeds}: these numbers check that the "
            "pipeline runs end to end; they are not the study's answer (run `attnlab ablate --config "
            "configs/paper.yaml` on Tiny ImageNet for that).")
