"""Process hygiene and exit statuses of ``ymir-exc run`` (local runtime): Ctrl-C (once, twice),
a SIGKILLed harness, children left behind, an internal error, and an executor writing into the
user's dataset through hard links."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hostile_util import Host, make_executor

from ymir_exc import cli
from ymir_exc.cli import main
from ymir_exc.harness.runtime import parse_monitor


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path / "host")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _gone(pid: int, seconds: float = 5) -> bool:
    """True once ``pid`` is dead (SIGKILL is delivered asynchronously: allow it a moment)."""
    t0 = time.monotonic()
    while _alive(pid) and time.monotonic() - t0 < seconds:
        time.sleep(0.05)
    return not _alive(pid)


def _wait_for(path: Path, seconds: float = 30) -> str:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def _start_harness(tmp_path, host, body):
    ex = make_executor(tmp_path / "ex", body)
    work = tmp_path / "w"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ymir_exc.cli",
            "run",
            str(ex),
            "--dataset",
            str(host.voc),
            "--work-dir",
            str(work),
            "--model-location",
            str(host.store.location),
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    return proc, work


STUBBORN = """
import signal, subprocess
signal.signal(signal.SIGTERM, signal.SIG_IGN)   # ignores the polite stop
child = subprocess.Popen(["sleep", "300"])
open({pids!r}, "w").write(f"{{os.getpid()}} {{child.pid}}\\n")
monitor(state=2, percent=0.3)
time.sleep(300)
"""


def test_second_ctrl_c_kills_the_group_at_once_exit_130_state_4(tmp_path, host):
    pids = tmp_path / "pids"
    proc, work = _start_harness(tmp_path, host, STUBBORN.format(pids=str(pids)))
    exe, child = map(int, _wait_for(pids).split())
    time.sleep(0.3)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # the executor ignores SIGTERM: without this, 10 s of grace
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 8, "the second Ctrl-C did not hurry the stop"
    assert "Traceback" not in err
    mon = parse_monitor((work / "out" / "monitor.txt").read_text())
    assert mon.state == 4 and "interrupted" in mon.message
    assert _gone(exe) and _gone(child)
    host.assert_unchanged()


def test_one_ctrl_c_stops_the_executor_and_exits_130(tmp_path, host):
    pids = tmp_path / "pids"
    proc, work = _start_harness(
        tmp_path,
        host,
        f"""
        import subprocess
        child = subprocess.Popen(["sleep", "300"])
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}\\n")
        monitor(state=2, percent=0.3)
        time.sleep(300)
    """,
    )
    exe, child = map(int, _wait_for(pids).split())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err
    assert parse_monitor((work / "out" / "monitor.txt").read_text()).state == 4
    assert _gone(exe) and _gone(child)
    host.assert_unchanged()


def test_sigkilled_harness_does_not_orphan_the_executor(tmp_path, host):
    pids = tmp_path / "pids"
    proc, work = _start_harness(tmp_path, host, STUBBORN.format(pids=str(pids)))
    exe, child = map(int, _wait_for(pids).split())
    proc.kill()
    proc.communicate(timeout=30)
    t0 = time.monotonic()
    while _alive(exe) and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    assert not _alive(exe), "PR_SET_PDEATHSIG did not stop the executor"
    os.kill(child, signal.SIGKILL) if _alive(child) else None  # a grandchild: beyond PDEATHSIG's reach
    host.assert_unchanged()


def test_children_left_behind_by_a_normal_exit_are_killed(tmp_path, host, capsys):
    pids = tmp_path / "pids"
    ex = make_executor(
        tmp_path / "ex",
        f"""
        import subprocess
        child = subprocess.Popen(["sleep", "300"])
        open({str(pids)!r}, "w").write(str(child.pid))
        good_training(); monitor()
    """,
    )
    rc = main(
        [
            "run",
            str(ex),
            "--dataset",
            str(host.voc),
            "--work-dir",
            str(tmp_path / "w"),
            "--model-location",
            str(tmp_path / "store"),
            "--quiet",
        ]
    )
    assert rc == 0, capsys.readouterr()
    child = int(pids.read_text())
    t0 = time.monotonic()
    while _alive(child) and time.monotonic() - t0 < 5:  # SIGKILL is delivered asynchronously
        time.sleep(0.05)
    assert not _alive(child)
    host.assert_unchanged()


def test_internal_error_prints_one_line_and_a_log_path_exit_70(tmp_path, host, capsys, monkeypatch):
    monkeypatch.setenv("YMIR_EXC_LOG_DIR", str(tmp_path / "logs"))

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "cmd_models", broken)
    rc = main(["models", "--model-location", str(host.store.location), "list"])
    err = capsys.readouterr().err
    assert rc == 70
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "internal error: KeyError" in lines[0] and "Traceback" not in err
    log = Path(lines[0].rsplit("traceback in ", 1)[1])
    assert log.parent == tmp_path / "logs" and "Traceback" in log.read_text() and "a bug" in log.read_text()
    host.assert_unchanged()


WRITES_INTO_ASSETS = """
import glob
victim = sorted(glob.glob(IN + "/assets/*/*.jpg"))[0]
with open(victim, "ab") as f:
    f.write(b"executor was here")
good_training(); monitor()
"""


def test_executor_writing_through_hard_links_fails_the_run_listing_the_files(tmp_path, host, capsys):
    ex = make_executor(tmp_path / "ex", WRITES_INTO_ASSETS)
    rc = main(
        [
            "run",
            str(ex),
            "--dataset",
            str(host.voc),
            "--work-dir",
            str(tmp_path / "w"),
            "--model-location",
            str(host.store.location),
            "--quiet",
            "--assets",
            "link",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 3 and "the executor changed 1 of your dataset's files" in err
    assert str(host.voc / "JPEGImages") in err
    assert sorted(p.name for p in host.store.location.iterdir()) == [host.good_hash]  # nothing collected
    host.store.get(host.good_hash)


@pytest.mark.parametrize("mode", ["copy", "reflink"])
def test_copied_or_cloned_assets_keep_the_dataset_intact(tmp_path, host, capsys, mode):
    ex = make_executor(tmp_path / "ex", WRITES_INTO_ASSETS)
    rc = main(
        [
            "run",
            str(ex),
            "--dataset",
            str(host.voc),
            "--work-dir",
            str(tmp_path / "w"),
            "--model-location",
            str(tmp_path / "store"),
            "--quiet",
            "--assets",
            mode,
        ]
    )
    assert rc == 0, capsys.readouterr()
    host.assert_unchanged()
