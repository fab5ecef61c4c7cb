"""Hostile executor outputs (local runtime): links out of /out, garbage monitor.txt, crashes.
Each test checks the named problem, the exit status, that nothing outside the work dir changed
and that the previous good package survives."""

import os

import pytest
from hostile_util import Host, make_executor

from ymir_exc.cli import main
from ymir_exc.errors import ModelError
from ymir_exc.harness.models import write_reproducible_targz
from ymir_exc.harness.runtime import parse_monitor


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path / "host")


def _run(tmp_path, host, body, *extra):
    ex = make_executor(tmp_path / "ex", body)
    work = tmp_path / "w"
    rc = main(
        [
            "run",
            str(ex),
            "--dataset",
            str(host.voc),
            "--work-dir",
            str(work),
            "--model-location",
            str(host.store.location),
            "--quiet",
            *extra,
        ]
    )
    return rc, work


def _packages(host):
    return sorted(p.name for p in host.store.location.iterdir())


def test_stage_file_that_is_a_link_to_a_host_file_is_refused(tmp_path, host, capsys):
    rc, _ = _run(
        tmp_path,
        host,
        f"""
        os.makedirs(OUT + "/models", exist_ok=True)
        os.symlink({str(host.secret)!r}, OUT + "/models/w.pt")
        good_training(); monitor()
    """,
    )
    err = capsys.readouterr().err
    assert rc == 3 and "w.pt: a symbolic link (refused" in err
    assert _packages(host) == [host.good_hash]  # nothing packed
    host.assert_unchanged()


def test_models_folder_that_is_a_link_is_refused(tmp_path, host, capsys):
    (tmp_path / "elsewhere").mkdir()
    rc, _ = _run(
        tmp_path,
        host,
        f"""
        os.symlink({str(tmp_path / "elsewhere")!r}, OUT + "/models")
        good_training(); monitor()
    """,
    )
    err = capsys.readouterr().err
    assert rc == 3 and "/out/models: a symbolic link (refused" in err
    assert _packages(host) == [host.good_hash]
    host.assert_unchanged()


def test_stage_file_leaving_the_output_folder_is_refused(tmp_path, host, capsys):
    rel = os.path.relpath(host.secret, tmp_path / "w" / "out" / "models" / "s1")
    rc, _ = _run(
        tmp_path,
        host,
        f"""
        good_training(); monitor()
        yaml.safe_dump({{"best_stage_name": "s1", "mAP": 0.5, "model_stages": {{"s1": {{
            "stage_name": "s1", "files": [{rel!r}], "timestamp": 1, "mAP": 0.5}}}}}},
            open(OUT + "/models/result.yaml", "w"))
    """,
    )
    err = capsys.readouterr().err
    assert rc == 3 and ("outside the output folder" in err or "must be a relative path inside" in err), err
    assert _packages(host) == [host.good_hash]
    host.assert_unchanged()


def test_env_yaml_rewritten_by_the_executor_is_not_believed(tmp_path, host, capsys):
    evil = tmp_path / "evil"
    rc, _ = _run(
        tmp_path,
        host,
        f"""
        os.makedirs({str(evil)!r} + "/models")
        os.symlink({str(host.secret)!r}, {str(evil)!r} + "/models/w.pt")
        yaml.safe_dump({{"best_stage_name": "s1", "mAP": 0.5, "model_stages": {{"s1": {{
            "stage_name": "s1", "files": ["w.pt"], "timestamp": 1, "mAP": 0.5}}}}}},
            open({str(evil)!r} + "/models/result.yaml", "w"))
        ENV["output"].update(root_dir={str(evil)!r}, models_dir={str(evil)!r} + "/models",
                             training_result_file={str(evil)!r} + "/models/result.yaml")
        os.unlink(os.environ["DEFAULT_ENV_FILE_PATH"])
        yaml.safe_dump(ENV, open(os.environ["DEFAULT_ENV_FILE_PATH"], "w"))
        monitor()
    """,
    )
    err = capsys.readouterr().err
    assert rc == 3 and "/w/out/models/result.yaml: missing" in err
    assert _packages(host) == [host.good_hash]
    host.assert_unchanged()


def test_output_folder_replaced_by_a_link_is_refused(tmp_path, host, capsys):
    elsewhere = tmp_path / "elsewhere"
    rc, _ = _run(
        tmp_path,
        host,
        f"""
        good_training(); monitor()
        os.rename(OUT, {str(elsewhere)!r})
        os.symlink({str(elsewhere)!r}, OUT)
    """,
    )
    err = capsys.readouterr().err
    assert rc == 3 and "the output folder itself is a symbolic link (refused)" in err
    assert _packages(host) == [host.good_hash]
    host.assert_unchanged()


