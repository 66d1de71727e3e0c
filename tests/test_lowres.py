"""Accuracy levers for 64x64 inputs: the low-resolution stem, the release ramp, flip TTA, recipes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from attnlab.config import ConfigError, TrainConfig, from_dict, load_config
from attnlab.data.synthetic import write_synthetic
from attnlab.engine.optim import build_optimizer, build_scheduler, current_lrs
from attnlab.engine.trainer import Trainer, flip_average, preflight
from attnlab.models import create_model, resample_stem_kernel
from attnlab.profiling import count_gmacs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def standin_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A stand-in for ImageNet weights: a random torchvision-layout ResNet-18 state_dict."""
    torch.manual_seed(7)
    state = create_model("baseline", backbone="resnet18", num_classes=1000).state_dict()
    path = tmp_path_factory.mktemp("w") / "resnet18.pth"
    torch.save(state, path)
    return path, state


def stage_sizes(model: torch.nn.Module, image_size: int) -> list[int]:
    sizes: list[int] = []
    hooks = [getattr(model, f"layer{i}").register_forward_hook(lambda m, a, out: sizes.append(out.shape[-1]))
             for i in range(1, 5)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, image_size, image_size))
    for h in hooks:
        h.remove()
    return sizes


@pytest.mark.parametrize("stem", ["low_res", "low_res_3x3"])
def test_low_res_stems_keep_every_pretrained_tensor(standin_weights, stem: str) -> None:
    path, source = standin_weights
    model = create_model("hybrid", backbone="resnet18", num_classes=200, stem=stem, weights=str(path),
                         attention_kwargs={"ema": {"factor": 8}})
    target = model.state_dict()
    backbone = [k for k in source if not k.startswith("fc.")]
    for key in backbone:
        if key == "conv1.weight" and stem == "low_res_3x3":
            continue
        assert torch.equal(target[key], source[key]), key
    if stem == "low_res":
        assert model.conv1.stride == (1, 1) and model.conv1.kernel_size == (7, 7)
    else:
        assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
        assert torch.equal(target["conv1.weight"], resample_stem_kernel(source["conv1.weight"]))
    assert isinstance(model.maxpool, torch.nn.Identity)
    assert set(target) == set(create_model("hybrid", backbone="resnet18", num_classes=200,
                                           attention_kwargs={"ema": {"factor": 8}}).state_dict())


def test_resampled_kernel_keeps_each_kernels_response_to_a_flat_patch() -> None:
    w7 = torch.randn(4, 3, 7, 7)
    w3 = resample_stem_kernel(w7)
    assert w3.shape == (4, 3, 3, 3)
    torch.testing.assert_close(w3.sum((2, 3)), w7.sum((2, 3)))
    flat = torch.ones(1, 3, 9, 9)
    torch.testing.assert_close(F.conv2d(flat, w3)[0, :, 3, 3], F.conv2d(flat, w7)[0, :, 1, 1])
    # a kernel constant over space stays that constant per tap, scaled to the same sum
    const = torch.full((1, 1, 7, 7), 2.0)
    torch.testing.assert_close(resample_stem_kernel(const), torch.full((1, 1, 3, 3), 2.0 * 49 / 9))


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_feature_map_sizes_per_stage(backbone: str) -> None:
    assert stage_sizes(create_model("baseline", backbone=backbone), 64) == [16, 8, 4, 2]
    assert stage_sizes(create_model("baseline", backbone=backbone, stem="low_res"), 64) == [64, 32, 16, 8]
    assert stage_sizes(create_model("baseline", backbone=backbone, stem="low_res_3x3"), 64) == [64, 32, 16, 8]


def test_gmacs_follow_the_stem_and_preflight_accepts_simam_at_32() -> None:
    stock = count_gmacs(create_model("baseline"), 64)
    low = count_gmacs(create_model("baseline", stem="low_res"), 64)
    assert 15 < low / stock < 16.5  # 4x per side everywhere after the stem
    args = {"variant": "hybrid", "backbone": "resnet18", "num_classes": 10, "placements": None, "sites": None,
            "stages": None, "blocks": None, "attention_kwargs": {"ema": {"factor": 8}}}
    with pytest.raises(ConfigError, match="layer4.0.simam on 32x32"):
        preflight({**args, "stem": "imagenet"}, 32)
    preflight({**args, "stem": "low_res"}, 32)  # layer4 is 4x4


def test_timm_names_take_the_stem() -> None:
    model = timm.create_model("resnet18_simam_ema", num_classes=10, stem="low_res")
    assert model.stem == "low_res" and isinstance(model.maxpool, torch.nn.Identity)
    with pytest.raises(ValueError, match="unknown stem 'tiny'"):
        create_model("baseline", stem="tiny")


