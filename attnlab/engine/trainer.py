"""The training loop of the study's protocol, with exact resume and a complete run record.

One ``Trainer`` is one run: a variant, a seed, a config. It builds data, model, optimizer
(differential LRs), schedule and freeze plan; trains epoch by epoch; evaluates the complete
val split; and after every epoch atomically writes ``checkpoints/last.pt`` (and ``best.pt``),
``metrics.csv``, ``summary.json`` and per-image predictions. Everything needed to continue
lives in ``last.pt`` (including the metrics history), so ``resume=True`` continues a killed
run exactly: the data order depends only on (seed, epoch), and model, optimizer, schedule,
grad scaler, freeze state and RNGs are restored.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, ExperimentConfig, to_dict
from ..errors import AttnlabError
from ..models import count_parameters, create_model
from . import records
from .checkpoint import (
    load_checkpoint,
    remove_stale_temps,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from .distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    init_distributed,
    run_on_main,
)
from .lock import FolderLock
from .optim import FreezeSchedule, build_optimizer, build_scheduler, current_lrs
from .protocol import (
    PROTOCOL_FILE,
    check_protocol,
    data_identity,
    recorded_protocol,
    run_protocol,
    write_protocol,
)

StepHook = Callable[[int, int], None]  # (epoch, step) -> None; tests inject faults through it


class TrainingDiverged(AttnlabError, RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is left as it was."""


class RunExistsError(AttnlabError, FileExistsError):
    """The run folder already holds a run and neither --resume nor --restart was given."""


# what a run writes into its folder; --restart removes exactly these (and nothing else)
RUN_RECORDS = ("checkpoints", "predictions", "tb", "metrics.csv", "summary.json", "config.yaml", PROTOCOL_FILE,
               "run.yaml", "train.log")
RETRY_ADVICE = (
    "Resuming would repeat the same steps. To retry with other settings (a lower train.lr, "
    "train.grad_clip, or train.precision=bf16 instead of fp16), start the run over: "
    "`attnlab train ... --restart` (or a new --run-dir); in an ablation, put them under "
    "variant_overrides.<variant> and rerun `attnlab ablate ... --restart <run name>`"
)


def has_run_records(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in ("checkpoints/last.pt", "summary.json", PROTOCOL_FILE))


def discard_run(run_dir: Path) -> None:
    """Delete the run's own records (never other files a user keeps in the folder)."""
    import shutil

    for name in RUN_RECORDS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def precision_name(precision: str, device: torch.device) -> str:
    """``auto`` resolved: bf16 on CUDA, fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def resolve_device(spec: str, info: DistInfo) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={spec} but CUDA is not available here; use train.device=cpu")
        if spec == "cuda":
            spec = f"cuda:{info.local_rank}"
        torch.cuda.set_device(torch.device(spec))
    return torch.device(spec)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype, or None for plain fp32. ``auto``: bf16 on CUDA, fp32 on CPU."""
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision_name(precision, device)]


def model_args(cfg: ExperimentConfig, num_classes: int) -> dict[str, Any]:
    """Keyword arguments of ``create_model`` that rebuild this run's architecture."""
    m = cfg.model
    return {
        "variant": cfg.variant,
        "backbone": m.backbone,
        "num_classes": num_classes,
        "placements": m.placements,
        "sites": m.sites or None,
        "stages": m.stages,
        "blocks": m.blocks,
        "attention_kwargs": m.attention or None,
        "stem": m.stem,
    }


def build_model(cfg: ExperimentConfig, num_classes: int) -> nn.Module:
    """The run's initial model: seeded, so every rank (and a test) builds the same one."""
    seed_everything(cfg.seed)
    return create_model(**model_args(cfg, num_classes), weights=cfg.model.weights)


def preflight(args: dict[str, Any], image_size: int) -> None:
    """Build the architecture on the meta device and push one batch of shapes through it."""
    from ..models import check_forward_shapes

    try:
        with torch.device("meta"):
            model = create_model(**args)
    except (ValueError, KeyError, TypeError) as err:  # a bad variant, backbone, site or module kwarg
        text = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise ConfigError(f"model {args['variant']} ({args['backbone']}) cannot be built: {text}") from None
    try:
        check_forward_shapes(model, image_size)
    except ValueError as err:
        raise ConfigError(
            f"model {args['variant']} ({args['backbone']}) {err}. Train at a larger resolution "
            "(data.augment.train_size) or keep the module out of the late stages (model.stages)."
        ) from None


