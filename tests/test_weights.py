"""Pretrained weight loading from generated files: exact backbone, fresh head, attention untouched."""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from attnlab.models import create_model
from attnlab.models.weights import load_backbone_weights


@pytest.fixture(scope="module")
def fake_pretrained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A torchvision ResNet-50 with random (non-default) tensors, saved like a download."""
    torch.manual_seed(123)
    ref = torchvision.models.resnet50()
    with torch.no_grad():
        for t in ref.state_dict().values():
            if t.is_floating_point():
                t.normal_()
    path = tmp_path_factory.mktemp("w") / "resnet50-fake.pth"
    torch.save(ref.state_dict(), path)
    return path, {k: v.clone() for k, v in ref.state_dict().items()}


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_local_file_fills_backbone_exactly(fake_pretrained) -> None:
    path, source = fake_pretrained
    model = create_model("hybrid")
    before = _snapshot(model)
    report = load_backbone_weights(model, str(path))
    after = model.state_dict()
    backbone = [k for k in after if not k.startswith("fc.") and ".ema." not in k]
    assert sorted(report.loaded) == sorted(backbone)
    for k in backbone:
        assert torch.equal(after[k], source[k]), k
    for k in after:
        if k.startswith("fc.") or ".ema." in k:
            assert torch.equal(after[k], before[k]), f"{k} should be left at initialisation"
    assert after["fc.weight"].shape == (200, 2048)
    assert report.new_head == ["fc.bias", "fc.weight"]
    assert len(report.fresh_attention) == 16 * 6
    assert "fc.weight" in report.ignored_source
    assert "backbone tensors loaded" in str(report)


def test_create_model_with_weights_and_checkpoint_dicts(fake_pretrained, tmp_path: Path) -> None:
    path, source = fake_pretrained
    wrapped = tmp_path / "ckpt.pt"
    torch.save({"epoch": 7, "model": {"module." + k: v for k, v in source.items()}}, wrapped)
    model = create_model("ema", weights=str(wrapped))
    assert torch.equal(model.layer3[2].conv2.weight, source["layer3.2.conv2.weight"])


def test_attention_tensors_in_source_are_not_used(fake_pretrained, tmp_path: Path) -> None:
    _, source = fake_pretrained
    trained = create_model("hybrid")
    sd = {**source, **{k: v + 1 for k, v in trained.state_dict().items() if ".ema." in k}}
    path = tmp_path / "from_hybrid.pth"
    torch.save(sd, path)
    model = create_model("hybrid")
    before = model.layer1[0].ema.conv3x3.weight.clone()
    load_backbone_weights(model, str(path))
    assert torch.equal(model.layer1[0].ema.conv3x3.weight, before)


def test_mismatches_are_errors_naming_keys(fake_pretrained, tmp_path: Path) -> None:
    _, source = fake_pretrained
    missing = dict(source)
    del missing["layer2.0.conv1.weight"]
    extra = {**source, "layer5.0.conv1.weight": torch.zeros(1)}
    shaped = {**source, "conv1.weight": torch.zeros(64, 3, 3, 3)}
    for sd, message in [
        (missing, r"missing in source \(1\): layer2.0.conv1.weight"),
        (extra, r"unexpected in source \(1\): layer5.0.conv1.weight"),
        (shaped, r"shape mismatch \(1\): conv1.weight"),
    ]:
        path = tmp_path / "bad.pth"
        torch.save(sd, path)
        with pytest.raises(ValueError, match=message):
            create_model("baseline", weights=str(path))


def test_unreadable_and_absent_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not read weights file"):
        create_model("baseline", weights=str(junk))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_model("baseline", weights=str(tmp_path / "nope.pth"))


def test_torchvision_name_loads_from_the_hub_cache_offline(fake_pretrained, tmp_path: Path, monkeypatch) -> None:
    path, source = fake_pretrained
    url = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    os.link(path, cache / os.path.basename(url))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    model = create_model("simam", weights="IMAGENET1K_V1")
    assert torch.equal(model.conv1.weight, source["conv1.weight"])


def test_download_failure_says_how_to_pass_a_local_file(tmp_path: Path, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    with pytest.raises(RuntimeError, match=r"could not download torchvision weights resnet50 IMAGENET1K_V2.*weights=/path/to/"):
        create_model("baseline", weights="IMAGENET1K_V2")


def test_unknown_weight_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown weights 'IMAGENET22K'.*IMAGENET1K_V1"):
        create_model("baseline", weights="IMAGENET22K")


def test_timm_tag_offline_says_how_to_pass_a_local_file() -> None:
    with pytest.raises(RuntimeError, match=r"could not load timm pretrained weights 'resnet50.a1_in1k'.*weights=/path/to/w.pth"):
        create_model("baseline", weights="timm:resnet50.a1_in1k")
