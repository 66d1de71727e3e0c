"""Atomic files, safe checkpoints and RNG state.

A crash never leaves a half-written file that looks valid: every record is written to a
temporary file beside it, fsynced and renamed into place. Files are created with the
process umask (``open(..., 0o666)``), like any other program's output.

A run folder is data, possibly shared or downloaded, so a checkpoint is only ever read
with ``torch.load(weights_only=True)``: it may hold tensors and plain containers (dicts,
lists, tuples, strings, numbers) and nothing else. attnlab's own checkpoints are written
that way (RNG states as tensors and lists, configs as dicts); a file that needs anything
more, such as a planted pickle, is refused with one line naming it.
"""

from __future__ import annotations

import errno
import os
import random
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, OutputError

TMP_SUFFIX = ".tmp"


def tmp_name(path: Path) -> Path:
    """The temporary sibling a write of ``path`` goes through (``.name.<random>.tmp``)."""
    return path.parent / f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}"


def output_error(err: OSError, path: str | Path) -> OutputError:
    """An ``OSError`` while writing ``path`` as one line with the fix."""
    reason = err.strerror or str(err)
    if err.errno == errno.ENOSPC:
        fix = "free some space or choose another output folder"
    elif err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "choose a writable output folder (--out / output_dir / --run-dir)"
    else:
        fix = "check the output folder"
    return OutputError(f"cannot write {path}: {reason}; {fix}")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then fsync and rename onto ``path`` (atomic on POSIX)."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # honours the umask
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        raise output_error(err, path) from err
    except RuntimeError as err:  # torch.save reports a full disk as a RuntimeError
        if "No space left" in str(err):
            raise output_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path) from err
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def remove_stale_temps(folder: str | Path, *, recursive: bool = True) -> list[Path]:
    """Delete temporary files left in ``folder`` (and, ``recursive``, its subfolders) by
    killed writes.

    Call it only while holding the lock of every folder it reaches: then no live writer owns
    them (an ablation folder cleans only its own level; each run cleans its folder)."""
    removed: list[Path] = []
    root = Path(folder)
    if not root.is_dir():
        return removed
    for tmp in (root.rglob if recursive else root.glob)(f".*{TMP_SUFFIX}"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's dict, read with ``weights_only=True`` (tensors and plain containers only)."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as err:  # noqa: BLE001 - any failure of the safe unpickler is a refusal
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err) or "GLOBAL" in str(err):
            why = "it holds Python objects besides tensors and plain containers, which attnlab never writes; it was refused unread"
        else:
            why = f"it is truncated or not a checkpoint ({text})"
        raise CheckpointError(
            f"checkpoint {path} cannot be used: {why}. Delete it to start the run over "
            "(or copy checkpoints/best.pt onto last.pt to resume from the best epoch)"
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a run checkpoint dict; delete it")
    return ckpt


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain values (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss_next],
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
