"""Rerun ``attnlab demo`` and write what it printed into the README's demo block.

The README quotes the demo's results table and verdicts; they must be what today's code
prints, so they are never edited by hand: this script runs the demo in a fresh folder
(about 5 minutes on 2 CPU cores) and replaces the text between the README's
``<!-- demo-output -->`` markers with the machine, the wall time and the printout.

    python tools/readme_demo.py            # rewrite README.md
    python tools/readme_demo.py --check    # exit 1 if the README block differs from a fresh run
"""

from __future__ import annotations

import argparse
import datetime
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- demo-output:start -->", "<!-- demo-output:end -->"


def run_demo() -> tuple[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "attnlab", "demo", "--out", str(Path(tmp) / "demo")],
                              capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"attnlab demo failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout, seconds


# the columns of the printed table the README shows (the full table is in results.md)
README_COLUMNS = ("Variant", "Top-1 (%)", "Top-5 (%)", "Params", "Added params", "GMACs", "s / epoch",
                  "Latency b1 (ms)")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def printed_results(stdout: str) -> tuple[list[str], list[str]]:
    """The results table (README columns only; the one with Top-5) and the accuracy verdicts,
    notes and closing line printed after it (the localization table and verdicts are in
    the report files)."""
    lines = stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if line.lower().startswith("| variant") and "Top-5 (%)" in line]
    if not starts:
        sys.exit("the demo printed no results table")
    i = starts[-1]
    rows = []
    while i < len(lines) and lines[i].startswith("|"):
        rows.append(_cells(lines[i]))
        i += 1
    keep = [rows[0].index(c) for c in README_COLUMNS if c in rows[0]]
    table = ["| " + " | ".join(r[k] for k in keep) + " |" for r in rows]
    table[1] = "|" + "|".join(["---"] + ["---:"] * (len(keep) - 1)) + "|"
    rest = [line for line in lines[i:] if " pt Top-1 [" in line or line.startswith(("note:", "demo:"))]
    return table, rest


def block(stdout: str, seconds: float) -> str:
    import torch

    from attnlab.profiling.environment import cpu_name

    table, rest = printed_results(stdout)
    minutes, secs = divmod(round(seconds), 60)
    header = (f"What it printed when this block was last written ({cpu_name()}, {torch.get_num_threads()} "
              f"threads, torch {torch.__version__} on the CPU; {minutes} min {secs:02d} s wall time, without "
              f"the first `.venv` install; {datetime.date.today().isoformat()}; written by "
              "`python tools/readme_demo.py`, never by hand). **Synthetic data, random init, one seed: "
              "this shows the pipeline working end to end, not an answer to the study's question.**")
    return "\n".join([START, header, "", *table, "", "```", *rest, "```", END])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare the tables only; change nothing")
    args = parser.parse_args()
    text = README.read_text()
    if START not in text or END not in text:
        sys.exit(f"{README} has no {START} ... {END} block")
    stdout, seconds = run_demo()
    new = block(stdout, seconds)
    if args.check:
        old_table = [ln for ln in text.split(START, 1)[1].split(END, 1)[0].splitlines() if ln.startswith("|")]
        same = old_table == printed_results(stdout)[0]
        print("README demo table matches a fresh run" if same else "README demo table is stale")
        return 0 if same else 1
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    README.write_text(pattern.sub(lambda _: new, text, count=1))
    print(f"rewrote the demo block of {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
