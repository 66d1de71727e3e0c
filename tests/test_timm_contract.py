"""The registered names behave as timm's own model tests expect of a timm model: default
cfg, forward/backward, head and pooling, feature extraction, common kwargs."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from timm.data import resolve_data_config
from torchvision.models.feature_extraction import create_feature_extractor

import attnlab  # noqa: F401  (registers the names)
from attnlab.models import TIMM_NAMES, create_model

SMALL = ["resnet18_simam_ema", "resnet34_simam_ema"]
ALL = sorted(TIMM_NAMES)


def test_every_name_is_registered_with_both_tags() -> None:
    from timm.models import get_pretrained_cfg

    assert set(timm.list_models("resnet*")) >= set(ALL)
    for name in ALL:
        assert get_pretrained_cfg(f"{name}.tv_in1k").num_classes == 1000, name
        assert get_pretrained_cfg(f"{name}.tiny_imagenet").input_size == (3, 64, 64), name


@pytest.mark.parametrize("name", ALL)
def test_default_cfg_contract(name: str, one_thread) -> None:
    """timm's test_model_default_cfgs, at the study's 64x64 (tiny_imagenet tag)."""
    model = timm.create_model(f"{name}.tiny_imagenet").eval()
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg or model.default_cfg == cfg
    assert cfg["input_size"] == (3, 64, 64) and cfg["num_classes"] == model.num_classes == 200
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
    state = model.state_dict()
    assert f"{cfg['first_conv']}.weight" in state and f"{cfg['classifier']}.weight" in state
    assert model.num_features > 0 and model.head_hidden_size == model.num_features
    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert tuple(feats.shape[-2:]) == cfg["pool_size"] and feats.shape[1] == model.num_features
        assert pre.shape == (1, model.num_features)
        assert torch.equal(model.forward_head(feats), model(x))
        model.reset_classifier(0)
        assert model.num_classes == 0 and model(x).shape == pre.shape
        model.reset_classifier(0, "")
        assert model(x).shape[-2:] == cfg["pool_size"]
        unpooled = timm.create_model(name, num_classes=0, global_pool="").eval()
        assert unpooled(x).ndim == 4
    model.reset_classifier(7)
    assert model.get_classifier().out_features == 7


def test_in1k_tag_is_the_default() -> None:
    model = timm.create_model("resnet50_simam_ema")
    assert model.pretrained_cfg["tag"] == "tv_in1k" and model.num_classes == 1000
    assert model.pretrained_cfg["input_size"] == (3, 224, 224) and model.pretrained_cfg["pool_size"] == (7, 7)
    assert resolve_data_config({}, model=timm.create_model("resnet18_simam_ema.tiny_imagenet"))["input_size"] == (3, 64, 64)


@pytest.mark.parametrize("name", SMALL)
def test_forward_backward_every_parameter_gets_a_gradient(name: str, one_thread) -> None:
    model = timm.create_model(name, num_classes=5).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.mean().backward()
    params = list(model.parameters())
    assert sum(p.grad is not None for p in params) == len(params)


@pytest.mark.parametrize("name,stem,reductions", [
    ("resnet18_simam_ema", "imagenet", [2, 4, 8, 16, 32]),
    ("resnet34_simam_ema", "low_res", [1, 1, 2, 4, 8]),
])
def test_features_only(name: str, stem: str, reductions: list[int], one_thread) -> None:
    model = timm.create_model(name, features_only=True, stem=stem).eval()
    assert model.feature_info.reduction() == reductions
    assert model.feature_info.channels() == [64, 64, 128, 256, 512]
    outs = model(torch.randn(1, 3, 64, 64))
    assert len(outs) == 5
    for c, r, o in zip(model.feature_info.channels(), reductions, outs, strict=True):
        assert o.shape[1] == c and o.shape[-1] <= math.ceil(64 / r) + 1
    picked = timm.create_model(name, features_only=True, out_indices=(2, 4))
    assert picked.feature_info.channels() == [128, 512]


def test_forward_intermediates_and_grad_checkpointing(one_thread) -> None:
    model = timm.create_model("resnet18_simam_ema", num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert [t.shape[1] for t in inter] == [64, 64, 128, 256, 512]
        torch.testing.assert_close(final, model.forward_features(x))
        model.set_grad_checkpointing()
        torch.testing.assert_close(model.forward_intermediates(x)[0], final)
    model.train()
    model(x).sum().backward()  # checkpointed stages still give gradients
    assert model.layer1[0].conv1.weight.grad is not None


def test_fx_feature_extraction(one_thread) -> None:
    model = create_model("hybrid", backbone="resnet18", num_classes=4, attention_kwargs={"ema": {"factor": 8}}).eval()
    extractor = create_feature_extractor(model, return_nodes={"layer2": "c3", "layer4": "c5", "fc": "logits"})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = extractor(x)
        torch.testing.assert_close(out["logits"], model(x))
    assert out["c3"].shape == (2, 128, 8, 8) and out["c5"].shape == (2, 512, 2, 2)
    assert any("simam" in str(n.target) for n in extractor.graph.nodes)


def test_common_kwargs_accepted_or_refused_by_name(one_thread) -> None:
    model = timm.create_model("resnet18_simam_ema", num_classes=3, in_chans=1, drop_rate=0.5, global_pool="avgmax")
    assert model.conv1.in_channels == 1 and model(torch.randn(2, 1, 64, 64)).shape == (2, 3)
    assert model.drop_rate == 0.5
    cat = timm.create_model("resnet18_simam_ema", num_classes=3, global_pool="catavgmax")
    assert cat.get_classifier().in_features == 2 * cat.num_features
    with pytest.raises(ValueError, match=r"does not support drop_path_rate=0\.1"):
        timm.create_model("resnet18_simam_ema", drop_path_rate=0.1)
    with pytest.raises(ValueError, match="has no published weights"):
        timm.create_model("resnet18_simam_ema.tiny_imagenet", pretrained=True)


def test_pretrained_in_chans_adapts_conv1(tmp_path, one_thread) -> None:
    source = create_model("baseline", backbone="resnet18", num_classes=1000).state_dict()
    torch.save(source, tmp_path / "w.pth")
    gray = create_model("hybrid", backbone="resnet18", in_chans=1, weights=str(tmp_path / "w.pth"),
                        attention_kwargs={"ema": {"factor": 8}})
    torch.testing.assert_close(gray.conv1.weight, source["conv1.weight"].sum(dim=1, keepdim=True))
