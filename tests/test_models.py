"""The four study variants: structure, parameter counts, sites, groups, timm names."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

import attnlab  # noqa: F401  (registers the timm names)
from attnlab.attention import EMA, SimAM
from attnlab.models import (
    Placement,
    attention_modules,
    count_parameters,
    create_model,
    parameter_groups,
)

RESNET50_200 = 23_917_832
EMA_ADDED = 198_368
STUDY_VARIANTS = ["baseline", "simam", "ema", "hybrid"]


def test_baseline_matches_torchvision_resnet50() -> None:
    ours = create_model("baseline", num_classes=1000)
    ref = torchvision.models.resnet50()
    assert count_parameters(ours)["total"] == 25_557_032
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x))


@pytest.mark.parametrize(
    "variant,added,n_simam,n_ema",
    [("baseline", 0, 0, 0), ("simam", 0, 16, 0), ("ema", EMA_ADDED, 0, 16), ("hybrid", EMA_ADDED, 16, 16)],
)
def test_variant_parameter_counts(variant: str, added: int, n_simam: int, n_ema: int) -> None:
    model = create_model(variant)
    counts = count_parameters(model)
    assert counts["total"] == RESNET50_200 + added
    assert counts["trainable"] == counts["total"]
    assert counts["head"] == 2048 * 200 + 200
    kinds = [type(m) for _, m in attention_modules(model)]
    assert kinds.count(SimAM) == n_simam and kinds.count(EMA) == n_ema


def test_ema_adds_10c2_plus_4c_per_block() -> None:
    model = create_model("ema")
    for name, m in attention_modules(model):
        cg = m.channels // m.groups
        assert sum(p.numel() for p in m.parameters()) == 10 * cg * cg + 4 * cg, name


def test_hybrid_default_sites_in_every_bottleneck() -> None:
    model = create_model("hybrid")
    blocks = [b for layer in model.stages for b in layer]
    assert len(blocks) == 16
    for block in blocks:
        assert block.attention_sites == {"post_conv2": ["simam"], "pre_add": ["ema"]}
        assert block.ema.channels == block.conv3.out_channels


def test_simam_acts_between_conv2_and_bn2_and_ema_between_bn3_and_add() -> None:
    model = create_model("hybrid").eval()
    block = model.layer2[1]
    seen: dict[str, torch.Tensor] = {}
    block.conv2.register_forward_hook(lambda m, i, o: seen.__setitem__("conv2_out", o))
    block.bn2.register_forward_pre_hook(lambda m, i: seen.__setitem__("bn2_in", i[0]))
    block.bn3.register_forward_hook(lambda m, i, o: seen.__setitem__("bn3_out", o))
    block.ema.register_forward_hook(lambda m, i, o: seen.__setitem__("ema_out", o))
    block.register_forward_pre_hook(lambda m, i: seen.__setitem__("block_in", i[0]))
    block.register_forward_hook(lambda m, i, o: seen.__setitem__("block_out", o))
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
        torch.testing.assert_close(seen["bn2_in"], block.simam(seen["conv2_out"]))
        torch.testing.assert_close(seen["ema_out"], block.ema(seen["bn3_out"]))
        torch.testing.assert_close(seen["block_out"], torch.relu(seen["ema_out"] + seen["block_in"]))


def test_both_modules_back_to_back_at_one_site() -> None:
    model = create_model(
        "hybrid",
        placements=[Placement("simam", "pre_add"), Placement("ema", "pre_add")],
    )
    block = model.layer3[0]
    assert block.attention_sites == {"pre_add": ["simam", "ema"]}
    x = torch.randn(1, 1024, 4, 4)
    torch.testing.assert_close(block._attend("pre_add", x), block.ema(block.simam(x)))


def test_stages_blocks_and_sites_are_configurable() -> None:
    model = create_model("ema", stages=[3, 4], blocks=[0])
    assert [n for n, _ in attention_modules(model)] == ["layer3.0.ema", "layer4.0.ema"]
    moved = create_model("simam", sites={"simam": "post_add"})
    assert moved.layer1[0].attention_sites == {"post_add": ["simam"]}
    from_dicts = create_model("hybrid", placements=[{"kind": "ema", "site": "post_conv3", "stages": [4]}])
    assert len(attention_modules(from_dicts)) == 3


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"variant": "cbam_hybrid"}, "unknown variant 'cbam_hybrid'"),
        ({"backbone": "vgg16"}, "unknown backbone 'vgg16'"),
        ({"sites": {"ema": "after_fc"}}, "unknown site 'after_fc'.*valid sites"),
        ({"stages": [5]}, r"stage 5 is not in 1..4"),
        ({"blocks": [3]}, r"block 3 does not exist in stage 1 of resnet50 \(it has blocks 0..2\)"),
        ({"attention_kwargs": {"ema": {"factor": 48}}}, r"cannot place ema at layer1.0.pre_add of resnet50 \(256 channels\).*divisible"),
        ({"attention_kwargs": {"ema": {"factor": 512}}}, r"needs at least 512 channels"),
        ({"placements": [{"kind": "ema"}]}, "a placement needs keys kind and site"),
        ({"placements": [Placement("ema", "pre_add"), Placement("ema", "post_add")]}, "only once per block"),
    ],
)
def test_bad_configurations_give_clear_errors(kwargs: dict, message: str) -> None:
    kwargs = {"variant": "hybrid", **kwargs}
    with pytest.raises(ValueError, match=message):
        create_model(kwargs.pop("variant"), **kwargs)


def test_simam_on_a_1x1_stage_is_a_clear_error() -> None:
    model = create_model("simam").eval()
    with pytest.raises(ValueError, match="1x1"):
        model(torch.randn(1, 3, 32, 32))  # layer4's conv2 output is 1x1 at 32x32


@pytest.mark.parametrize("variant", STUDY_VARIANTS)
@pytest.mark.parametrize("size", [64, 224])
def test_forward_and_backward(variant: str, size: int) -> None:
    model = create_model(variant)
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 200)
    out.logsumexp(dim=1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if variant in ("ema", "hybrid"):
        assert model.layer4[2].ema.conv3x3.weight.grad.abs().sum() > 0


def test_parameter_groups_partition_the_model() -> None:
    model = create_model("hybrid")
    groups = parameter_groups(model)
    assert list(groups) == ["backbone", "simam", "ema", "head"]
    assert groups["simam"] == []
    assert sum(p.numel() for _, p in groups["ema"]) == EMA_ADDED
    assert [n for n, _ in groups["head"]] == ["fc.weight", "fc.bias"]
    ids = [id(p) for params in groups.values() for _, p in params]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert all(".ema." not in n and n.split(".")[0] != "fc" for n, _ in groups["backbone"])


def test_baseline_groups_have_no_attention() -> None:
    assert list(parameter_groups(create_model("baseline"))) == ["backbone", "head"]


@pytest.mark.parametrize(
    "name,variant", [("resnet50_simam", "simam"), ("resnet50_ema", "ema"), ("resnet50_simam_ema", "hybrid")]
)
def test_timm_registry_names(name: str, variant: str) -> None:
    assert name in timm.list_models("resnet50_*")
    model = timm.create_model(name, num_classes=200)
    assert model.variant == variant
    ref = create_model(variant)
    assert count_parameters(model)["total"] == count_parameters(ref)["total"]
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 200)
