"""The curated public surface: ``ymir_exc.__all__`` resolves lazily, stays light, and every
public class documents itself with an example that runs."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys

import pytest

import ymir_exc

PUBLIC = [n for n in ymir_exc.__all__ if n != "__version__"]


def test_all_is_a_small_unique_list_of_names_that_resolve():
    assert 20 <= len(ymir_exc.__all__) <= 30 and len(set(ymir_exc.__all__)) == len(ymir_exc.__all__)
    for name in PUBLIC:
        obj = getattr(ymir_exc, name)
        assert obj.__module__.startswith("ymir_exc."), name
        assert getattr(importlib.import_module(obj.__module__), name) is obj
    assert set(PUBLIC) == set(ymir_exc._EXPORTS) and set(PUBLIC) <= set(dir(ymir_exc))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ymir_exc.nope  # noqa: B018


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_import_ymir_exc_loads_no_submodule_until_a_name_is_used():
    out = run_python(
        "import sys, ymir_exc\n"
        "print(sorted(m for m in sys.modules if m.startswith('ymir_exc') or m in ('pydantic', 'numpy')))"
    )
    assert out == "['ymir_exc', 'ymir_exc._crash']"


def test_using_every_public_name_pulls_no_torch_harness_cli_or_tensorboardx():
    out = run_python(
        "import sys, ymir_exc\n"
        "[getattr(ymir_exc, n) for n in ymir_exc.__all__]\n"
        "print([m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'ymir_exc.harness', "
        "'ymir_exc.cli', 'tensorboardX', 'ultralytics'))])"
    )
    assert out == "[]"


@pytest.mark.parametrize("name", [n for n in PUBLIC if isinstance(getattr(ymir_exc, n), type)])
def test_public_class_has_an_example_whose_doctests_pass(name):
    cls = getattr(ymir_exc, name)
    assert "Example" in (cls.__doc__ or ""), f"{name} has no example in its docstring"
    module = importlib.import_module(cls.__module__)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder(recurse=False).find(cls, name, globs=vars(module).copy()):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_docs_sdk_table_lists_every_public_name():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "sdk.md").read_text(encoding="utf-8")
    table = text[text.index("| group | names |") : text.index("`Executor` hands each task")]
    assert [n for n in ymir_exc.__all__ if f"`{n}`" not in table] == []
