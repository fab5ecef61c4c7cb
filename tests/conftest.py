"""Shared fixtures: a task workspace in tmp_path with env.yaml / config.yaml wired into settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ymir_exc import monitor, settings

REPO = Path(__file__).resolve().parents[1]
"""The repository root: tests import it (``from conftest import REPO``) instead of counting parents."""

#: tests that need the YOLO runtime (torch, ultralytics; .ci/yolo-setup.sh), by file
_YOLO_FILES = {"test_yolo_template.py"}
#: tests that run podman or hadolint, by file and name (others carry @pytest.mark.containers)
_CONTAINER_TESTS = {
    ("test_cli_usability.py", "test_init_writes_an_executor_that_passes_verify"),
    ("test_yolo_template.py", "test_dockerfile_passes_hadolint"),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Markers by layer: ``e2e`` for everything under tests/e2e/, ``yolo`` and ``containers`` for
    the tests that need those runtimes, so ``pytest -m "not yolo"`` and the like select."""
    e2e = REPO / "tests" / "e2e"
    for item in items:
        path = Path(str(item.path))
        if e2e in path.parents:
            item.add_marker(pytest.mark.e2e)
        if path.name in _YOLO_FILES:
            item.add_marker(pytest.mark.yolo)
        if (path.name, item.originalname) in _CONTAINER_TESTS:
            item.add_marker(pytest.mark.containers)


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.in_dir = root / "in"
        self.out_dir = root / "out"
        self.in_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "models").mkdir(parents=True, exist_ok=True)
        self.env_file = self.in_dir / "env.yaml"
        self.config_file = self.in_dir / "config.yaml"

    def write_env(self, protocol_version: str | None = "1.1.0", **overrides: Any) -> dict[str, Any]:
        i, o = str(self.in_dir), str(self.out_dir)
        env: dict[str, Any] = {
            "task_id": "t-test",
            "run_training": True,
            "run_mining": False,
            "run_infer": False,
            "input": {
                "root_dir": i,
                "assets_dir": f"{i}/assets",
                "annotations_dir": f"{i}/annotations",
                "models_dir": f"{i}/models",
                "config_file": str(self.config_file),
                "training_index_file": f"{i}/train-index.tsv",
                "val_index_file": f"{i}/val-index.tsv",
                "candidate_index_file": f"{i}/candidate-index.tsv",
            },
            "output": {
                "root_dir": o,
                "models_dir": f"{o}/models",
                "tensorboard_dir": f"{o}/tensorboard",
                "training_result_file": f"{o}/models/result.yaml",
                "mining_result_file": f"{o}/result.tsv",
                "infer_result_file": f"{o}/infer-result.json",
                "monitor_file": f"{o}/monitor.txt",
                "executor_log_file": f"{o}/ymir-executor-out.log",
            },
        }
        if protocol_version is not None:
            env["protocol_version"] = protocol_version
        env.update(overrides)
        self.env_file.write_text(yaml.safe_dump(env), encoding="utf-8")
        return env

    def write_config(self, **cfg: Any) -> None:
        cfg.setdefault("class_names", ["cat", "dog"])
        self.config_file.write_text(yaml.safe_dump(cfg), encoding="utf-8")

    def model_file(self, name: str, stage: str | None = None, content: bytes = b"weights") -> Path:
        p = self.out_dir / "models" / (stage or "") / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
        return p

    def result(self) -> dict[str, Any]:
        return yaml.safe_load((self.out_dir / "models" / "result.yaml").read_text())

    def monitor_text(self) -> str:
        return (self.out_dir / "monitor.txt").read_text()


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Workspace:
    w = Workspace(tmp_path / "task")
    w.write_env()
    w.write_config()
    monkeypatch.setattr(settings, "DEFAULT_ENV_FILE_PATH", str(w.env_file))
    monkeypatch.setattr(settings, "DEFAULT_CONFIG_FILE_PATH", str(w.config_file))
    monitor._last_percent.clear()
    return w