def test_release_ramp_lr_step_by_step() -> None:
    model = create_model("ema", backbone="resnet18", num_classes=3, attention_kwargs={"ema": {"factor": 8}})
    cfg = TrainConfig(epochs=5, lr=0.1, lr_mult={"backbone": 1.0, "ema": 10.0, "head": 10.0},
                      schedule="constant", warmup_epochs=0, warmup_start=0.1, freeze={"ema": 2},
                      unfreeze_warmup_epochs=1)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=4)
    ema, backbone = [], []
    for _ in range(14):
        lrs = current_lrs(opt)
        ema.append(lrs["ema"])
        backbone.append(lrs["backbone"])
        opt.step()
        sched.step()
    expected = [0.0] * 8 + [1.0 * f for f in (0.1, 0.325, 0.55, 0.775)] + [1.0, 1.0]
    assert ema == pytest.approx(expected)
    assert backbone == pytest.approx([0.1] * 14)
    # without the ramp (the study): 0 while frozen, then straight to the schedule's value
    cfg.unfreeze_warmup_epochs = 0
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=4)
    seen = []
    for _ in range(10):
        seen.append(current_lrs(opt)["ema"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.0] * 8 + [1.0, 1.0])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("data") / "tiny", classes=3, train_per_class=4,
                           val_per_class=4, size=64, seed=4)


def tiny(root: Path, out: Path, **train) -> dict:
    return {"variant": "baseline", "seed": 0, "output_dir": str(out), "model": {"backbone": "resnet18"},
            "data": {"root": str(root), "batch_size": 6, "eval_batch_size": 5},
            "train": {"epochs": 2, "lr": 0.01, "device": "cpu", "progress": False, "warmup_epochs": 0, **train}}


def test_flip_tta_is_the_mean_of_both_passes_probabilities(root: Path, tmp_path: Path, one_thread) -> None:
    trainer = Trainer(from_dict(tiny(root, tmp_path, eval_hflip=True)))
    result = trainer.evaluate()
    trainer.close()
    model = trainer.model.eval()
    probs, labels = [], []
    with torch.no_grad():
        for x, y, _ in trainer.val_loader:
            probs.append((model(x).softmax(1) + model(torch.flip(x, dims=[3])).softmax(1)) / 2)
            labels.append(y)
    p, y = torch.cat(probs), torch.cat(labels)
    flip = result["hflip"]
    assert flip["loss"] == pytest.approx(F.nll_loss(p.log(), y).item(), rel=1e-5)
    assert np.array_equal(flip["top5_idx"][:, :3], p.topk(3, dim=1).indices.numpy())
    assert flip["top1"] == pytest.approx((p.argmax(1) == y).float().mean().item())
    plain = result["top5_idx"][:, 0]
    with torch.no_grad():
        assert np.array_equal(plain, torch.cat([model(x).argmax(1) for x, _, _ in trainer.val_loader]).numpy())
    torch.testing.assert_close(flip_average(torch.zeros(1, 2), torch.tensor([[0.0, 100.0]])),
                               torch.tensor([[0.25, 0.75]]))


def test_flip_tta_has_its_own_columns_and_entries(root: Path, tmp_path: Path, one_thread) -> None:
    Trainer(from_dict(tiny(root, tmp_path, eval_hflip=True, freeze={"head": 1}))).fit()
    run = tmp_path / "baseline_seed0"
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val_top1", "val_top1_hflip", "val_top5_hflip", "val_loss_hflip"} <= set(header)
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    lr_head = header.index("lr_head")
    assert float(rows[0][lr_head]) == 0.0 and float(rows[1][lr_head]) > 0  # frozen: LR 0 recorded
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["final"]) == {"epoch", "val_top1", "val_top5", "val_loss"}
    assert summary["final_hflip"]["epoch"] == 1 and summary["best_hflip"]["epoch"] == summary["best"]["epoch"]
    assert (run / "predictions" / "last_hflip.npz").is_file()


def test_recipe_configs() -> None:
    low = load_config(CONFIGS / "paper_lowres.yaml")
    big = load_config(CONFIGS / "paper_224.yaml")
    paper = load_config(CONFIGS / "paper.yaml")
    assert low.model.stem == "low_res" and low.data.augment.train_size is None
    assert big.model.stem == "imagenet" and big.data.augment.train_size == 224
    for recipe in (low, big):  # the rest of the protocol is the study's
        assert recipe.train == paper.train and recipe.variants == paper.variants
    for name in ("paper_lowres.yaml", "paper_224.yaml"):
        header = (CONFIGS / name).read_text().split("\n\n")[0]
        assert "GMACs" in header and "not an attnlab result" in header


def test_report_shows_flip_tta_in_its_own_columns(root: Path, tmp_path: Path, one_thread) -> None:
    from attnlab.report import write_report
    from attnlab.study.grid import run_grid

    raw = tiny(root, tmp_path, eval_hflip=True, epochs=1)
    raw.pop("variant"), raw.pop("seed")
    raw.update(variants=["baseline"], seeds=[0])
    run_grid(from_dict(raw), tmp_path / "abl", log=lambda *_: None)
    table = write_report(tmp_path / "abl", make_figures=False, echo=False)["table"]
    summary = json.loads((tmp_path / "abl/runs/baseline_seed0/summary.json").read_text())
    assert table["top1_hflip_mean_pct"].iloc[0] == pytest.approx(100 * summary["final_hflip"]["val_top1"])
    assert table["top1_mean_pct"].iloc[0] == pytest.approx(100 * summary["final"]["val_top1"])
