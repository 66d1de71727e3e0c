"""Backbones beyond ResNet-50 (issue 9, part 2): torchvision parity, weights, basic-block sites,
named groups and clear errors for combinations that cannot work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision

import attnlab  # noqa: F401  (registers the timm names)
from attnlab.config import TrainConfig
from attnlab.engine.optim import build_optimizer
from attnlab.models import (
    BACKBONES,
    VARIANTS,
    attention_modules,
    count_parameters,
    create_model,
    parameter_groups,
)
from attnlab.models.blocks import BASIC_SITES
from attnlab.models.weights import load_backbone_weights

# torchvision's own figures (1000 classes)
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
}
RESNET18_STAGES = [(64, 2), (128, 2), (256, 2), (512, 2)]  # (channels, blocks)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_torchvision_backbone_is_covered() -> None:
    assert set(BACKBONES) == set(TORCHVISION_PARAMS)


@pytest.mark.parametrize("backbone", list(TORCHVISION_PARAMS))
def test_state_dict_and_parameter_count_equal_torchvision(backbone: str) -> None:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        ours = create_model("baseline", backbone=backbone, num_classes=1000)
        ref = torchvision.models.get_model(backbone)
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert list(ours_sd) == list(ref_sd)
    assert all(ours_sd[k].shape == ref_sd[k].shape for k in ref_sd)
    assert count_parameters(ours)["total"] == sum(p.numel() for p in ref.parameters()) == TORCHVISION_PARAMS[backbone]


@pytest.mark.parametrize("backbone", ["resnet18", "resnext50_32x4d"])
def test_same_function_as_torchvision(backbone: str) -> None:
    ours = create_model("baseline", backbone=backbone, num_classes=1000).eval()
    ref = torchvision.models.get_model(backbone).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))


@pytest.mark.parametrize("backbone", list(TORCHVISION_PARAMS))
def test_hybrid_builds_and_runs_on_every_backbone(backbone: str) -> None:
    with torch.device("meta"):
        model = create_model("hybrid", backbone=backbone)
        out = model(torch.empty(2, 3, 64, 64))
    assert out.shape == (2, 200)
    n_blocks = sum(BACKBONES[backbone][1])
    assert len(attention_modules(model)) == 2 * n_blocks
    assert list(parameter_groups(model)) == ["backbone", "simam", "ema", "head"]


def _fake_torchvision_file(backbone: str, directory: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A torchvision state_dict with random (non-default) tensors, saved like a download."""
    torch.manual_seed(7)
    ref = torchvision.models.get_model(backbone)
    with torch.no_grad():
        for t in ref.state_dict().values():
            if t.is_floating_point():
                t.normal_()
    path = directory / f"{backbone}-fake.pth"
    torch.save(ref.state_dict(), path)
    return path, {k: v.clone() for k, v in ref.state_dict().items()}


@pytest.mark.parametrize("backbone,width", [("resnet18", 512), ("resnext50_32x4d", 2048)])
def test_weights_from_a_file_fill_the_backbone(backbone: str, width: int, tmp_path: Path) -> None:
    path, source = _fake_torchvision_file(backbone, tmp_path)
    model = create_model("hybrid", backbone=backbone)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_backbone_weights(model, str(path))
    after = model.state_dict()
    fresh = [k for k in after if k.startswith("fc.") or ".ema." in k]
    backbone_keys = [k for k in after if k not in fresh]
    assert sorted(report.loaded) == sorted(backbone_keys)
    assert all(torch.equal(after[k], source[k]) for k in backbone_keys)
    assert all(torch.equal(after[k], before[k]) for k in fresh)
    assert after["fc.weight"].shape == (200, width)
    assert len(report.fresh_attention) == 6 * sum(BACKBONES[backbone][1])  # EMA: 6 tensors


