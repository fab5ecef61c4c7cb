"""The container runtime against a fake ``docker`` CLI: how the harness copes with podman's
Docker-compatible API (``podman system service``), which answers ``docker run --rm`` with exit
status 0 whatever the container returned. Real podman / docker runs are in ``.ci/containers.sh``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ymir_exc.harness.executors import ImageExecutor
from ymir_exc.harness.options import RunOptions
from ymir_exc.harness.runtime import container_argv, run_container

FAKE_DOCKER = """#!/bin/sh
# fake docker CLI: logs its argv; `version` names the server; `run` exits with $FAKE_EXIT
echo "$*" >> "{log}"
case "$1" in
  version) printf '%s\\n' "{server}" ;;
  run)
    for last; do :; done
    case "$last" in
      /img-man/manifest.yaml) echo "object_type: 2" ;;
      /img-man/*) echo "cat: $last: No such file or directory" >&2 ;;
    esac
    exit "${{FAKE_EXIT:-0}}" ;;
esac
exit 0
"""


def fake_docker(tmp_path: Path, server: str) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    exe = d / "docker"
    exe.write_text(FAKE_DOCKER.format(log=tmp_path / "calls.log", server=server))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def calls(tmp_path: Path) -> list:
    return (tmp_path / "calls.log").read_text().splitlines()


@pytest.mark.parametrize(
    "server, podman",
    [("Podman Engine;Conmon;OCI Runtime (runc);", True), ("Engine;containerd;runc;docker-init;", False)],
)
def test_rm_is_done_by_the_harness_against_podmans_docker_api(tmp_path, monkeypatch, server, podman):
    exe = fake_docker(tmp_path, server)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/sock")
    monkeypatch.setenv("FAKE_EXIT", "3")
    (tmp_path / "out").mkdir()
    options = RunOptions(runtime=str(exe), user="1000:1000")
    argv = container_argv(options, "img", tmp_path / "in", tmp_path / "out", "t42")
    assert argv[1:3] == ["run", "--rm"]  # what --print-argv shows stays the platform's command
    res = run_container(argv, tmp_path / "out", label="training", show=False, task_id="t42")
    assert res.exit_code == 3
    log = calls(tmp_path)
    run_line = next(c for c in log if c.startswith("run "))
    if podman:
        assert "--rm" not in run_line.split() and log[-1] == "rm -f t42"
    else:
        assert run_line.split()[1] == "--rm" and not any(c.startswith("rm ") for c in log)


def test_missing_img_man_file_with_exit_status_0_is_missing(tmp_path):
    exe = fake_docker(tmp_path, "Podman Engine;")
    ex = ImageExecutor("img", str(exe))
    assert ex.read_yaml("manifest.yaml") == {"object_type": 2}
    assert ex.read_text("mining-template.yaml") is None
    assert ex.templates() == {}
    assert all(c.startswith("run --rm --network none img cat /img-man/") for c in calls(tmp_path))


def test_podman_is_detected_only_for_a_docker_cli(tmp_path, monkeypatch):
    from ymir_exc.harness.runtime import _docker_api_is_podman

    exe = fake_docker(tmp_path, "Podman Engine;")
    podman = exe.with_name("podman")
    os.link(exe, podman)
    assert _docker_api_is_podman(str(exe), "x") is True
    assert _docker_api_is_podman(str(podman), "x") is False
