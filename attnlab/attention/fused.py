"""Fused SimAM: one pass over each (sample, channel) plane instead of about ten eager kernels.

SimAM's eager form (``x * simam_gate(x)``) launches a kernel per elementwise op and per
reduction, each reading and writing the whole feature map; it is memory-bound, so those
round trips are its whole cost. Two fused paths compute exactly the same function:

* ``triton``: a hand-written Triton kernel pair (forward and backward) that reads each
  plane once per pass and works on NCHW and channels_last tensors in place (no copies).
  The forward saves the per-plane mean and 1/(4(v+lambda)) for the backward.
* ``compile``: the eager math through ``torch.compile`` (Inductor fuses it; any device).

The mode is global (``set_fused`` or the ``ATTNLAB_FUSED`` environment variable), or per
module (``SimAM(fused=...)``). ``auto`` picks ``triton`` on CUDA (``compile`` when Triton
is missing) and the exact eager path on CPU. Inside a ``torch.compile``'d model every mode
falls back to the eager math, which Inductor then fuses with its neighbours. Triton is
imported lazily, only when a CUDA tensor (or the Triton interpreter) asks for it.

Backward of the gate, per plane with M = H*W, n = M - 1, mu = mean(x), xm = x - mu,
k = 1/(4(v + lambda)), s = sigmoid(k xm^2 + 0.5), t = g x s (1 - s):

    dx = g s + 2k (t xm - sum(t xm) / M) - (8 k^2 / n) xm sum(t xm^2)
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import torch

MODES = ("auto", "eager", "compile", "triton")
_FLOAT_TYPES = (torch.float16, torch.bfloat16, torch.float32)


def resolve_name(mode: str) -> str:
    """``mode`` if it names a mode, else a clear error."""
    if mode not in MODES:
        raise ValueError(f"unknown fused mode {mode!r}; choose one of {list(MODES)}")
    return mode


def _initial_mode() -> str:
    value = os.environ.get("ATTNLAB_FUSED", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"ATTNLAB_FUSED={value!r} is not a fused mode; choose one of {list(MODES)}")
    return value


_mode = _initial_mode()


def set_fused(mode: str) -> None:
    """Select the SimAM implementation for modules left at ``fused=None``."""
    global _mode
    _mode = resolve_name(mode)


def get_fused() -> str:
    return _mode


@contextlib.contextmanager
def fused_mode(mode: str) -> Iterator[None]:
    """Temporarily select a mode (benchmarks and tests)."""
    previous = get_fused()
    set_fused(mode)
    try:
        yield
    finally:
        set_fused(previous)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(mode: str | None, x: torch.Tensor) -> str:
    """The implementation that runs for ``x``: ``eager``, ``compile`` or ``triton``."""
    mode = resolve_name(mode) if mode is not None else _mode
    if torch.compiler.is_compiling():
        return "eager"  # Inductor fuses the eager math into the surrounding graph
    if mode == "auto":
        if x.device.type != "cuda":
            return "eager"
        mode = "triton" if triton_available() else "compile"
    if mode == "triton":
        if x.dtype not in _FLOAT_TYPES:
            return "eager"  # the kernel accumulates in float32: float64 keeps the exact path
        if x.device.type != "cuda" and not _interpreting():
            raise ValueError(
                f"fused mode 'triton' needs CUDA tensors (got {x.device}); use 'eager' or "
                "'compile' on this device, or 'auto'"
            )
    return mode


def simam(x: torch.Tensor, e_lambda: float, mode: str) -> torch.Tensor:
    """SimAM output ``x * gate`` through a fused path (``compile`` or ``triton``)."""
    if mode == "compile":
        return _compiled_simam()(x, e_lambda)
    if mode == "triton":
        return _TritonSimAM.apply(x, float(e_lambda))
    raise ValueError(f"simam() runs the fused paths only, got mode {mode!r}")


# --------------------------------------------------------------------------- compile
@functools.cache
def _compiled_simam() -> Callable[[torch.Tensor, float], torch.Tensor]:
    from .simam_math import simam_gate

    def simam_eager(x: torch.Tensor, e_lambda: float) -> torch.Tensor:
        return x * simam_gate(x, e_lambda)

    return torch.compile(simam_eager, fullgraph=True)


# ---------------------------------------------------------------------------- triton
def _plane_strides(t: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """``t`` (maybe made contiguous) and its (batch, channel, position) strides.

    H and W merge into one position index when stride_h == W * stride_w, which holds for
    NCHW and channels_last alike; anything else is copied to contiguous first.
    """
    _, _, h, w = t.shape
    sb, sc, sh, sw = t.stride()
    if h == 1:
        return t, (sb, sc, sw)
    if w == 1 or sh == w * sw:
        return t, (sb, sc, sw if w > 1 else sh)
    t = t.contiguous()
    return t, (t.stride(0), t.stride(1), t.stride(3))


def _tile(channels: int, positions: int, channel_stride: int) -> tuple[int, int, bool, int]:
    """(BLOCK_C, BLOCK_HW, single tile?, warps): a few thousand elements per program.

    Channels-last tensors are contiguous along C, so a tile spans >= 32 channels to keep
    loads coalesced; NCHW tensors are contiguous along H*W, so a tile covers whole planes.
    """
    from triton import next_power_of_2

    p2c, p2hw = next_power_of_2(channels), next_power_of_2(positions)
    if channel_stride == 1:
        block_c = min(p2c, 64)
        block_hw = min(p2hw, max(1, 8192 // block_c))
    else:
        block_hw = min(p2hw, 4096)
        block_c = min(p2c, max(1, 4096 // block_hw))
    warps = 8 if block_c * block_hw >= 4096 else 4
    return block_c, block_hw, positions <= block_hw, warps


class _TritonSimAM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, e_lambda: float) -> torch.Tensor:  # type: ignore[override]
        k = _kernels()
        b, c, h, w = x.shape
        m = h * w
        x, (sxb, sxc, sxp) = _plane_strides(x)
        y = torch.empty_like(x)
        _, (syb, syc, syp) = _plane_strides(y)
        mean, kinv = torch.empty((2, b, c), device=x.device, dtype=torch.float32)  # one allocation
        block_c, block_hw, single, warps = _tile(c, m, sxc)
        grid = (b, (c + block_c - 1) // block_c)
        k.forward[grid](
            x, y, mean, kinv, c, m, sxb, sxc, sxp, syb, syc, syp,
            float(e_lambda), 1.0 / m, 1.0 / (m - 1),
            BLOCK_C=block_c, BLOCK_HW=block_hw, SINGLE=single, num_warps=warps,
        )
        ctx.save_for_backward(x, mean, kinv)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        k = _kernels()
        x, mean, kinv = ctx.saved_tensors
        b, c, h, w = x.shape
        m = h * w
        grad, (sgb, sgc, sgp) = _plane_strides(grad)
        _, (sxb, sxc, sxp) = _plane_strides(x)
        dx = torch.empty_like(x)
        _, (sdb, sdc, sdp) = _plane_strides(dx)
        block_c, block_hw, single, warps = _tile(c, m, sxc)
        grid = (b, (c + block_c - 1) // block_c)
        k.backward[grid](
            x, grad, dx, mean, kinv, c, m,
            sxb, sxc, sxp, sgb, sgc, sgp, sdb, sdc, sdp, 1.0 / m, 1.0 / (m - 1),
            BLOCK_C=block_c, BLOCK_HW=block_hw, SINGLE=single, num_warps=warps,
        )
        return dx, None


@functools.cache
def _kernels() -> SimpleNamespace:
    return build_triton_kernels()


def build_triton_kernels() -> SimpleNamespace:
    """Define the Triton kernels (imports Triton; call only when they are needed).

    Triton resolves the names a kernel uses (``tl``, helper kernels) in the module's
    globals, not in closures: hence the ``global`` statement.
    """
    global triton, tl, _simam_terms
    import triton
    import triton.language as tl

    @triton.jit
    def simam_fwd(
        X, Y, MEAN, KINV, C, M, sxb, sxc, sxp, syb, syc, syp, lam, inv_m, inv_n,
        BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, SINGLE: tl.constexpr,
    ):
        pid_b = tl.program_id(0).to(tl.int64)
        ch = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = ch < C
        pos = tl.arange(0, BLOCK_HW)
        xb = X + pid_b * sxb + ch[:, None] * sxc
        yb = Y + pid_b * syb + ch[:, None] * syc
        if SINGLE:
            mask = cmask[:, None] & (pos < M)[None, :]
            x = tl.load(xb + pos[None, :] * sxp, mask=mask, other=0.0).to(tl.float32)
            mean = tl.sum(x, axis=1) * inv_m
            xm = tl.where(mask, x - mean[:, None], 0.0)
            kinv = 1.0 / (4.0 * (tl.sum(xm * xm, axis=1) * inv_n + lam))
            gate = tl.sigmoid(xm * xm * kinv[:, None] + 0.5)
            gate = gate.to(Y.dtype.element_ty).to(tl.float32)  # as eager: gate in x's dtype
            tl.store(yb + pos[None, :] * syp, (x * gate).to(Y.dtype.element_ty), mask=mask)
        else:
            acc = tl.zeros([BLOCK_C], dtype=tl.float32)
            for start in range(0, M, BLOCK_HW):
                p = start + pos
                mask = cmask[:, None] & (p < M)[None, :]
                x = tl.load(xb + p[None, :] * sxp, mask=mask, other=0.0).to(tl.float32)
                acc += tl.sum(x, axis=1)
            mean = acc * inv_m
            acc2 = tl.zeros([BLOCK_C], dtype=tl.float32)
            for start in range(0, M, BLOCK_HW):
                p = start + pos
                mask = cmask[:, None] & (p < M)[None, :]
                x = tl.load(xb + p[None, :] * sxp, mask=mask, other=0.0).to(tl.float32)
                xm = tl.where(mask, x - mean[:, None], 0.0)
                acc2 += tl.sum(xm * xm, axis=1)
            kinv = 1.0 / (4.0 * (acc2 * inv_n + lam))
            for start in range(0, M, BLOCK_HW):
                p = start + pos
                mask = cmask[:, None] & (p < M)[None, :]
                x = tl.load(xb + p[None, :] * sxp, mask=mask, other=0.0).to(tl.float32)
                xm = x - mean[:, None]
                gate = tl.sigmoid(xm * xm * kinv[:, None] + 0.5)
                gate = gate.to(Y.dtype.element_ty).to(tl.float32)
                tl.store(yb + p[None, :] * syp, (x * gate).to(Y.dtype.element_ty), mask=mask)
        tl.store(MEAN + pid_b * C + ch, mean, mask=cmask)
        tl.store(KINV + pid_b * C + ch, kinv, mask=cmask)

    @triton.jit
    def _simam_terms(x, g, mean, kinv, mask):
        """Per element: centred x, the gate s and t = g x s (1 - s)."""
        xm = tl.where(mask, x - mean[:, None], 0.0)
        s = tl.sigmoid(xm * xm * kinv[:, None] + 0.5)
        return xm, s, g * x * s * (1.0 - s)

    @triton.jit
    def simam_bwd(
        X, G, DX, MEAN, KINV, C, M, sxb, sxc, sxp, sgb, sgc, sgp, sdb, sdc, sdp, inv_m, inv_n,
        BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, SINGLE: tl.constexpr,
    ):
        pid_b = tl.program_id(0).to(tl.int64)
        ch = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = ch < C
        pos = tl.arange(0, BLOCK_HW)
        mean = tl.load(MEAN + pid_b * C + ch, mask=cmask, other=0.0)
        kinv = tl.load(KINV + pid_b * C + ch, mask=cmask, other=0.0)
        xb = X + pid_b * sxb + ch[:, None] * sxc
        gb = G + pid_b * sgb + ch[:, None] * sgc
        db = DX + pid_b * sdb + ch[:, None] * sdc
        if SINGLE:
            mask = cmask[:, None] & (pos < M)[None, :]
            x = tl.load(xb + pos[None, :] * sxp, mask=mask, other=0.0).to(tl.float32)
            g = tl.load(gb + pos[None, :] * sgp, mask=mask, other=0.0).to(tl.float32)
            xm, s, t = _simam_terms(x, g, mean, kinv, mask)
            a = tl.sum(t * xm, axis=1) * inv_m
            coef = 8.0 * kinv * kinv * tl.sum(t * xm * xm, axis=1) * inv_n
            s = s.to(DX.dtype.element_ty).to(tl.float32)  # the forward multiplied by this gate
            dx = g * s + 2.0 * kinv[:, None] * (t * xm - a[:, None]) - coef[:, None] * xm
            tl.store(db + pos[None, :] * sdp, dx.to(DX.dtype.element_ty), mask=mask)
        else:
            a = tl.zeros([BLOCK_C], dtype=tl.float32)
            bsum = tl.zeros([BLOCK_C], dtype=tl.float32)
            for start in range(0, M, BLOCK_HW):
                p = start + pos
                mask = cmask[:, None] & (p < M)[None, :]
                x = tl.load(xb + p[None, :] * sxp, mask=mask, other=0.0).to(tl.float32)
                g = tl.load(gb + p[None, :] * sgp, mask=mask, other=0.0).to(tl.float32)
                xm, _, t = _simam_terms(x, g, mean, kinv, mask)
                a += tl.sum(t * xm, axis=1)
                bsum += tl.sum(t * xm * xm, axis=1)
            a = a * inv_m
            coef = 8.0 * kinv * kinv * bsum * inv_n
            for start in range(0, M, BLOCK_HW):
                p = start + pos
                mask = cmask[:, None] & (p < M)[None, :]
                x = tl.load(xb + p[None, :] * sxp, mask=mask, other=0.0).to(tl.float32)
                g = tl.load(gb + p[None, :] * sgp, mask=mask, other=0.0).to(tl.float32)
                xm, s, t = _simam_terms(x, g, mean, kinv, mask)
                s = s.to(DX.dtype.element_ty).to(tl.float32)
                dx = g * s + 2.0 * kinv[:, None] * (t * xm - a[:, None]) - coef[:, None] * xm
                tl.store(db + p[None, :] * sdp, dx.to(DX.dtype.element_ty), mask=mask)

    return SimpleNamespace(forward=simam_fwd, backward=simam_bwd)
