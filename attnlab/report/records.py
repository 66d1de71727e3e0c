"""Reading an ablation folder's run records (format: docs/run-records.md).

Only reads; every figure the report prints is traceable to one of these files, and a run
whose files disagree is left out rather than half-used. Per run:

* ``summary.json`` is authoritative for the final figures: its ``final`` and ``best``
  entries (val Top-1, Top-5, loss, epoch). A run without it is not complete.
* ``metrics.csv`` is cross-checked: it must hold every epoch ``summary.json`` counts
  (``epochs_done``), and its rows at the final and best epochs must agree with the
  summary within ``TOLERANCE``; no epoch may beat the summary's best.
* ``predictions/last.npz`` (final) and ``predictions/best.npz`` (best) are cross-checked:
  stored epoch, and the Top-1 / Top-5 computed from the per-image predictions, must match
  the summary. A missing file only leaves the run out of the paired statistics.

Any failed check raises ``RecordError`` whose one-line message names the file, what is
wrong and the fix; ``load_runs`` turns it into a note and excludes the run from every
table, statistic and figure (or, with ``strict=True``, raises it).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import RecordError
from ..models import VARIANTS

POLICIES = ("final", "best")
# policy -> (summary.json key, predictions / checkpoint file stem)
_POLICY_FILES = {"final": ("final", "last"), "best": ("best", "best")}
_RUN_DIR = re.compile(r"^(?P<variant>.+)_seed(?P<seed>\d+)$")
FIGURES = ("val_top1", "val_top5", "val_loss", "epoch")
TOLERANCE = 1e-6  # summary.json vs metrics.csv and vs the predictions' own Top-1 / Top-5
_METRIC_REQUIRED = ("epoch", "val_top1", "val_top5", "val_loss")
_METRIC_NUMERIC = re.compile(r"^(epoch|train_loss|train_top1|val_loss|val_top1|val_top5|lr_.+|epoch_seconds|"
                             r"eval_seconds|train_images_per_s)$")
_RETRAIN = "restore the file, or delete the run folder and rerun `attnlab ablate` to retrain it"


@dataclass(frozen=True)
class Predictions:
    """Per-image val predictions of one run at one epoch."""

    labels: np.ndarray  # (N,) int64
    top5: np.ndarray  # (N, 5) int64, by decreasing score
    epoch: int | None

    @property
    def top1_correct(self) -> np.ndarray:
        return self.top5[:, 0] == self.labels

    @property
    def top5_correct(self) -> np.ndarray:
        return (self.top5 == self.labels[:, None]).any(axis=1)


@dataclass
class RunRecord:
    """One run folder: its metrics per epoch, its summary, and where its files are.

    ``load_runs`` builds records whose files agree (see the module docstring): then
    ``figures`` holds the summary's checked final / best entries and ``loaded`` the checked
    predictions (None where the file is missing).
    """

    path: Path
    variant: str
    seed: int
    status: str
    metrics: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    loaded: dict[str, Predictions | None] = field(default_factory=dict)

    def selected(self, policy: str) -> dict[str, float | int | None]:
        """val_top1 / val_top5 / val_loss / epoch at the policy's epoch, from summary.json
        (``final`` or ``best`` entry; checked against metrics.csv and the predictions)."""
        check_policy(policy)
        if policy in self.figures:
            return dict(self.figures[policy])
        entry = self.summary.get(_POLICY_FILES[policy][0])
        entry = entry if isinstance(entry, dict) else {}
        return {k: _num(entry.get(k)) for k in FIGURES}

    def predictions(self, policy: str) -> Predictions | None:
        """The policy's per-image predictions (checked), or None if the file is missing.

        Raises ``RecordError`` naming the file if it cannot be read or has wrong shapes."""
        check_policy(policy)
        if policy in self.loaded:
            return self.loaded[policy]
        path = self.path / "predictions" / f"{_POLICY_FILES[policy][1]}.npz"
        if not path.is_file():
            return None
        return read_predictions(path, _rel(path))

    def checkpoint(self, policy: str) -> Path | None:
        """The policy's checkpoint, else the other one, else None."""
        stems = [_POLICY_FILES[policy][1]] + [s for _, s in _POLICY_FILES.values()]
        for stem in dict.fromkeys(stems):
            path = self.path / "checkpoints" / f"{stem}.pt"
            if path.is_file():
                return path
        return None

    @property
    def epoch_seconds(self) -> float | None:
        """Mean training seconds per epoch (metrics.csv, else summary.json)."""
        if "epoch_seconds" in self.metrics and self.metrics["epoch_seconds"].notna().any():
            return float(self.metrics["epoch_seconds"].mean())
        return _num(self.summary.get("epoch_seconds_mean"))

    @property
    def train_seconds_total(self) -> float | None:
        """summary.json's ``train_seconds_total``, else the sum of metrics.csv's
        ``epoch_seconds`` (training only, like the engine's total)."""
        total = _num(self.summary.get("train_seconds_total"))
        if total is not None:
            return total
        if "epoch_seconds" not in self.metrics or self.metrics["epoch_seconds"].isna().all():
            return None
        return float(self.metrics["epoch_seconds"].sum())

    @property
    def class_names(self) -> list[str] | None:
        names = self.summary.get("class_names")
        return [str(n) for n in names] if isinstance(names, list) else None


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")


