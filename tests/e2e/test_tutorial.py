"""docs/writing-an-executor.md, followed as a reader would: every ```bash block runs, in order, in
an empty folder, and the executor it writes is examples/minimal-tmi byte for byte."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

TUTORIAL = REPO / "docs" / "writing-an-executor.md"
EXAMPLE = REPO / "examples" / "minimal-tmi"


def bash_blocks(markdown: str):
    """The bodies of the fenced blocks marked ```bash, in document order."""
    return re.findall(r"^```bash\n(.*?)^```$", markdown, re.DOTALL | re.MULTILINE)


def test_bash_block_extraction_takes_only_bash_fences():
    md = "a\n```bash\necho 1\n```\n```shell\necho no\n```\n```text\nout\n```\n```bash\necho 2\necho 3\n```\n"
    assert bash_blocks(md) == ["echo 1\n", "echo 2\necho 3\n"]


@pytest.fixture(scope="module")
def followed(tmp_path_factory):
    """Run the tutorial's bash blocks in a fresh folder; returns (folder, [output per block])."""
    work = tmp_path_factory.mktemp("tutorial")
    env = dict(
        os.environ,
        YMIR_EXC_MODEL_LOCATION=str(work / "models"),
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    )
    outputs = []
    for i, block in enumerate(bash_blocks(TUTORIAL.read_text(encoding="utf-8"))):
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=work,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, f"tutorial block {i + 1} failed:\n{block}\n--- output:\n{proc.stdout}"
        outputs.append(proc.stdout)
    return work, outputs


def test_tutorial_has_the_steps_it_promises():
    blocks = bash_blocks(TUTORIAL.read_text(encoding="utf-8"))
    commands = "".join(blocks)
    for step in (
        "ymir-exc run my-executor --task training",
        "ymir-exc verify my-executor",
        "ymir-exc run my-executor --task mining --task infer --model latest",
    ):
        assert step in commands


def test_tutorial_writes_the_minimal_example_byte_for_byte(followed):
    work, _ = followed
    written = sorted(p.relative_to(work / "my-executor") for p in (work / "my-executor").rglob("*") if p.is_file())
    expected = sorted(
        p.relative_to(EXAMPLE)
        for p in EXAMPLE.rglob("*")
        if p.is_file() and p.parts[len(EXAMPLE.parts)] in ("app", "img-man") and "__pycache__" not in p.parts
    )
    assert written == expected
    for rel in expected:
        assert (work / "my-executor" / rel).read_bytes() == (EXAMPLE / rel).read_bytes(), rel


def test_tutorial_training_packs_a_model_and_verify_passes(followed):
    _, outputs = followed
    text = "".join(outputs)
    assert re.search(r"pack success, model hash: [0-9a-f]{40}, best_stage_name: last, mAP: 0\.\d+", text)
    assert re.search(r"^\d+ passed, 0 failed$", text, re.MULTILINE)
    # mining + infer default to the unlabeled candidates: the sample has 5
    assert "infer: 5 images" in text and "mining: 5 candidates scored" in text
