"""`attnlab ablate`: the whole study in one resumable command (train grid, profile, report)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate", help="run the variant x seed grid, profile the variants and write the report",
        description="Example: attnlab ablate --config configs/paper.yaml --seeds 0,1,2 --out runs/paper. "
        "Rerunning skips finished runs and resumes interrupted ones.",
    )
    p.add_argument("--config", required=True, help="YAML config, e.g. configs/paper.yaml")
    p.add_argument("--out", help="ablation folder (default: the config's output_dir)")
    p.add_argument("--variants", help="comma-separated, e.g. baseline,hybrid (default: the config's)")
    p.add_argument("--seeds", help="comma-separated, e.g. 0,1,2 (default: the config's)")
    p.add_argument("--sweep", choices=("sites",), default=None,
                   help="train a built-in sweep instead of the variants: 'sites' = the hybrid at 7 "
                   "insertion layouts (default, both at pre_add in either order, stages 3-4, stages "
                   "1-2, last block per stage, both at post_add), one table row each")
    p.add_argument("--no-profile", action="store_true", help="skip the efficiency profile")
    p.add_argument("--no-report", action="store_true", help="skip writing the report")
    p.add_argument("--profile-device", default=None, help="device for the profile (default: the training device)")
    p.add_argument("--restart", default=None, metavar="RUN[,RUN]",
                   help="discard these runs' records first and train them anew, e.g. ema_seed0 "
                   "(after a divergence, with new settings under variant_overrides)")
    p.add_argument("--wait", action="store_true", help="if another process holds the folder, wait for it")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=10")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError, load_config
    from ..sweep import builtin_sweep, check_sweep

    overrides = list(args.overrides)
    if args.variants:
        overrides.append(f"variants=[{args.variants}]")
    if args.seeds:
        overrides.append(f"seeds=[{args.seeds}]")
    cfg = load_config(args.config, overrides)
    if args.sweep:
        cfg.sweep = builtin_sweep(args.sweep, cfg.model.backbone)
    if cfg.sweep is not None and args.variants:
        raise ConfigError("--variants does not apply to a sweep: its rows are the sweep's layouts "
                          "(add one with placements [] for a baseline row)")
    check_sweep(cfg)
    restart = [r.strip() for r in args.restart.split(",") if r.strip()] if args.restart else None
    return run_study(cfg, args.out or cfg.output_dir, profile=not args.no_profile,
                     report=not args.no_report, profile_device=args.profile_device,
                     restart=restart, wait=args.wait)


def run_study(cfg, out, *, profile: bool = True, report: bool = True, profile_device: str | None = None,
              profile_kwargs: dict | None = None, restart: list[str] | None = None, wait: bool = False) -> int:
    """Train the grid, then (rank 0) profile and report. Shared by `ablate` and `demo`.

    The profile is taken in fp32 NCHW (``profile.json``) and, when the runs trained in
    another dtype or memory format, in that format too (``profile_train.json``)."""
    import torch

    from ..ablation import profile_grid, run_grid, training_format
    from ..engine.distributed import init_distributed
    from ..sweep import reference, run_labels

    run_grid(cfg, out, restart=restart, wait=wait)
    info = init_distributed(cfg.train.device)
    if not info.is_main:
        return 0
    if profile:
        from ..data.cache import open_dataset

        data = open_dataset(cfg.data.root, cfg.data.cache_dir, size=cfg.data.image_size, progress=False)
        device = profile_device or cfg.train.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        size = cfg.data.augment.train_size or data.image_size
        common = dict(image_size=size, num_classes=len(data.classes), device=device, **(profile_kwargs or {}))
        print(f"profiling {', '.join(run_labels(cfg))} on {device} at {size}x{size} (fp32) ...")
        profile_grid(cfg, out, **common)
        dtype, channels_last = training_format(cfg, device)
        if dtype != "fp32" or channels_last:
            fmt = dtype + (" + channels_last" if channels_last else "")
            print(f"profiling again in the training format ({fmt}) ...")
            profile_grid(cfg, out, filename="profile_train.json", dtype=dtype, channels_last=channels_last, **common)
    if report:
        from ..report import write_report

        write_report(out, data_root=cfg.data.root, baseline=reference(cfg))
    return 0
