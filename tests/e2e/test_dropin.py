"""Drop-in: code written for the upstream SDK runs unchanged, across protocol versions."""

import json
import subprocess
import sys

import pytest
from conftest import REPO

from ymir_exc import result_writer as rw
from ymir_exc.cli import main


def test_an_upstream_style_executor_passes_every_verify_check(tmp_path, capsys):
    rc = main(["verify", str(REPO / "tests/fixtures/executors/upstream-style"), "--work-dir", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out


def test_a_semantic_segmentation_executor_passes_every_verify_check(tmp_path, capsys):
    rc = main(["verify", str(REPO / "tests/fixtures/executors/seg-semantic"), "--work-dir", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    # the model package carries the segmentation metric
    from ymir_exc.harness.models import ModelStore

    models = ModelStore(tmp_path / "models").list()
    assert models and all(m.primary_metric()[0] == "mIoU" and m.info.task_context["mIoU"] == m.mAP() for m in models)
    # and imported elsewhere with that metric
    again = ModelStore(tmp_path / "elsewhere").import_package(models[0].path)
    assert again.primary_metric() == models[0].primary_metric() and 0 < again.mAP() <= 1


def test_an_uncaught_exception_in_an_upstream_style_executor_ends_in_state_4(ws):
    ws.config_file.write_text("class_names: [unclosed\n")
    code = "from ymir_exc.util import get_merged_config\nget_merged_config()\n"
    env = {
        "DEFAULT_ENV_FILE_PATH": str(ws.env_file),
        "DEFAULT_CONFIG_FILE_PATH": str(ws.config_file),
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and "ConfigFileError" in proc.stderr
    first = ws.monitor_text().splitlines()[0].split("\t")
    assert first[3:] == ["4", "300001"]


@pytest.mark.parametrize(
    "version,legacy",
    [(None, True), ("0.1.0", True), ("1.0.0", False), ("1.1.0", False), ("2.0.0", False), ("2.5.1", False)],
)
def test_outputs_per_protocol_version(ws, version, legacy):
    ws.write_env(protocol_version=version)
    ws.model_file("w.pt")
    rw.write_model_stage("epoch_1", ["w.pt"], mAP=0.25)
    result = ws.result()
    assert (
        ("model" in result and result["map"] == 0.25)
        if legacy
        else (result["model_stages"]["epoch_1"]["mAP"] == 0.25 and result["best_stage_name"] == "epoch_1")
    )
    rw.write_infer_result({"/in/a.jpg": []})
    entry = json.loads((ws.out_dir / "infer-result.json").read_text())["detection"]["a.jpg"]
    assert entry == ({"annotations": []} if legacy else {"boxes": []})
    assert rw.multiple_model_stages_supportable() is (not legacy)


def test_executor_side_import_pulls_no_torch_harness_or_cli():
    code = (
        "import sys, ymir_exc, ymir_exc.env, ymir_exc.dataset_reader, ymir_exc.result_writer, ymir_exc.monitor, "
        "ymir_exc.util, ymir_exc.executor, ymir_exc.task, ymir_exc.settings, ymir_exc.code, ymir_exc.errors, "
        "ymir_exc.sysinfo, ymir_exc.dataset_convert, ymir_exc.formats\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'ymir_exc.harness', 'ymir_exc.cli',"
        " 'ultralytics', 'tensorboardX', 'rich', 'pycocotools'))]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_schema_command_exports_every_format(capsys):
    assert main(["schema"]) == 0
    schemas = json.loads(capsys.readouterr().out)
    assert {"env.yaml", "result.yaml", "ymir-info.yaml", "infer-result.json box"} <= set(schemas)
    assert "model_stages" in schemas["result.yaml"]["properties"]
