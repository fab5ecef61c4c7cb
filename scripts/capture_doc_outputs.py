"""Re-run the commands of a docs page and write their real output back into it.

Each ```bash block of the page that is followed (after blank lines) by a ```text block is run with
bash; its output (stdout and stderr together) replaces the text block. A text block whose last line is
``...`` keeps its number of lines (the page shows the start of a long output).

    python scripts/capture_doc_outputs.py docs/harness.md                  # from the repository root
    python scripts/capture_doc_outputs.py docs/writing-an-executor.md --fresh

``--fresh`` runs every bash block in order in an empty folder (the tutorial); otherwise each block
runs in the repository root. The model store is a scratch folder (``$YMIR_EXC_MODEL_LOCATION``);
in the output, the folder the commands ran in becomes ``~/work`` (``--fresh``) or disappears (paths
relative to the repository root), the scratch store becomes ``~/.ymir-exc/models`` and ``$HOME``
becomes ``~``: the page shows the default store a reader gets, who sets no
``$YMIR_EXC_MODEL_LOCATION`` (also with ``--fresh``). ``ymir-work/`` and ``package.tar.gz``, when
the run made them in the repository root, are removed at the end. Exit status: 0, or 1 when a
block ran with an exit status its page does not state (a ``(exit status N)`` line after the
text block).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(
    r"^```bash\n(?P<cmd>(?:(?!^```).)*?)^```\n\n*"
    r"^```text\n(?P<out>.*?)^```\n\n*(?:\(exit status (?P<rc>\d+)\))?",
    re.DOTALL | re.MULTILINE,
)
#: shell run before a command containing the key (not shown on the page), from the folder it runs in
BEFORE = {
    "import --package-path package.tar.gz": 'cp "$(ls -td "$YMIR_EXC_MODEL_LOCATION"/* | head -1)" package.tar.gz'
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", type=Path)
    ap.add_argument("--fresh", action="store_true", help="run every bash block in order in an empty folder")
    args = ap.parse_args(argv)
    text = args.page.read_text(encoding="utf-8")
    scratch = Path(tempfile.mkdtemp(prefix="capture-"))
    store = scratch / "models"
    cwd = scratch / "work" if args.fresh else REPO
    cwd.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        YMIR_EXC_MODEL_LOCATION=str(store),
        COLUMNS="120",
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    )
    subs = [
        (str(store), "~/.ymir-exc/models"),
        (str(cwd) + "/", "" if not args.fresh else "~/work/"),
        (str(cwd), "~/work" if args.fresh else "."),
        (str(Path.home()), "~"),
    ]
    status = 0
    made = [p for p in (REPO / "ymir-work", REPO / "package.tar.gz") if not p.exists()]
    out_parts, pos = [], 0
    try:
        blocks = re.findall(r"^```bash\n(.*?)^```$", text, re.DOTALL | re.MULTILINE) if args.fresh else []
        captured: dict[int, tuple[int, str]] = {}
        if args.fresh:  # every block runs, in order; outputs are kept for the blocks with a text block
            for i, cmd in enumerate(blocks):
                captured[i] = run(cmd, cwd, env, subs)
        for n, m in enumerate(BLOCK.finditer(text)):
            cmd = m.group("cmd")
            if args.fresh:
                rc, output = captured[blocks.index(cmd)]
            else:
                before = next((v for k, v in BEFORE.items() if k in cmd), "")
                rc, output = run(before + "\n" + cmd if before else cmd, cwd, env, subs)
            if rc != int(m.group("rc") or 0):
                print(
                    f"{args.page}: block {n + 1} exited {rc}, the page says {m.group('rc') or 0}:\n{cmd}{output}",
                    file=sys.stderr,
                )
                status = 1
            old = m.group("out")
            if old.rstrip().splitlines()[-1:] == ["..."]:
                keep = len(old.rstrip().splitlines()) - 1
                output = "".join(output.splitlines(keepends=True)[:keep]) + "...\n"
            out_parts.append(text[pos : m.start("out")] + output)
            pos = m.end("out")
        out_parts.append(text[pos:])
        args.page.write_text("".join(out_parts), encoding="utf-8")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        for path in made:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()
    return status


def run(cmd: str, cwd: Path, env: dict[str, str], subs: list[tuple[str, str]]) -> tuple[int, str]:
    """(exit status, output with the paths shortened) of ``cmd`` run with bash in ``cwd``."""
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=600,
        check=False,
    )
    out = proc.stdout
    for old, new in subs:
        out = out.replace(old, new)
    out = out.rstrip("\n") + "\n" if out.strip() else ""
    return proc.returncode, out


if __name__ == "__main__":
    sys.exit(main())
