"""`attnlab data synth|prepare|info` end to end on a tiny synthetic set."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnlab.cli import main


def _run(*argv: str) -> int:
    return main(["data", *argv])


def test_synth_prepare_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "syn"
    assert _run("synth", "--out", str(out), "--classes", "3", "--train-per-class", "4",
                "--val-per-class", "2", "--seed", "1", "--zip") == 0
    text = capsys.readouterr().out
    assert f"wrote {out}: 3 classes, train 12 + val 6 images (64x64)" in text
    assert f"packed {out}.zip" in text and (out / "wnids.txt").is_file()

    assert _run("info", "--root", str(out)) == 0
    info = capsys.readouterr().out.splitlines()
    assert info[0].startswith(f"source  {out} (folder, fingerprint ")
    assert info[2:4] == ["train          12 images", "val             6 images"]
    assert info[4] == (f"cache   none for this source at {out / '.attnlab_cache'} "
                       f"(run: attnlab data prepare --root {out})")

    assert _run("prepare", "--root", str(out), "--quiet") == 0
    built = capsys.readouterr().out.splitlines()
    assert built[1:4] == ["classes 3", "train          12 images", "val             6 images"]
    assert built[5].startswith("        built in ") and "images/s, 1 worker(s)" in built[5]

    assert _run("prepare", "--root", str(out)) == 0
    assert capsys.readouterr().out.splitlines()[5].startswith("        fresh, reused (first built in ")
    assert _run("info", "--root", str(out)) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("(fresh)")

    assert _run("prepare", "--root", f"{out}.zip", "--quiet") == 0
    assert "(zip, fingerprint" in capsys.readouterr().out.splitlines()[0]


def test_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "syn"
    _run("synth", "--out", str(out), "--classes", "2", "--train-per-class", "2", "--val-per-class", "1")
    (out / "val" / "val_annotations.txt").unlink()
    capsys.readouterr()
    assert _run("prepare", "--root", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"attnlab data: error: {out}/val/val_annotations.txt: not found.") and err.count("\n") == 1
    assert _run("synth", "--out", str(out), "--classes", "0") == 2
    assert capsys.readouterr().err.startswith("attnlab data: error: need classes >= 1")
