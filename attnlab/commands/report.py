"""`attnlab report DIR`: tables, statistics and figures from an ablation folder."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write results.{csv,md,tex}, statistics and figures for an ablation folder")
    p.add_argument("dir", help="ablation folder (holds runs/<variant>_seed<k>/ and optionally profile.json)")
    p.add_argument("--policy", choices=("final", "best"), default="final",
                   help="epoch reported: final (default; no selection on val) or best val Top-1")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed")
    p.add_argument("--baseline", default="baseline", help="reference variant for deltas")
    p.add_argument("--data-root", default=None,
                   help="dataset root: draws the attention-map figure from its val images and the runs' checkpoints, "
                        "and, when its val split has boxes (Tiny ImageNet), scores localization")
    p.add_argument("--n-images", type=int, default=4, help="val images in the attention-map figure")
    p.add_argument("--block", default=None, help="block for the attention maps, e.g. layer2.3 (default: deepest >= 7x7)")
    p.add_argument("--no-figures", action="store_true", help="tables and statistics only")
    p.add_argument("--include-incomplete", action="store_true",
                   help="also report running/failed runs whose records check out (never one without summary.json)")
    p.add_argument("--strict", action="store_true",
                   help="stop with an error naming the file if any run is left out (missing, damaged or "
                        "inconsistent records) instead of reporting the others with a note")
    p.add_argument("--no-localization", action="store_true",
                   help="skip the weakly supervised localization (Grad-CAM boxes vs the val boxes)")
    p.add_argument("--loc-threshold", type=float, default=0.2,
                   help="Grad-CAM threshold for the localization box, of the map's [0, 1] range (default 0.2)")
    p.add_argument("--loc-images", type=int, default=4, help="val images in the localization-boxes figure")
    p.add_argument("--device", default="cpu", help="device for the attention maps and the localization")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report import write_report

    result = write_report(
        args.dir, data_root=args.data_root, policy=args.policy, alpha=args.alpha, n_boot=args.n_boot,
        seed=args.seed, baseline=args.baseline, make_figures=not args.no_figures, n_images=args.n_images,
        block=args.block, include_incomplete=args.include_incomplete, device=args.device, strict=args.strict,
        localization=not args.no_localization, loc_threshold=args.loc_threshold, loc_images=args.loc_images,
    )
    print()
    for name, path in result["paths"].items():
        print(f"wrote {name}: {path}")
    return 0
