"""Tiny ImageNet data: official layout (folder, zip or parquet) -> uint8 cache -> device batches.

``prepare(root)`` validates the source and decodes it once into memory-mapped arrays;
``BatchLoader`` draws augmented, normalised batches from them on the model's device;
``write_synthetic`` writes a small twin in the official layout for tests and the demo.
"""

from __future__ import annotations

from .cache import CachedDataset, CachedSplit, open_cache, open_dataset, prepare
from .loader import IMAGENET_MEAN, IMAGENET_STD, AugmentConfig, BatchLoader
from .synthetic import make_zip, write_synthetic
from .tiny_imagenet import DataError, read_split, scan

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AugmentConfig",
    "BatchLoader",
    "CachedDataset",
    "CachedSplit",
    "DataError",
    "make_zip",
    "open_cache",
    "open_dataset",
    "prepare",
    "read_split",
    "scan",
    "write_synthetic",
]
