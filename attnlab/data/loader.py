"""Batches from the cached uint8 arrays, augmented and normalised on the model's device.

The whole split is moved to ``device`` once (when it fits; otherwise batches are gathered
on the CPU and copied), and each batch is one gather plus a few whole-batch torch ops:
random crop with zero padding and horizontal flip in the same gather, optional
random-resized-crop via ``grid_sample``, optional resize to ``train_size``, ImageNet
normalisation. No worker processes, no per-image Python.

Determinism: the shuffle and every augmentation parameter come from one
``torch.Generator`` seeded from (seed, epoch), never from the global RNG. Parameters are
drawn per position of the epoch's permutation, so image ``i`` of epoch ``e`` gets the
same crop whatever the batch size or number of ranks. Call ``set_epoch`` before each
epoch (as with ``DistributedSampler``).

Sharding: ``batch_size`` is per rank and the global batch is ``batch_size * world_size``.
Train ranks all draw the same permutation; global step ``i`` covers positions
``[i*B, (i+1)*B)`` of it, and rank ``r`` takes the ``r``-th slice of ``batch_size`` of those,
so the images of each optimizer step, and their augmentation, are the same whatever the
number of ranks (the tail short of one global batch is dropped). Val ranks take contiguous, disjoint, in-order shares without padding,
so summed over ranks every image is counted exactly once.
"""

from __future__ import annotations

import hashlib
import math
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .cache import CachedSplit

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# per-position random numbers drawn each epoch (fixed layout, so enabling one augmentation
# never changes the draws of another)
_OX, _OY, _FLIP, _AREA, _RATIO, _CX, _CY = range(7)
_NUM_DRAWS = 7


@dataclass
class AugmentConfig:
    """Training augmentation; ``train_size`` also resizes val batches (no other val augmentation)."""

    crop_padding: int = 4  # random crop of the original size from the zero-padded image
    random_resized_crop: bool = False
    rrc_scale: tuple[float, float] = (0.35, 1.0)  # area fraction of the crop
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio (w/h) of the crop
    hflip: bool = True
    train_size: int | None = None  # e.g. 224: every batch (train and val) resized on device

    def __post_init__(self) -> None:
        lo, hi = self.rrc_scale
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"rrc_scale must satisfy 0 < lo <= hi <= 1, got {self.rrc_scale}")
        if not 0 < self.rrc_ratio[0] <= self.rrc_ratio[1]:
            raise ValueError(f"rrc_ratio must satisfy 0 < lo <= hi, got {self.rrc_ratio}")
        if self.train_size is not None and self.train_size < 1:
            raise ValueError(f"train_size must be positive, got {self.train_size}")


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit generator seed for (seed, epoch)."""
    digest = hashlib.blake2b(f"attnlab-loader:{seed}:{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


# device copies per split object, shared by every loader over that split
_DEVICE_COPIES: weakref.WeakKeyDictionary[CachedSplit, dict[str, tuple[torch.Tensor, torch.Tensor]]] = (
    weakref.WeakKeyDictionary()
)


def _fits(nbytes: int, device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= 0.5 * free  # leave the other half to the model and activations


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    if not array.flags.writeable:  # a read-only memmap: torch wants writable memory
        array = np.array(array)
    return torch.from_numpy(array)


def resident_copy(split: CachedSplit, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images NHWC, int64 labels) of ``split`` on ``device``, transferred once."""
    copies = _DEVICE_COPIES.setdefault(split, {})
    key = str(device)
    if key not in copies:
        images = _as_tensor(split.images)
        labels = _as_tensor(np.ascontiguousarray(split.labels, dtype=np.int64))
        copies[key] = (images.to(device), labels.to(device))
    return copies[key]