def test_torchvision_weight_names_resolve_per_backbone(tmp_path: Path, monkeypatch) -> None:
    path, source = _fake_torchvision_file("resnet18", tmp_path)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    os.link(path, cache / os.path.basename(url))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    model = create_model("cbam", backbone="resnet18", weights="IMAGENET1K_V1")
    assert torch.equal(model.layer4[1].conv2.weight, source["layer4.1.conv2.weight"])
    # torchvision has only V1 weights for ResNet-18: V2 is an error that lists the valid names
    with pytest.raises(ValueError, match=r"unknown weights 'IMAGENET1K_V2' for resnet18.*IMAGENET1K_V1"):
        create_model("baseline", backbone="resnet18", weights="IMAGENET1K_V2")


def test_weights_of_another_backbone_are_a_clear_error(tmp_path: Path) -> None:
    path, _ = _fake_torchvision_file("resnet18", tmp_path)
    with pytest.raises(ValueError, match=r"do not fit backbone resnet34: missing in source \(\d+\): layer1.2.conv1.weight"):
        create_model("baseline", backbone="resnet34", weights=str(path))


def _hooks(block: torch.nn.Module, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}

    def out(name: str):
        return lambda m, i, o: seen.__setitem__(name, o)

    def inp(name: str):
        return lambda m, i: seen.__setitem__(name, i[0])

    block.conv1.register_forward_hook(out("conv1_out"))
    block.bn1.register_forward_pre_hook(inp("bn1_in"))
    block.conv2.register_forward_hook(out("conv2_out"))
    block.bn2.register_forward_pre_hook(inp("bn2_in"))
    block.bn2.register_forward_hook(out("bn2_out"))
    block.downsample.register_forward_hook(out("identity"))
    module.register_forward_pre_hook(inp("attn_in"))
    module.register_forward_hook(out("attn_out"))
    block.register_forward_hook(out("block_out"))
    return seen


@pytest.mark.parametrize("site", BASIC_SITES)
def test_basic_block_sites(site: str) -> None:
    """Which tensor a module sees at each BasicBlock site and where its output goes."""
    model = create_model("se", backbone="resnet18", sites={"se": site}).eval()
    block = model.layer2[0]  # stride 2 with a downsample: the add is not with the block input
    assert block.attention_sites == {site: ["se"]}
    seen = _hooks(block, block.se)
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    added = torch.relu(seen["bn2_out"] + seen["identity"])
    expected_in = {
        "post_conv1": seen["conv1_out"],  # after conv1, before bn1
        "post_conv2": seen["conv2_out"],  # after conv2, before bn2
        "pre_add": seen["bn2_out"],       # after bn2, before the residual add
        "post_add": added,                # after the add and its ReLU
    }[site]
    torch.testing.assert_close(seen["attn_in"], expected_in)
    consumer = {
        "post_conv1": (seen["bn1_in"], seen["attn_out"]),
        "post_conv2": (seen["bn2_in"], seen["attn_out"]),
        "pre_add": (seen["block_out"], torch.relu(seen["attn_out"] + seen["identity"])),
        "post_add": (seen["block_out"], seen["attn_out"]),
    }[site]
    torch.testing.assert_close(*consumer)


def test_hybrid_on_basic_blocks_follows_the_official_code() -> None:
    """SimAM wraps the second 3x3 conv (before bn2), EMA follows bn2: as SimAM's own ResNet-18."""
    model = create_model("hybrid", backbone="resnet18")
    blocks = [b for layer in model.stages for b in layer]
    assert len(blocks) == 8
    assert all(b.attention_sites == {"post_conv2": ["simam"], "pre_add": ["ema"]} for b in blocks)
    assert [b.ema.channels for b in blocks] == [b.conv2.out_channels for b in blocks]


