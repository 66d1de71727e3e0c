"""`attnlab export`: a trained run as a timm hub folder that plain timm and attnlab load;
the hybrid as a detection backbone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

from attnlab.cli import main
from attnlab.config import from_dict
from attnlab.data.synthetic import write_synthetic
from attnlab.engine.checkpoint import load_checkpoint
from attnlab.engine.trainer import Trainer
from attnlab.errors import RecordError
from attnlab.models import FeaturePyramidBackbone, create_model
from attnlab.report.export import export_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_synthetic(tmp_path_factory.mktemp("data") / "tiny", classes=4, train_per_class=4,
                           val_per_class=3, size=64, seed=5)
    out = tmp_path_factory.mktemp("runs")
    cfg = from_dict({
        "variant": "hybrid", "seed": 1, "output_dir": str(out),
        "model": {"backbone": "resnet18", "attention": {"ema": {"factor": 8}}},
        "data": {"root": str(root), "batch_size": 8, "eval_batch_size": 6},
        "train": {"epochs": 1, "lr": 0.01, "device": "cpu", "progress": False, "warmup_epochs": 0},
    })
    Trainer(cfg).fit()
    return out / "hybrid_seed1"


def run_model(run: Path) -> torch.nn.Module:
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    model = create_model(**ckpt["model_args"])
    model.load_state_dict(ckpt["model"])
    return model.eval()


def test_export_loads_in_plain_timm_and_attnlab(trained: Path, tmp_path: Path, one_thread) -> None:
    paths = export_run(trained, tmp_path / "export")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads(paths["config.json"].read_text())
    assert config["architecture"] == "resnet18_simam_ema" and config["num_classes"] == 4
    assert config["model_args"] == {"attention_kwargs": {"ema": {"factor": 8}}}
    assert config["pretrained_cfg"]["input_size"] == [3, 64, 64] and config["pretrained_cfg"]["pool_size"] == [2, 2]
    assert (tmp_path / "export" / "model.safetensors").read_bytes()[:8] != b"\x80\x02\x8a\nl\xfc\x9cF"  # not a pickle

    reference = run_model(trained)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(x)
        hub = timm.create_model(f"local-dir:{tmp_path / 'export'}", pretrained=True).eval()
        torch.testing.assert_close(hub(x), expected)
        overlay = timm.create_model("resnet18_simam_ema", pretrained=True, num_classes=4,
                                    attention_kwargs={"ema": {"factor": 8}},
                                    pretrained_cfg_overlay={"file": str(paths["model.safetensors"]),
                                                            "num_classes": 4}).eval()
        torch.testing.assert_close(overlay(x), expected)
    assert tuple(hub.pretrained_cfg["input_size"]) == (3, 64, 64)

    # as model.weights in attnlab: the backbone tensors, a new head, attention at its init
    again = create_model("hybrid", backbone="resnet18", num_classes=10, weights=str(tmp_path / "export"),
                         attention_kwargs={"ema": {"factor": 8}})
    source = reference.state_dict()
    assert torch.equal(again.state_dict()["layer3.1.conv2.weight"], source["layer3.1.conv2.weight"])
    assert again.fc.out_features == 10


def test_model_card_states_protocol_and_results(trained: Path, tmp_path: Path) -> None:
    export_run(trained, tmp_path / "e")
    card = (tmp_path / "e" / "README.md").read_text()
    summary = json.loads((trained / "summary.json").read_text())
    assert f"| {100 * summary['final']['val_top1']:.2f} | {100 * summary['final']['val_top5']:.2f} |" in card
    assert "library_name: timm" in card and "lr: 0.01" in card and "attnlab 0.1.0" in card
    assert f"{sum(p.numel() for p in run_model(trained).parameters()):,}" in card


def test_export_refuses_incomplete_and_planted_runs(trained: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(trained, run)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    with pytest.raises(RecordError, match="status 'running'"):
        export_run(run, tmp_path / "x")
    assert main(["export", str(run), "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.startswith("attnlab export: error: ")
    (run / "summary.json").write_text(json.dumps(summary))
    import pickle

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (tmp_path / "ran",))

    with open(run / "checkpoints" / "last.pt", "wb") as fh:
        pickle.dump({"model": Evil()}, fh)
    assert main(["export", str(run), "--out", str(tmp_path / "x")]) == 2
    assert "refused unread" in capsys.readouterr().err and not (tmp_path / "ran").exists()


def test_hybrid_as_a_faster_rcnn_backbone(one_thread) -> None:
    from torchvision.models.detection import FasterRCNN

    backbone = FeaturePyramidBackbone("resnet18_simam_ema", out_channels=32)
    model = FasterRCNN(backbone, num_classes=3, min_size=64, max_size=64)
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[10.0, 10.0, 30.0, 60.0], [0.0, 0.0, 20.0, 20.0]]),
                "labels": torch.tensor([2, 1])}]
    losses = model.train()(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    ema = backbone.body.layer4[0].ema.conv3x3.weight
    assert ema.grad is not None and ema.grad.abs().sum() > 0  # gradients reach the attention modules
    with torch.no_grad():
        detections = model.eval()(images)
    assert len(detections) == 2 and set(detections[0]) == {"boxes", "labels", "scores"}
