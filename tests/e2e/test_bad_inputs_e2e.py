"""Bad inputs handed to a real executor (det-demo-tmi): a clear error naming the file (and line),
state 4 in monitor.txt and a non-zero exit."""

import os
import subprocess
import sys

import yaml
from conftest import REPO

from ymir_exc.harness.datasets import load_sample
from ymir_exc.harness.executors import LocalExecutor
from ymir_exc.harness.runtime import parse_monitor
from ymir_exc.harness.workspace import prepare

DEMO = LocalExecutor(str(REPO / "det-demo-tmi"))


def _prepared(tmp_path, export_format="det-ark:raw"):
    return prepare(
        tmp_path / "w",
        load_sample("trees"),
        ["training"],
        DEMO.templates(),
        user_config={"export_format": export_format, "epochs": 1},
        task_id="t-bad",
    )


def _run(p):
    env = dict(os.environ, DEFAULT_ENV_FILE_PATH=str(p.env_file), DEFAULT_CONFIG_FILE_PATH=str(p.config_file))
    proc = subprocess.run(
        [sys.executable, str(DEMO.folder / "app" / "start.py")], env=env, capture_output=True, text=True, timeout=300
    )
    return proc, parse_monitor((p.out_dir / "monitor.txt").read_text())


def test_bad_env_yaml(tmp_path):
    p = _prepared(tmp_path)
    env = yaml.safe_load(p.env_file.read_text())
    env["run_training"] = "perhaps"
    p.env_file.write_text(yaml.safe_dump(env))
    proc, mon = _run(p)
    assert proc.returncode != 0 and mon.state == 4 and mon.return_code == 300001
    assert str(p.env_file) in mon.message and "run_training" in mon.message


def test_missing_index_file(tmp_path):
    p = _prepared(tmp_path)
    (p.in_dir / "train-index.tsv").unlink()
    proc, mon = _run(p)
    assert proc.returncode != 0 and mon.state == 4 and mon.return_code == 300002
    assert f"{p.in_dir}/train-index.tsv" in mon.message and "not found" in mon.message


def test_annotation_line_that_does_not_parse(tmp_path):
    p = _prepared(tmp_path)
    first = (p.in_dir / "train-index.tsv").read_text().splitlines()[0].split("\t")[1]
    os.unlink(first)  # annotations may be shared hard links: replace, do not edit in place
    with open(first, "w") as f:
        f.write("0, 1, 1, 10, 10\n0, 5, five, 20, 20\n")
    proc, mon = _run(p)
    assert proc.returncode != 0 and mon.state == 4 and mon.return_code == 300002
    assert f"{first}:2" in mon.message and "ymin" in mon.message
    assert f"{first}:2" in proc.stderr


def test_blank_line_in_an_index_file(tmp_path):
    p = _prepared(tmp_path)
    idx = p.in_dir / "val-index.tsv"
    lines = idx.read_text().splitlines()
    idx.write_text("\n".join([lines[0], "", *lines[1:]]) + "\n")
    proc, mon = _run(p)
    assert proc.returncode != 0 and mon.state == 4 and f"{idx}:2" in mon.message


def test_bad_config_yaml(tmp_path):
    p = _prepared(tmp_path)
    p.config_file.write_text("class_names: [tree\nepochs: 2\n")
    proc, mon = _run(p)
    assert proc.returncode != 0 and mon.state == 4 and mon.return_code == 300001
    assert str(p.config_file) in mon.message


def test_corrupt_image(tmp_path):
    p = _prepared(tmp_path)
    image = (p.in_dir / "train-index.tsv").read_text().splitlines()[0].split("\t")[0]
    os.unlink(image)
    with open(image, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 truncated")
    proc, mon = _run(p)
    assert proc.returncode != 0 and mon.state == 4 and mon.return_code == 300003
    assert image in mon.message
