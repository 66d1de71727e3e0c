"""`attnlab tune`: per-variant Optuna search over `tune.space`, scored on held-out train images."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="tune each variant's own parameters with Optuna (held-out train split, never val)",
        description="Example: attnlab tune --config configs/paper.yaml --variants baseline,hybrid --trials 20 "
        "--out runs/tune 'tune.space={train.lr: {log: [1.0e-3, 1.0e-1]}, train.lr_mult.ema: {choice: [1, 3, 10, 30]}}'. "
        "Rerunning continues the studies; `attnlab ablate --tuned DIR` then trains the tuned rows.",
    )
    p.add_argument("--config", required=True, help="YAML config with a tune: section (space, holdout, epochs)")
    p.add_argument("--variants", help="comma-separated (default: the config's)")
    p.add_argument("--trials", type=int, default=None, help="finished trials per variant (default tune.trials)")
    p.add_argument("--out", required=True, help="tuning folder (studies, trials, best_params.yaml)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL shared by workers on many machines (default: a journal file in --out)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes sharing the storage")
    p.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help="local worker processes, or Slurm jobs through submitit (slurm.* config keys)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError, load_config
    from ..data.open import open_data
    from ..study.tune import check_space, tune_variant

    overrides = list(args.overrides) + ([f"variants=[{args.variants}]"] if args.variants else [])
    cfg = load_config(args.config, overrides)
    check_space(cfg.tune.space)
    trials = args.trials or cfg.tune.trials
    if trials < 1 or args.jobs < 1:
        raise ConfigError("--trials and --jobs must be >= 1")
    out = Path(args.out)
    if args.jobs > 1 and not args.worker:
        return run_workers(args, out)
    data = open_data(cfg)
    for variant in cfg.variants:
        study = tune_variant(cfg, variant, out, data, trials=trials, storage=args.storage)
        if not args.worker and any(t.value is not None for t in study.trials):
            print(f"{variant}: best held-out top-1 {study.best_value:.4f} with {study.best_params} "
                  f"-> {out / variant / 'best_params.yaml'}")
    return 0


def run_workers(args: argparse.Namespace, out: Path) -> int:
    """``--jobs N``: N copies of this command as workers on one storage, then the summary."""
    argv, skip = [], False
    for a in sys.argv[1:]:  # this command again, less --jobs N
        if skip:
            skip = False
        elif a == "--jobs":
            skip = True
        elif not a.startswith("--jobs="):
            argv.append(a)
    cmd = [sys.executable, "-m", "attnlab", *argv, "--worker"]
    out.mkdir(parents=True, exist_ok=True)
    if args.launcher == "slurm":
        from ..config import load_config
        from ..study.executors import SlurmExecutor

        cfg = load_config(args.config, list(args.overrides))
        ex = SlurmExecutor(out / "slurm", cfg.slurm).executor()
        jobs = [ex.submit(subprocess.check_call, cmd) for _ in range(args.jobs)]
        print(f"submitted {len(jobs)} tuning workers: {', '.join(j.job_id for j in jobs)}")
        for job in jobs:
            job.result()
    else:
        threads = str(max(1, (os.cpu_count() or 1) // args.jobs))
        env = {**os.environ, "OMP_NUM_THREADS": threads, "ATTNLAB_THREADS": threads}
        procs = []
        for i in range(args.jobs):
            log = open(out / f"worker_{i}.log", "a")  # noqa: SIM115 - closed below
            procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        codes = []
        for proc, log in procs:
            codes.append(proc.wait())
            log.close()
        if any(codes):
            from ..errors import AttnlabError

            raise AttnlabError(f"tuning worker(s) failed (exit codes {codes}); logs: {out}/worker_*.log; "
                               "rerun the same command to continue the studies")
    args.worker, args.jobs = False, 1
    return run(args)  # every study is finished: write the outputs and print the best parameters