class BatchLoader:
    """Iterates (images float32 (B,3,S,S) normalised, labels int64, indices int64) on ``device``."""

    def __init__(self, split: CachedSplit, *, batch_size: int, train: bool, device: str | torch.device = "cpu",
                 seed: int = 0, augment: AugmentConfig | None = None, rank: int = 0, world_size: int = 1,
                 drop_last: bool | None = None, channels_last: bool = False, resident: bool | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size); got rank {rank}, world_size {world_size}")
        self.split = split
        self.batch_size = batch_size
        self.train = train
        self.device = torch.device(device)
        self.seed = seed
        self.augment = augment if augment is not None else AugmentConfig()
        self.rank, self.world_size = rank, world_size
        self.drop_last = train if drop_last is None else drop_last
        self.channels_last = channels_last
        self.epoch = 0
        n = len(split)
        self.image_size = int(split.images.shape[1])
        self.output_size = self.augment.train_size or self.image_size
        if train:
            global_batch = batch_size * world_size
            full, rest = divmod(n, global_batch)
            if world_size > 1 or self.drop_last:
                rest = 0  # every rank has the same number of full batches
            self._full_steps, self._tail = full, rest
            self._start, self._share = 0, full * batch_size + rest
        else:
            self._start, stop = n * rank // world_size, n * (rank + 1) // world_size
            self._share = stop - self._start
            full, rest = divmod(self._share, batch_size)
            if self.drop_last:
                rest = 0
        self._batches = full + (1 if rest else 0)
        self.num_samples = full * batch_size + rest
        if train and self._batches == 0:
            raise ValueError(f"{n} training images are fewer than one global batch of {batch_size} x "
                             f"{world_size} rank(s); lower the batch size or pass drop_last=False")
        self.resident = _fits(split.images.nbytes + split.labels.nbytes, self.device) if resident is None else resident
        if self.resident:
            self._images, self._labels = resident_copy(split, self.device)
        else:
            self._images = _as_tensor(split.images)
            self._labels = _as_tensor(np.ascontiguousarray(split.labels, dtype=np.int64))
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._scale = (1.0 / (255.0 * torch.tensor(IMAGENET_STD))).view(1, 3, 1, 1).to(self.device)
        self._shift = (-torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)).view(1, 3, 1, 1).to(self.device)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle and augmentation the next iteration uses."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._batches

    def order(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's dataset indices for the current epoch, and their random draws (train)."""
        n = len(self.split)
        if not self.train:
            return torch.arange(self._start, self._start + self._share, dtype=torch.int64), None
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        perm = torch.randperm(n, generator=g)
        draws = torch.rand(n, _NUM_DRAWS, generator=g)
        b, w = self.batch_size, self.world_size
        steps = torch.arange(self._full_steps * b * w).view(self._full_steps, w, b)
        rows = steps[:, self.rank].reshape(-1)
        if self._tail:
            rows = torch.cat([rows, torch.arange(self._full_steps * b, self._full_steps * b + self._tail)])
        return perm[rows], draws[rows]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        indices, draws = self.order()
        indices = indices[: self.num_samples] if self.drop_last else indices
        dev_indices = indices.to(self.device)
        dev_draws = draws.to(self.device) if draws is not None else None
        for b in range(self._batches):
            rows = slice(b * self.batch_size, (b + 1) * self.batch_size)
            with _batch_threads(self.device):
                batch = self._batch(dev_indices[rows], indices[rows],
                                    None if dev_draws is None else dev_draws[rows])
            yield batch

    def _batch(self, idx: torch.Tensor, cpu_idx: torch.Tensor,
               draws: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = self._gather(idx, cpu_idx)  # uint8 NHWC
        cfg = self.augment
        if draws is not None and (cfg.crop_padding or cfg.hflip):
            batch = self._crop_flip(batch, draws)
        # normalise at the stored size: resizing is linear with weights summing to one, so
        # it commutes with the per-channel affine map, and this is 12x fewer pixels at 224
        x = batch.permute(0, 3, 1, 2).contiguous(memory_format=self._memory_format).float()
        x = x.mul_(self._scale).add_(self._shift)
        if draws is not None and cfg.random_resized_crop:
            images = self._random_resized_crop(x, draws)
        else:
            images = self._resize(x)
        if self.resident:
            labels = self._labels[idx]
        else:
            labels = self._labels[cpu_idx].to(self.device, non_blocking=True)
        return images.contiguous(memory_format=self._memory_format), labels, idx

    # ------------------------------------------------------------------ batch ops

    def _gather(self, idx: torch.Tensor, cpu_idx: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) on the device."""
        if self.resident:
            return self._images.index_select(0, idx)
        batch = self._images.index_select(0, cpu_idx)
        if self.device.type == "cuda":
            batch = batch.pin_memory()
        return batch.to(self.device, non_blocking=True)

    def _crop_flip(self, batch: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """Random crop from the zero-padded image and horizontal flip, on uint8 NHWC."""
        pad = self.augment.crop_padding
        oy = (draws[:, _OY] * (2 * pad + 1)).long().clamp_(max=2 * pad)
        ox = (draws[:, _OX] * (2 * pad + 1)).long().clamp_(max=2 * pad)
        flip = draws[:, _FLIP] < 0.5 if self.augment.hflip else torch.zeros_like(oy, dtype=torch.bool)
        crop = crop_flip_gather if batch.device.type != "cpu" else crop_flip_loop
        return crop(batch, oy, ox, flip, pad)

    def _random_resized_crop(self, x: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """Per-sample box (area in rrc_scale, log-uniform ratio; clamped to the image) -> S×S."""
        cfg = self.augment
        lo, hi = cfg.rrc_scale
        log_lo, log_hi = math.log(cfg.rrc_ratio[0]), math.log(cfg.rrc_ratio[1])
        area = lo + draws[:, _AREA] * (hi - lo)
        ratio = torch.exp(log_lo + draws[:, _RATIO] * (log_hi - log_lo))
        bw = torch.sqrt(area * ratio).clamp(max=1.0)  # fractions of width / height
        bh = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = bw / 2 + draws[:, _CX] * (1 - bw)
        cy = bh / 2 + draws[:, _CY] * (1 - bh)
        theta = torch.zeros(x.shape[0], 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 0, 2] = bw, 2 * cx - 1
        theta[:, 1, 1], theta[:, 1, 2] = bh, 2 * cy - 1
        s = self.output_size
        grid = F.affine_grid(theta, [x.shape[0], 3, s, s], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        s = self.output_size
        if x.shape[-1] == s and x.shape[-2] == s:
            return x
        # antialias=True: when enlarging it equals plain bilinear (to ~1e-5) and is ~2.5x faster
        # on CPU; when shrinking it is the antialiased (PIL-like) filter
        return F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)


@contextmanager
def _batch_threads(device: torch.device) -> Iterator[None]:
    """Build CPU batches on one thread: these memory-bound ops gain little from more, and on
    a busy machine torch's thread pool waiting on descheduled threads made them ~15x slower
    (measured on a shared 2-core box). The caller's setting is restored before the yield."""
    before = torch.get_num_threads()
    if device.type != "cpu" or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def crop_flip_gather(batch: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor,
                     pad: int) -> torch.Tensor:
    """Per-sample crop (offsets into the zero-padded image) and flip as one gather (GPU)."""
    b, h, w, _ = batch.shape
    if pad:
        batch = F.pad(batch, (0, 0, pad, pad, pad, pad))
    ar_h = torch.arange(h, device=batch.device)
    ar_w = torch.arange(w, device=batch.device)
    cols = torch.where(flip[:, None], ar_w.flip(0).expand(b, w), ar_w.expand(b, w)) + ox[:, None]
    rows = oy[:, None] + ar_h
    return batch[torch.arange(b, device=batch.device)[:, None, None], rows[:, :, None], cols[:, None, :]]


def crop_flip_loop(batch: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor,
                   pad: int) -> torch.Tensor:
    """The same result by per-sample slicing: several times faster than a gather on CPU."""
    b, h, w, _ = batch.shape
    padded = F.pad(batch, (0, 0, pad, pad, pad, pad)) if pad else batch
    out = torch.empty_like(batch)
    for i, (y, x, f) in enumerate(zip(oy.tolist(), ox.tolist(), flip.tolist(), strict=True)):
        window = padded[i, y:y + h, x:x + w]
        out[i] = window.flip(1) if f else window
    return out
