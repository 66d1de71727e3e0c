"""Fused SimAM paths and the restructured EMA against the reference implementations.

* EMA: the restructured forward against the official-style implementation it replaced
  (kept below verbatim), forward and backward in float64, NCHW and channels_last, and
  with no full-size copy of a channels_last input.
* SimAM: the ``compile`` path (one small torch.compile on the CPU) and the Triton kernels
  (run by Triton's CPU interpreter when Triton is installed) against the exact eager path,
  forward and backward.
* CUDA-only checks (bf16, channels_last, the real Triton kernels) skip without a GPU;
  ``benchmarks/gpu_suite.sh`` runs them on one.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from attnlab.attention import EMA, SimAM
from attnlab.attention import fused as fz
from attnlab.attention.ema import ema_reference

HAS_TRITON = importlib.util.find_spec("triton") is not None
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (run by benchmarks/gpu_suite.sh)")


def legacy_ema_forward(m: EMA, x: torch.Tensor) -> torch.Tensor:
    """EMA as first written: the official structure (fold groups into the batch, cat/split)."""
    return ema_reference(m, x)


def make_ema(channels: int, factor: int, dtype: torch.dtype = torch.float32) -> EMA:
    m = EMA(channels, factor).to(dtype)
    with torch.no_grad():  # off the trivial GroupNorm init, so scale and shift really matter
        m.gn.weight.uniform_(0.5, 1.5)
        m.gn.bias.uniform_(-1.0, 1.0)
    return m


def grads(out: torch.Tensor, g: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(out, inputs, g))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def assert_ema_matches_legacy(m: EMA, x: torch.Tensor, tol: float) -> None:
    params = list(m.parameters())
    xa = x.detach().clone().requires_grad_()
    xb = x.detach().clone().requires_grad_()
    out, ref = m(xa), legacy_ema_forward(m, xb)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert rel(out, ref) < tol
    g = torch.randn_like(ref)
    for got, want in zip(grads(out, g, [xa, *params]), grads(ref, g, [xb, *params]), strict=True):
        assert rel(got, want) < tol


# ----------------------------------------------------------------------------- EMA
@pytest.fixture
def strategy(request, monkeypatch: pytest.MonkeyPatch) -> str:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(EMA, "strategy", request.param)
    return request.param


@pytest.mark.parametrize("strategy", ["auto", "fold", "view"], indirect=True)
@pytest.mark.parametrize("shape,factor", [((2, 64, 8, 8), 32), ((2, 32, 5, 7), 8), ((3, 16, 2, 2), 4)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_ema_matches_legacy_forward_and_backward_float64(strategy, shape, factor, channels_last) -> None:  # type: ignore[no-untyped-def]
    m = make_ema(shape[1], factor, torch.float64)
    x = torch.randn(shape, dtype=torch.float64) * 2 + 0.5
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    assert_ema_matches_legacy(m, x, tol=1e-10)


def test_ema_path_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    m = EMA(16, 4)
    x = torch.randn(1, 16, 3, 3)
    assert m._path(x) == "fold" and m._path(x.to(memory_format=torch.channels_last)) == "fold"
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert m._path(x) == "view"  # inside torch.compile: the copy-free, fusable formulation


@pytest.mark.parametrize("strategy", ["auto", "fold", "view"], indirect=True)
def test_ema_keeps_the_input_layout(strategy) -> None:  # type: ignore[no-untyped-def]
    m = make_ema(64, 8)
    x = torch.randn(2, 64, 6, 6).to(memory_format=torch.channels_last)
    assert m(x).is_contiguous(memory_format=torch.channels_last)
    assert m(x.contiguous()).is_contiguous()


class _CopyLog(TorchDispatchMode):
    """Records the output size of every copying op (clone, contiguous, copy_, _to_copy...)."""

    COPIES = ("clone", "copy_", "_to_copy", "contiguous", "cat", "_unsafe_view")

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in self.COPIES and isinstance(out, torch.Tensor):
            self.sizes.append((name, out.numel()))
        return out


def full_size_copies(fn, x: torch.Tensor) -> list[str]:  # type: ignore[no-untyped-def]
    with _CopyLog() as log:
        fn(x)
    return [name for name, n in log.sizes if n >= x.numel()]


def test_ema_view_path_makes_no_full_size_copy() -> None:
    m = make_ema(64, 8)
    x = torch.randn(2, 64, 6, 6).to(memory_format=torch.channels_last)
    with torch.no_grad():
        assert full_size_copies(lambda t: legacy_ema_forward(m, t), x), "detector must see the old copy"
        assert full_size_copies(m._forward_view, x) == []
        assert full_size_copies(m._forward_view, x.contiguous()) == []
        assert full_size_copies(m._forward_fold, x.contiguous()) == []


@pytest.mark.parametrize("strategy", ["fold", "view"], indirect=True)
def test_ema_under_bf16_autocast_matches_legacy(strategy) -> None:  # type: ignore[no-untyped-def]
    m = make_ema(64, 8)
    x = (torch.randn(2, 64, 8, 8) * 4).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = m(x.bfloat16()), legacy_ema_forward(m, x.bfloat16())
    assert out.dtype == torch.bfloat16
    assert rel(out, ref) < 2e-2
    assert rel(out, legacy_ema_forward(m, x)) < 2e-2


# --------------------------------------------------------------------------- modes
def test_fused_mode_selection_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(1, 2, 3, 3)
    assert fz.resolve("auto", x) == "eager"  # the exact path stays the CPU default
    assert fz.resolve("compile", x) == "compile"
    assert fz.resolve("triton", x.double()) == "eager"  # float64 keeps the exact path
    with fz.fused_mode("compile"):
        assert fz.get_fused() == "compile"
        assert fz.resolve(None, x) == "compile"
        assert fz.resolve("eager", x) == "eager"  # a module's own setting wins
    assert fz.get_fused() == "auto"
    with pytest.raises(ValueError, match="unknown fused mode 'fast'"):
        fz.set_fused("fast")
    with pytest.raises(ValueError, match="unknown fused mode"):
        SimAM(fused="fast")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="'triton' needs CUDA tensors"):
        SimAM(fused="triton")(x)
    monkeypatch.setenv("ATTNLAB_FUSED", "nope")
    with pytest.raises(ValueError, match="ATTNLAB_FUSED='nope'"):
        fz._initial_mode()
    monkeypatch.setenv("ATTNLAB_FUSED", "Compile")
    assert fz._initial_mode() == "compile"
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert fz.resolve("triton", x) == "eager"  # Inductor fuses the eager math itself


def test_fused_paths_still_refuse_1x1_maps() -> None:
    with pytest.raises(ValueError, match="at least 2 spatial positions"):
        SimAM(fused="compile")(torch.randn(2, 4, 1, 1))


def simam_fwd_bwd(m: SimAM, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_()
    out = m(x)
    out.backward(g)
    return out.detach(), x.grad


def test_simam_compile_path_matches_eager_forward_and_backward() -> None:
    x = torch.randn(2, 8, 6, 5) * 3 + 1
    g = torch.randn_like(x)
    out, dx = simam_fwd_bwd(SimAM(fused="compile"), x, g)
    ref, dref = simam_fwd_bwd(SimAM(fused="eager"), x, g)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx, dref, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------ Triton kernels, interpreted
# Triton's CPU interpreter (numpy) runs the very kernels the GPU compiles. It must be on
# before Triton is first imported (torch imports it), so these checks run in a child
# process started with TRITON_INTERPRET=1: this file run as a script.
CASES = [
    # shape, channels_last, dtype: single-tile NCHW and channels_last, multi-pass loops
    # (channels_last with H*W > its tile, NCHW with H*W > 4096), fp16 rounding. (bf16 is
    # checked on CUDA only: the interpreter truncates where the GPU rounds to nearest.)
    ((2, 8, 5, 7), False, torch.float32),
    ((2, 40, 4, 4), True, torch.float32),
    ((1, 70, 20, 20), True, torch.float32),
    ((1, 2, 65, 65), False, torch.float32),
    ((2, 16, 6, 6), True, torch.float16),
]


def interpreter_checks() -> int:
    """Triton kernels vs the eager path, forward and backward; returns the cases checked."""
    assert type(fz._kernels().forward).__name__ == "InterpretedFunction", "not interpreting"
    for shape, channels_last, dtype in CASES:
        x = (torch.randn(shape) * 3 + 1).to(dtype)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        g = torch.randn(shape).to(dtype)
        out, dx = simam_fwd_bwd(SimAM(fused="triton"), x, g)
        ref, dref = simam_fwd_bwd(SimAM(fused="eager"), x, g)
        ref64, dref64 = simam_fwd_bwd(SimAM(fused="eager"), x.double(), g.double())
        case = f"{shape} channels_last={channels_last} {dtype}"
        assert out.stride() == x.stride() and dx.stride() == x.stride(), case
        if dtype == torch.float16:  # the same rounding steps as eager: equal to the last bit
            assert torch.equal(out, ref), case
            errors = [rel(dx, dref), rel(out, ref64), rel(dx, dref64)]
            tol = 2e-3
        else:
            errors = [rel(out, ref), rel(dx, dref), rel(out, ref64), rel(dx, dref64)]
            tol = 1e-6
        print(case, " ".join(f"{e:.1e}" for e in errors))
        assert max(errors) < tol, case
    # H and W that do not merge into one stride (copied first), and a stride-0 grad
    x = torch.randn(2, 6, 5, 9)[..., 1:8]
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    SimAM(fused="triton")(a).sum().backward()
    SimAM(fused="eager")(b).sum().backward()
    assert rel(a.grad, b.grad) < 1e-6, "odd strides / broadcast grad"
    return len(CASES) + 1


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_triton_kernels_match_eager_under_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "ATTNLAB_FUSED": "auto"}
    proc = subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"interpreter checks passed: {len(CASES) + 1}" in proc.stdout


# ------------------------------------------------------------------ CUDA (GPU only)
@needs_cuda
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(64, 64, 16, 16), (64, 512, 2, 2), (8, 64, 56, 56)])
def test_cuda_triton_simam_matches_eager_bf16(shape, channels_last) -> None:  # type: ignore[no-untyped-def]
    x = (torch.randn(shape, device="cuda") * 3).bfloat16()
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    g = torch.randn_like(x)
    assert fz.resolve("auto", x) in ("triton", "compile")
    out, dx = simam_fwd_bwd(SimAM(fused="triton"), x, g)
    ref, dref = simam_fwd_bwd(SimAM(fused="eager"), x, g)
    assert rel(out, ref) < 5e-3 and rel(dx, dref) < 1e-2
    out32, dx32 = simam_fwd_bwd(SimAM(fused="triton"), x.float(), g.float())
    ref32, dref32 = simam_fwd_bwd(SimAM(fused="eager"), x.float(), g.float())
    assert rel(out32, ref32) < 1e-5 and rel(dx32, dref32) < 1e-5


@needs_cuda
@pytest.mark.parametrize("strategy", ["auto", "fold", "view"], indirect=True)
def test_cuda_ema_matches_legacy_under_autocast(strategy) -> None:  # type: ignore[no-untyped-def]
    m = make_ema(256, 32).cuda()
    x = torch.randn(32, 256, 16, 16, device="cuda").to(memory_format=torch.channels_last)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # exact float32 convs
        assert_ema_matches_legacy(m, x, tol=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, ref = m(x), legacy_ema_forward(m, x)
    assert out.dtype == ref.dtype == torch.bfloat16 and rel(out, ref) < 2e-2



@needs_cuda
def test_cuda_hybrid_model_fused_matches_eager() -> None:
    from attnlab.models import create_model

    torch.manual_seed(0)
    model = create_model("hybrid", num_classes=10).cuda().to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 64, 64, device="cuda").to(memory_format=torch.channels_last)
    results = {}
    for mode in ("eager", "auto"):  # float32 without TF32: differences stay at rounding level
        model.zero_grad(set_to_none=True)
        with fz.fused_mode(mode), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            loss = model(x).logsumexp(dim=1).mean()
            loss.backward()
        results[mode] = (loss.detach(), model.layer1[0].conv1.weight.grad.clone())
    assert rel(results["auto"][0], results["eager"][0]) < 1e-4
    assert rel(results["auto"][1], results["eager"][1]) < 1e-3


if __name__ == "__main__":  # the child process of the interpreter test
    torch.manual_seed(0)
    print(f"interpreter checks passed: {interpreter_checks()}")
