"""Datasets -> uint8 cache -> device batches: Tiny ImageNet (official folder or zip, parquet
copy), CIFAR-100 (python pickles) and ImageFolder train/val trees, detected from the layout.

``prepare(root)`` validates the source and decodes it once into memory-mapped arrays;
``BatchLoader`` draws augmented, normalised batches from them on the model's device;
``write_synthetic`` writes a small twin in the official layout for tests and the demo.
"""

from __future__ import annotations

from .cache import CachedDataset, CachedSplit, open_cache, open_dataset, prepare, scan_source
from .cifar import scan_cifar
from .imagefolder import scan_imagefolder
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
    "scan_cifar",
    "scan_imagefolder",
    "scan_source",
    "write_synthetic",
]
