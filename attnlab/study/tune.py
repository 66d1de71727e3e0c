"""Per-variant tuning with Optuna (the study's limit 6): does the hybrid still win when every
variant gets its own learning rates?

Each trial trains one variant with parameters drawn from ``tune.space`` (dotted config keys)
for ``tune.epochs`` and is scored on a **held-out part of the training split**
(``tune.holdout``, stratified by class, fixed seed). The val split is never read while
tuning: the trials' dataset has no val split at all, only the held-out train images in its
place. Trials are pruned on their per-epoch held-out Top-1 (median rule). The study lives
in a journal file in the output folder (embedded, resumable, safe for several processes on
one filesystem) or in any Optuna storage URL (``--storage postgresql://...``) shared by
workers on many machines.

Outputs per variant under ``<out>/<variant>/``: ``best_params.yaml``, ``trials.csv``,
``optimization_history.png``, ``param_importances.png``, and each trial's run folder.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..config import ConfigError, ExperimentConfig, for_variant
from ..errors import AttnlabError
from .plan import apply_params

SPACE_KINDS = ("log", "float", "int", "choice")
BEST_PARAMS = "best_params.yaml"


@dataclass(eq=False)
class HoldoutSplit:
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(eq=False)
class HoldoutDataset:
    """A dataset whose ``val`` is a held-out share of train; it has no access to the real val."""

    classes: list[str]
    class_names: list[str]
    image_size: int
    train: HoldoutSplit
    val: HoldoutSplit


def holdout_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept train indices, held-out indices): per class, ``round(fraction * n)`` images (at
    least one of any class with two or more) chosen by a generator seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(round(fraction * len(idx)))
        k = min(max(k, 1 if len(idx) >= 2 else 0), len(idx) - 1)
        held.append(rng.permutation(idx)[:k])
    out = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    keep = np.setdiff1d(np.arange(len(labels)), out)
    return keep, out


def holdout_dataset(data: Any, fraction: float, seed: int) -> HoldoutDataset:
    """Train minus a stratified held-out share, and that share as ``val`` (from train only)."""
    labels = np.asarray(data.train.labels)
    keep, held = holdout_indices(labels, fraction, seed)
    images = data.train.images
    return HoldoutDataset(
        classes=list(data.classes), class_names=list(getattr(data, "class_names", [])),
        image_size=int(data.image_size),
        train=HoldoutSplit(np.ascontiguousarray(images[keep]), np.ascontiguousarray(labels[keep])),
        val=HoldoutSplit(np.ascontiguousarray(images[held]), np.ascontiguousarray(labels[held])),
    )


def check_space(space: dict[str, dict[str, Any]]) -> None:
    if not space:
        raise ConfigError("tune.space is empty: declare what to search, e.g. "
                          "tune.space={train.lr: {log: [1.0e-3, 1.0e-1]}}")
    for key, spec in space.items():
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SPACE_KINDS:
            raise ConfigError(f"tune.space.{key} must be one of {{log: [lo, hi]}}, {{float: [lo, hi]}}, "
                              f"{{int: [lo, hi]}}, {{choice: [...]}}; got {spec!r}")
        kind, values = next(iter(spec.items()))
        if kind == "choice":
            if not isinstance(values, list) or not values:
                raise ConfigError(f"tune.space.{key}.choice must be a non-empty list, got {values!r}")
        elif not (isinstance(values, list) and len(values) == 2 and values[0] < values[1]
                  and (kind != "log" or values[0] > 0)):
            raise ConfigError(f"tune.space.{key}.{kind} must be [lo, hi] with lo < hi"
                              f"{' and lo > 0' if kind == 'log' else ''}, got {values!r}")


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    params = {}
    for key, spec in space.items():
        kind, values = next(iter(spec.items()))
        if kind == "log":
            params[key] = trial.suggest_float(key, float(values[0]), float(values[1]), log=True)
        elif kind == "float":
            params[key] = trial.suggest_float(key, float(values[0]), float(values[1]))
        elif kind == "int":
            params[key] = trial.suggest_int(key, int(values[0]), int(values[1]))
        else:
            params[key] = trial.suggest_categorical(key, list(values))
    return params


def storage_for(out: Path, url: str | None) -> Any:
    import optuna

    if url:
        return url
    from optuna.storages.journal import JournalFileBackend

    out.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(out / "optuna.journal")))


def trial_config(cfg: ExperimentConfig, variant: str, params: dict[str, Any]) -> ExperimentConfig:
    base = for_variant(cfg, variant, cfg.seed)
    if cfg.tune.epochs:
        params = {"train.epochs": cfg.tune.epochs, **params}
    run_cfg = apply_params(base, params)
    if run_cfg.train.warmup_epochs > run_cfg.train.epochs:  # a short trial keeps a valid warm-up
        run_cfg = apply_params(run_cfg, {"train.warmup_epochs": float(run_cfg.train.epochs)})
    return run_cfg


def tune_variant(cfg: ExperimentConfig, variant: str, out: Path, data: Any, *, trials: int,
                 storage: str | None = None, log: Callable[[str], None] = print) -> Any:
    """Run (or continue) the study of one variant until it has ``trials`` finished trials."""
    import optuna

    from ..engine.trainer import Trainer

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is printed below
    check_space(cfg.tune.space)
    vdir = out / variant
    holdout = holdout_dataset(data, cfg.tune.holdout, cfg.tune.holdout_seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1) if cfg.tune.prune \
        else optuna.pruners.NopPruner()
    study = optuna.create_study(study_name=variant, storage=storage_for(out, storage), direction="maximize",
                                load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=cfg.tune.seed),
                                pruner=pruner)

    def objective(trial: Any) -> float:
        params = suggest(trial, cfg.tune.space)
        run_cfg = trial_config(cfg, variant, params)
        trainer = Trainer(run_cfg, run_dir=vdir / f"trial_{trial.number:03d}", restart=True, dataset=holdout)

        def report(epoch: int, row: dict[str, Any]) -> None:
            trial.report(row["val_top1"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"held-out Top-1 {row['val_top1']:.4f} after epoch {epoch}")

        trainer.epoch_hooks.append(report)
        try:
            summary = trainer.fit()
        finally:
            trainer.close()
        return float(summary["final"]["val_top1"])

    done = lambda: sum(t.state.is_finished() for t in study.trials)  # noqa: E731
    start = done()
    mine: list[Any] = []
    while done() < trials:
        before = done()
        study.optimize(objective, n_trials=1, catch=(AttnlabError,), callbacks=[lambda _s, t: mine.append(t)])
        t = mine[-1]
        value = "-" if t.value is None else f"{t.value:.4f}"
        best = f", best {study.best_value:.4f}" if any(x.value is not None for x in study.trials) else ""
        log(f"[{variant} {done()}/{trials}] trial {t.number}: {t.state.name.lower()} held-out top-1 {value}"
            f"{best} ({', '.join(f'{k}={_fmt(v)}' for k, v in t.params.items())})")
        if done() == before:  # nothing finished (e.g. a worker elsewhere holds the last trial)
            break
    if done() == start and start >= trials:
        log(f"[{variant}] {start} trials already finished, nothing to do")
    write_outputs(study, vdir, cfg)
    return study


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def write_outputs(study: Any, vdir: Path, cfg: ExperimentConfig) -> None:
    from ..engine.checkpoint import atomic_write_text

    vdir.mkdir(parents=True, exist_ok=True)
    frame = study.trials_dataframe()
    frame.to_csv(vdir / "trials.csv", index=False)
    complete = [t for t in study.trials if t.value is not None and t.state.name == "COMPLETE"]
    if not complete:
        return
    best = study.best_trial
    record = {"variant": study.study_name, "best_value_holdout_top1": float(best.value), "trial": best.number,
              "trials_finished": len(complete), "holdout": cfg.tune.holdout, "tune_epochs": cfg.tune.epochs,
              "params": {k: (float(v) if isinstance(v, float) else v) for k, v in best.params.items()}}
    atomic_write_text(vdir / BEST_PARAMS, yaml.safe_dump(record, sort_keys=False))
    _plots(study, vdir, len(complete))


def _plots(study: Any, vdir: Path, n_complete: int) -> None:
    import warnings

    with warnings.catch_warnings():  # optuna marks its matplotlib plots experimental
        warnings.simplefilter("ignore")
        _draw(study, vdir, n_complete)


def _draw(study: Any, vdir: Path, n_complete: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    ax = ovm.plot_optimization_history(study)
    ax.figure.savefig(vdir / "optimization_history.png", dpi=110, bbox_inches="tight")
    plt.close(ax.figure)
    if n_complete >= 2 and len(study.best_params) >= 1:
        try:
            ax = ovm.plot_param_importances(study)
        except (RuntimeError, ValueError, ZeroDivisionError):  # too few distinct trials to attribute
            return
        ax.figure.savefig(vdir / "param_importances.png", dpi=110, bbox_inches="tight")
        plt.close(ax.figure)


def read_best_params(folder: str | Path, variants: Sequence[str]) -> dict[str, dict[str, Any]]:
    """variant -> best parameters from a tune folder (every variant must have been tuned)."""
    out: dict[str, dict[str, Any]] = {}
    for variant in variants:
        path = Path(folder) / variant / BEST_PARAMS
        if not path.is_file():
            raise ConfigError(f"{path} does not exist: tune {variant} first "
                              f"(attnlab tune --variants {variant} --out {folder})")
        try:
            record = yaml.safe_load(path.read_text())
            params = dict(record["params"])
        except (yaml.YAMLError, KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{path} is damaged ({err}); rerun attnlab tune") from None
        out[variant] = params
    return out


def split_trials(trials: int, jobs: int) -> list[int]:
    """Trials per worker so that the workers together reach ``trials``."""
    base = math.ceil(trials / jobs)
    return [base] * jobs
