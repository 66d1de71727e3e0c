"""Efficiency profile: exact parameter counts, GMACs, attention op counts, timing, JSON, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from attnlab.attention import EMA, SimAM
from attnlab.cli import main
from attnlab.models import attention_modules, create_model
from attnlab.profiling import (
    OPS_FORMULAS,
    OpCount,
    attention_ops,
    count_gmacs,
    count_macs,
    ema_ops,
    format_profile_table,
    measure_interleaved,
    measure_latency,
    paired_ratios,
    parameter_profile,
    profile_variants,
    simam_ops,
    summarize,
)

aten = torch.ops.aten
EMA_ADDED = 198_368


def test_resnet50_1000_classes_at_224_params_and_gmacs() -> None:
    model = create_model("baseline", num_classes=1000)
    params = parameter_profile(model)
    assert params["total"] == params["trainable"] == 25_557_032
    assert params["added"] == 0
    assert count_gmacs(model, 224) == pytest.approx(4.1, abs=0.05)
    assert count_macs(model, 224)["attention"] == 0


def test_counting_leaves_the_model_untouched() -> None:
    model = create_model("ema", backbone="resnet18", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_macs(model, 64), attention_ops(model, 64)
    after = model.state_dict()
    assert all(v.device.type == "cpu" and torch.equal(v, after[k]) for k, v in before.items())


def test_simam_ops_hand_computed() -> None:
    # (1, 2, 3, 4): T = 24 elements, BC = 2 planes of M = 12. Per plane: subtract, square,
    # divide, + 0.5, sigmoid, multiply = 6 * 12 elementwise, plus / n, + lambda, * 4 = 3;
    # mean and sum over 12 inputs = 24 reduction ops. Two planes: 150 and 48.
    assert simam_ops(SimAM(), (1, 2, 3, 4)) == OpCount(elementwise=150, reduction=48)
    assert simam_ops(SimAM(), (1, 2, 3, 4)).total == 198


def test_simam_is_free_for_mac_counters_but_not_here() -> None:
    base, simam = create_model("baseline"), create_model("simam")
    assert parameter_profile(simam)["added"] == parameter_profile(simam)["simam"] == 0
    assert parameter_profile(simam)["total"] == parameter_profile(base)["total"]
    assert count_macs(simam, 64)["total"] == count_macs(base, 64)["total"]
    ops = attention_ops(simam, 64)
    # ResNet-50 at 64x64, SimAM after conv2: (C, H*W) x blocks = (64, 16^2) x 3,
    # (128, 8^2) x 4, (256, 4^2) x 6, (512, 2^2) x 3 -> T = 112,640 elements, BC = 3,776.
    t, bc = 112_640, 3_776
    assert ops["by_kind"]["simam"] == {"modules": 16, "elementwise": 6 * t + 3 * bc,
                                       "reduction": 2 * t, "total": 8 * t + 3 * bc}
    assert ops["total"] == 912_448 and ops["uncounted"] == []


def test_ema_adds_10c2_plus_4c_per_block_and_its_macs_are_its_own() -> None:
    base, ema = create_model("baseline"), create_model("ema")
    modules = attention_modules(ema)
    per_block = [10 * (m.channels // m.groups) ** 2 + 4 * (m.channels // m.groups) for _, m in modules]
    assert [sum(p.numel() for p in m.parameters()) for _, m in modules] == per_block
    params = parameter_profile(ema)
    assert params["ema"] == params["added"] == sum(per_block) == EMA_ADDED
    macs_base, macs_ema = count_macs(base, 64), count_macs(ema, 64)
    assert macs_ema["attention"] == macs_ema["by_kind"]["ema"] > 0
    assert macs_ema["total"] - macs_base["total"] == macs_ema["attention"]


class _OpTrace(TorchDispatchMode):
    """Counts the aten ops a forward actually runs, under the attention_ops convention."""

    FREE = {aten.view, aten._unsafe_view, aten.reshape, aten.transpose, aten.cat, aten.split,
            aten.split_with_sizes, aten.unsqueeze, aten.expand, aten.clone, aten.permute,
            aten.alias, aten.detach, aten._to_copy, aten.bmm, aten.mm, aten.t}
    ELEMENTWISE = {aten.add, aten.sub, aten.mul, aten.div, aten.pow, aten.sigmoid}
    REDUCTION = {aten.mean, aten.sum}

    def __init__(self) -> None:
        super().__init__()
        self.elementwise = self.reduction = 0
        self.unknown: set = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        op = func.overloadpacket
        if op in self.ELEMENTWISE:
            self.elementwise += out.numel()
        elif op in self.REDUCTION:
            self.reduction += args[0].numel()
        elif op is aten.convolution:
            self.elementwise += out.numel() if args[2] is not None else 0
        elif op is aten.native_group_norm:
            n, groups = args[0].numel(), args[3] * args[6]
            self.elementwise += 5 * n + 2 * groups
            self.reduction += 2 * n
        elif op is aten._softmax:
            self.elementwise += 3 * out.numel()
            self.reduction += 2 * out.numel()
        elif op not in self.FREE:
            self.unknown.add(op)
        return out


def official_simam(m: SimAM, x: torch.Tensor) -> torch.Tensor:
    """SimAM as in the official code (the computation attention_ops counts)."""
    n = x.shape[2] * x.shape[3] - 1
    d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
    return x * torch.sigmoid(d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + m.e_lambda)) + 0.5)


def official_ema(m: EMA, x: torch.Tensor) -> torch.Tensor:
    """EMA as in the official code (attnlab's forward may restructure it; counts must not)."""
    b, c, h, w = x.shape
    g = m.groups
    gx = x.reshape(b * g, -1, h, w)
    x_h = gx.mean(dim=3, keepdim=True)
    x_w = gx.mean(dim=2, keepdim=True).permute(0, 1, 3, 2)
    hw = m.conv1x1(torch.cat([x_h, x_w], dim=2))
    a_h, a_w = torch.split(hw, [h, w], dim=2)
    x1 = m.gn(gx * a_h.sigmoid() * a_w.permute(0, 1, 3, 2).sigmoid())
    x2 = m.conv3x3(gx)
    x11 = torch.softmax(x1.mean(dim=(2, 3)).reshape(b * g, -1, 1).permute(0, 2, 1), dim=-1)
    x12 = x2.reshape(b * g, c // g, -1)
    x21 = torch.softmax(x2.mean(dim=(2, 3)).reshape(b * g, -1, 1).permute(0, 2, 1), dim=-1)
    x22 = x1.reshape(b * g, c // g, -1)
    weights = (torch.matmul(x11, x12) + torch.matmul(x21, x22)).reshape(b * g, 1, h, w)
    return (gx * weights.sigmoid()).reshape(b, c, h, w)


@pytest.mark.parametrize("module,shape,official", [
    (SimAM(), (2, 6, 5, 7), official_simam),
    (EMA(64, factor=8), (2, 64, 5, 7), official_ema),
    (EMA(32, factor=16), (1, 32, 3, 3), official_ema),
])
def test_op_formulas_match_an_op_by_op_trace_of_the_official_forward(module, shape, official) -> None:  # type: ignore[no-untyped-def]
    x, trace = torch.randn(shape), _OpTrace()
    with torch.no_grad():
        torch.testing.assert_close(official(module, x), module(x))  # the reference is right
        with trace:  # no_grad, not inference_mode: the trace must see aten kernels
            official(module, x)
    assert trace.unknown == set()
    assert OPS_FORMULAS[module.kind](module, shape) == OpCount(trace.elementwise, trace.reduction)


def test_ema_macs_match_the_hand_formula() -> None:
    # Per EMA on (C, H, W) with c' = C/32, N = 32 folded groups, P = HW: 1x1 conv
    # N c'^2 (H + W) + 3x3 conv 9 N c'^2 P + two matmuls 2 N c' P. ResNet-50 at 64x64:
    # (256, 16) x 3, (512, 8) x 4, (1024, 4) x 6, (2048, 2) x 3 -> 80,265,216 MACs.
    def macs(c: int, s: int) -> int:
        cg = c // 32
        return 32 * cg * cg * 2 * s + 9 * 32 * cg * cg * s * s + 2 * 32 * cg * s * s

    expected = 3 * macs(256, 16) + 4 * macs(512, 8) + 6 * macs(1024, 4) + 3 * macs(2048, 2)
    assert expected == 80_265_216
    assert count_macs(create_model("ema"), 64)["by_kind"] == {"ema": expected}


def test_counting_uses_the_reference_path_whatever_runs() -> None:
    model = create_model("hybrid", backbone="resnet18", num_classes=10,
                         attention_kwargs={"simam": {"fused": "triton"}})
    for _, m in attention_modules(model):
        if m.kind == "ema":
            m.strategy = "view"
    reference = create_model("hybrid", backbone="resnet18", num_classes=10)
    assert count_macs(model, 64) == count_macs(reference, 64)
    assert attention_ops(model, 64) == attention_ops(reference, 64)


def test_kinds_without_a_formula_are_reported_not_silently_zero(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    model = create_model("hybrid", backbone="resnet18", num_classes=10)
    monkeypatch.delitem(OPS_FORMULAS, "ema")
    ops = attention_ops(model, 64)
    assert ops["uncounted"] == ["ema"] and list(ops["by_kind"]) == ["simam"]
    row = profile_variants(["hybrid"], backbone="resnet18", num_classes=10, measure_latency=False,
                           measure_train=False)
    assert row["variants"]["hybrid"]["compute"]["64"]["attention_gops"] is None
    assert "n/a" in format_profile_table(row)


def test_ema_ops_scale_with_batch() -> None:
    one, four = ema_ops(EMA(256), (1, 256, 8, 8)), ema_ops(EMA(256), (4, 256, 8, 8))
    assert (four.elementwise, four.reduction) == (4 * one.elementwise, 4 * one.reduction)


def test_summarize_known_values() -> None:
    s = summarize([i / 1000 for i in range(1, 11)], batch=4)
    assert s["median_ms"] == pytest.approx(5.5) and s["p95_ms"] == pytest.approx(9.55)
    assert s["mean_ms"] == pytest.approx(5.5) and s["min_ms"] == pytest.approx(1.0)
    assert s["images_per_s"] == pytest.approx(4 / 0.0055) and s["samples"] == 10
    with pytest.raises(ValueError):
        summarize([], batch=1)


def test_paired_ratios_cancel_drift() -> None:
    # The machine slows down 4x over the rounds; the ratio stays 2.
    r = paired_ratios({"baseline": [1.0, 2.0, 4.0], "x": [2.0, 4.0, 8.0]}, "baseline")
    assert r["baseline"] == {"ratio": 1.0, "ratio_p25": 1.0, "ratio_p75": 1.0}
    assert r["x"] == {"ratio": 2.0, "ratio_p25": 2.0, "ratio_p75": 2.0}


def test_latency_is_positive_and_ordered() -> None:
    model = create_model("simam", backbone="resnet18", num_classes=10)
    lat = measure_latency(model, batch_size=2, image_size=64, warmup=1, repeats=4, threads=1)
    assert lat["batch"] == 2 and lat["samples"] == 4
    assert 0 < lat["min_ms"] <= lat["median_ms"] <= lat["p95_ms"]
    assert lat["images_per_s"] == pytest.approx(2 / (lat["median_ms"] / 1e3))
    assert lat["peak_mem_mb"] is None  # CPU: no allocator statistics
    assert not model.training


def test_interleaved_bf16_channels_last_inference() -> None:
    models = {v: create_model(v, backbone="resnet18", num_classes=10) for v in ("baseline", "ema")}
    out = measure_interleaved(models, mode="infer", batch_size=1, image_size=64, dtype="bf16",
                              channels_last=True, warmup=1, repeats=2)
    assert out["baseline"]["ratio_to_reference"] == 1.0
    assert out["ema"]["ratio_to_reference"] > 0 and out["ema"]["samples"] == 2
    assert models["ema"].conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_profile_variants_schema_table_and_json_round_trip() -> None:
    result = profile_variants(["baseline", "ema"], backbone="resnet18", num_classes=10, image_size=64,
                              latency_batches=(1, 2), train_batch=2, repeats=2, warmup=1, threads=1)
    assert json.loads(json.dumps(result)) == result
    env = result["environment"]
    assert (env["device"], env["dtype"], env["channels_last"], env["threads"]) == ("cpu", "fp32", False, 1)
    assert env["torch"] == torch.__version__ and result["reference"] == "baseline"
    ema = result["variants"]["ema"]
    # ResNet-18: EMA (factor 32) after bn2 of 8 blocks, c' = 2, 4, 8, 16 twice each.
    assert ema["params"]["added"] == ema["params"]["ema"] == 2 * (48 + 176 + 672 + 2624) == 7040
    assert set(ema["compute"]) == {"64", "224"}
    assert ema["compute"]["224"]["gmacs"] > ema["compute"]["64"]["gmacs"] > 0
    assert ema["compute"]["64"]["attention_gops"] > 0
    assert set(ema["latency"]) == {"1", "2"}
    for v in result["variants"].values():
        for lat in v["latency"].values():
            assert 0 < lat["median_ms"] <= lat["p95_ms"]
        assert 0 < v["train"]["median_ms"] <= v["train"]["p95_ms"]
    assert result["variants"]["baseline"]["train"]["ratio_to_baseline"] == 1.0
    table = format_profile_table(result)
    assert "7,040" in table and "11,181,642" in table[table.index("baseline"):]
    assert "Training step" in table and "b2 median" in table


def test_profile_variants_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="dtype"):
        profile_variants(["baseline"], dtype="fp64", measure_latency=False, measure_train=False)
    with pytest.raises(ValueError, match="variant"):
        profile_variants(["nope"], backbone="resnet18", measure_latency=False, measure_train=False)


def test_cli_writes_json_and_table(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "profile.json"
    rc = main(["profile", "--backbone", "resnet18", "--variants", "baseline,simam", "--num-classes", "10",
               "--no-latency", "--no-train", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert list(data["variants"]) == ["baseline", "simam"]
    assert data["variants"]["simam"]["params"]["added"] == 0
    assert "GMACs@224" in printed and str(out) in printed


def test_cuda_request_without_cuda_fails_clearly(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["profile", "--device", "cuda", "--no-latency", "--no-train"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="--device cpu"):
        profile_variants(["baseline"], device="cuda")
