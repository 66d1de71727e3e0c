"""The results and statistics tables as Markdown and LaTeX (booktabs), with captions that
state the epoch policy, the spread shown and the statistical rule."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from .profile_json import format_text
from .stats import format_p

NA = "n/a"

POLICY_TEXT = {
    "final": ("the final epoch",
              "no epoch is chosen on the val set, so these numbers carry no selection bias; "
              "`--policy best` reports the epoch with the best val Top-1 instead"),
    "best": ("the epoch with the best val Top-1",
             "that epoch is chosen on the same val set it is scored on, so the numbers are "
             "optimistically biased; `--policy final` avoids this"),
}


def caption(policy: str, other: str, meta: Mapping[str, Any], train_format: str | None = None) -> str:
    when, why = POLICY_TEXT[policy]
    train = ""
    if train_format:
        train = (f" Latency and throughput at the training format ({format_text(train_format)}) from "
                 "profile_train.json, in their own columns.")
    where = ", ".join(f"{k} {meta[k]}" for k in ("device", "device_name", "dtype", "image_size", "channels_last") if k in meta)
    return (
        f"Tiny ImageNet val Top-1 / Top-5 (%) at {when} ({why}). Mean ± sample std over seeds "
        f"(n/a with one seed); Δ = difference of means against the baseline (points). "
        "Attn Gops: the attention modules' elementwise and reduction work (1e9 ops per image), "
        "which GMACs do not count. "
        f"Top-1 ({other}) gives the other policy's mean. Params, GMACs (multiply-adds), latency "
        f"at batch 1 (median) and throughput at the largest timed batch from profile.json{f' ({where})' if where else ''}."
        f"{train} Accuracies and epochs from each run's summary.json, checked against its "
        "metrics.csv and per-image predictions; training time: mean training seconds per epoch "
        "(metrics.csv) and total training time per run (summary.json), averaged over seeds."
    )


def stats_caption(alpha: float, n_boot: int, n_comparisons: int | None = None) -> str:
    if n_comparisons is None:
        family = "the comparisons of this table"
    else:
        family = f"the {n_comparisons} comparison{'s' if n_comparisons != 1 else ''} of this table"
    return (
        f"Paired comparisons on the val images (A − B, Top-1 points): {100 * (1 - alpha):g}% "
        f"percentile interval from a paired bootstrap over images ({n_boot:,} resamples) and "
        "McNemar's exact test on the images only one variant gets right. With several seeds, "
        "runs pair by seed and each image's difference is averaged over seeds: the bootstrap "
        "resamples images once for all seeds and the test counts the images each variant wins "
        "on that average (per-seed results in statistics.csv). "
        f"Multiple comparisons: McNemar p-values are Holm-Bonferroni adjusted over {family} "
        "(Holm p; per-seed rows in statistics.csv over each seed's comparisons); the intervals "
        f"are per comparison. A difference is called significant only if the interval excludes 0 "
        f"and Holm p < {alpha:g}."
    )


def _fmt(x: Any, spec: str = ".2f", na: str = NA) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return na
    return format(x, spec)


def _pm(mean: Any, std: Any) -> str:
    if _fmt(mean) == NA:
        return NA
    return f"{_fmt(mean)} ± {_fmt(std)}"


def display_rows(table: pd.DataFrame, baseline: str) -> tuple[list[str], list[list[str]]]:
    """Human-formatted cells shared by the Markdown and LaTeX tables."""
    other = next(c for c in table.columns if c.startswith("top1_") and c.endswith("_mean_pct") and c != "top1_mean_pct")
    header = ["Variant", "Seeds", "Top-1 (%)", "ΔTop-1", "Top-5 (%)", "ΔTop-5",
              f"Top-1 ({other.split('_')[1]})", "Params", "Added params", "GMACs", "ΔGMACs", "Attn Gops",
              "s / epoch", "Train total (min)", "Latency b1 (ms)", "ΔLatency (ms)", "Throughput (img/s)"]
    formats = train_formats(table)
    for fmt in formats:
        header += [f"Latency b1 (ms, {format_text(fmt)})", f"Throughput (img/s, {format_text(fmt)})"]
    rows = []
    for _, r in table.iterrows():
        ref = r["variant"] == baseline
        tput = _throughput(r["throughput_img_s"], r["throughput_batch"])
        total = r["train_seconds_total"]
        latency = _latency(r["latency_b1_ms"], r["latency_b1_p95_ms"])
        extra = []
        for fmt in formats:
            extra += [_latency(r[f"latency_b1_ms_{fmt}"], r[f"latency_b1_p95_ms_{fmt}"]),
                      _throughput(r[f"throughput_img_s_{fmt}"], r[f"throughput_batch_{fmt}"])]
        rows.append([
            str(r["variant"]), str(r["n_seeds"]),
            _pm(r["top1_mean_pct"], r["top1_std_pct"]), "—" if ref else _fmt(r["top1_delta_pt"], "+.2f"),
            _pm(r["top5_mean_pct"], r["top5_std_pct"]), "—" if ref else _fmt(r["top5_delta_pt"], "+.2f"),
            _fmt(r[other]),
            _fmt(None if pd.isna(r["params"]) else int(r["params"]), ","),
            _fmt(None if pd.isna(r["added_params"]) else int(r["added_params"]), ","),
            _fmt(r["gmacs"], ".3f"), "—" if ref else _fmt(r["gmacs_delta"], "+.3f"), _fmt(r["attention_gops"], ".4f"),
            _fmt(r["epoch_seconds"], ".1f"), _fmt(None if pd.isna(total) else total / 60, ".1f"),
            latency, "—" if ref else _fmt(r["latency_b1_delta_ms"], "+.2f"),
            tput, *extra,
        ])
    return header, rows


def train_formats(table: pd.DataFrame) -> list[str]:
    """Format labels of the training-format columns (``latency_b1_ms_<format>``)."""
    prefix = "latency_b1_ms_"
    return [c[len(prefix):] for c in table.columns if c.startswith(prefix)]


def _latency(median: Any, p95: Any) -> str:
    text = _fmt(median, ".2f")
    if text != NA and _fmt(p95) != NA:
        text += f" (p95 {p95:.2f})"
    return text


def _throughput(rate: Any, batch: Any) -> str:
    text = _fmt(rate, ",.0f")
    if text != NA and not pd.isna(batch):
        text += f" (batch {int(batch)})"
    return text


def stats_rows(comparisons: pd.DataFrame, *, pooled_only: bool = True) -> tuple[list[str], list[list[str]]]:
    header = ["A vs B", "Seeds", "ΔTop-1 (pt)", "CI (pt)", "Images A better", "Images B better", "McNemar p",
              "Holm p", "Verdict"]
    rows = []
    if comparisons.empty:
        return header, rows
    for _, r in comparisons.iterrows():
        if pooled_only and r["scope"] != "all":
            continue
        verdict = "significant" if r["significant"] else "not significant"
        rows.append([
            f"{r['a']} vs {r['b']}", str(r["n_seeds"]), f"{r['delta_pt']:+.2f}",
            f"[{r['ci_low_pt']:+.2f}, {r['ci_high_pt']:+.2f}]",
            f"{int(r['a_better_images']):,}", f"{int(r['b_better_images']):,}", format_p(r["mcnemar_p"]),
            format_p(r["p_holm"]), verdict,
        ])
    return header, rows


def n_comparisons(comparisons: pd.DataFrame) -> int:
    """Size of the pooled Holm family: the table's comparisons with a p-value."""
    if comparisons.empty:
        return 0
    pooled = comparisons[comparisons["scope"] == "all"]
    return int(pooled["mcnemar_p"].notna().sum())


