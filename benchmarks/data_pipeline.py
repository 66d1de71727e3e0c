"""Images/s of the cached on-device loader vs a PIL + torchvision-transforms DataLoader.

Both read the same synthetic Tiny-ImageNet-layout data and produce the same thing: train
batches with random crop (padding 4) + horizontal flip, ImageNet-normalised float32
(B, 3, S, S) on ``--device``. The conventional pipeline decodes JPEGs with PIL in
DataLoader worker processes (the usual ImageFolder recipe); the cached one gathers from
the uint8 cache and augments whole batches with torch ops. One warm-up epoch each, then
``--epochs`` timed epochs; the ratio is printed from this one run.

    python benchmarks/data_pipeline.py                       # CPU, 64x64
    python benchmarks/data_pipeline.py --device cuda --train-size 224
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from attnlab.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentConfig,
    BatchLoader,
    prepare,
    write_synthetic,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(batches, device: torch.device, epochs: int, set_epoch=None) -> float:  # type: ignore[no-untyped-def]
    """Images/s over ``epochs`` epochs after one warm-up epoch."""
    total, elapsed = 0, 0.0
    for epoch in range(epochs + 1):
        if set_epoch is not None:
            set_epoch(epoch)
        _sync(device)
        start = time.perf_counter()
        n = 0
        for images, labels, *_ in batches:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            n += labels.shape[0]
        _sync(device)
        if epoch:  # epoch 0 is the warm-up
            total += n
            elapsed += time.perf_counter() - start
    return total / elapsed


def conventional(root: Path, args: argparse.Namespace, device: torch.device):  # type: ignore[no-untyped-def]
    from torchvision import datasets, transforms

    steps = [transforms.RandomCrop(args.size, padding=4), transforms.RandomHorizontalFlip()]
    if args.train_size:
        steps.append(transforms.Resize(args.train_size, antialias=True))
    steps += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    # ImageFolder on train/ finds train/<wnid>/images/*.JPEG and skips the boxes files
    dataset = datasets.ImageFolder(str(root / "train"), transform=transforms.Compose(steps))
    return torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.workers,
        persistent_workers=args.workers > 0, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--train-per-class", type=int, default=150)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up epoch)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--train-size", type=int, default=None, help="resize batches to this side (e.g. 224)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="DataLoader workers of the conventional pipeline")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--root", type=Path, default=None,
                   help="an existing dataset in the Tiny ImageNet layout (default: write a synthetic one)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        if args.root is not None:
            root = args.root
            print(f"dataset: {root}")
        else:
            start = time.perf_counter()
            root = write_synthetic(Path(tmp) / "tiny", classes=args.classes, train_per_class=args.train_per_class,
                                   val_per_class=2, size=args.size)
            print(f"synthetic: {args.classes} classes x {args.train_per_class} train images "
                  f"({args.size}x{args.size}) written in {time.perf_counter() - start:.1f} s")
        ds = prepare(root, progress=False, size=args.size)
        print(f"cache build: {ds.meta['images_per_s']:,.0f} images/s with {ds.meta['workers']} worker(s) (one-off)")

        aug = AugmentConfig(crop_padding=4, hflip=True, train_size=args.train_size)
        cached = BatchLoader(ds.train, batch_size=args.batch_size, train=True, device=device, augment=aug)
        fast = _timed(cached, device, args.epochs, cached.set_epoch)
        slow = _timed(conventional(root, args, device), device, args.epochs)

    side = args.train_size or args.size
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"batches: {args.batch_size} x 3 x {side} x {side}, crop(pad 4) + flip + normalise, "
          f"{args.epochs} timed epochs of {len(cached) * args.batch_size:,} images")
    print(f"cached BatchLoader:                        {fast:>10,.0f} images/s")
    print(f"PIL + transforms DataLoader ({args.workers} workers): {slow:>10,.0f} images/s")
    print(f"ratio: {fast / slow:.1f}x")


if __name__ == "__main__":
    main()