def test_fifo_stage_file_is_refused(tmp_path, host, capsys):
    rc, _ = _run(
        tmp_path,
        host,
        """
        os.makedirs(OUT + "/models", exist_ok=True)
        os.mkfifo(OUT + "/models/w.pt")
        good_training(); monitor()
    """,
    )
    assert rc == 3 and "w.pt: not a regular file (refused)" in capsys.readouterr().err
    host.assert_unchanged()


def test_packing_never_follows_a_link(tmp_path, host):
    link = tmp_path / "link.pt"
    link.symlink_to(host.secret)
    with pytest.raises(ModelError, match="without following links"):
        write_reproducible_targz([("s1/w.pt", str(link))], tmp_path / "p.tar.gz")
    host.assert_unchanged()


def test_packing_refuses_a_file_beside_a_folder_of_the_same_name(tmp_path):
    (tmp_path / "a").write_bytes(b"a")
    with pytest.raises(ModelError, match="under another member that is a file"):
        write_reproducible_targz([("s1/w.pt", str(tmp_path / "a")), ("s1/w.pt/x", b"x")], tmp_path / "p.tar.gz")
    assert not (tmp_path / "p.tar.gz").exists()


def test_monitor_link_is_replaced_not_followed_when_the_harness_writes_state_4(tmp_path, host, capsys):
    rc, work = _run(
        tmp_path,
        host,
        f"""
        os.symlink({str(host.secret)!r}, OUT + "/monitor.txt")
        sys.exit(5)
    """,
    )
    assert rc == 1
    mon_path = work / "out" / "monitor.txt"
    assert not mon_path.is_symlink()
    mon = parse_monitor(mon_path.read_text())
    assert mon.state == 4 and "exited with status 5" in mon.message
    host.assert_unchanged()


def test_garbage_monitor_after_exit_0_fails_the_run_with_exit_3(tmp_path, host, capsys):
    rc, _ = _run(
        tmp_path,
        host,
        """
        good_training()
        open(OUT + "/monitor.txt", "w").write("all good, trust me\\n")
    """,
    )
    err = capsys.readouterr().err
    assert rc == 3 and "monitor.txt: not a monitor file" in err
    assert _packages(host) != []  # the training itself was collected; the run still fails
    host.store.get(host.good_hash)


def test_monitor_left_running_after_exit_0_fails_the_run(tmp_path, host, capsys):
    rc, _ = _run(
        tmp_path,
        host,
        """
        good_training(); monitor(state=2, percent=0.5)
    """,
    )
    assert rc == 3 and "state 2 at percent 0.50 after exit status 0; expected 3" in capsys.readouterr().err
    host.store.get(host.good_hash)


def test_segfaulting_executor_gets_state_4_from_the_harness(tmp_path, host, capsys):
    rc, work = _run(
        tmp_path,
        host,
        """
        import signal
        os.kill(os.getpid(), signal.SIGSEGV)
    """,
    )
    assert rc == 1
    mon = parse_monitor((work / "out" / "monitor.txt").read_text())
    assert mon.state == 4 and "killed by signal 11 (SIGSEGV) without writing monitor.txt" in mon.message
    assert _packages(host) == [host.good_hash]
    host.assert_unchanged()


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "soon"])
def test_timeout_must_be_a_positive_number(tmp_path, host, capsys, value):
    with pytest.raises(SystemExit) as e:
        main(["run", str(tmp_path), "--timeout", value])
    assert e.value.code == 2 and "--timeout" in capsys.readouterr().err
    host.assert_unchanged()


def test_junk_mining_and_infer_results_are_named_problems_exit_3(tmp_path, host, capsys):
    rc, work = _run(
        tmp_path,
        host,
        """
        with open(OUT + "/result.tsv", "wb") as f:
            f.write(b"\\xff\\xfe junk\\n" * 1000 + b"x" * (200 << 10) + b"\\n" + b"a.jpg\\tinf\\n")
        open(OUT + "/infer-result.json", "w").write('[{"detection": {}}]')
        monitor()
    """,
        "--task",
        "mining",
        "--task",
        "infer",
        "--model",
        host.good_hash,
    )
    err = capsys.readouterr().err
    assert rc == 3 and "Traceback" not in err
    for expected in (
        "result.tsv:1: not UTF-8",
        "... and 995 more lines not UTF-8",
        "result.tsv:1001: line longer than 64 KiB",
        "score 'inf' is not finite",
        "infer-result.json: the top level is not an object",
    ):
        assert expected in err, (expected, err)
    assert _packages(host) == [host.good_hash]
    host.assert_unchanged()
