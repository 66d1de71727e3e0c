"""Reading ``profile.json`` (written by ``attnlab profile --json``) defensively.

The report needs, per variant: params, added params, GMACs, attention elementwise work,
latency at batch 1 (median and p95, ms) and throughput (images/s) at the largest timed
batch. ``attnlab.profiling``'s schema 1 (``variants.<name>.params.total``,
``.compute.<size>.gmacs``, ``.latency.<batch>.median_ms``) is read at the config's image
size; other layouts are flattened to dotted keys and the figures found by name (e.g.
``gmacs`` or ``macs``; ``latency_b1_ms``; ``throughput.images_per_s`` with
``throughput.batch``). A figure that is not found is ``None`` and shows as "n/a": never
guessed.

``profile_train.json`` (same schema, optional) profiles the models at the training format
(e.g. bf16 and channels_last on CUDA; its ``config`` / ``environment`` hold ``dtype`` and
``channels_last``): :func:`read_train_profile` reads its batch-1 latency and throughput,
which the report shows in their own columns, suffixed with that format (``format_label``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FIELDS = ("params", "added_params", "gmacs", "gmacs_size", "attention_gops", "latency_b1_ms",
          "latency_b1_p95_ms", "throughput_img_s", "throughput_batch")
_ENTRY_LISTS = ("variants", "results", "models", "rows", "entries")
TRAIN_FIELDS = ("latency_b1_ms", "latency_b1_p95_ms", "throughput_img_s", "throughput_batch")
_DTYPE_LABELS = {"fp32": "fp32", "float32": "fp32", "float": "fp32", "bf16": "bf16", "bfloat16": "bf16",
                 "fp16": "fp16", "float16": "fp16", "half": "fp16"}
_B1 = re.compile(r"(^|[._])(batch_?1|bs_?1|b1|1)([._]|$)")
_BATCH = re.compile(r"(?:batch|bs|b)_?(\d+)")


def read_profile(path: str | Path, variants: Iterable[str] = ()) -> tuple[dict[str, dict[str, Any]], dict[str, Any], list[str]]:
    """(per-variant figures, file-level metadata, warnings). Missing file: empty results."""
    path = Path(path)
    if not path.is_file():
        return {}, {}, []
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        return {}, {}, [f"{path.name} is not valid JSON ({err}); efficiency columns left n/a"]
    entries = _entries(data, set(variants))
    if not entries:
        return {}, {}, [f"{path.name}: found no per-variant entries; efficiency columns left n/a"]
    meta: dict[str, Any] = {}
    if isinstance(data, dict):
        meta = {k: v for k, v in data.items() if not isinstance(v, (dict, list))}
        for key in ("config", "environment", "env", "settings", "meta"):
            if isinstance(data.get(key), dict):
                meta.update({k: v for k, v in data[key].items() if not isinstance(v, (dict, list))})
    size = meta.get("image_size")
    return {name: extract(entry, image_size=size) for name, entry in entries.items()}, meta, []


def read_train_profile(path: str | Path, variants: Iterable[str] = ()) -> tuple[dict[str, dict[str, Any]], str | None, list[str]]:
    """``profile_train.json``: (per-variant ``TRAIN_FIELDS``, format label, warnings).

    A missing file gives ``({}, None, [])``: no extra columns and nothing to say."""
    path = Path(path)
    if not path.is_file():
        return {}, None, []
    figures, meta, warnings = read_profile(path, variants)
    if not figures:
        return {}, None, warnings
    out = {v: {k: f.get(k) for k in TRAIN_FIELDS} for v, f in figures.items()}
    return out, format_label(meta), warnings


def format_label(meta: dict[str, Any]) -> str:
    """Column suffix of a profile's numeric format: ``bf16_cl`` (bf16, channels_last),
    ``fp16``, ``fp32_cl``, ...; ``train`` if the file does not say its dtype."""
    dtype = str(meta.get("dtype") or "").lower().removeprefix("torch.")
    label = _DTYPE_LABELS.get(dtype, re.sub(r"[^a-z0-9]+", "", dtype)) or "train"
    return label + ("_cl" if meta.get("channels_last") is True else "")


def format_text(label: str) -> str:
    """``bf16_cl`` -> ``bf16, channels_last`` (for headers and captions)."""
    return label[:-3] + ", channels_last" if label.endswith("_cl") else label


def extract(entry: dict[str, Any], *, image_size: int | None = None) -> dict[str, Any]:
    """The report's figures from one variant's entry (None where absent).

    ``compute`` keyed by image size is read at ``image_size`` (else its smallest size);
    ``latency`` keyed by batch size is read per batch.
    """
    entry = dict(entry)
    size = None
    compute = entry.get("compute")
    if isinstance(compute, dict) and compute and all(str(k).isdigit() for k in compute):
        size = str(image_size) if str(image_size) in compute else min(compute, key=lambda k: int(k))
        entry.pop("compute")
        entry.update({k: v for k, v in compute[size].items() if k not in entry})
    latency = entry.get("latency")
    if isinstance(latency, dict) and latency and all(str(k).isdigit() for k in latency):
        entry["latency"] = {f"batch{k}": v for k, v in latency.items()}
    flat = {k.lower(): v for k, v in flatten(entry).items() if _is_number(v)}
    out: dict[str, Any] = dict.fromkeys(FIELDS)
    out["params"] = _pick(flat, [r"params", r"params\.total", r"parameters", r"parameters\.total",
                                 r"params_total", r"total_params", r"n_params", r"num_params"])
    out["added_params"] = _pick(flat, [r"params\.added", r"added_params", r"params_added",
                                       r"parameters\.added", r"extra_params"])
    gmacs = _pick(flat, [r"gmacs", r"gmacs\.total", r"macs\.gmacs", r"macs\.g", r"gmacs_total",
                         r"macs_g", r"macs\.total_g"])
    if gmacs is None:
        macs = _pick(flat, [r"macs", r"macs\.total", r"total_macs"])
        gmacs = macs / 1e9 if macs is not None else None
    out["gmacs"] = gmacs
    out["gmacs_size"] = int(size) if size is not None and gmacs is not None else None
    out["attention_gops"] = _pick(flat, [r"attention_gops", r"attention_ops\.gops", r"attn_gops"])
    out["latency_b1_ms"] = _latency_b1(flat)
    out["latency_b1_p95_ms"] = _latency_b1(flat, stat="p95")
    out["throughput_img_s"], out["throughput_batch"] = _throughput(flat)
    for key in ("params", "added_params", "throughput_batch", "gmacs_size"):
        if out[key] is not None:
            out[key] = int(round(out[key]))
    return out


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists to dotted keys; a list item with a ``batch`` key becomes ``batch<n>``."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = []
        for i, item in enumerate(obj):
            bs = item.get("batch", item.get("batch_size")) if isinstance(item, dict) else None
            items.append((f"batch{int(bs)}" if _is_number(bs) else str(i), item))
    else:
        return {prefix: obj}
    for key, value in items:
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(flatten(value, name))
    return out


def _entries(data: Any, known: set[str]) -> dict[str, dict[str, Any]]:
    if isinstance(data, dict):
        for key in _ENTRY_LISTS:
            if key in data:
                return _entries(data[key], known | _names(data[key]))
        from ..models import VARIANTS

        names = known | set(VARIANTS)
        return {k: v for k, v in data.items() if k in names and isinstance(v, dict)}
    if isinstance(data, list):
        out = {}
        for item in data:
            if isinstance(item, dict) and isinstance(item.get("variant", item.get("name")), str):
                out[item.get("variant", item.get("name"))] = item
        return out
    return {}


def _names(obj: Any) -> set[str]:
    return set(obj) if isinstance(obj, dict) else set()


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def _pick(flat: dict[str, float], patterns: list[str]) -> float | None:
    for pat in patterns:
        for key, value in flat.items():
            if re.fullmatch(pat, key):
                return float(value)
    return None


def _to_ms(key: str, value: float) -> float:
    leaf = key.rsplit(".", 1)[-1]
    if "ms" in leaf or "ms" in key.split(".")[0]:
        return value
    if leaf.endswith("_s") or leaf.endswith("seconds") or leaf.endswith("_sec"):
        return value * 1000
    return value


def _latency_b1(flat: dict[str, float], stat: str = "median") -> float | None:
    """Latency at batch 1 in ms: the median (else p50, mean, any plain figure), or ``p95``."""
    cands = [k for k in flat if "latency" in k and "throughput" not in k and _B1.search(k.replace("latency", ""))]
    cands = [k for k in cands if not re.search(r"images_per_s|img_s|samples|mem|std|min|max|iqr|count|runs|batch$|warmup", k)]
    if stat != "median":
        return next((_to_ms(k, flat[k]) for k in cands if stat in k), None)
    cands = [k for k in cands if not re.search(r"p9\d", k)]
    for pref in ("median", "p50", "mean", ""):
        for k in cands:
            if pref in k:
                return _to_ms(k, flat[k])
    return None


def _throughput(flat: dict[str, float]) -> tuple[float | None, float | None]:
    rate_keys = [k for k in flat if re.search(r"images_per_s|img_per_s|img_s|imgs_per_s|ips", k)
                 or (k.split(".")[-1].startswith("throughput") and "batch" not in k.split(".")[-1])]
    rate_keys = [k for k in rate_keys if not re.search(r"p9\d|std|min|max|train", k)]
    if not rate_keys:
        return None, None

    def batch_of(k: str) -> float | None:
        m = [int(x) for x in _BATCH.findall(k)]
        return float(m[-1]) if m else None

    # the largest batch wins (throughput at batch 1 is latency's business)
    key = max(rate_keys, key=lambda k: (batch_of(k) or 0))
    batch = batch_of(key)
    if batch is None:
        prefix = key.rsplit(".", 1)[0] if "." in key else ""
        batch = _pick(flat, [re.escape(f"{prefix}.{b}") if prefix else b
                             for b in ("batch", "batch_size")] + [r"throughput[._]batch(_size)?"])
    return flat[key], batch
