"""verify's checks found lacking by a user writing a bash executor from docs/contract.md: a
monitor.txt rewritten in place, a state 4 written by the harness, results in the format of another
object_type, a folder without an entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from ymir_exc.cli import main
from ymir_exc.harness.runtime import RunResult, _MonitorWatch, run_local
from ymir_exc.harness.verify import _check_crash

LINE = "t1\t1700000000.000000\t{p}\t{s}\t{rc}"


def bash_executor(root: Path, script: str) -> Path:
    """A folder executor: ``img-man/`` with a detection manifest and ``start.sh`` = ``script``."""
    (root / "img-man").mkdir(parents=True)
    (root / "img-man" / "manifest.yaml").write_text("object_type: 2\n")
    (root / "start.sh").write_text(script)
    return root


def run_dirs(tmp_path: Path) -> tuple[Path, Path]:
    ind, outd = tmp_path / "in", tmp_path / "out"
    ind.mkdir()
    outd.mkdir()
    return ind, outd


def test_an_empty_monitor_txt_while_the_task_runs_is_retried_not_an_error(tmp_path):
    mon = tmp_path / "monitor.txt"
    watch = _MonitorWatch(mon, "t", show=False)
    mon.write_text("")
    watch.poll()
    mon.write_text("t1\t17000")  # a partial first line
    watch.poll()
    assert watch.errors == []
    mon.write_text(LINE.format(p="0.50", s=2, rc=0) + "\n")
    watch.poll()
    assert watch.percents == [0.5] and watch.errors == []
    mon.write_text("")  # still empty once the executor has exited: that is an error
    watch.poll(final=True)
    assert watch.errors == ["monitor.txt is empty"]


def test_a_bash_executor_that_truncates_then_writes_monitor_txt_passes(tmp_path):
    monitor = '"$YMIR_EXC_MONITOR_FILE"'
    script = (
        f"printf 't1\\t1700000000.0\\t0.10\\t2\\t0\\n' > {monitor}; sleep 0.5\n"
        f": > {monitor}; sleep 0.7\n"  # what the reader sees between the truncation and the write
        f"printf 't1\\t1700000001.0\\t1.00\\t3\\t0\\n' > {monitor}\n"
    )
    ex = bash_executor(tmp_path / "exe", script)
    ind, outd = run_dirs(tmp_path)
    r = run_local(ex, ind, outd, label="training", show=False, task_id="t1")
    assert r.ok and r.monitor_errors == [] and r.percents[-1] == 1.0


def test_the_crash_check_fails_when_the_harness_wrote_state_4(tmp_path):
    ex = bash_executor(tmp_path / "exe", "exit 1\n")
    ind, outd = run_dirs(tmp_path)
    r = run_local(ex, ind, outd, label="training", show=False, task_id="t1")
    assert r.error_state_by_harness and r.monitor is not None and r.monitor.state == 4
    checks = {c.name: c for c in _check_crash("crash", r)}
    state = checks["monitor.txt ends in state 4"]
    assert state.failed and state.detail.startswith("state 4 was written by the harness, not the executor")
    assert "without writing monitor.txt" in state.detail


def test_the_crash_check_passes_when_the_executor_wrote_state_4(tmp_path):
    line = LINE.format(p="0.30", s=4, rc=300001).replace("\t", "\\t")
    ex = bash_executor(tmp_path / "exe", f"printf '{line}\\nbad config\\n' > \"$YMIR_EXC_MONITOR_FILE\"\nexit 1\n")
    ind, outd = run_dirs(tmp_path)
    r = run_local(ex, ind, outd, label="training", show=False, task_id="t1")
    assert not r.error_state_by_harness
    assert not any(c.failed for c in _check_crash("crash", r))


def test_a_run_result_defaults_to_a_state_written_by_the_executor(tmp_path):
    assert RunResult(1, 0.1, None, tmp_path / "log").error_state_by_harness is False


def with_object_type(tmp_path: Path, name: str, object_type: int) -> Path:
    """A copy of the fixture executor ``name`` whose manifest says ``object_type``."""
    dest = tmp_path / name
    shutil.copytree(REPO / "tests" / "fixtures" / "executors" / name, dest)
    manifest = dest / "img-man" / "manifest.yaml"
    data = yaml.safe_load(manifest.read_text())
    data["object_type"] = object_type
    manifest.write_text(yaml.safe_dump(data))
    return dest


def failed_checks(tmp_path: Path, executor: Path) -> dict[str, str]:
    """``{check name: detail}`` of the checks ``verify`` (no crash case) fails."""
    from ymir_exc.harness.datasets import load_sample
    from ymir_exc.harness.executors import LocalExecutor
    from ymir_exc.harness.options import RunOptions
    from ymir_exc.harness.verify import verify

    checks = verify(
        LocalExecutor(str(executor)),
        load_sample(),
        RunOptions(runtime="local", quiet=True),
        work_root=tmp_path / "w",
        crash=False,
    )
    return {c.name: c.detail for c in checks if c.failed}


@pytest.mark.parametrize(
    ("fixture", "object_type", "metric", "want", "found"),
    [
        ("seg-semantic", 2, "object_type 2 (detection) expects mAP", "detection", "segmentation"),
        ("upstream-style", 3, "object_type 3 (semantic segmentation) expects mIoU", "segmentation", "detection"),
    ],
)
def test_verify_fails_results_in_the_format_of_another_object_type(tmp_path, fixture, object_type, metric, want, found):
    failed = failed_checks(tmp_path, with_object_type(tmp_path, fixture, object_type))
    assert metric in failed["stage metrics follow object_type"]
    assert f"expects a {want} result, found a {found} result" in failed["infer-result.json format follows object_type"]


def test_a_package_records_the_manifest_object_type(tmp_path, capsys):
    from ymir_exc.harness.models import ModelStore

    store = tmp_path / "models"
    rc = main(
        [
            "run",
            str(REPO / "tests" / "fixtures" / "executors" / "seg-semantic"),
            "--work-dir",
            str(tmp_path / "w"),
            "--model-location",
            str(store),
            "--quiet",
        ]
    )
    assert rc == 0, capsys.readouterr()
    (model,) = ModelStore(store).list()
    assert model.object_type == 3 and model.info.task_context["object_type"] == 3
    capsys.readouterr()
    assert main(["models", "--model-location", str(store), "show", "latest"]) == 0
    out = capsys.readouterr().out
    assert "object_type 3" in out and "no object_type" not in out


def test_verify_of_a_folder_without_an_entry_point_is_one_line_and_exit_2(tmp_path):
    ex = bash_executor(tmp_path / "exe", "")
    (ex / "start.sh").unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "ymir_exc.cli", "verify", str(ex), "--quiet"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "no app/start.py, app/start.sh, start.py or start.sh" in proc.stderr
    assert "Traceback" not in proc.stderr and "FAIL" not in proc.stdout


def test_an_app_start_sh_is_an_entry_point(tmp_path):
    from ymir_exc.harness.runtime import find_entry_point

    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "start.sh").write_text("exit 0\n")
    assert find_entry_point(tmp_path) == ["bash", str((tmp_path / "app" / "start.sh").resolve())]
