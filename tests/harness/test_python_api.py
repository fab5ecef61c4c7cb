"""``ymir_exc.harness.run`` and ``RunOptions``: the Python side of ``ymir-exc run``."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from ymir_exc.harness import RunOptions, run
from ymir_exc.settings import PROTOCOL_VERSION


def test_run_trains_det_demo_tmi_on_the_bundled_sample_and_stores_a_model(tmp_path):
    options = RunOptions(quiet=True, model_location=tmp_path / "models", user_config={"epochs": 2})
    outcome = run("det-demo-tmi", ["training"], "trees", options, work_dir=tmp_path / "w")
    assert outcome.ok, outcome.problems
    assert outcome.runtime == "local" and outcome.prepared.work_dir == (tmp_path / "w").resolve()
    rep = outcome.training
    assert rep is not None and len(rep.model_hash) == 40 and 0.0 <= rep.mAP <= 1.0
    assert (tmp_path / "models" / rep.model_hash).is_file()  # stored where the options say
    assert outcome.prepared.config["epochs"] == 2 and outcome.prepared.env["protocol_version"] == PROTOCOL_VERSION
    # every asset the executor saw maps back to the user's image with the same bytes
    assets = sorted((outcome.prepared.in_dir / "assets").rglob("*.*"))
    assert assets
    for asset in assets[:5]:
        source = outcome.source_of(f"/in/assets/{asset.parent.name}/{asset.name}")
        assert source is not None and Path(source).read_bytes() == asset.read_bytes()
    assert outcome.source_of("/in/assets/nope.jpg") is None


def test_run_hands_unknown_keys_over_when_the_options_allow_it(tmp_path):
    options = RunOptions(quiet=True, model_location=tmp_path / "models", user_config={"epochs": 1, "epoch": 2})
    with pytest.raises(ValueError, match=r"--allow-unknown-keys / RunOptions\(allow_unknown_keys=True\)"):
        run("det-demo-tmi", "training", "trees", options, work_dir=tmp_path / "w")
    allowed = dataclasses.replace(options, allow_unknown_keys=True)
    outcome = run("det-demo-tmi", "training", "trees", allowed, work_dir=tmp_path / "w")
    assert outcome.ok, outcome.problems
    assert outcome.prepared.config["epoch"] == 2


def test_run_refuses_an_unknown_task_and_an_unknown_config_key_before_anything_runs(tmp_path):
    options = RunOptions(model_location=tmp_path / "models")
    with pytest.raises(ValueError, match="tasks"):
        run("det-demo-tmi", "evaluate", "trees", options, work_dir=tmp_path / "w")
    with pytest.raises(ValueError, match="did you mean 'epochs'"):  # ConfigFileError is a ValueError
        run("det-demo-tmi", "training", "trees", dataclasses.replace(options, user_config={"epoch": 2}))
    assert not (tmp_path / "w").exists()


def test_run_options_refuse_bad_values_and_are_frozen():
    with pytest.raises(ValueError, match="assets"):
        RunOptions(assets="symlink")
    with pytest.raises(ValueError, match="timeout"):
        RunOptions(timeout=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunOptions().gpu_id = "0"


def test_run_options_fields_are_the_cli_flags():
    from ymir_exc.cli import build_parser

    run_flags = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["run"]._actions}
    fields = {f.name for f in dataclasses.fields(RunOptions)}
    assert fields - {"user_config"} <= run_flags  # user_config is what --config and --set add up to


def test_importing_the_harness_package_loads_neither_the_pipeline_nor_the_sdk_harness_link():
    code = (
        "import sys, ymir_exc; assert not any(m.startswith('ymir_exc.harness') for m in sys.modules); "
        "import ymir_exc.harness; print('ymir_exc.harness.pipeline' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


#: every module of the package: its functions stay short, at most 60 lines and 8 parameters each
SHORT_MODULES = sorted(str(p.relative_to(REPO / "ymir_exc")) for p in (REPO / "ymir_exc").rglob("*.py"))


def test_the_size_rule_covers_the_whole_package():
    assert {"cli.py", "harness/loop.py", "result_writer.py", "formats/annotations.py"} <= set(SHORT_MODULES)


@pytest.mark.parametrize("rel", SHORT_MODULES)
def test_functions_are_at_most_60_lines_and_8_parameters(rel):
    tree = ast.parse((REPO / "ymir_exc" / rel).read_text(encoding="utf-8"))
    too_big = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            params = len(a.posonlyargs + a.args + a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > 60 or params > 8:
                too_big.append(f"{node.name}: {lines} lines, {params} parameters")
    assert not too_big, too_big
