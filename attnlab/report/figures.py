"""The report's figures as PNGs sized for a paper column (matplotlib, no display needed).

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas directly, so
nothing here touches pyplot's global backend or needs a display. Each function takes
plain data (frames, arrays) and returns the path it wrote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 200
COLORS = {"baseline": "#555555", "simam": "#1f77b4", "ema": "#ff7f0e", "hybrid": "#d62728"}
_CYCLE = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def variant_color(variant: str, index: int = 0) -> str:
    return COLORS.get(variant, _CYCLE[index % len(_CYCLE)])


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def plot_val_curves(curves: Mapping[str, Sequence[pd.DataFrame]], path: str | Path, *,
                    metric: str = "val_top1", label: str = "val Top-1 (%)") -> Path:
    """Per variant: mean over seeds of ``metric`` per epoch, shaded min–max across seeds."""
    fig = _figure(6.0, 3.8)
    ax = fig.add_subplot()
    for i, (variant, frames) in enumerate(curves.items()):
        series = [f.set_index("epoch")[metric] * 100 for f in frames if metric in f and not f.empty]
        if not series:
            continue
        wide = pd.concat(series, axis=1).sort_index()
        epochs = wide.index.to_numpy() + 1  # 1-based on the axis, as papers count epochs
        mean = wide.mean(axis=1).to_numpy()
        color = variant_color(variant, i)
        n = wide.shape[1]
        ax.plot(epochs, mean, color=color, lw=1.8, marker="o" if len(epochs) <= 30 else None, ms=3,
                label=f"{variant} ({n} seed{'s' if n > 1 else ''})")
        if n > 1:
            ax.fill_between(epochs, wide.min(axis=1), wide.max(axis=1), color=color, alpha=0.18, lw=0)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    ax.set_title(f"{label} per epoch (mean over seeds; band: min–max)", fontsize=10)
    return _save(fig, path)


def plot_accuracy_vs_cost(table: pd.DataFrame, x: str, xlabel: str, path: str | Path, *,
                          y: str = "top1_mean_pct", yerr: str = "top1_std_pct") -> Path | None:
    """Top-1 against a cost column (GMACs, latency); None when no variant has that cost."""
    data = table[["variant", x, y, yerr]].copy()
    data[x] = pd.to_numeric(data[x], errors="coerce")
    data = data.dropna(subset=[x, y])
    if data.empty:
        return None
    fig = _figure(4.8, 3.6)
    ax = fig.add_subplot()
    for i, r in enumerate(data.itertuples(index=False)):
        err = getattr(r, yerr)
        ax.errorbar(getattr(r, x), getattr(r, y), yerr=None if pd.isna(err) else err, fmt="o", ms=7,
                    capsize=3, color=variant_color(r.variant, i), label=r.variant)
        ax.annotate(r.variant, (getattr(r, x), getattr(r, y)), textcoords="offset points",
                    xytext=(6, 4), fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("val Top-1 (%)")
    ax.grid(alpha=0.3)
    ax.margins(x=0.25, y=0.25)
    ax.set_title(f"Top-1 vs {xlabel} (error bars: std over seeds)", fontsize=10)
    return _save(fig, path)


def plot_per_class_delta(per_class: pd.DataFrame, a: str, b: str, path: str | Path, *, n_named: int = 12) -> Path:
    """Left: every class's Top-1 change (A − B), sorted. Right: the most changed classes by name."""
    d = per_class.sort_values("delta_pt", kind="stable").reset_index(drop=True)
    fig = _figure(9.0, 4.2)
    left, right = fig.subplots(1, 2, width_ratios=[1.3, 1])
    colors = np.where(d["delta_pt"] > 0, COLORS["hybrid"], np.where(d["delta_pt"] < 0, COLORS["simam"], "#999999"))
    left.bar(np.arange(len(d)), d["delta_pt"], width=1.0, color=colors)
    left.axhline(0, color="black", lw=0.8)
    up, down = int((d["delta_pt"] > 0).sum()), int((d["delta_pt"] < 0).sum())
    left.set_title(f"{a} − {b}: {up} classes up, {down} down, {len(d) - up - down} same; "
                   f"mean {d['delta_pt'].mean():+.2f} pt", fontsize=9)
    left.set_xlabel("classes, sorted by change")
    left.set_ylabel("Top-1 change (pt)")
    left.grid(axis="y", alpha=0.3)
    if len(d) <= 2 * n_named:
        named, title = d, "every class"
    else:
        named = pd.concat([d.head(n_named), d.tail(n_named)])
        title = f"the {n_named} largest changes each way"
    ypos = np.arange(len(named))
    right.barh(ypos, named["delta_pt"], color=np.where(named["delta_pt"] > 0, COLORS["hybrid"], COLORS["simam"]))
    right.set_yticks(ypos, [str(n)[:28] for n in named["name"]], fontsize=7)
    right.axvline(0, color="black", lw=0.8)
    right.set_xlabel("Top-1 change (pt)")
    right.set_title(title, fontsize=9)
    right.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_attention_maps(images: np.ndarray, panels: Sequence[tuple[str, np.ndarray]], path: str | Path,
                        *, titles: Sequence[str] | None = None) -> Path:
    """Rows: images (uint8, N×H×W×3); columns: the image, then each (title, N×h×w map)
    overlaid on it, min–max scaled per image so the pattern, not the scale, is compared."""
    n = images.shape[0]
    cols = 1 + len(panels)
    fig = _figure(1.55 * cols, 1.6 * n + 0.4)
    axes = np.asarray(fig.subplots(n, cols, squeeze=False))
    h, w = images.shape[1:3]
    for i in range(n):
        axes[i, 0].imshow(images[i], extent=(0, w, h, 0))
        axes[i, 0].set_ylabel(titles[i] if titles else f"image {i}", fontsize=7)
        for j, (_, maps) in enumerate(panels, start=1):
            m = np.asarray(maps[i], dtype=np.float64)
            span = m.max() - m.min()
            m = (m - m.min()) / span if span > 0 else np.zeros_like(m)
            axes[i, j].imshow(images[i], extent=(0, w, h, 0))
            axes[i, j].imshow(m, cmap="jet", alpha=0.5, vmin=0, vmax=1, extent=(0, w, h, 0),
                              interpolation="bilinear")
    for j, title in enumerate(["image", *[t for t, _ in panels]]):
        axes[0, j].set_title(title, fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


def plot_localization_boxes(images: np.ndarray, true_boxes: np.ndarray,
                            columns: Sequence[tuple[str, np.ndarray, Sequence[str]]], path: str | Path, *,
                            titles: Sequence[str] | None = None, caption: str | None = None) -> Path:
    """Rows: images (uint8, N×H×W×3); columns: one per (title, predicted boxes N×4, captions).

    Boxes are pixel edges in the image's frame (x0, y0, x1, y1 with x1 = last column + 1);
    the true box is drawn in green, the predicted one in red (a row of NaN: no box)."""
    from matplotlib.patches import Rectangle

    n, h, w = images.shape[0], images.shape[1], images.shape[2]
    cols = max(1, len(columns))
    fig = _figure(1.7 * cols + 0.3, 1.75 * n + (0.7 if caption else 0.4))
    axes = np.asarray(fig.subplots(n, cols, squeeze=False))

    def rect(ax, box, color: str) -> None:  # type: ignore[no-untyped-def]
        box = np.asarray(box, dtype=np.float64)
        if not np.isfinite(box).all():
            return
        ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False,
                               edgecolor=color, linewidth=1.4, clip_on=False))

    for i in range(n):
        for j, (_, boxes, captions) in enumerate(columns):
            ax = axes[i, j]
            ax.imshow(images[i], extent=(0, w, h, 0))
            rect(ax, true_boxes[i], "#00c000")
            rect(ax, boxes[i], "#e00000")
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
            ax.set_xlabel(captions[i], fontsize=6)
        axes[i, 0].set_ylabel(titles[i] if titles else f"image {i}", fontsize=7)
    for j, (title, _, _) in enumerate(columns):
        axes[0, j].set_title(title, fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if caption:
        import textwrap

        width = max(30, int(15 * (1.7 * cols + 0.3)))  # characters per line at fontsize 7
        fig.suptitle(textwrap.fill(caption, width), fontsize=7)
    return _save(fig, path)
