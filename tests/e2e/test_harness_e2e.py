"""The whole loop through the harness CLI with det-demo-tmi on the bundled sample (local runtime)."""

import json
import re
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from ymir_exc.cli import main
from ymir_exc.harness.datasets import load_sample
from ymir_exc.harness.options import RunOptions
from ymir_exc.harness.runtime import container_argv, parse_monitor

DEMO = str(REPO / "det-demo-tmi")
PACK = re.compile(r"^pack success, model hash: ([0-9a-f]{40}), best_stage_name: (\w+), mAP: ([0-9.e-]+)$", re.M)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One training run shared by the tests of this module."""
    root = tmp_path_factory.mktemp("e2e")
    store = root / "models"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ymir_exc.cli",
            "run",
            DEMO,
            "--task",
            "training",
            "--work-dir",
            str(root / "train"),
            "--model-location",
            str(store),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    m = PACK.search(proc.stdout)
    assert m, proc.stdout
    return {
        "root": root,
        "store": store,
        "hash": m.group(1),
        "stage": m.group(2),
        "mAP": float(m.group(3)),
        "stdout": proc.stdout,
    }


def test_training_packs_a_model_named_by_its_sha1(trained):
    import hashlib

    pkg = trained["store"] / trained["hash"]
    assert hashlib.sha1(pkg.read_bytes()).hexdigest() == trained["hash"]
    result = yaml.safe_load((trained["root"] / "train" / "out" / "models" / "result.yaml").read_text())
    assert result["best_stage_name"] == trained["stage"] and result["mAP"] == pytest.approx(trained["mAP"])
    assert 0.0 < trained["mAP"] <= 1.0
    mon = parse_monitor((trained["root"] / "train" / "out" / "monitor.txt").read_text())
    assert (mon.state, mon.percent, mon.return_code) == (3, 1.0, 0)


def test_mining_and_infer_with_the_trained_model(trained, capsys):
    work = trained["root"] / "mi"
    rc = main(
        [
            "run",
            DEMO,
            "--task",
            "mining",
            "--task",
            "infer",
            "--model",
            trained["hash"][:10],
            "--work-dir",
            str(work),
            "--model-location",
            str(trained["store"]),
            "--quiet",
            "--topk",
            "5",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    sample = load_sample()
    labeled = {i.image_path for i in sample.train + sample.val}
    n = len([i for i in sample.candidate if i.image_path not in labeled])  # mining's default: --split unlabeled
    assert n == 5
    lines = (work / "out" / "result.tsv").read_text().splitlines()
    scores = [float(line.split("\t")[1]) for line in lines]
    assert len(lines) == n and scores == sorted(scores, reverse=True)
    det = json.loads((work / "out" / "infer-result.json").read_text())["detection"]
    assert len(det) == n
    for entry in det.values():
        for b in entry["boxes"]:
            assert all(isinstance(b["box"][k], int) for k in "xywh") and b["class_name"] == "tree"
    assert "mining: 5 candidates scored; top 5:" in out
    cfg = yaml.safe_load((work / "in" / "config.yaml").read_text())
    assert cfg["class_names"] == ["tree"] and cfg["model_params_path"][0].startswith(str(work / "in" / "models"))


def test_models_list_and_show(trained, capsys):
    assert main(["models", "--model-location", str(trained["store"]), "list"]) == 0
    assert trained["hash"] in capsys.readouterr().out
    assert main(["models", "--model-location", str(trained["store"]), "show", "latest"]) == 0
    out = capsys.readouterr().out
    assert f"best stage: {trained['stage']}" in out and "classes: ['tree']" in out


def test_verify_passes_every_check_for_the_demo(tmp_path, capsys):
    rc = main(["verify", DEMO, "--work-dir", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert re.search(r"^\d+ passed, 0 failed$", out, re.M)


def test_verify_fails_for_a_crashing_executor_but_its_crash_check_passes(tmp_path, capsys):
    rc = main(["verify", str(REPO / "tests/fixtures/executors/crash"), "--work-dir", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 3  # verify failures: the contract is broken
    assert re.search(r"crash \(invalid config.yaml\).*non-zero exit.*PASS", out)


def test_a_crashing_executor_ends_in_state_4_and_exit_1(tmp_path, capsys):
    rc = main(
        [
            "run",
            str(REPO / "tests/fixtures/executors/crash"),
            "--work-dir",
            str(tmp_path / "w"),
            "--quiet",
            "--model-location",
            str(tmp_path / "m"),
        ]
    )
    assert rc == 1
    mon = parse_monitor((tmp_path / "w" / "out" / "monitor.txt").read_text())
    assert (mon.state, mon.return_code) == (4, 160004) and "crashes on purpose" in mon.message
    assert "crashes on purpose" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_timeout_stops_the_executor_and_leaves_state_4(tmp_path, capsys):
    rc = main(
        [
            "run",
            str(REPO / "tests/fixtures/executors/slow"),
            "--work-dir",
            str(tmp_path / "w"),
            "--quiet",
            "--timeout",
            "1",
        ]
    )
    assert rc == 1
    mon = parse_monitor((tmp_path / "w" / "out" / "monitor.txt").read_text())
    assert mon.state == 4 and "timed out" in mon.message
    assert "timed out" in capsys.readouterr().err


def test_container_argv_is_the_platforms(tmp_path):
    options = RunOptions(runtime="docker", user="1000:1000", gpu_id="3,5", network_none=True)
    argv = container_argv(options, "ymir/demo:1", tmp_path / "in", tmp_path / "out", "t123", shm_size="32G")
    assert argv == [
        "docker",
        "run",
        "--rm",
        "-v",
        f"{tmp_path}/in:/in:ro",
        "-v",
        f"{tmp_path}/out:/out",
        "--user",
        "1000:1000",
        "--gpus",
        '"device=3,5"',
        "--shm-size=32G",
        "--name",
        "t123",
        "--network",
        "none",
        "ymir/demo:1",
    ]
    cpu = container_argv(RunOptions(runtime="podman"), "img", tmp_path / "in", tmp_path / "out", "t1")
    assert "--gpus" not in cpu and "--network" not in cpu and cpu[-1] == "img"


def test_print_argv_and_dry_run_run_nothing(tmp_path, capsys):
    assert main(["run", DEMO, "--print-argv"]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert out.startswith(sys.executable) and out.endswith("det-demo-tmi/app/start.py")
    assert main(["run", DEMO, "--dry-run", "--work-dir", str(tmp_path / "w")]) == 0
    out = capsys.readouterr().out
    assert "dry run: would run" in out and "class_names:" in out
