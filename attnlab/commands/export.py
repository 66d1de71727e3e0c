"""`attnlab export RUN_DIR --out DIR`: a trained run as a timm hub folder (safetensors only)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a trained run as model.safetensors + config.json + README.md (timm's hub layout)",
        description="Example: attnlab export runs/paper/runs/hybrid_seed0 --out export/hybrid; then "
        "timm.create_model('local-dir:export/hybrid', pretrained=True) after `import attnlab`.",
    )
    p.add_argument("run_dir", help="a finished run folder (holds summary.json and checkpoints/)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--policy", choices=("final", "best"), default="final",
                   help="final: the last epoch's weights (default); best: the best val Top-1 epoch")
    p.add_argument("--allow-incomplete", action="store_true", help="export a run that is not marked complete")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report.export import export_run

    paths = export_run(args.run_dir, args.out, policy=args.policy, allow_incomplete=args.allow_incomplete)
    for name, path in paths.items():
        print(f"wrote {name}: {path}")
    return 0
