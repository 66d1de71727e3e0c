"""``format_profile_table``: the profile result as plain-text tables for the terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _render(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned first column, right-aligned numbers, widths from the content."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [str(row[0]).ljust(widths[0])] + [str(c).rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _mops(gops: float | None) -> str:
    return "n/a" if gops is None else f"{gops * 1e3:.2f}"


def format_profile_table(result: dict[str, Any]) -> str:
    """Parameters and compute, inference latency and training step time, one table each."""
    cfg, env, variants = result["config"], result["environment"], result["variants"]
    sizes = [str(s) for s in cfg["sizes"]]
    out = [
        f"attnlab profile: {cfg['backbone']}, {cfg['num_classes']} classes, "
        f"{cfg['image_size']}x{cfg['image_size']} input",
        f"{env['device']} ({env['device_name']}), {env['dtype']}, channels_last={env['channels_last']}, "
        f"{env['threads']} threads, torch {env['torch']}",
        "",
        "Parameters and compute per image (GMACs: FlopCounterMode conv/linear/matmul, FLOPs/2;"
        " attn Mops: attention elementwise + reduction ops, 1e6, not in GMACs)",
    ]
    header = ["variant", "params", "added"]
    for s in sizes:
        header += [f"GMACs@{s}", f"attn GMACs@{s}", f"attn Mops@{s}"]
    rows = []
    for name, v in variants.items():
        row = [name, f"{v['params']['total']:,}", f"{v['params']['added']:,}"]
        for s in sizes:
            c = v["compute"][s]
            row += [f"{c['gmacs']:.3f}", f"{c['gmacs_attention']:.3f}", _mops(c["attention_gops"])]
        rows.append(row)
    out.append(_render(header, rows))

    batches = [str(b) for b in cfg["latency_batches"]]
    if any(v["latency"] for v in variants.values()):
        out += ["", f"Inference latency (eval, inference_mode; {cfg['repeats']} calls after "
                    f"{cfg['warmup']} warm-up; ms)"]
        header = ["variant"]
        for b in batches:
            header += [f"b{b} median", f"b{b} p95", f"b{b} img/s", f"b{b} peak MB"]
        rows = []
        for name, v in variants.items():
            row = [name]
            for b in batches:
                lat = v["latency"][b]
                peak = lat["peak_mem_mb"]
                row += [_ms(lat["median_ms"]), _ms(lat["p95_ms"]), f"{lat['images_per_s']:.1f}",
                        "n/a" if peak is None else f"{peak:.0f}"]
            rows.append(row)
        out.append(_render(header, rows))

    if any(v["train"] for v in variants.values()):
        out += ["", f"Training step (batch {cfg['train_batch']}, SGD, variants interleaved, "
                    f"{cfg['repeats']} rounds; ratio = median per-round ratio to "
                    f"{result['reference']}, [p25, p75])"]
        header = ["variant", "median ms", "p95 ms", "img/s", "ratio", "[p25, p75]"]
        rows = []
        for name, v in variants.items():
            t = v["train"]
            rows.append([name, _ms(t["median_ms"]), _ms(t["p95_ms"]), f"{t['images_per_s']:.1f}",
                         f"{t['ratio_to_baseline']:.3f}",
                         f"[{t['ratio_p25']:.3f}, {t['ratio_p75']:.3f}]"])
        out.append(_render(header, rows))
    return "\n".join(out)
