"""`attnlab ablate`: the whole study in one resumable command (train grid, profile, report)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate", help="run the variant x seed grid, profile the variants and write the report",
        description="Example: attnlab ablate --config configs/paper.yaml --seeds 0,1,2 --out runs/paper. "
        "Rerunning skips finished runs and resumes interrupted ones.",
    )
    p.add_argument("--config", help="YAML config, e.g. configs/paper.yaml (not needed with --status)")
    p.add_argument("--status", metavar="DIR", default=None,
                   help="list each run of the ablation folder DIR with its state, and exit")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process (default 1: "
                   "one after another in this process)")
    p.add_argument("--gpus", default=None, metavar="0,1,...", help="GPU ids handed out one per job")
    p.add_argument("--launcher", choices=("local", "slurm", "submitit-local"), default="local",
                   help="local processes, or a Slurm job array through submitit (slurm.* config keys: "
                   "partition, time_min, gpus, cpus, account, extra); submitit-local runs that path here")
    p.add_argument("--partition", default=None, help="Slurm partition (= slurm.partition)")
    p.add_argument("--time", type=int, default=None, metavar="MIN", help="Slurm time limit per job (= slurm.time_min)")
    p.add_argument("--account", default=None, help="Slurm account (= slurm.account)")
    p.add_argument("--no-wait", action="store_true", help="with --launcher slurm: submit and return")
    p.add_argument("--tuned", default=None, metavar="DIR",
                   help="also train each variant with its own tuned parameters (DIR from `attnlab tune`) "
                   "as rows <variant>_tuned beside the shared protocol")
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
    from ..study.sweep import builtin_sweep, check_sweep

    if args.status:
        return show_status(args.status)
    if not args.config:
        raise ConfigError("--config is required (e.g. --config configs/paper.yaml)")
    overrides = list(args.overrides)
    for flag, key in ((args.partition, "slurm.partition"), (args.time, "slurm.time_min"),
                      (args.account, "slurm.account")):
        if flag is not None:
            overrides.append(f"{key}={flag}")
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
    out = args.out or cfg.output_dir
    from ..study.executors import make_executor

    gpus = [int(g) for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    executor = make_executor(args.launcher, jobs=args.jobs, gpus=gpus, out=Path(out), cfg=cfg,
                             wait=not args.no_wait)
    tuned = None
    if args.tuned:
        from ..study.tune import read_best_params

        tuned = read_best_params(args.tuned, cfg.variants)
    return run_study(cfg, out, profile=not args.no_profile,
                     report=not args.no_report and not args.no_wait, profile_device=args.profile_device,
                     restart=restart, wait=args.wait, executor=executor, tuned=tuned)


def alias_profiles(out: Path, aliases: dict[str, str]) -> None:
    """Copy each variant's profile entry to its alias row (``hybrid_tuned`` <- ``hybrid``)."""
    import json

    from ..engine.checkpoint import atomic_write_text

    for name in ("profile.json", "profile_train.json"):
        path = out / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        variants = data.get("variants", {})
        for alias, variant in aliases.items():
            if variant in variants:
                variants[alias] = variants[variant]
        atomic_write_text(path, json.dumps(data, indent=2))


def show_status(folder: str) -> int:
    """``attnlab ablate --status DIR``: each run of the folder's plan and its state."""
    from ..config import ConfigError, load_config
    from ..study.executors import describe_run
    from ..study.plan import RunSpec, plan_runs

    record = Path(folder) / "ablation.yaml"
    if not record.is_file():
        raise ConfigError(f"{record} does not exist: {folder} is not an ablation folder (run `attnlab ablate` first)")
    cfg = load_config(record)
    specs = plan_runs(cfg, folder)
    known = {s.name for s in specs}
    for path in sorted((Path(folder) / "runs").glob("*_seed*")):  # tuned rows and other extra runs
        if path.is_dir() and path.name not in known:
            label, _, seed = path.name.rpartition("_seed")
            specs.append(RunSpec(label, int(seed) if seed.isdigit() else -1, cfg, path))
    counts: dict[str, int] = {}
    print(f"{'run':<28}{'status':<10}{'epochs':>8}  final top-1")
    for spec in specs:
        st = describe_run(spec)
        counts[st["status"]] = counts.get(st["status"], 0) + 1
        top1 = "-" if st["final_top1"] is None else f"{100 * st['final_top1']:.2f}%"
        holder = f"  ({st['holder']})" if "holder" in st else ""
        print(f"{st['run']:<28}{st['status']:<10}{st['epochs_done']:>4}/{st['epochs']:<3}  {top1}{holder}")
    print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return 0


def run_study(cfg, out, *, profile: bool = True, report: bool = True, profile_device: str | None = None,
              profile_kwargs: dict | None = None, restart: list[str] | None = None, wait: bool = False,
              executor=None, tuned=None) -> int:
    """Train the grid, then (rank 0) profile and report. Shared by `ablate` and `demo`.

    The profile is taken in fp32 NCHW (``profile.json``) and, when the runs trained in
    another dtype or memory format, in that format too (``profile_train.json``)."""
    import torch

    from ..engine.distributed import init_distributed
    from ..study.grid import profile_grid, run_grid, training_format
    from ..study.sweep import reference, run_labels

    run_grid(cfg, out, restart=restart, wait=wait, executor=executor, tuned=tuned)
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
        if tuned:  # a tuned row has its variant's architecture: the same efficiency figures
            alias_profiles(Path(out), {f"{v}_tuned": v for v in tuned})
    if report:
        from ..report import write_report

        write_report(out, data_root=cfg.data.root, baseline=reference(cfg))
    return 0