def test_resnet18_named_groups_and_ema_parameters() -> None:
    """EMA (factor 32, c' = C/32) adds 10c'^2 + 4c' per basic block: 7,040 on ResNet-18."""
    added = sum(n * (10 * (c // 32) ** 2 + 4 * (c // 32)) for c, n in RESNET18_STAGES)
    assert added == 7_040
    counts = count_parameters(create_model("hybrid", backbone="resnet18"))
    assert counts["ema"] == added and counts["simam"] == 0
    assert counts["head"] == 512 * 200 + 200
    assert counts["total"] == TORCHVISION_PARAMS["resnet18"] - (512 * 1000 + 1000) + counts["head"] + added


def test_resnext50_hybrid_adds_what_resnet50_does() -> None:
    """Same channels after bn3 as ResNet-50, so EMA adds the same 198,368; SimAM sees the grouped conv."""
    model = create_model("hybrid", backbone="resnext50_32x4d")
    assert count_parameters(model)["ema"] == 198_368
    assert model.layer1[0].conv2.groups == 32 and model.layer1[0].site_channels("post_conv2") == 128


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"attention_kwargs": {"ema": {"factor": 128}}},
         r"cannot place ema at layer1.0.pre_add of resnet18 \(64 channels\): EMA with factor=128 needs at least 128 channels"),
        ({"attention_kwargs": {"ema": {"factor": 48}}},
         r"cannot place ema at layer1.0.pre_add of resnet18 \(64 channels\).*divisible by factor \(48\)"),
        ({"variant": "se", "attention_kwargs": {"se": {"reduction": 128}}},
         r"cannot place se at layer1.0.pre_add of resnet18 \(64 channels\): SE with reduction=128 needs at least 128"),
        ({"sites": {"ema": "post_conv3"}}, r"unknown site 'post_conv3' for AttentiveBasicBlock in resnet18"),
        ({"blocks": [2]}, r"block 2 does not exist in stage 1 of resnet18 \(it has blocks 0..1\)"),
    ],
)
def test_combinations_that_cannot_work_are_clear_errors(kwargs: dict, message: str) -> None:
    kwargs = {"variant": "hybrid", **kwargs}
    with pytest.raises(ValueError, match=message):
        create_model(kwargs.pop("variant"), backbone="resnet18", **kwargs)


def test_factor_128_works_where_the_channels_allow_it() -> None:
    model = create_model("ema", backbone="resnet18", stages=[3, 4], attention_kwargs={"ema": {"factor": 128}})
    assert [(n, m.channels, m.groups) for n, m in attention_modules(model)] == [
        ("layer3.0.ema", 256, 128), ("layer3.1.ema", 256, 128),
        ("layer4.0.ema", 512, 128), ("layer4.1.ema", 512, 128),
    ]


def cancelled_by_batchnorm(name: str) -> bool:
    """Coordinate attention's conv1 bias feeds a training-mode BatchNorm, which removes it
    again: its gradient is zero up to rounding (see tests/test_lineage.py)."""
    return name.endswith(".ca.conv1.bias")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_trains_one_step_on_resnet18(variant: str) -> None:
    model = create_model(variant, backbone="resnet18").train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 200) and torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([0, 5])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    optimizer = build_optimizer(model, TrainConfig())
    before = {n: p.detach().clone() for n, p in model.named_parameters() if not cancelled_by_batchnorm(n)}
    optimizer.step()
    params = dict(model.named_parameters())
    assert [n for n in before if torch.equal(params[n], before[n])] == []


def test_resnext50_hybrid_forward_and_backward() -> None:
    model = create_model("hybrid", backbone="resnext50_32x4d").train()
    out = model(torch.randn(2, 3, 64, 64))
    out.logsumexp(dim=1).mean().backward()
    assert torch.isfinite(out).all()
    assert model.layer4[2].ema.conv3x3.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name,backbone", [("resnet18_simam_ema", "resnet18"), ("resnet34_simam_ema", "resnet34")])
def test_timm_names_for_basic_block_hybrids(name: str, backbone: str) -> None:
    with torch.device("meta"):
        model = timm.create_model(name, num_classes=200)
        ref = create_model("hybrid", backbone=backbone)
    assert (model.backbone_name, model.variant) == (backbone, "hybrid")
    assert list(model.state_dict()) == list(ref.state_dict())
    assert count_parameters(model)["total"] == count_parameters(ref)["total"]
