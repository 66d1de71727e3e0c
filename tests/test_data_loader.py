"""BatchLoader: known values, determinism per (seed, epoch), shapes, and exact coverage per rank."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from attnlab.data.cache import CachedSplit
from attnlab.data.loader import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentConfig,
    BatchLoader,
    crop_flip_gather,
    crop_flip_loop,
)

NO_AUG = AugmentConfig(crop_padding=0, hflip=False)


def _split(n: int = 23, size: int = 16, seed: int = 0) -> CachedSplit:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return CachedSplit(images, (np.arange(n) % 5).astype(np.int64))


def _normalise(u8: np.ndarray) -> torch.Tensor:
    """Reference: uint8 NHWC -> ImageNet-normalised float NCHW."""
    x = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _epoch(loader: BatchLoader) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xs, ys, ids = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys), torch.cat(ids)


def test_val_batches_are_normalised_in_order_and_complete() -> None:
    split = _split()
    loader = BatchLoader(split, batch_size=5, train=False)
    assert len(loader) == 5 and loader.num_samples == 23
    sizes = [len(y) for _, y, _ in loader]
    assert sizes == [5, 5, 5, 5, 3]
    x, y, idx = _epoch(loader)
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and idx.dtype == torch.int64
    assert idx.tolist() == list(range(23)) and y.tolist() == split.labels.tolist()
    assert torch.allclose(x, _normalise(split.images), atol=1e-5)


def test_known_normalised_values() -> None:
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    images[0] = 255
    split = CachedSplit(images, np.array([0, 1]))
    x, _, _ = next(iter(BatchLoader(split, batch_size=2, train=False)))
    white = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    black = [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    assert torch.allclose(x[0, :, 0, 0], torch.tensor(white), atol=1e-6)  # 2.2489, 2.4286, 2.64
    assert torch.allclose(x[1, :, 2, 3], torch.tensor(black), atol=1e-6)  # -2.1179, -2.0357, -1.8044
    assert abs(x[0, 2, 0, 0].item() - 2.64) < 1e-4


def test_train_epoch_is_a_shuffled_permutation_and_deterministic() -> None:
    split = _split(n=40)
    a = BatchLoader(split, batch_size=8, train=True, seed=7, augment=NO_AUG)
    x, y, idx = _epoch(a)
    assert sorted(idx.tolist()) == list(range(40)) and idx.tolist() != list(range(40))
    assert torch.equal(y, torch.from_numpy(split.labels)[idx])
    assert torch.allclose(x, _normalise(split.images[idx.numpy()]), atol=1e-5)
    torch.manual_seed(123)  # the global RNG plays no part
    b = BatchLoader(split, batch_size=8, train=True, seed=7, augment=NO_AUG)
    assert torch.equal(_epoch(b)[2], idx)
    b.set_epoch(1)
    assert not torch.equal(_epoch(b)[2], idx)
    c = BatchLoader(split, batch_size=8, train=True, seed=8, augment=NO_AUG)
    assert not torch.equal(_epoch(c)[2], idx)


def test_augmentation_is_deterministic_per_seed_and_epoch_and_keeps_shapes() -> None:
    split = _split(n=32)
    cfg = AugmentConfig(crop_padding=4, hflip=True)
    runs = []
    for _ in range(2):
        loader = BatchLoader(split, batch_size=8, train=True, seed=3, augment=cfg)
        loader.set_epoch(5)  # a restart at epoch 5 sees exactly the same batches
        runs.append(_epoch(loader))
        torch.rand(100)  # perturb the global RNG between runs
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    x, y, idx = runs[0]
    assert x.shape == (32, 3, 16, 16) and x.dtype == torch.float32 and x.is_contiguous()
    assert y.shape == idx.shape == (32,)
    plain = _normalise(split.images[idx.numpy()])
    assert not torch.allclose(x, plain)  # something was augmented
    other = BatchLoader(split, batch_size=8, train=True, seed=4, augment=cfg)
    other.set_epoch(5)
    assert not torch.equal(_epoch(other)[0], x)


def test_crop_and_flip_match_a_per_image_reference() -> None:
    split = _split(n=12, size=10)
    cfg = AugmentConfig(crop_padding=3, hflip=True)
    loader = BatchLoader(split, batch_size=12, train=True, seed=11, augment=cfg)
    x, _, idx = next(iter(loader))
    order, draws = loader.order()
    assert torch.equal(order, idx)
    expected = []
    for i, d in zip(idx.tolist(), draws, strict=True):
        padded = np.pad(split.images[i], ((3, 3), (3, 3), (0, 0)))
        oy, ox = int(d[1] * 7), int(d[0] * 7)
        crop = padded[oy:oy + 10, ox:ox + 10]
        expected.append(crop[:, ::-1] if d[2] < 0.5 else crop)
    assert torch.allclose(x, _normalise(np.stack(expected)), atol=1e-5)
    flips = (draws[:, 2] < 0.5).sum().item()
    assert 0 < flips < 12


def test_gather_and_loop_crops_agree() -> None:
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (9, 12, 12, 3), dtype=torch.uint8, generator=g)
    oy, ox = torch.randint(0, 9, (9,), generator=g), torch.randint(0, 9, (9,), generator=g)
    flip = torch.rand(9, generator=g) < 0.5
    assert torch.equal(crop_flip_gather(batch, oy, ox, flip, 4), crop_flip_loop(batch, oy, ox, flip, 4))


def test_per_image_augmentation_does_not_depend_on_batch_size() -> None:
    split = _split(n=24)
    cfg = AugmentConfig(crop_padding=2, random_resized_crop=True, train_size=20)
    outs = []
    for bs in (4, 6):
        x, _, idx = _epoch(BatchLoader(split, batch_size=bs, train=True, seed=2, augment=cfg))
        outs.append(x[idx.argsort()])
    assert torch.allclose(outs[0], outs[1], atol=1e-5)


def test_random_resized_crop_shapes_and_identity_box() -> None:
    split = _split(n=8)
    rrc = AugmentConfig(crop_padding=0, random_resized_crop=True, train_size=24)
    x, _, _ = next(iter(BatchLoader(split, batch_size=8, train=True, augment=rrc, channels_last=True)))
    assert x.shape == (8, 3, 24, 24) and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(x).all()
    identity = AugmentConfig(crop_padding=0, hflip=False, random_resized_crop=True,
                             rrc_scale=(1.0, 1.0), rrc_ratio=(1.0, 1.0))
    x, _, idx = next(iter(BatchLoader(split, batch_size=8, train=True, augment=identity)))
    assert torch.allclose(x, _normalise(split.images[idx.numpy()]), atol=1e-4)


def test_train_size_resizes_train_and_val() -> None:
    split = _split(n=6)
    cfg = AugmentConfig(train_size=40)
    xt, _, _ = next(iter(BatchLoader(split, batch_size=3, train=True, augment=cfg)))
    xv, _, _ = next(iter(BatchLoader(split, batch_size=3, train=False, augment=cfg)))
    assert xt.shape == xv.shape == (3, 3, 40, 40)
    ref = torch.nn.functional.interpolate(_normalise(split.images[:3]), size=(40, 40), mode="bilinear",
                                          align_corners=False)
    assert torch.allclose(xv, ref, atol=1e-4)  # val: resize only, no augmentation


def test_val_sharded_over_two_ranks_counts_every_image_once() -> None:
    split = _split(n=23)
    seen: Counter[int] = Counter()
    per_rank = []
    for rank in range(2):
        loader = BatchLoader(split, batch_size=4, train=False, rank=rank, world_size=2)
        ids = _epoch(loader)[2].tolist()
        assert ids == sorted(ids) and len(ids) == loader.num_samples
        per_rank.append(len(ids))
        seen.update(ids)
    assert seen == Counter(range(23)) and per_rank == [11, 12]


def test_train_sharded_over_two_ranks_is_disjoint_and_even() -> None:
    split = _split(n=23)
    full = BatchLoader(split, batch_size=4, train=True, seed=5, drop_last=False, augment=NO_AUG)
    perm = full.order()[0].tolist()
    shards = []
    for rank in range(2):
        loader = BatchLoader(split, batch_size=4, train=True, seed=5, rank=rank, world_size=2, augment=NO_AUG)
        loader.set_epoch(0)
        assert len(loader) == 2 and loader.num_samples == 8  # 23 // (4 x 2) = 2 global steps
        shards.append(_epoch(loader)[2].tolist())
    assert not set(shards[0]) & set(shards[1])
    # global step i is positions [8i, 8i+8) of one permutation; rank r takes its r-th half
    assert shards[0] == perm[0:4] + perm[8:12] and shards[1] == perm[4:8] + perm[12:16]


def test_two_ranks_see_the_images_and_crops_of_one_rank_with_the_same_global_batch() -> None:
    split = _split(n=37)
    cfg = AugmentConfig(crop_padding=2, hflip=True)
    single = BatchLoader(split, batch_size=8, train=True, seed=3, augment=cfg)
    ranks = [BatchLoader(split, batch_size=4, train=True, seed=3, augment=cfg, rank=r, world_size=2)
             for r in range(2)]
    for loader in (single, *ranks):
        loader.set_epoch(2)
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 4
    for (x, y, idx), (x0, y0, i0), (x1, y1, i1) in zip(single, *ranks, strict=True):
        assert torch.equal(idx, torch.cat([i0, i1]))
        assert torch.equal(y, torch.cat([y0, y1]))
        assert torch.equal(x, torch.cat([x0, x1]))  # same crop and flip per image


def test_non_resident_path_gives_the_same_batches() -> None:
    split = _split(n=20)
    cfg = AugmentConfig(crop_padding=2)
    a = _epoch(BatchLoader(split, batch_size=6, train=True, seed=1, augment=cfg, resident=True))
    b = _epoch(BatchLoader(split, batch_size=6, train=True, seed=1, augment=cfg, resident=False))
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_too_few_images_for_one_training_batch_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"^10 training images are fewer than one global batch of 8 x 2 "
                                         r"rank\(s\); lower the batch size or pass drop_last=False$"):
        BatchLoader(_split(n=10), batch_size=8, train=True, rank=1, world_size=2)


def test_bad_augment_config_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"rrc_scale must satisfy 0 < lo <= hi <= 1, got \(0.5, 1.5\)"):
        AugmentConfig(rrc_scale=(0.5, 1.5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_batches_match_cpu() -> None:  # pragma: no cover - GPU machines only
    split = _split(n=32)
    cfg = AugmentConfig(crop_padding=4, hflip=True)
    cpu = _epoch(BatchLoader(split, batch_size=8, train=True, seed=9, augment=cfg))
    gpu = _epoch(BatchLoader(split, batch_size=8, train=True, seed=9, augment=cfg, device="cuda"))
    assert gpu[0].device.type == "cuda"
    assert all(torch.allclose(p, q.cpu(), atol=1e-5) for p, q in zip(cpu, gpu, strict=True))


def test_cpu_batches_leave_the_callers_thread_setting_alone() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = [torch.get_num_threads() for _ in BatchLoader(_split(n=8), batch_size=4, train=True)]
        assert seen == [2, 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
