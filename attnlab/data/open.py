"""Open a run's dataset from its config: write the synthetic twin if asked, then the cache.

Under DDP the caller passes ``is_main`` and a ``barrier``: rank 0 builds the cache (or the
synthetic twin) first, the other ranks open it once it exists.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..config import ExperimentConfig
from .cache import CachedDataset, open_dataset


def open_data(cfg: ExperimentConfig, *, is_main: bool = True,
              barrier: Callable[[], None] = lambda: None) -> CachedDataset:
    """The cached dataset of ``cfg.data`` (built on first use)."""
    root = Path(cfg.data.root)
    data = None
    if is_main:
        if cfg.data.synthetic is not None and not root.exists():
            from .synthetic import write_synthetic

            s = cfg.data.synthetic
            write_synthetic(root, classes=s.classes, train_per_class=s.train_per_class,
                            val_per_class=s.val_per_class, size=s.size, seed=s.seed)
        data = open_dataset(root, cfg.data.cache_dir, size=cfg.data.image_size, workers=cfg.data.workers,
                            progress=cfg.train.progress)
    barrier()
    if data is None:
        data = open_dataset(root, cfg.data.cache_dir, size=cfg.data.image_size, progress=False)
    return data
