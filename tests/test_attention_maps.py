"""Attention maps and Grad-CAM on randomly initialised models (no checkpoint, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attnlab import create_model
from attnlab.attention import EMA, SimAM
from attnlab.attention.simam import simam_gate
from attnlab.report import write_report
from attnlab.report.attention_maps import (
    attention_maps,
    attention_panels,
    denormalize_images,
    ema_group_maps,
    grad_cam,
    load_checkpoint_model,
    normalize_images,
    select_images,
)
from attnlab.report.figures import plot_attention_maps

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n: int = 2, size: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def test_normalize_round_trip_and_known_value() -> None:
    imgs = _images()
    x = normalize_images(imgs)
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    np.testing.assert_array_equal(denormalize_images(x), imgs)
    white = normalize_images(np.full((1, 2, 2, 3), 255, np.uint8))
    assert white[0, 0, 0, 0].item() == pytest.approx((1 - 0.485) / 0.229)
    with pytest.raises(ValueError, match="uint8"):
        normalize_images(imgs.astype(np.float32))


def test_ema_group_maps_reproduce_the_module_output() -> None:
    ema = EMA(64, factor=8).eval()
    x = torch.randn(3, 64, 7, 5)
    maps = ema_group_maps(ema, x)
    assert maps.shape == (3, 8, 7, 5) and bool(((maps > 0) & (maps < 1)).all())
    with torch.no_grad():
        out = ema(x)
    rebuilt = (x.reshape(3, 8, 8, 7, 5) * maps[:, :, None]).reshape(3, 64, 7, 5)
    torch.testing.assert_close(rebuilt, out, rtol=1e-5, atol=1e-6)


def test_maps_come_from_the_deepest_block_with_at_least_7x7() -> None:
    model = create_model("hybrid", num_classes=10)
    seen: dict[str, torch.Tensor] = {}
    for name, m in model.named_modules():
        if isinstance(m, (SimAM, EMA)):
            m.register_forward_hook(lambda mod, i, o, name=name: seen.__setitem__(name, i[0].detach()))
    x = normalize_images(_images())
    maps = attention_maps(model, x)
    # 64x64 input: layer2 is 8x8 (the deepest >= 7x7), layer3 4x4
    assert maps["simam"][0] == "layer2.3.simam" and maps["ema"][0] == "layer2.3.ema"
    assert maps["simam"][1].shape == (2, 8, 8) and maps["ema"][1].shape == (2, 8, 8)
    gate = simam_gate(seen["layer2.3.simam"], 1e-4).mean(dim=1)
    torch.testing.assert_close(maps["simam"][1], gate)
    ema = model.get_submodule("layer2.3.ema")
    torch.testing.assert_close(maps["ema"][1], ema_group_maps(ema, seen["layer2.3.ema"]).mean(dim=1))
    chosen = attention_maps(model, x, block="layer3.0")
    assert chosen["simam"][0] == "layer3.0.simam" and chosen["simam"][1].shape == (2, 4, 4)
    assert set(attention_maps(create_model("baseline", num_classes=10), x)) == set()
    with pytest.raises(ValueError, match="no attention module"):
        attention_maps(model, x, block="layer9")


def test_grad_cam_equals_fc_weighted_layer4_for_a_resnet() -> None:
    """For ResNet (GAP then fc), d score_k / d A_c = fc.weight[k, c] / (h w) everywhere; the
    library (pytorch-grad-cam) then min-max normalises the map and resizes it bilinearly."""
    import torch.nn.functional as F

    model = create_model("ema", backbone="resnet18", num_classes=6).eval()
    acts: list[torch.Tensor] = []
    model.layer4.register_forward_hook(lambda m, i, o: acts.append(o.detach()))
    x = normalize_images(_images(3))
    cam, target = grad_cam(model, x)
    with torch.no_grad():
        logits = model(x)
    torch.testing.assert_close(target, logits.argmax(dim=1))
    a = acts[-1]
    w = model.fc.weight[target].detach() / (a.shape[2] * a.shape[3])
    raw = torch.relu((w[:, :, None, None] * a).sum(dim=1))

    def minmax(m: torch.Tensor) -> torch.Tensor:
        flat = m.flatten(1)
        lo, hi = flat.min(dim=1).values.view(-1, 1, 1), flat.max(dim=1).values.view(-1, 1, 1)
        return (m - lo) / (hi - lo + 1e-7)

    expected = minmax(F.interpolate(minmax(raw)[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0])
    assert cam.shape == (3, 64, 64)
    torch.testing.assert_close(cam, expected, rtol=1e-4, atol=1e-4)
    cam, chosen = grad_cam(model, x, target=torch.tensor([0, 1, 2]))
    assert chosen.tolist() == [0, 1, 2] and cam.shape == (3, 64, 64)
    assert float(cam.min()) >= 0 and float(cam.max()) <= 1
    assert all(float(c.max()) == pytest.approx(1.0, abs=1e-5) or float(c.max()) == 0.0 for c in cam)
    assert model.fc.weight.grad is None and not model.training  # no gradients left behind
    with pytest.raises(ValueError, match="no module 'layer9'"):
        grad_cam(model, x, layer="layer9")


def test_panels_and_figure(tmp_path: Path) -> None:
    models = {v: create_model(v, backbone="resnet18", num_classes=5) for v in ("baseline", "simam", "ema", "hybrid")}
    x = normalize_images(_images(2))
    panels = attention_panels(models, x)
    titles = [t.split("\n")[0] for t, _ in panels]
    assert titles == ["simam: SimAM weights", "ema: EMA spatial", "hybrid: SimAM weights", "hybrid: EMA spatial",
                      "baseline: Grad-CAM", "simam: Grad-CAM", "ema: Grad-CAM", "hybrid: Grad-CAM"]
    assert all(m.shape[0] == 2 and np.isfinite(m).all() for _, m in panels)
    path = plot_attention_maps(denormalize_images(x), panels, tmp_path / "maps.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_select_images_is_spread_and_deterministic() -> None:
    assert list(select_images(np.zeros(100), 4)) == [0, 33, 66, 99]
    assert list(select_images(np.zeros(3), 10)) == [0, 1, 2]
    assert select_images(np.zeros(5), 0).size == 0


def _checkpoint(path: Path, variant: str) -> torch.nn.Module:
    args = {"variant": variant, "backbone": "resnet18", "num_classes": 5, "placements": None,
            "sites": None, "stages": None, "blocks": None, "attention_kwargs": {"ema": {"factor": 8}}}
    model = create_model(**args)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "model_args": args, "epoch": 0, "rng": {"torch": torch.get_rng_state()}}, path)
    return model.eval()


def test_load_checkpoint_model_round_trip(tmp_path: Path) -> None:
    original = _checkpoint(tmp_path / "best.pt", "hybrid")
    loaded = load_checkpoint_model(tmp_path / "best.pt")
    assert not loaded.training and loaded.layer1[0].ema.groups == 8
    x = normalize_images(_images(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), original(x))
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a run checkpoint"):
        load_checkpoint_model(tmp_path / "other.pt")


def test_write_report_draws_attention_maps_from_checkpoints(tmp_path: Path) -> None:
    labels = np.arange(20) % 5
    for v in ("baseline", "hybrid"):
        run = tmp_path / "runs" / f"{v}_seed0"
        _checkpoint(run / "checkpoints" / "last.pt", v)
        (run / "predictions").mkdir()
        np.savez(run / "predictions" / "last.npz", labels=labels, top5=np.tile(np.arange(5), (20, 1)), epoch=0)
        entry = {"epoch": 0, "val_top1": 0.2, "val_top5": 1.0, "val_loss": 1.5}
        (run / "metrics.csv").write_text("epoch,val_top1,val_top5,val_loss,epoch_seconds\n0,0.2,1.0,1.5,3.0\n")
        (run / "summary.json").write_text(json.dumps({"status": "complete", "variant": v, "seed": 0, "epochs": 1,
                                                      "epochs_done": 1, "final": entry, "best": entry}))
    out = write_report(tmp_path, images=_images(3), n_images=2, n_boot=200, echo=False)
    png = tmp_path / "figures" / "attention_maps.png"
    assert out["paths"]["figures/attention_maps.png"] == png
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
