"""SimAM and EMA against independent float64 computations of the published formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnlab.attention import EMA, SimAM, build_attention


def simam_reference(x: np.ndarray, lam: float) -> np.ndarray:
    """SimAM in float64 numpy, loop per plane, straight from the paper's equations."""
    out = np.empty_like(x, dtype=np.float64)
    b, c, h, w = x.shape
    n = h * w - 1
    for i in range(b):
        for j in range(c):
            plane = x[i, j].astype(np.float64)
            mu = plane.mean()
            var = ((plane - mu) ** 2).sum() / n
            e_inv = (plane - mu) ** 2 / (4 * (var + lam)) + 0.5
            out[i, j] = plane / (1 + np.exp(-e_inv))
    return out


def ema_reference(x: torch.Tensor, m: EMA) -> torch.Tensor:
    """EMA in float64, one group at a time, from the paper's description."""
    x = x.double()
    b, c, h, w = x.shape
    g, cg = m.groups, c // m.groups
    w1, b1 = m.conv1x1.weight.double(), m.conv1x1.bias.double()
    w3, b3 = m.conv3x3.weight.double(), m.conv3x3.bias.double()
    gw, gb = m.gn.weight.double(), m.gn.bias.double()
    out = torch.empty_like(x)
    for i in range(b):
        for k in range(g):
            xg = x[i, k * cg:(k + 1) * cg]                      # (cg, h, w)
            pool_h = xg.mean(dim=2)                             # (cg, h)  average over W
            pool_w = xg.mean(dim=1)                             # (cg, w)  average over H
            seq = torch.cat([pool_h, pool_w], dim=1)            # (cg, h + w)
            mixed = torch.einsum("oc,cl->ol", w1[:, :, 0, 0], seq) + b1[:, None]
            gate_h, gate_w = mixed[:, :h].sigmoid(), mixed[:, h:].sigmoid()
            gated = xg * gate_h[:, :, None] * gate_w[:, None, :]
            # GroupNorm with one channel per group: per-channel normalisation over H, W.
            mu = gated.mean(dim=(1, 2), keepdim=True)
            var = gated.var(dim=(1, 2), unbiased=False, keepdim=True)
            x1 = (gated - mu) / torch.sqrt(var + m.gn.eps) * gw[:, None, None] + gb[:, None, None]
            x2 = F.conv2d(xg[None], w3, b3, padding=1)[0]
            a1 = torch.softmax(x1.mean(dim=(1, 2)), dim=0)
            a2 = torch.softmax(x2.mean(dim=(1, 2)), dim=0)
            spatial = torch.einsum("c,chw->hw", a1, x2) + torch.einsum("c,chw->hw", a2, x1)
            out[i, k * cg:(k + 1) * cg] = xg * spatial.sigmoid()
    return out


@pytest.mark.parametrize("shape", [(2, 4, 7, 5), (1, 3, 2, 2), (3, 8, 16, 16)])
def test_simam_matches_float64_reference(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape) * 3 + 1
    out = SimAM(e_lambda=1e-4)(x)
    ref = simam_reference(x.numpy(), 1e-4)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_simam_has_no_parameters_and_keeps_lambda() -> None:
    m = SimAM()
    assert sum(p.numel() for p in m.parameters()) == 0
    assert m.e_lambda == 1e-4
    assert "e_lambda=0.0001" in repr(m)


def test_simam_refuses_1x1_maps_instead_of_nan() -> None:
    with pytest.raises(ValueError, match=r"at least 2 spatial positions, got 1x1"):
        SimAM()(torch.randn(2, 4, 1, 1))


def test_simam_refuses_nonpositive_lambda() -> None:
    with pytest.raises(ValueError, match="e_lambda must be > 0"):
        SimAM(e_lambda=0.0)


def test_simam_constant_plane_is_finite() -> None:
    # zero variance: d = 0 everywhere, gate = sigmoid(0.5); no division by zero.
    out = SimAM()(torch.full((1, 2, 4, 4), 3.0))
    assert torch.allclose(out, torch.full_like(out, 3.0 * torch.sigmoid(torch.tensor(0.5)).item()))


@pytest.mark.parametrize("shape,factor", [((2, 64, 8, 8), 32), ((2, 32, 5, 7), 8), ((1, 16, 2, 2), 4)])
def test_ema_matches_float64_reference(shape: tuple[int, ...], factor: int) -> None:
    m = EMA(shape[1], factor=factor)
    with torch.no_grad():  # move GroupNorm off its trivial (1, 0) init so it is really tested
        m.gn.weight.uniform_(0.5, 1.5)
        m.gn.bias.uniform_(-0.5, 0.5)
    x = torch.randn(shape)
    out = m(x)
    ref = ema_reference(x, m)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels,factor", [(256, 32), (2048, 32), (64, 8), (32, 1)])
def test_ema_parameter_count(channels: int, factor: int) -> None:
    cg = channels // factor
    assert sum(p.numel() for p in EMA(channels, factor).parameters()) == 10 * cg * cg + 4 * cg


def test_ema_state_dict_keys_match_official_module() -> None:
    keys = set(EMA(64, 32).state_dict())
    assert keys == {"gn.weight", "gn.bias", "conv1x1.weight", "conv1x1.bias", "conv3x3.weight", "conv3x3.bias"}


def test_ema_loads_an_official_style_state_dict() -> None:
    cg = 2
    official = {
        "gn.weight": torch.randn(cg), "gn.bias": torch.randn(cg),
        "conv1x1.weight": torch.randn(cg, cg, 1, 1), "conv1x1.bias": torch.randn(cg),
        "conv3x3.weight": torch.randn(cg, cg, 3, 3), "conv3x3.bias": torch.randn(cg),
    }
    m = EMA(64, 32)
    m.load_state_dict(official, strict=True)
    assert torch.equal(m.conv3x3.weight, official["conv3x3.weight"])


def test_ema_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"channels \(100\) must be divisible by factor \(32\)"):
        EMA(100, factor=32)
    with pytest.raises(ValueError, match=r"needs at least 32 channels, got 16"):
        EMA(16, factor=32)
    with pytest.raises(ValueError, match="built for 64 channels"):
        EMA(64, 32)(torch.randn(1, 128, 4, 4))


@pytest.mark.parametrize("name", ["simam", "ema"])
def test_modules_accept_channels_last_inputs(name: str) -> None:
    m = build_attention(name, 64)
    x = torch.randn(2, 64, 6, 6)
    ref = m(x)
    out = m(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["simam", "ema"])
def test_modules_stay_finite_under_bf16_autocast(name: str) -> None:
    m = build_attention(name, 64)
    # post-conv activations of a pretrained net reach magnitudes in the tens
    x = torch.randn(4, 64, 8, 8) * 40
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x.bfloat16())
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out.float()).all()
    rel = (out.float() - m(x)).norm() / m(x).norm()
    assert rel < 3e-2


def test_simam_half_precision_statistics_do_not_overflow() -> None:
    # (x - mean)^2 of 400 is 160000 > fp16 max: computed naively in fp16 this is inf/NaN.
    x = torch.randn(1, 4, 8, 8) * 400
    out = SimAM()(x.half())
    assert torch.isfinite(out.float()).all()
    torch.testing.assert_close(out.float(), SimAM()(x), rtol=2e-3, atol=0.5)


def test_unknown_module_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown attention module 'cbam2'"):
        build_attention("cbam2", 64)
