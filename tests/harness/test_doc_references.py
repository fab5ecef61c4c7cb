"""References into the docs resolve, and nothing in the project points at files users lack
(the design notes' contract file, issue numbers, a sibling folder)."""

from __future__ import annotations

import re
import subprocess

from conftest import REPO

SUFFIXES = (".py", ".md", ".sh", ".toml", ".yaml", ".yml", ".cfg")


def project_files():
    """Tracked and untracked-but-not-ignored text files of the repository (git's view)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for rel in sorted(set(out.splitlines())):
        path = REPO / rel
        if (
            path.is_file()
            and (path.suffix in SUFFIXES or path.name in ("run", "Dockerfile"))
            and rel != "CHANGELOG.md"
            and not rel.startswith("ymir_exc/samples/")
        ):
            yield rel, path.read_text(encoding="utf-8", errors="replace")


def slug(heading: str) -> str:
    """Python-Markdown's toc slug, as MkDocs makes heading anchors."""
    value = re.sub(r"[^\w\s-]", "", heading).strip().lower()
    return re.sub(r"[-\s]+", "-", value)


def test_slug_follows_markdowns_rules():
    assert slug("Training: result.yaml") == "training-resultyaml"
    assert slug("config.yaml and the reserved keys") == "configyaml-and-the-reserved-keys"


def test_no_reference_to_files_a_clone_does_not_have():
    pattern = re.compile(r"CONTRACT\.md|\.\./shared|shared/|\b[Ii]ssues? #?\d")
    hits = [
        f"{rel}:{n}: {line.strip()}"
        for rel, text in project_files()
        for n, line in enumerate(text.splitlines(), 1)
        if pattern.search(line) and rel != "tests/harness/test_doc_references.py"
    ]
    assert not hits, "\n".join(hits)


def test_every_contract_anchor_named_in_the_project_exists():
    headings = re.findall(r"^#{1,6} (.+)$", (REPO / "docs" / "contract.md").read_text(encoding="utf-8"), re.M)
    anchors = {slug(h) for h in headings}
    named = {(rel, a) for rel, text in project_files() for a in re.findall(r"contract\.md#([\w-]+)", text)}
    assert len(named) >= 10
    missing = sorted(f"{rel}: #{a}" for rel, a in named if a not in anchors)
    assert not missing, missing