def load_runs(
    ablation_dir: str | Path, *, include_incomplete: bool = False, strict: bool = False
) -> tuple[list[RunRecord], list[str]]:
    """The usable run records under ``<ablation_dir>/runs/`` (sorted by variant order, then
    seed) and notes about each run left out and why.

    A run is left out if it has no ``summary.json``, if its status is not ``complete``
    (``include_incomplete`` keeps ``running`` / ``failed`` runs whose records check out),
    or if its summary.json, metrics.csv or predictions are damaged or disagree (module
    docstring). ``strict=True`` raises the ``RecordError`` of the first run left out.
    """
    root = Path(ablation_dir) / "runs"
    if not root.is_dir():
        raise RecordError(f"{ablation_dir} has no runs/ folder (expected runs/<variant>_seed<k>/); "
                          "point attnlab report at the folder attnlab ablate wrote")
    runs: list[RunRecord] = []
    warnings: list[str] = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            runs.append(read_run(path, include_incomplete=include_incomplete))
        except RecordError as err:
            if strict:
                raise RecordError(f"{_one_line(err)} (--strict: every run must be usable)") from err
            warnings.append(f"excluded {path.name} from every table, statistic and figure: {_one_line(err)}")
    seen: dict[tuple[str, int], RunRecord] = {}
    for run in runs:
        other = seen.setdefault((run.variant, run.seed), run)
        if other is not run:
            raise RecordError(f"{_rel(other.path / 'summary.json')} and {_rel(run.path / 'summary.json')} both "
                              f"hold variant {run.variant!r} seed {run.seed}; remove one of the two run folders")
    runs.sort(key=lambda r: (variant_sort_key(r.variant), r.seed))
    return runs, warnings


def read_run(path: str | Path, *, include_incomplete: bool = False) -> RunRecord:
    """One run folder, checked (module docstring); raises ``RecordError`` naming the file."""
    path = Path(path)
    summary_path = path / "summary.json"
    if not summary_path.is_file():
        raise RecordError(f"{_rel(summary_path)} is missing, so the run is not complete; "
                          "finish it (rerun `attnlab ablate`, which resumes it) or delete the run folder")
    summary = _read_summary(summary_path)
    variant, seed = _identity(path, summary)
    status = str(summary.get("status", "unknown"))
    if status != "complete" and not include_incomplete:
        raise RecordError(f"{_rel(summary_path)}: status {status!r}, not complete; let the run finish "
                          "(rerun `attnlab ablate`, which resumes it) or pass --include-incomplete")
    figures = {policy: _summary_entry(summary, policy, summary_path) for policy in POLICIES}
    final, best = figures["final"], figures["best"]
    if best["epoch"] > final["epoch"]:
        raise RecordError(f"{_rel(summary_path)}: best epoch {best['epoch']} is after the final epoch "
                          f"{final['epoch']}; {_RETRAIN}")
    expected = _epochs_done(summary, summary_path, final)
    metrics = _read_metrics(path / "metrics.csv")
    metrics = _check_metrics(metrics, path / "metrics.csv", figures, expected, exact=status == "complete")
    loaded: dict[str, Predictions | None] = {}
    for policy in POLICIES:
        npz = path / "predictions" / f"{_POLICY_FILES[policy][1]}.npz"
        loaded[policy] = None
        if npz.is_file():
            loaded[policy] = _check_predictions(read_predictions(npz, _rel(npz)), npz, figures[policy], policy)
    last, top = loaded["final"], loaded["best"]
    if last is not None and top is not None and not np.array_equal(last.labels, top.labels):
        raise RecordError(f"{_rel(path / 'predictions')}: best.npz and last.npz hold different val labels; {_RETRAIN}")
    return RunRecord(path, variant, seed, status, metrics, summary, figures, loaded)


