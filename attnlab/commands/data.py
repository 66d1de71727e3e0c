"""`attnlab data synth|prepare|info`: make a synthetic twin, build the cache, inspect a source."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="Tiny ImageNet: synthetic twin, cache build, inspection")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True

    s = dsub.add_parser("synth", help="write a synthetic dataset in the official Tiny ImageNet layout")
    s.add_argument("--out", required=True, help="folder to write (becomes the dataset root)")
    s.add_argument("--classes", type=int, default=10)
    s.add_argument("--train-per-class", type=int, default=50)
    s.add_argument("--val-per-class", type=int, default=10)
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--zip", action="store_true", help="also pack it like the official download (OUT.zip)")
    s.set_defaults(func=run_synth)

    for name, helptext, func in (
        ("prepare", "validate a source and decode it once into the uint8 cache (reused while fresh)", run_prepare),
        ("info", "validate a source (no decoding) and show its classes, counts and cache state", run_info),
    ):
        q = dsub.add_parser(name, help=helptext)
        q.add_argument("--root", required=True, help="extracted folder, downloaded .zip, or parquet folder")
        q.add_argument("--cache-dir", default=None, help="default: ROOT/.attnlab_cache (next to a .zip)")
        q.add_argument("--size", type=int, default=None,
                       help="cached side length (default: the dataset's native size, 64; CIFAR 32)")
        if name == "prepare":
            q.add_argument("--workers", type=int, default=None, help="decode processes (default: all CPUs)")
            q.add_argument("--force", action="store_true", help="rebuild even a fresh cache")
            q.add_argument("--quiet", action="store_true", help="no progress bar")
        q.set_defaults(func=func)


def run_synth(args: argparse.Namespace) -> int:
    import time

    from ..data.synthetic import make_zip, write_synthetic

    start = time.perf_counter()
    try:
        root = write_synthetic(args.out, classes=args.classes, train_per_class=args.train_per_class,
                               val_per_class=args.val_per_class, size=args.size, seed=args.seed)
    except ValueError as exc:  # a bad option value: the user's to fix
        from ..errors import AttnlabError

        raise AttnlabError(str(exc)) from None
    n_train, n_val = args.classes * args.train_per_class, args.classes * args.val_per_class
    print(f"wrote {root}: {args.classes} classes, train {n_train:,} + val {n_val:,} images "
          f"({args.size}x{args.size}) in {time.perf_counter() - start:.1f} s")
    if args.zip:
        print(f"packed {make_zip(root)}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from ..data.cache import prepare

    ds = prepare(args.root, args.cache_dir, workers=args.workers, progress=not args.quiet,
                 force=args.force, size=args.size)
    meta = ds.meta
    print(f"source  {meta['source']} ({meta['source_kind']}, fingerprint {meta['fingerprint'][:12]})")
    print(f"classes {ds.num_classes}")
    print(f"train   {len(ds.train):>9,} images")
    print(f"val     {len(ds.val):>9,} images")
    speed = (f"{meta['build_seconds']:.1f} s, {meta['images_per_s']:,.0f} images/s, "
             f"{meta['workers']} worker(s)")
    print(f"cache   {ds.path}")
    print(f"        fresh, reused (first built in {speed})" if ds.reused else f"        built in {speed}")
    if meta.get("resized"):
        print(f"note    {meta['resized']} images were not {ds.image_size}x{ds.image_size} and were resized")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from ..data.cache import CacheError, cache_name, default_cache_dir, open_cache, scan_source

    index = scan_source(args.root)
    print(f"source  {index.location} ({index.kind}, fingerprint {index.fingerprint[:12]})")
    print(f"classes {len(index.classes)}: " + ", ".join(
        f"{w} ({n})" for w, n in list(zip(index.classes, index.class_names, strict=True))[:3])
        + (", ..." if len(index.classes) > 3 else ""))
    for split, part in index.splits.items():
        print(f"{split:<7} {len(part):>9,} images")
    for note in index.notes:
        print(f"note    {note}")
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir(args.root)
    path = cache_dir / cache_name(index.kind, index.cache_size(args.size), index.fingerprint)
    if not path.exists():
        print(f"cache   none for this source at {cache_dir} (run: attnlab data prepare --root {args.root})")
        return 0
    try:
        open_cache(path, fingerprint=index.fingerprint)
    except CacheError as exc:
        print(f"cache   {path} is damaged ({exc}); prepare rebuilds it")
    else:
        print(f"cache   {path} (fresh)")
    return 0
