"""scripts/capture_doc_outputs.py: the tool that re-captures the real outputs shown in docs/."""

from __future__ import annotations

import importlib.util

from conftest import REPO


def load():
    spec = importlib.util.spec_from_file_location("capture_doc_outputs", REPO / "scripts" / "capture_doc_outputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PAGE = """# page

```bash
echo setup > made.txt
```

```bash
cat made.txt; echo "$HOME/x"
```

```text
stale
```

```bash
seq 1 10
```

```text
1
...
```

```bash
echo oops; exit 3
```

```text
old
```

(exit status 3)
"""


def test_fresh_run_replaces_each_text_block_and_keeps_cut_outputs_cut(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(PAGE, encoding="utf-8")
    assert load().main([str(page), "--fresh"]) == 0
    text = page.read_text(encoding="utf-8")
    # the first block ran first (in the same fresh folder); $HOME became ~
    assert "```text\nsetup\n~/x\n```" in text
    assert "```text\n1\n...\n```" in text  # a cut output stays cut to its length
    assert "```text\noops\n```\n\n(exit status 3)" in text
    assert "stale" not in text and "old\n" not in text


def test_an_exit_status_the_page_does_not_state_fails_the_run(tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text("```bash\nexit 2\n```\n\n```text\n```\n", encoding="utf-8")
    assert load().main([str(page)]) == 1
    assert "exited 2, the page says 0" in capsys.readouterr().err