def read_predictions(path: Path, name: str | None = None) -> Predictions:
    """``labels`` (N,) and ``top5`` (N, 5) integer arrays and the scalar ``epoch`` of one
    .npz, read with plain ``np.load`` (no pickles); ``RecordError`` naming ``name`` (default:
    the path) if the file cannot be read or its arrays have the wrong shapes or types."""
    name = name or str(path)
    fix = _RETRAIN
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as err:
        raise RecordError(f"{name} cannot be read ({type(err).__name__}: {_one_line(err)}); {fix}") from err
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # np.load would try other formats
        raise RecordError(f"{name} is not an .npz archive (not a zip file; damaged?); {fix}")
    try:
        obj = np.load(path)  # allow_pickle stays False
    except Exception as err:  # np.load raises many kinds on a damaged file
        raise RecordError(f"{name} cannot be read ({type(err).__name__}: {_one_line(err)}); {fix}") from err
    try:
        if not isinstance(obj, np.lib.npyio.NpzFile):
            raise RecordError(f"{name} is not an .npz archive (one array, no labels/top5/epoch); {fix}")
        missing = [k for k in ("labels", "top5", "epoch") if k not in obj.files]
        if missing:
            raise RecordError(f"{name} lacks {', '.join(missing)} (has {', '.join(obj.files) or 'nothing'}); {fix}")
        labels, top5, epoch = obj["labels"], obj["top5"], obj["epoch"]
    except RecordError:
        raise
    except Exception as err:  # a damaged member: BadZipFile, zlib.error, EOFError, ValueError, ...
        raise RecordError(f"{name} cannot be read ({type(err).__name__}: {_one_line(err)}); {fix}") from err
    finally:
        if isinstance(obj, np.lib.npyio.NpzFile):
            obj.close()
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise RecordError(f"{name}: labels must be a non-empty 1-D integer array, got shape {labels.shape} "
                          f"{labels.dtype}; {fix}")
    n = labels.shape[0]
    if top5.shape != (n, 5) or not np.issubdtype(top5.dtype, np.integer):
        raise RecordError(f"{name}: top5 must be an integer array of shape ({n}, 5), got {top5.shape} "
                          f"{top5.dtype}; {fix}")
    if epoch.size != 1 or not np.issubdtype(epoch.dtype, np.integer):
        raise RecordError(f"{name}: epoch must be one integer, got shape {epoch.shape} {epoch.dtype}; {fix}")
    return Predictions(labels.astype(np.int64), top5.astype(np.int64), int(epoch.reshape(-1)[0]))


def variant_sort_key(variant: str) -> tuple[int, str]:
    """The study's order (baseline, simam, ema, hybrid), then the built-in sweep's layouts in
    its order (default first), then the tuned rows, then any others by name."""
    from ..study.sweep import SITE_LAYOUT_NAMES

    order = list(VARIANTS) + [n for n in SITE_LAYOUT_NAMES if n not in VARIANTS]
    order += [f"{v}_tuned" for v in VARIANTS]  # `ablate --tuned` rows after the shared protocol
    return (order.index(variant), "") if variant in order else (len(order), variant)


def _rel(path: Path) -> str:
    """``runs/<run>/<file>``: the name the notes and errors use (relative to the ablation folder)."""
    parts = path.parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "runs":
            return "/".join(parts[i:])
    return path.name


def _one_line(err: BaseException | str) -> str:
    return " ".join(str(err).split())


