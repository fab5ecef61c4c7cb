"""What the harness can run: an executor folder (local runtime). Container images come with
the docker / podman runtimes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from ymir_exc.errors import ConfigFileError

TEMPLATE_FILES = {"training": "training-template.yaml", "mining": "mining-template.yaml",
                  "infer": "infer-template.yaml"}

class LocalExecutor:
    """An executor folder holding ``img-man/`` and an entry point (``app/start.py``, ...)."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder).resolve()
        if not (self.folder / "img-man").is_dir():
            raise FileNotFoundError(f"{folder}: not an executor folder (no img-man/ inside)")
        self.name = self.folder.name

    @property
    def manifest_path(self) -> Path:
        return self.folder / "img-man" / "manifest.yaml"

    def read_yaml(self, name: str) -> Dict[str, Any]:
        """An img-man file as a dict ({} when absent or empty).

        Raises:
            ConfigFileError: not valid YAML or not a mapping (names the file and line).
        """
        from ymir_exc.env import load_yaml_file

        path = self.folder / "img-man" / name
        if not path.is_file():
            return {}
        data = load_yaml_file(str(path), ConfigFileError, what=name)
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigFileError(f"{name} must be a YAML mapping", path=str(path))
        return data

    def templates(self) -> Dict[str, Dict[str, Any]]:
        """``{task: template}`` for the tasks whose template file exists."""
        return {t: self.read_yaml(f) for t, f in TEMPLATE_FILES.items()
                if (self.folder / "img-man" / f).is_file()}

    def manifest(self) -> Dict[str, Any]:
        return self.read_yaml("manifest.yaml")

__all__ = ["LocalExecutor", "TEMPLATE_FILES"]