def open_data(cfg: ExperimentConfig, info: DistInfo):
    """The run's dataset, rank 0 first (``attnlab.data.open.open_data``)."""
    from ..data.open import open_data as _open

    return _open(cfg, is_main=info.is_main, barrier=lambda: barrier(info))


class Trainer:
    def __init__(
        self,
        cfg: ExperimentConfig,
        *,
        run_dir: str | Path | None = None,
        resume: bool = False,
        restart: bool = False,
        dataset: Any = None,
        wait: bool = False,
    ) -> None:
        self.cfg = cfg
        tc = cfg.train
        self.dist = init_distributed(tc.device)
        self.device = resolve_device(tc.device, self.dist)
        self.amp_dtype = resolve_precision(tc.precision, self.device)
        self.run_dir = Path(run_dir) if run_dir is not None else Path(cfg.output_dir) / cfg.run_name
        self.ckpt_dir = self.run_dir / "checkpoints"
        self._lock = FolderLock(self.run_dir, wait=wait)
        self._tb = None
        run_on_main(self.dist, lambda: self._claim_folder(resume=resume, restart=restart))
        try:
            self._setup(cfg, resume=resume, dataset=dataset)
        except BaseException:
            self._lock.release()
            raise

    def _claim_folder(self, *, resume: bool, restart: bool) -> None:
        """Lock the run folder, clear killed writes' temp files, refuse to overwrite a run."""
        self._lock.acquire()
        remove_stale_temps(self.run_dir)
        if restart:
            discard_run(self.run_dir)
        elif has_run_records(self.run_dir) and not resume:
            self._lock.release()
            raise RunExistsError(
                f"{self.run_dir} already holds a run; pass --resume to continue it, --restart to "
                "discard it and start over, or choose another --run-dir / name"
            )

    def _setup(self, cfg: ExperimentConfig, *, resume: bool, dataset: Any) -> None:
        from ..data.loader import AugmentConfig, BatchLoader

        tc = cfg.train
        last = self.ckpt_dir / "last.pt"
        self.data = dataset if dataset is not None else open_data(cfg, self.dist)
        self.protocol = run_protocol(cfg, data=data_identity(self.data),
                                     precision=precision_name(tc.precision, self.device))
        run_on_main(self.dist, lambda: check_protocol(
            self.run_dir, self.protocol, recorded=recorded_protocol(self.run_dir),
            fix="Rerun with the recorded values, or train the new protocol in another folder "
                "(--run-dir, output_dir, or --restart to discard this run)"))
        world = self.dist.world_size
        if cfg.data.batch_size % world:
            raise ConfigError(
                f"data.batch_size={cfg.data.batch_size} is the global batch and must divide evenly "
                f"across the {world} processes; use a multiple of {world}"
            )
        self.rank_batch_size = cfg.data.batch_size // world
        num_classes = len(self.data.classes)
        self.model_args = model_args(cfg, num_classes)
        preflight(self.model_args, cfg.data.augment.train_size or self.data.image_size)
        self.model = build_model(cfg, num_classes).to(self.device)
        if tc.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, tc)

        aug = cfg.data.augment
        augment = AugmentConfig(
            crop_padding=aug.crop_padding, random_resized_crop=aug.random_resized_crop,
            rrc_scale=tuple(aug.rrc_scale), hflip=aug.hflip, train_size=aug.train_size,
        )
        common = dict(device=self.device, seed=cfg.seed, augment=augment, rank=self.dist.rank,
                      world_size=self.dist.world_size, channels_last=tc.channels_last)
        self.train_loader = BatchLoader(self.data.train, batch_size=self.rank_batch_size, train=True, **common)
        self.val_loader = BatchLoader(self.data.val, batch_size=cfg.data.eval_batch_size, train=False, **common)
        self.steps_per_epoch = len(self.train_loader)
        if tc.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, tc.max_steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"data.batch_size={cfg.data.batch_size} leaves no full training batch "
                f"({len(self.data.train.labels)} training images); lower it"
            )
        self.scheduler = build_scheduler(self.optimizer, tc, self.steps_per_epoch)
        self.freeze = FreezeSchedule(self.optimizer, tc.freeze)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

        self.train_model: nn.Module = self.model
        if tc.sync_bn and self.dist.enabled:
            self.train_model = nn.SyncBatchNorm.convert_sync_batchnorm(self.train_model)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.train_model, device_ids=ids)
        if tc.compile:
            self.train_model = torch.compile(self.train_model)

        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.best: dict[str, Any] | None = None
        self.step_hooks: list[StepHook] = []
        self.epoch_hooks: list[Callable[[int, dict[str, Any]], None]] = []  # after each epoch's records
        if resume and last.exists():
            self._restore(load_checkpoint(last))

    # ----------------------------------------------------------------- state
    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "model_args": self.model_args,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "frozen": sorted(self.freeze.active),
            "epoch": epoch,
            "history": self.history,
            "best": self.best,
            "rng": rng_state(),
            "config": to_dict(self.cfg),
        }

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.freeze.active = set(ckpt["frozen"])
        self.history = list(ckpt["history"])
        self.best = ckpt["best"]
        self.start_epoch = ckpt["epoch"] + 1
        set_rng_state(ckpt["rng"])

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        cfg, main = self.cfg, self.dist.is_main
        try:
            if main:
                write_protocol(self.run_dir, self.protocol)
                records.write_config(self.run_dir / "config.yaml", cfg)
                if self.history:
                    records.write_metrics(self.run_dir / "metrics.csv", self.history)
            try:
                for epoch in range(self.start_epoch, cfg.train.epochs):
                    self._run_epoch(epoch)
            except Exception as err:
                if main:
                    self._write_summary(status="failed", error=f"{type(err).__name__}: {err}")
                raise
            finally:
                if self._tb is not None:
                    self._tb.close()
            summary = self._write_summary(status="complete") if main else {}
            barrier(self.dist)
            return summary
        finally:
            self._lock.release()

    def close(self) -> None:
        """Release the run folder (``fit`` does it itself)."""
        self._lock.release()

    def _run_epoch(self, epoch: int) -> None:
        frozen = self.freeze.start_epoch(epoch)
        lrs = current_lrs(self.optimizer)
        train_stats = self.train_one_epoch(epoch)
        # score (and save) one model: under DDP each rank's BatchNorm statistics drifted
        # apart in the epoch's last forward pass, so every rank takes rank 0's buffers
        broadcast_buffers(self.model, self.dist)
        val = self.evaluate(epoch)
        if not math.isfinite(val["loss"]):
            self._diverged(f"the validation loss is {val['loss']} after epoch {epoch}")
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": train_stats["loss"],
            "train_top1": train_stats["top1"],
            "val_loss": val["loss"],
            "val_top1": val["top1"],
            "val_top5": val["top5"],
            **{f"lr_{g}": lr for g, lr in lrs.items()},
            "frozen": ";".join(sorted(frozen)),
            "epoch_seconds": train_stats["seconds"],
            "eval_seconds": val["seconds"],
            "train_images_per_s": train_stats["images_per_s"],
        }
        flip = val.get("hflip")
        if flip is not None:
            row.update(val_loss_hflip=flip["loss"], val_top1_hflip=flip["top1"], val_top5_hflip=flip["top5"])
        self.history.append(row)
        improved = self.best is None or val["top1"] > self.best["val_top1"]  # chosen without TTA
        if improved:
            self.best = {"epoch": epoch, "val_top1": val["top1"], "val_top5": val["top5"], "val_loss": val["loss"]}
            if flip is not None:
                self.best["hflip"] = {"val_top1": flip["top1"], "val_top5": flip["top5"], "val_loss": flip["loss"]}
        if self.dist.is_main:
            self._write_epoch_records(epoch, row, val, improved)
        barrier(self.dist)
        for hook in self.epoch_hooks:  # e.g. a tuning trial's pruning decision
            hook(epoch, row)

    def _write_epoch_records(self, epoch: int, row: dict[str, Any], val: dict[str, Any], improved: bool) -> None:
        preds = self.run_dir / "predictions"
        flip = val.get("hflip")
        records.write_predictions(preds / "last.npz", val["labels"], val["top5_idx"], epoch)
        if flip is not None:
            records.write_predictions(preds / "last_hflip.npz", val["labels"], flip["top5_idx"], epoch)
        state = self._state(epoch)
        if improved:
            records.write_predictions(preds / "best.npz", val["labels"], val["top5_idx"], epoch)
            if flip is not None:
                records.write_predictions(preds / "best_hflip.npz", val["labels"], flip["top5_idx"], epoch)
            save_checkpoint(self.ckpt_dir / "best.pt", state)
        save_checkpoint(self.ckpt_dir / "last.pt", state)  # last: the commit point of the epoch
        records.write_metrics(self.run_dir / "metrics.csv", self.history)
        self._write_summary(status="running")
        tb = self._tensorboard()
        if tb is not None:
            for key in ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "train_images_per_s"):
                tb.add_scalar(key, row[key], epoch)
            for key, value in row.items():
                if key.startswith("lr_"):
                    tb.add_scalar(f"lr/{key[3:]}", value, epoch)
            tb.flush()

    def _tensorboard(self):
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard missing: the CSV record still has everything
                return None
            self._tb = SummaryWriter(str(self.run_dir / "tb"))
        return self._tb

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        tc = self.cfg.train
        model = self.train_model
        model.train()
        self.train_loader.set_epoch(epoch)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.float64)
        seen = 0  # images this rank trained on: known on the host, no device sync needed
        nonfinite = torch.zeros((), device=self.device, dtype=torch.bool)
        bar = self._progress(epoch)
        self._sync()
        start = time.perf_counter()
        step = 0
        for step, (x, y, _) in enumerate(self.train_loader):
            if step >= self.steps_per_epoch:
                break
            for hook in self.step_hooks:
                hook(epoch, step)
            with self._autocast():
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=tc.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.freeze.drop_frozen_grads()
            if tc.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None], tc.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            with torch.no_grad():
                n = y.shape[0]
                loss_sum += loss.detach().double() * n
                correct += (logits.argmax(dim=1) == y).sum()
                seen += n
                nonfinite |= ~torch.isfinite(loss.detach())
            if (step + 1) % tc.log_every == 0 or step + 1 == self.steps_per_epoch:
                self._check_finite(nonfinite, epoch, step)
                if bar is not None:
                    elapsed = time.perf_counter() - start
                    bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
                                    img_s=f"{seen * self.dist.world_size / elapsed:.0f}")
            if bar is not None:
                bar.update(1)
        self._sync()
        seconds = time.perf_counter() - start
        if bar is not None:
            bar.close()
        self._check_finite(nonfinite, epoch, step)
        count = torch.tensor(float(seen), device=self.device, dtype=torch.float64)
        totals = all_reduce_sum(torch.stack([loss_sum, correct, count]), self.dist)
        return {
            "loss": (totals[0] / totals[2]).item(),
            "top1": (totals[1] / totals[2]).item(),
            "seconds": seconds,
            "images_per_s": totals[2].item() / seconds if seconds > 0 else float("nan"),
        }

    def _check_finite(self, nonfinite: torch.Tensor, epoch: int, step: int) -> None:
        if bool(nonfinite.item()):
            self._diverged(f"the training loss became NaN/inf in epoch {epoch} (at or before step {step})")

    def _diverged(self, what: str) -> None:
        last = self.ckpt_dir / "last.pt"
        kept = (f"the last good checkpoint {last} (epoch {self.history[-1]['epoch']}) is intact"
                if self.history else "no checkpoint had been written yet")
        raise TrainingDiverged(f"run {self.run_dir} diverged: {what}; it is marked failed and {kept}. {RETRY_ADVICE}")

    def _progress(self, epoch: int):
        if not (self.cfg.train.progress and self.dist.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.steps_per_epoch, desc=f"{self.cfg.run_name} epoch {epoch + 1}/{self.cfg.train.epochs}",
                    leave=False, dynamic_ncols=True)

    @torch.inference_mode()
    def evaluate(self, epoch: int = -1) -> dict[str, Any]:
        """Loss, Top-1 and Top-5 over the complete val split (micro: share of all images).

        With ``train.eval_hflip`` the result also holds ``hflip``: the same figures from the
        mean of the softmax probabilities of each image and its mirror image, kept apart
        from the plain figures (which stay the protocol's)."""
        model = self.model
        model.eval()
        self._sync()
        start = time.perf_counter()
        hflip = self.cfg.train.eval_hflip
        loss_sum = torch.zeros(2, device=self.device, dtype=torch.float64)
        idx_parts, top_parts, flip_parts, label_parts = [], [], [], []
        k = min(5, self.model_args["num_classes"])
        for x, y, idx in self.val_loader:
            with self._autocast():
                logits = model(x)
            logits = logits.float()  # Top-k on float32: bf16 rounding ties ~1% of top-1 picks
            loss_sum[0] += F.cross_entropy(logits, y, reduction="sum").double()
            top_parts.append(logits.topk(k, dim=1).indices.cpu())
            if hflip:
                with self._autocast():
                    mirrored = model(x.flip(3))
                probs = flip_average(logits, mirrored.float())
                loss_sum[1] += F.nll_loss(probs.clamp_min(torch.finfo(probs.dtype).tiny).log(), y,
                                          reduction="sum").double()
                flip_parts.append(probs.topk(k, dim=1).indices.cpu())
            idx_parts.append(idx.cpu())
            label_parts.append(y.cpu())
        self._sync()
        seconds = time.perf_counter() - start
        loss_total = all_reduce_sum(loss_sum, self.dist).tolist()
        labels, top = self._gather_predictions(idx_parts, top_parts, label_parts, k)
        n = len(labels)
        result = {"loss": loss_total[0] / n, **_topk_rates(top, labels), "seconds": seconds,
                  "labels": labels, "top5_idx": top}
        if hflip:
            _, top_flip = self._gather_predictions(idx_parts, flip_parts, label_parts, k)
            result["hflip"] = {"loss": loss_total[1] / n, **_topk_rates(top_flip, labels), "top5_idx": top_flip}
        return result

    def _gather_predictions(self, idx_parts: list[torch.Tensor], top_parts: list[torch.Tensor],
                            label_parts: list[torch.Tensor], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(labels, top-5 indices) of every val image in val order, from all ranks."""
        local = (
            torch.cat(idx_parts).numpy() if idx_parts else np.zeros(0, np.int64),
            torch.cat(top_parts).numpy() if top_parts else np.zeros((0, k), np.int64),
            torch.cat(label_parts).numpy() if label_parts else np.zeros(0, np.int64),
        )
        parts = all_gather_objects(local, self.dist)
        idx = np.concatenate([p[0] for p in parts])
        order = np.argsort(idx, kind="stable")
        top = np.concatenate([p[1] for p in parts])[order]
        labels = np.concatenate([p[2] for p in parts])[order]
        n = len(self.data.val.labels)
        if len(idx) != n or not np.array_equal(idx[order], np.arange(n)):
            raise RuntimeError(f"val pass covered {len(idx)} predictions for {n} images; the loader must yield each once")
        if k < 5:
            top = np.concatenate([top, -np.ones((n, 5 - k), dtype=top.dtype)], axis=1)
        return labels, top

    # --------------------------------------------------------------- summary
    def _write_summary(self, status: str, error: str | None = None) -> dict[str, Any]:
        secs = [r["epoch_seconds"] for r in self.history]
        final = self.history[-1] if self.history else None
        counts = count_parameters(self.model)
        best = None if self.best is None else {k: v for k, v in self.best.items() if k != "hflip"}
        summary: dict[str, Any] = {
            "status": status,
            "variant": self.cfg.variant,
            "seed": self.cfg.seed,
            "epochs": self.cfg.train.epochs,
            "epochs_done": len(self.history),
            "best_epoch": self.best["epoch"] if self.best else None,
            "best": best,
            "final": None if final is None else {
                "epoch": final["epoch"], "val_top1": final["val_top1"],
                "val_top5": final["val_top5"], "val_loss": final["val_loss"],
            },
            "train_seconds_total": float(sum(secs)),
            "epoch_seconds_mean": float(np.mean(secs)) if secs else None,
            "params": {**counts, "added": counts["total"] - counts["backbone"] - counts["head"]},
            "class_names": list(getattr(self.data, "class_names", [])),
            "environment": records.environment(self.device, self.dist.world_size),
        }
        if self.cfg.train.eval_hflip:  # flip-averaged figures: their own entries, never mixed in
            summary["best_hflip"] = None if not (self.best or {}).get("hflip") else \
                {"epoch": self.best["epoch"], **self.best["hflip"]}
            summary["final_hflip"] = None if final is None or "val_top1_hflip" not in final else {
                "epoch": final["epoch"], "val_top1": final["val_top1_hflip"],
                "val_top5": final["val_top5_hflip"], "val_loss": final["val_loss_hflip"],
            }
        if error:
            summary["error"] = error
        if any(math.isnan(v) for v in secs):
            summary["warning"] = "some epoch timings are NaN"
        records.write_json(self.run_dir / "summary.json", summary)
        return summary


def flip_average(logits: torch.Tensor, mirrored_logits: torch.Tensor) -> torch.Tensor:
    """Test-time flip averaging: the mean of the two passes' softmax probabilities."""
    return 0.5 * (logits.softmax(dim=1) + mirrored_logits.softmax(dim=1))


def _topk_rates(top: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    hit = top == labels[:, None]
    return {"top1": float(hit[:, 0].mean()), "top5": float(hit.any(axis=1).mean())}


def train(cfg: ExperimentConfig, *, run_dir: str | Path | None = None, resume: bool = False,
          restart: bool = False, wait: bool = False) -> dict[str, Any]:
    """Train one run and return its summary (empty on ranks other than 0)."""
    return Trainer(cfg, run_dir=run_dir, resume=resume, restart=restart, wait=wait).fit()