def _read_summary(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f"{_rel(path)} is not valid JSON ({_one_line(err)}); {_RETRAIN}") from err
    if not isinstance(data, dict):
        raise RecordError(f"{_rel(path)} holds a {type(data).__name__}, not a JSON object; {_RETRAIN}")
    return data


def _identity(path: Path, summary: dict[str, Any]) -> tuple[str, int]:
    """(variant, seed) from summary.json, which must agree with the folder name."""
    match = _RUN_DIR.match(path.name)
    variant = summary.get("variant", match["variant"] if match else None)
    seed = summary.get("seed", int(match["seed"]) if match else None)
    where = _rel(path / "summary.json")
    if not isinstance(variant, str) or not variant or isinstance(seed, bool) or not isinstance(seed, int):
        raise RecordError(f"{where}: no variant/seed (in summary.json or a folder name <variant>_seed<k>); "
                          f"{_RETRAIN}")
    if match and (match["variant"], int(match["seed"])) != (variant, seed):
        raise RecordError(f"{where} is the record of {variant}_seed{seed}, not of its folder {path.name}; "
                          "put it back in its own folder or retrain this run")
    return variant, seed


def _summary_entry(summary: dict[str, Any], policy: str, path: Path) -> dict[str, float | int | None]:
    key = _POLICY_FILES[policy][0]
    entry = summary.get(key)
    if not isinstance(entry, dict):
        raise RecordError(f"{_rel(path)} has no {key!r} entry (a run with no finished epoch, or damaged); "
                          f"{_RETRAIN}")
    out: dict[str, float | int | None] = {}
    for k in FIGURES:
        v = entry.get(k)
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
            raise RecordError(f"{_rel(path)}: {key}.{k} is missing or not a number ({v!r}); {_RETRAIN}")
        if not math.isfinite(v):
            raise RecordError(f"{_rel(path)}: {key}.{k} is {v} (not finite); {_RETRAIN}")
        out[k] = v
    if int(out["epoch"]) != out["epoch"] or out["epoch"] < 0:
        raise RecordError(f"{_rel(path)}: {key}.epoch must be a non-negative integer, got {out['epoch']!r}; {_RETRAIN}")
    out["epoch"] = int(out["epoch"])
    for k in ("val_top1", "val_top5"):
        if not 0 <= out[k] <= 1:
            raise RecordError(f"{_rel(path)}: {key}.{k} is {out[k]}, outside [0, 1]; {_RETRAIN}")
        out[k] = float(out[k])
    out["val_loss"] = float(out["val_loss"])
    return out


def _epochs_done(summary: dict[str, Any], path: Path, final: dict[str, Any]) -> int:
    """Epochs the metrics.csv must hold: ``epochs_done``, else the final epoch + 1."""
    done = summary.get("epochs_done")
    if done is None:
        return int(final["epoch"]) + 1
    if isinstance(done, bool) or not isinstance(done, int) or done <= final["epoch"]:
        raise RecordError(f"{_rel(path)}: epochs_done {done!r} does not cover the final epoch "
                          f"{final['epoch']} (epochs count from 0); {_RETRAIN}")
    return done