def localization_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The localization table's cells: one row per variant."""
    header = ["Variant", "Seeds", "GT-known Loc (%)", "Top-1 Loc (%)", "Top-1 (%)", "Best GT-known Loc (%)",
              "at threshold", "CAM size"]
    rows = []
    for _, r in table.iterrows():
        rows.append([
            str(r["variant"]), str(int(r["n_seeds"])), _pm(r["gt_known_loc_mean_pct"], r["gt_known_loc_std_pct"]),
            _pm(r["top1_loc_mean_pct"], r["top1_loc_std_pct"]), _fmt(r["top1_mean_pct"]),
            _fmt(r["best_gt_known_loc_mean_pct"]), _fmt(r["best_threshold"], ".2f"),
            f"{r['layer_size']} of {int(r['input_size'])}²",
        ])
    return header, rows


def localization_stats_rows(comparisons: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Pooled localization comparisons, one row per metric and pair."""
    header = ["Metric", "A vs B", "Seeds", "Δ (pt)", "CI (pt)", "Images A better", "Images B better", "McNemar p",
              "Holm p", "Verdict"]
    rows = []
    if comparisons.empty:
        return header, rows
    labels = {"gt_known_loc": "GT-known Loc", "top1_loc": "Top-1 Loc"}
    for _, r in comparisons.iterrows():
        if r["scope"] != "all":
            continue
        rows.append([
            labels.get(r["metric"], str(r["metric"])), f"{r['a']} vs {r['b']}", str(r["n_seeds"]),
            f"{r['delta_pt']:+.2f}", f"[{r['ci_low_pt']:+.2f}, {r['ci_high_pt']:+.2f}]",
            f"{int(r['a_better_images']):,}", f"{int(r['b_better_images']):,}", format_p(r["mcnemar_p"]),
            format_p(r["p_holm"]), "significant" if r["significant"] else "not significant",
        ])
    return header, rows


def localization_stats_caption(alpha: float, n_boot: int, comparisons: pd.DataFrame) -> str:
    pooled = comparisons[comparisons["scope"] == "all"] if not comparisons.empty else comparisons
    per_metric = int(pooled["mcnemar_p"].notna().sum() // max(1, pooled["metric"].nunique())) if not pooled.empty else 0
    return (
        "Paired comparisons of the per-image correct-localization indicator (A − B, points), as for Top-1: "
        f"{100 * (1 - alpha):g}% percentile interval from a paired bootstrap over images ({n_boot:,} resamples) "
        "and McNemar's exact test (runs pair by seed; with several seeds each image's difference is averaged "
        f"over seeds). Holm-Bonferroni adjusted within each metric's own family ({per_metric} comparison"
        f"{'s' if per_metric != 1 else ''} each; per-seed rows in localization_statistics.csv), separate from "
        f"the accuracy family. Significant only if the interval excludes 0 and Holm p < {alpha:g}."
    )


def _localization_text(localization: Mapping[str, Any]) -> str:
    from .localization import method_text

    return method_text(localization["table"], threshold=localization.get("threshold", 0.2),
                       iou_min=localization.get("iou_min", 0.5))


def _train_format(table: pd.DataFrame) -> str | None:
    formats = train_formats(table)
    return formats[0] if formats else None


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---"] + ["---:"] * (len(header) - 1)
    return "\n".join([line(header), "|" + "|".join(align) + "|", *map(line, rows)])


def results_markdown(table: pd.DataFrame, comparisons: pd.DataFrame, *, policy: str, other: str,
                     baseline: str, alpha: float, n_boot: int, meta: Mapping[str, Any],
                     notes: Sequence[str] = (), localization: Mapping[str, Any] | None = None) -> str:
    parts = ["# Results", "", caption(policy, other, meta, _train_format(table)), "",
             markdown_table(*display_rows(table, baseline))]
    parts += ["", "## Statistics", "", stats_caption(alpha, n_boot, n_comparisons(comparisons)), ""]
    header, rows = stats_rows(comparisons)
    if rows:
        parts += [markdown_table(header, rows), ""]
        parts += [f"- {v}" for v in comparisons.loc[comparisons["scope"] == "all", "verdict"]]
    else:
        parts.append("No paired predictions were found, so no statistics.")
    if localization is not None:
        parts += ["", "## Localization", ""]
        if localization.get("results"):
            loc_stats = localization["statistics"]
            parts += [_localization_text(localization), "", markdown_table(*localization_rows(localization["table"]))]
            header, rows = localization_stats_rows(loc_stats)
            if rows:
                parts += ["", localization_stats_caption(alpha, n_boot, loc_stats), "", markdown_table(header, rows), ""]
                parts += [f"- {v}" for v in loc_stats.loc[loc_stats["scope"] == "all", "verdict"]]
        else:
            parts.append(f"Weakly supervised localization (GT-known / Top-1 Loc): {localization.get('reason')}.")
    if notes:
        parts += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    return "\n".join(parts) + "\n"


def latex_escape(text: str) -> str:
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
            "±": r"$\pm$", "Δ": r"$\Delta$", "—": "--", "–": "--", "−": "$-$", "≥": r"$\geq$", "×": r"$\times$",
            "²": r"$^2$", "`": ""}
    return "".join(repl.get(ch, ch) for ch in str(text))


def latex_tabular(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule",
             " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def results_latex(table: pd.DataFrame, comparisons: pd.DataFrame, *, policy: str, other: str,
                  baseline: str, alpha: float, n_boot: int, meta: Mapping[str, Any],
                  localization: Mapping[str, Any] | None = None) -> str:
    """Two ``table*`` floats (needs booktabs and graphicx): results, then statistics."""
    out = [
        "% attnlab report; needs \\usepackage{booktabs,graphicx}",
        r"\begin{table*}[t]", r"\centering",
        r"\caption{" + latex_escape(caption(policy, other, meta, _train_format(table))) + "}",
        r"\label{tab:results}", r"\resizebox{\textwidth}{!}{%",
        latex_tabular(*display_rows(table, baseline)) + "}", r"\end{table*}", "",
    ]
    header, rows = stats_rows(comparisons)
    if rows:
        cap = stats_caption(alpha, n_boot, n_comparisons(comparisons))
        out += [r"\begin{table*}[t]", r"\centering", r"\caption{" + latex_escape(cap) + "}",
                r"\label{tab:statistics}", r"\resizebox{\textwidth}{!}{%", latex_tabular(header, rows) + "}",
                r"\end{table*}", ""]
    if localization is not None and localization.get("results"):
        out += [r"\begin{table*}[t]", r"\centering",
                r"\caption{" + latex_escape(_localization_text(localization)) + "}", r"\label{tab:localization}",
                r"\resizebox{\textwidth}{!}{%", latex_tabular(*localization_rows(localization["table"])) + "}",
                r"\end{table*}", ""]
        loc_stats = localization["statistics"]
        header, rows = localization_stats_rows(loc_stats)
        if rows:
            cap = localization_stats_caption(alpha, n_boot, loc_stats)
            out += [r"\begin{table*}[t]", r"\centering", r"\caption{" + latex_escape(cap) + "}",
                    r"\label{tab:localization-statistics}", r"\resizebox{\textwidth}{!}{%",
                    latex_tabular(header, rows) + "}", r"\end{table*}", ""]
    elif localization is not None:
        out += [f"% localization: {latex_escape(str(localization.get('reason')))}", ""]
    return "\n".join(out)
