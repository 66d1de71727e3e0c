"""A run's protocol: every setting that changes its results, recorded once and then fixed.

``protocol.json`` in a run folder (and in an ablation folder) holds the protocol as flat
``dotted.key: value`` pairs and its SHA-256 fingerprint. A later ``train --resume`` or
``ablate`` with a different protocol stops before touching anything and lists the keys
that differ, old and new: a folder never describes runs that did not happen, and one run
is never trained under two protocols.

Operational keys (where files go, progress bars, log interval, worker counts, the device
and speed switches) may change between invocations; they are not part of the protocol.
The data enter as an identity (classes, image size, labels) rather than a path, so a moved
copy of the same dataset is the same protocol, and a different dataset at the same path
is not.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ExperimentConfig, to_dict
from ..errors import ProtocolError
from .checkpoint import atomic_write_text

PROTOCOL_FILE = "protocol.json"
PROTOCOL_VERSION = 1
ABSENT = "(absent)"  # a key one side of a comparison lacks

# keys that change no result: paths, logging, parallelism, device and speed switches
OPERATIONAL_KEYS = frozenset({
    "name", "output_dir",
    "data.root", "data.cache_dir", "data.workers", "data.eval_batch_size", "data.synthetic",
    "train.progress", "train.log_every", "train.device", "train.compile", "train.channels_last",
    "slurm", "tune",  # where runs execute; a tuned run records the parameters it applied
})
# grid keys: an ablation folder may grow by variants and seeds; each run records its own
GRID_KEYS = frozenset({"variants", "seeds", "variant_overrides", "variant", "seed"})
# keys a single run's protocol leaves out (the run's own variant and seed stay in)
RUN_EXCLUDED = frozenset({"variants", "seeds", "variant_overrides", "sweep"})


def _flatten(node: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(node, dict) and node:
        for key in sorted(node):
            _flatten(node[key], f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = node


def _excluded(key: str, excluded: frozenset[str]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in excluded)


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def weights_identity(weights: str | None) -> str | None:
    """A local weights file by its content (``sha256:...``), any other source by its name."""
    if not weights:
        return weights
    path = Path(weights).expanduser()
    if not path.is_file():
        return weights
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _FILE_HASHES[key] = f"file sha256:{h.hexdigest()[:16]}"
    return _FILE_HASHES[key]


def data_identity(dataset: Any) -> str:
    """The dataset by content: class ids, image size and every label of both splits."""
    h = hashlib.sha256()
    h.update(json.dumps([list(dataset.classes), int(dataset.image_size)]).encode())
    for split in (dataset.train, dataset.val):
        labels = np.ascontiguousarray(split.labels, dtype=np.int64)
        h.update(str(labels.shape).encode())
        h.update(labels.tobytes())
    return f"{len(dataset.classes)} classes, {len(dataset.train)} train + {len(dataset.val)} val, " \
           f"{int(dataset.image_size)}px, sha256:{h.hexdigest()[:16]}"


def _protocol(cfg: ExperimentConfig, excluded: frozenset[str], data: str | None,
              precision: str | None = None) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    _flatten(to_dict(cfg), "", flat)
    out = {k: v for k, v in flat.items() if not _excluded(k, excluded)}
    out["model.weights"] = weights_identity(cfg.model.weights)
    if precision is not None:
        out["train.precision"] = precision
    if data is not None:
        out["data.identity"] = data
    return out


def run_protocol(cfg: ExperimentConfig, *, data: str | None = None, precision: str | None = None) -> dict[str, Any]:
    """The protocol of one run: its config less operational and grid-wide keys.

    ``precision``: the resolved precision (``auto`` means bf16 on CUDA, fp32 on CPU)."""
    return _protocol(cfg, OPERATIONAL_KEYS | RUN_EXCLUDED, data, precision)


def ablation_protocol(cfg: ExperimentConfig, *, data: str | None = None) -> dict[str, Any]:
    """The protocol an ablation folder shares: the config less operational and grid keys."""
    return _protocol(cfg, OPERATIONAL_KEYS | GRID_KEYS, data)


def fingerprint(protocol: dict[str, Any]) -> str:
    text = json.dumps(protocol, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, recorded value, new value) for every key that differs ('(absent)' if missing)."""
    missing = ABSENT
    keys = sorted(set(old) | set(new))
    return [(k, old.get(k, missing), new.get(k, missing)) for k in keys
            if json.dumps(old.get(k, missing), default=str) != json.dumps(new.get(k, missing), default=str)]


def read_protocol(folder: str | Path) -> dict[str, Any] | None:
    """The recorded protocol of ``folder``, None if it has none; a damaged file is an error."""
    path = Path(folder) / PROTOCOL_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        protocol = record["protocol"]
        if not isinstance(protocol, dict):
            raise TypeError("'protocol' is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ProtocolError(
            f"{path} is damaged ({type(err).__name__}: {err}); it records the folder's protocol, so "
            "nothing is trained over it: restore it, or use a new folder"
        ) from None
    return protocol


def recorded_protocol(run_dir: str | Path) -> dict[str, Any] | None:
    """A run's recorded protocol: protocol.json, else (runs from before it) its config.yaml."""
    from ..config import ConfigError, load_config

    found = read_protocol(run_dir)
    config = Path(run_dir) / "config.yaml"
    if found is not None or not config.is_file():
        return found
    try:
        return run_protocol(load_config(config))
    except ConfigError:
        return None


def write_protocol(folder: str | Path, protocol: dict[str, Any]) -> None:
    record = {"version": PROTOCOL_VERSION, "fingerprint": fingerprint(protocol), "protocol": protocol}
    atomic_write_text(Path(folder) / PROTOCOL_FILE, json.dumps(record, indent=1, default=str) + "\n")


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def check_protocol(folder: str | Path, protocol: dict[str, Any], *, fix: str,
                   recorded: dict[str, Any] | None = None) -> None:
    """Raise ``ProtocolError`` if ``folder`` records a protocol other than ``protocol``.

    Keys the record lacks but the new protocol has only as ``data.identity`` (records
    written without data) are not a difference."""
    old = read_protocol(folder) if recorded is None else recorded
    if old is None:
        return
    diffs = differences(old, protocol)
    if "data.identity" not in old:
        diffs = [d for d in diffs if d[0] != "data.identity"]
    if diffs:  # a key added to attnlab after the record was written, at its default, is no difference
        defaults = run_protocol(ExperimentConfig()) | ablation_protocol(ExperimentConfig())
        diffs = [d for d in diffs if not (d[1] == ABSENT and d[0] in defaults
                                          and json.dumps(defaults[d[0]]) == json.dumps(d[2], default=str))]
    if not diffs:
        return
    listed = "; ".join(f"{k}: {_short(a)} (recorded) -> {_short(b)} (now)" for k, a, b in diffs[:8])
    more = f"; and {len(diffs) - 8} more" if len(diffs) > 8 else ""
    raise ProtocolError(
        f"{Path(folder) / PROTOCOL_FILE} records another protocol than this config ({len(diffs)} "
        f"key(s) differ: {listed}{more}). Nothing was changed. {fix}"
    )
