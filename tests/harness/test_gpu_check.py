"""scripts/gpu-check.sh (scripts/gpu_check.py) and scripts/gpu-wheels.sh: what can be checked
without a GPU — the arguments, the plan of --dry-run, the figures read from Ultralytics' and the
executor's outputs — and bench/run's --device option."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

SCRIPT = REPO / "scripts" / "gpu-check.sh"
sys.path.insert(0, str(REPO / "scripts"))
import gpu_check  # noqa: E402


def _run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        env=dict(os.environ, PYTHON=sys.executable),
        timeout=60,
        **kw,
    )


@pytest.fixture
def wheels(tmp_path):
    d = tmp_path / "wheels"
    d.mkdir()
    for name in (
        "ultralytics-8.4.190-py3-none-any.whl",
        "pydantic_core-2.50.5-cp312-cp312-manylinux2014_x86_64.whl",
        "ymir_exc-2.1.0-py3-none-any.whl",
    ):
        (d / name).write_bytes(b"PK")
    return d


def test_help_names_the_options():
    p = _run("--help")
    assert p.returncode == 0, p.stderr
    for opt in ("--wheels", "--quick", "--dry-run", "--gpu-id", "--venv"):
        assert opt in p.stdout


def test_missing_wheels_option_is_a_usage_error():
    p = _run("--quick")
    assert p.returncode == 2
    assert "--wheels" in p.stderr and "required" in p.stderr


def test_a_wheels_folder_that_does_not_exist_is_named(tmp_path):
    p = _run("--wheels", str(tmp_path / "nope"))
    assert p.returncode == 2
    assert f"--wheels {tmp_path / 'nope'}: no such folder" in p.stderr and "gpu-wheels.sh" in p.stderr


def test_a_wheels_folder_without_wheels_is_refused(tmp_path):
    p = _run("--wheels", str(tmp_path))
    assert p.returncode == 2 and "no .whl files" in p.stderr


def test_bad_gpu_id_is_refused(wheels):
    p = _run("--wheels", str(wheels), "--gpu-id", "0,1", "--dry-run")
    assert p.returncode == 2 and "--gpu-id" in p.stderr


def test_dry_run_prints_the_plan_and_touches_nothing(wheels, tmp_path):
    venv = tmp_path / "venv"
    full = _run("--wheels", str(wheels), "--dry-run", "--venv", str(venv))
    quick = _run("--wheels", str(wheels), "--dry-run", "--quick", "--venv", str(venv), "--gpu-id", "1")
    assert full.returncode == 0 and quick.returncode == 0, full.stderr + quick.stderr
    assert not venv.exists()
    for name in os.listdir(wheels):
        assert name in full.stdout
    assert (
        f"epochs={gpu_check.SIZES['full'][0]} " in full.stdout
        and f"{gpu_check.SIZES['full'][1]} candidates" in full.stdout
    )
    assert (
        f"epochs={gpu_check.SIZES['quick'][0]} " in quick.stdout
        and f"{gpu_check.SIZES['quick'][1]} candidates" in quick.stdout
    )
    assert "--gpu-id 0 --task training" in full.stdout and "--gpu-id 1 --task training" in quick.stdout
    assert "--system-site-packages" in full.stdout and "--no-index --no-deps" in full.stdout
    assert "bench" in full.stdout and "yolo_plain.py" in full.stdout


def test_dist_names_follow_the_wheel_file_names():
    assert gpu_check.dist_name("pydantic_core-2.50.5-cp312-cp312-manylinux2014_x86_64.whl") == "pydantic-core"
    assert gpu_check.dist_name("/w/tensorboardx-2.6.5-py3-none-any.whl") == "tensorboardx"
    assert gpu_check.dist_name("ymir_exc-2.1.0-py3-none-any.whl") == "ymir-exc"


def test_epoch_time_and_map50_come_from_ultralytics_results_csv(tmp_path):
    # Ultralytics 8.4's header (time: cumulative seconds at the end of each epoch)
    csv = tmp_path / "results.csv"
    csv.write_text(
        "epoch,time,train/box_loss,metrics/precision(B),metrics/recall(B),metrics/mAP50(B),metrics/mAP50-95(B)\n"
        "1,5.0,3.1,0.01,0.02,0.001,0.0\n"
        "2,6.5,3.0,0.1,0.2,0.120,0.05\n"
        "3,8.5,2.9,0.2,0.3,0.300,0.1\n"
        "4,10.0,2.8,0.2,0.3,0.250,0.1\n"
    )
    assert gpu_check.epoch_seconds(csv) == pytest.approx(1.5)  # median of 1.5, 2.0, 1.5; epoch 1 left out
    assert gpu_check.best_map50(csv) == pytest.approx(0.3)
    one = tmp_path / "one.csv"
    one.write_text("epoch,time,metrics/mAP50(B)\n1,4.25,0.5\n")
    assert gpu_check.epoch_seconds(one) == pytest.approx(4.25)


def test_rates_and_model_hash_come_from_the_executor_s_lines():
    text = (
        "pack success, model hash: " + "ab" * 20 + ", best_stage_name: best, mAP: 0.3\n"
        "det-yolo-tmi: mining done in 1.25 s (377.6 images/s)\n"
        "det-yolo-tmi: inference done in 0.80 s (590.0 images/s)\n"
    )
    assert gpu_check.executor_rate(text, "mining") == pytest.approx(377.6)
    assert gpu_check.executor_rate(text, "inference") == pytest.approx(590.0)
    assert gpu_check.executor_rate("nothing", "mining") is None
    assert gpu_check.model_hash(text) == "ab" * 20
    with pytest.raises(gpu_check.CheckError, match="model hash"):
        gpu_check.model_hash("no hash here")


def test_table_has_one_row_per_side_and_says_n_a_for_a_missing_figure():
    t = gpu_check.table(
        {
            "ours": {"epoch_s": 1.234, "mining_ips": 400.4, "infer_ips": 500.0, "mem_mib": 2048, "map50": 0.4567},
            "plain": {"epoch_s": 1.2, "mining_ips": None, "infer_ips": 480.0, "mem_mib": None, "map50": 0.5},
        }
    )
    lines = t.splitlines()
    assert len(lines) == 4 and "GPU memory peak" in lines[0]
    assert lines[2] == "| ours | 1.23 | 400 | 500 | 2048 | 0.457 |"
    assert lines[3] == "| plain | 1.20 | n/a | 480 | n/a | 0.500 |"


def test_gpu_wheels_help():
    p = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu-wheels.sh"), "--help"], capture_output=True, text=True, timeout=30
    )
    assert p.returncode == 0 and "--no-deps" in p.stdout and "60 MB" in p.stdout


def test_bench_device_option_is_checked():
    p = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench.py"), "--device", "cuda:0", "--only", "yolo"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "--device" in p.stderr


def test_bench_yolo_rows_pass_the_device_to_ymir_exc_run_as_gpu_id(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_under_test", REPO / "bench" / "bench.py")
    bench_module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench_module  # dataclasses look their module up
    try:
        spec.loader.exec_module(bench_module)

        def argv(device: str):
            ctx = bench_module.Context(
                smoke=True,
                repeat=1,
                sizes={},
                cache=tmp_path,
                tmp_root=str(tmp_path),
                ours_python="python",
                upstream_python=None,
                upstream_note="",
                device=device,
            )
            return bench_module._ours_argv(ctx, str(tmp_path), ["training"], {"epochs": 1}, str(tmp_path / "m"), [])

        gpu = argv("0")
        assert gpu[gpu.index("--gpu-id") + 1] == "0"
        assert "--gpu-id" not in argv("cpu")
    finally:
        sys.modules.pop(spec.name, None)


def test_dry_run_without_wheels_shows_the_plan():
    p = _run("--dry-run", "--quick")
    assert p.returncode == 0, p.stderr
    assert "gpu-check plan:" in p.stdout and "install from --wheels DIR (not given" in p.stdout
    assert f"epochs={gpu_check.SIZES['quick'][0]} " in p.stdout


def _wheels_for(folder, tag: str):
    folder.mkdir()
    (folder / f"pydantic_core-2.50.5-{tag}-{tag}-manylinux2014_x86_64.whl").write_bytes(b"PK")
    (folder / "ymir_exc-2.1.0-py3-none-any.whl").write_bytes(b"PK")
    return folder


def test_wheels_for_another_python_are_reported_before_installing(tmp_path):
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    other = "3.12" if here != "3.12" else "3.11"
    wheels = _wheels_for(tmp_path / "w", "cp" + other.replace(".", ""))
    venv = tmp_path / "venv"
    dry = _run("--wheels", str(wheels), "--dry-run", "--venv", str(venv))
    assert dry.returncode == 0 and "gpu-check plan:" in dry.stdout
    assert f"for CPython {other}" in dry.stderr and f"is Python {here}" in dry.stderr
    assert f"--python python{other}" in dry.stderr and f"gpu-wheels.sh --python-version {here}" in dry.stderr
    real = _run("--wheels", str(wheels), "--venv", str(venv), "--cpu", "--work", str(tmp_path / "work"))
    assert real.returncode == 2 and "stopped before installing" in real.stderr
    assert not venv.exists()  # nothing made, nothing installed


def test_wheels_for_this_python_raise_no_warning(tmp_path):
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    wheels = _wheels_for(tmp_path / "w", tag)
    p = _run("--wheels", str(wheels), "--dry-run", "--venv", str(tmp_path / "venv"))
    assert p.returncode == 0 and "warning" not in p.stderr
    assert gpu_check.cpython_tags(gpu_check.wheel_files(str(wheels))) == {
        tag: [f"pydantic_core-2.50.5-{tag}-{tag}-manylinux2014_x86_64.whl"]
    }


def test_gpu_wheels_takes_a_python_version(tmp_path):
    script = REPO / "scripts" / "gpu-wheels.sh"
    bad = subprocess.run(["bash", str(script), "--python-version", "3"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "expected X.Y" in bad.stderr
    # with a pip that only records its arguments: the version and ABI reach `pip download`
    fake = tmp_path / "python"
    log = tmp_path / "argv.log"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit 1\n')
    fake.chmod(0o755)
    p = subprocess.run(
        ["bash", str(script), "--python-version", "3.11", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, PYTHON=str(fake)),
    )
    assert p.returncode != 0  # the fake pip fails at once
    first = log.read_text().splitlines()[0]
    assert "--python-version 3.11" in first and "--abi cp311" in first and f"--dest {tmp_path / 'out'}" in first
    assert "for CPython 3.11 (cp311)" in p.stdout
