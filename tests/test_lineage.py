"""The hybrid's lineage as variants: SE, CBAM, ECA and coordinate attention (issue 9, part 1).

Each module is checked against the paper's computation written out here with the module's
own weights, its parameter count against a hand-derived formula, its site in the
bottleneck, its parameter group, and one tiny training step.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnlab.attention import ATTENTION_REGISTRY, CBAM, ECA, SE, AttentionModule, CoordAttention
from attnlab.config import TrainConfig
from attnlab.engine.optim import build_optimizer
from attnlab.models import (
    DEFAULT_SITES,
    VARIANTS,
    attention_modules,
    count_parameters,
    create_model,
    parameter_groups,
)

LINEAGE = {"se": SE, "cbam": CBAM, "eca": ECA, "ca": CoordAttention}
RESNET50_200 = 23_917_832
RESNET50_STAGES = [(256, 3), (512, 4), (1024, 6), (2048, 3)]  # (channels after bn3, blocks)


def se_params(c: int, r: int = 16) -> int:
    """fc1 C->C//r and fc2 C//r->C, both 1x1 convs with bias."""
    return 2 * c * (c // r) + c // r + c


def cbam_params(c: int, r: int = 16, k: int = 7) -> int:
    """SE's MLP (with biases, as in the official code) + 2->1 kxk conv (no bias) + BN affine."""
    return se_params(c, r) + 2 * k * k + 2


def eca_kernel(c: int) -> int:
    t = int((torch.log2(torch.tensor(float(c))).item() + 1) / 2)
    return max(t if t % 2 else t + 1, 3)


def ca_params(c: int) -> int:
    """conv1 C->m (bias), bn1 (2m), conv_h and conv_w m->C (bias), m = max(8, C // 32)."""
    m = max(8, c // 32)
    return 3 * c * m + 3 * m + 2 * c


FORMULAS = {"se": se_params, "cbam": cbam_params, "eca": eca_kernel, "ca": ca_params}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_registry_variants_and_sites() -> None:
    assert list(VARIANTS) == ["baseline", "se", "cbam", "eca", "ca", "simam", "ema", "hybrid"]
    for kind, cls in LINEAGE.items():
        assert ATTENTION_REGISTRY[kind] is cls
        assert issubclass(cls, AttentionModule) and cls.kind == kind
        assert VARIANTS[kind] == (kind,)
        assert DEFAULT_SITES[kind] == "pre_add"


@pytest.mark.parametrize("kind", list(LINEAGE))
@pytest.mark.parametrize("channels", [64, 100, 256, 2048])
def test_parameter_count_formulas(kind: str, channels: int) -> None:
    module = LINEAGE[kind](channels)
    assert sum(p.numel() for p in module.parameters()) == FORMULAS[kind](channels)
    x = torch.randn(2, channels, 3, 5)
    assert module(x).shape == x.shape


def test_eca_kernel_sizes_follow_the_paper() -> None:
    assert {c: ECA(c).kernel_size for c in (64, 128, 256, 512, 1024, 2048)} == {
        64: 3, 128: 5, 256: 5, 512: 5, 1024: 5, 2048: 7,
    }
    assert ECA(256, kernel_size=9).conv.weight.shape == (1, 1, 9)


def _bn_eval(z: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    return (z - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps) * bn.weight.view(
        shape
    ) + bn.bias.view(shape)


def _randomise_bn(bn: torch.nn.BatchNorm2d) -> None:
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()


def test_se_matches_senet() -> None:
    m = SE(64).eval()
    x = torch.randn(2, 64, 6, 5)
    w1, b1 = m.fc1.weight.flatten(1), m.fc1.bias
    w2, b2 = m.fc2.weight.flatten(1), m.fc2.bias
    gate = torch.sigmoid(torch.relu(x.mean((2, 3)) @ w1.T + b1) @ w2.T + b2)
    torch.testing.assert_close(m(x), x * gate[:, :, None, None])


def test_cbam_matches_channel_then_spatial_gates() -> None:
    m = CBAM(64).eval()
    _randomise_bn(m.spatial.conv.bn)
    x = torch.randn(2, 64, 6, 5)
    w1, b1 = m.channel.fc1.weight.flatten(1), m.channel.fc1.bias
    w2, b2 = m.channel.fc2.weight.flatten(1), m.channel.fc2.bias

    def mlp(v: torch.Tensor) -> torch.Tensor:
        return torch.relu(v @ w1.T + b1) @ w2.T + b2

    y = x * torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))[:, :, None, None]
    maps = torch.stack([y.mean(1), y.amax(1)], dim=1)
    z = _bn_eval(F.conv2d(maps, m.spatial.conv.conv.weight, padding=3), m.spatial.conv.bn)
    torch.testing.assert_close(m(x), y * torch.sigmoid(z))


def test_eca_matches_a_1d_conv_across_channels() -> None:
    m = ECA(256).eval()
    k, p = 5, 2
    x = torch.randn(2, 256, 4, 4)
    windows = F.pad(x.mean((2, 3)), (p, p)).unfold(-1, k, 1)  # (B, C, k), zero padded
    gate = torch.sigmoid((windows * m.conv.weight.view(k)).sum(-1))
    torch.testing.assert_close(m(x), x * gate[:, :, None, None])


def test_coordinate_attention_matches_the_official_computation() -> None:
    m = CoordAttention(64).eval()
    _randomise_bn(m.bn1)
    x = torch.randn(2, 64, 6, 5)
    h, w = 6, 5
    y = torch.cat([x.mean(3, keepdim=True), x.mean(2, keepdim=True).transpose(2, 3)], dim=2)
    y = _bn_eval(F.conv2d(y, m.conv1.weight, m.conv1.bias), m.bn1)
    y = y * F.relu6(y + 3) / 6  # h_swish
    y_h, y_w = torch.split(y, [h, w], dim=2)
    a_h = torch.sigmoid(F.conv2d(y_h, m.conv_h.weight, m.conv_h.bias))
    a_w = torch.sigmoid(F.conv2d(y_w.transpose(2, 3), m.conv_w.weight, m.conv_w.bias))
    torch.testing.assert_close(m(x), x * a_w * a_h)


def test_coordinate_attention_has_the_official_state_dict() -> None:
    """Names and shapes of Hou et al.'s CoordAtt(inp=256, oup=256, reduction=32): mip = 8."""
    official = {
        "conv1.weight": (8, 256, 1, 1), "conv1.bias": (8,),
        "bn1.weight": (8,), "bn1.bias": (8,), "bn1.running_mean": (8,), "bn1.running_var": (8,),
        "bn1.num_batches_tracked": (),
        "conv_h.weight": (256, 8, 1, 1), "conv_h.bias": (256,),
        "conv_w.weight": (256, 8, 1, 1), "conv_w.bias": (256,),
    }
    sd = CoordAttention(256).state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == official


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: SE(8), r"SE with reduction=16 needs at least 16 channels, got 8"),
        (lambda: SE(64, reduction=0), "SE reduction must be >= 1"),
        (lambda: CBAM(64, spatial_kernel=4), "spatial_kernel must be odd"),
        (lambda: CBAM(8), r"CBAM with reduction=16 needs at least 16 channels"),
        (lambda: ECA(64, kernel_size=4), "kernel_size must be odd"),
        (lambda: CoordAttention(64, reduction=0), "reduction and min_channels must be >= 1"),
    ],
)
def test_bad_module_settings_are_clear_errors(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_resnet50_added_parameters() -> None:
    """Added parameters at the customary site of all 16 bottlenecks (ResNet-50, 200 classes)."""
    expected = {"se": 2_530_992, "cbam": 2_532_592, "eca": 86, "ca": 1_917_832}
    for kind, added in expected.items():
        assert sum(n * FORMULAS[kind](c) for c, n in RESNET50_STAGES) == added, kind
        model = create_model(kind)
        counts = count_parameters(model)
        assert counts["total"] == RESNET50_200 + added, kind
        assert counts[kind] == added, kind
        assert list(parameter_groups(model)) == ["backbone", kind, "head"]


@pytest.mark.parametrize("kind", list(LINEAGE))
def test_customary_site_is_after_bn3_before_the_add(kind: str) -> None:
    model = create_model(kind).eval()
    blocks = [b for layer in model.stages for b in layer]
    assert len(blocks) == 16 and len(attention_modules(model)) == 16
    assert all(b.attention_sites == {"pre_add": [kind]} for b in blocks)
    assert all(getattr(b, kind).channels == b.conv3.out_channels for b in blocks)
    block = model.layer2[0]  # has a downsample: the add is not with the block input
    module = getattr(block, kind)
    seen: dict[str, torch.Tensor] = {}
    block.bn3.register_forward_hook(lambda m, i, o: seen.__setitem__("bn3_out", o))
    module.register_forward_hook(lambda m, i, o: seen.__setitem__("attn_out", o))
    block.downsample.register_forward_hook(lambda m, i, o: seen.__setitem__("identity", o))
    block.register_forward_hook(lambda m, i, o: seen.__setitem__("block_out", o))
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
        torch.testing.assert_close(seen["attn_out"], module(seen["bn3_out"]))
        torch.testing.assert_close(seen["block_out"], torch.relu(seen["attn_out"] + seen["identity"]))


@pytest.mark.parametrize("kind", list(LINEAGE))
def test_variant_trains_one_step(kind: str) -> None:
    """Forward and backward at 64x64 are finite; one optimizer step moves the module's weights."""
    model = create_model(kind).train()
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([3, 199])
    out = model(x)
    assert out.shape == (2, 200) and torch.isfinite(out).all()
    loss = F.cross_entropy(out, y)
    loss.backward()
    assert torch.isfinite(loss)
    groups = parameter_groups(model)
    for _, p in (np for params in groups.values() for np in params):
        assert p.grad is not None and torch.isfinite(p.grad).all()
    attn = [(n, p) for n, p in groups[kind] if not cancelled_by_batchnorm(n)]
    assert attn and all(p.grad.abs().sum() > 0 for _, p in attn)
    optimizer = build_optimizer(model, TrainConfig())
    assert kind in {g["group"] for g in optimizer.param_groups}
    before = {n: p.detach().clone() for n, p in attn}
    optimizer.step()
    changed = [n for n, p in attn if not torch.equal(p, before[n])]
    assert changed == [n for n, _ in attn]


def cancelled_by_batchnorm(name: str) -> bool:
    """Coordinate attention's conv1 bias feeds a BatchNorm: in training mode the batch mean
    removes it again, so its gradient is zero up to rounding and one step may leave it
    bit-identical. (The official module has it; it matters in eval mode.)"""
    return name.endswith(".ca.conv1.bias")


def test_profile_counts_the_se_variant() -> None:
    """SE's MACs are its two 1x1 convs on pooled vectors: sum of 2*C*(C//16), any image size."""
    profile = pytest.importorskip("attnlab.profiling")  # the profiler lands separately
    count_macs, profile_variants = profile.count_macs, profile.profile_variants

    se_macs = sum(n * 2 * c * (c // 16) for c, n in RESNET50_STAGES)
    assert se_macs == 2_514_944
    macs = {v: count_macs(create_model(v), 64) for v in ("baseline", "se")}
    assert macs["se"]["by_kind"] == {"se": se_macs}
    assert macs["se"]["total"] - macs["baseline"]["total"] == se_macs
    result = profile_variants(["se"], measure_latency=False, measure_train=False)
    row = result["variants"]["se"]
    assert row["params"]["se"] == 2_530_992
    assert row["compute"]["64"]["macs_attention_by_kind"] == {"se": se_macs}
    assert row["compute"]["224"]["macs_attention_by_kind"] == {"se": se_macs}