def _read_metrics(path: Path) -> pd.DataFrame:
    """metrics.csv parsed without pandas' guessing: every row must have the header's fields
    and every known numeric column must parse (blank and ``nan`` read as NaN)."""
    where = _rel(path)
    if not path.is_file():
        raise RecordError(f"{where} is missing, so summary.json cannot be cross-checked; {_RETRAIN}")
    try:
        rows = [r for r in csv.reader(io.StringIO(path.read_text(encoding="utf-8"))) if r]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise RecordError(f"{where} cannot be read ({_one_line(err)}); {_RETRAIN}") from err
    if not rows:
        raise RecordError(f"{where} is empty (no header); {_RETRAIN}")
    header, body = rows[0], rows[1:]
    missing = [c for c in _METRIC_REQUIRED if c not in header]
    if missing:
        raise RecordError(f"{where} has no {', '.join(missing)} column (header: {','.join(header)}); {_RETRAIN}")
    for i, row in enumerate(body, 2):
        if len(row) != len(header):
            raise RecordError(f"{where} line {i} has {len(row)} fields, the header {len(header)} (truncated?); "
                              f"{_RETRAIN}")
    df = pd.DataFrame(body, columns=header, dtype=object)
    for col in header:
        if not _METRIC_NUMERIC.match(col):
            continue
        values = []
        for i, text in enumerate(df[col], 2):
            text = str(text).strip()
            try:
                values.append(float(text) if text else math.nan)
            except ValueError:
                raise RecordError(f"{where} line {i}: {col} is {text!r}, not a number (damaged?); "
                                  f"{_RETRAIN}") from None
        df[col] = np.asarray(values, dtype=np.float64)
    epochs = df["epoch"].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(epochs) | (epochs != np.round(epochs)) | (epochs < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RecordError(f"{where} line {i + 2}: epoch {df['epoch'].iloc[i]!r} is not a non-negative integer; "
                          f"{_RETRAIN}")
    df["epoch"] = epochs.astype(np.int64)
    dup = df["epoch"].duplicated()
    if dup.any():
        raise RecordError(f"{where}: epoch {int(df['epoch'][dup].iloc[0])} appears twice; {_RETRAIN}")
    return df.sort_values("epoch", kind="stable").reset_index(drop=True)


def _check_metrics(metrics: pd.DataFrame, path: Path, figures: dict[str, dict[str, Any]], expected: int,
                   *, exact: bool) -> pd.DataFrame:
    """metrics.csv against summary.json; returns the rows the summary covers."""
    where = _rel(path)
    n = len(metrics)
    if n < expected or (exact and n > expected):
        why = "truncated" if n < expected else "more than the run finished"
        raise RecordError(f"{where} has {n} epoch rows but summary.json records {expected} epochs done ({why}); "
                          f"{_RETRAIN}")
    final_epoch = figures["final"]["epoch"]
    for policy in POLICIES:
        entry = figures[policy]
        rows = metrics[metrics["epoch"] == entry["epoch"]]
        if rows.empty:
            raise RecordError(f"{where} has no row for epoch {entry['epoch']}, summary.json's {policy} epoch; "
                              f"{_RETRAIN}")
        row = rows.iloc[0]
        for k in ("val_top1", "val_top5", "val_loss"):
            got = float(row[k])
            if not (abs(got - entry[k]) <= TOLERANCE):  # NaN disagrees too
                raise RecordError(f"{where}: epoch {entry['epoch']} {k} is {got:.6g} but summary.json's {policy} "
                                  f"{k} is {entry[k]:.6g}; {_RETRAIN}")
    covered = metrics[metrics["epoch"] <= final_epoch].reset_index(drop=True)
    top1 = covered["val_top1"].to_numpy(dtype=np.float64)
    beats = np.flatnonzero(np.nan_to_num(top1, nan=-np.inf) > figures["best"]["val_top1"] + TOLERANCE)
    if beats.size:
        i = int(beats[0])
        raise RecordError(f"{where}: epoch {int(covered['epoch'].iloc[i])} has val_top1 {top1[i]:.6g}, above "
                          f"summary.json's best {figures['best']['val_top1']:.6g}; {_RETRAIN}")
    return covered


def _check_predictions(preds: Predictions, path: Path, entry: dict[str, Any], policy: str) -> Predictions:
    """The predictions' epoch and their own Top-1 / Top-5 against summary.json's entry."""
    where = _rel(path)
    key = _POLICY_FILES[policy][0]
    if preds.epoch != entry["epoch"]:
        raise RecordError(f"{where} is from epoch {preds.epoch} but summary.json's {key} epoch is {entry['epoch']}; "
                          f"{_RETRAIN}")
    for k, got in (("val_top1", float(preds.top1_correct.mean())), ("val_top5", float(preds.top5_correct.mean()))):
        if abs(got - entry[k]) > TOLERANCE:
            raise RecordError(f"{where}: its predictions give {k} {got:.6g} but summary.json's {key} {k} is "
                              f"{entry[k]:.6g}; {_RETRAIN}")
    return preds


def _num(value: Any) -> float | int | None:
    """A finite number or None (NaN, missing and non-numeric all become None)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(f):
        return None
    return int(f) if isinstance(value, (int, np.integer)) else f
