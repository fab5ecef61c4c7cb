"""What the harness runs: an executor folder (local runtime) or an image (docker / podman).

Both answer the same questions: its name, its img-man files (manifest and templates) and how it
is started. ``resolve_executor`` picks the kind from the argument and ``--runtime``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ymir_exc.errors import ConfigFileError

TEMPLATE_FILES = {"training": "training-template.yaml", "mining": "mining-template.yaml",
                  "infer": "infer-template.yaml"}
RUNTIMES = ("auto", "local", "docker", "podman")


def parse_img_man_yaml(text: str, where: str) -> Dict[str, Any]:
    """An img-man file's text as a mapping ({} when empty).

    Raises:
        ConfigFileError: not pure YAML (e.g. a banner printed before it) or not a mapping.
    """
    from ymir_exc.env import parse_yaml_text, yaml_mapping

    return yaml_mapping(parse_yaml_text(text, ConfigFileError, where, problem="not pure YAML"), ConfigFileError,
                        where, "an img-man file")


class LocalExecutor:
    """An executor folder holding ``img-man/`` and an entry point (``app/start.py``, ...)."""

    kind = "local"

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder).resolve()
        if not (self.folder / "img-man").is_dir():
            raise FileNotFoundError(f"{folder}: not an executor folder (no img-man/ inside)")
        self.name = self.folder.name
        self.ref = str(self.folder)

    @property
    def manifest_file(self) -> str:
        """manifest_file for env.yaml."""
        return str(self.folder / "img-man" / "manifest.yaml")

    def read_text(self, name: str) -> Optional[str]:
        """An img-man file's text, or None when absent."""
        path = self.folder / "img-man" / name
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def read_yaml(self, name: str) -> Dict[str, Any]:
        """An img-man file as a dict ({} when absent or empty). Raises ConfigFileError."""
        text = self.read_text(name)
        return {} if text is None else parse_img_man_yaml(text, str(self.folder / "img-man" / name))

    def templates(self) -> Dict[str, Dict[str, Any]]:
        """``{task: template}`` for the tasks whose template file exists."""
        out = {}
        for t, f in TEMPLATE_FILES.items():
            if self.read_text(f) is not None:
                out[t] = self.read_yaml(f)
        return out

    def manifest(self) -> Dict[str, Any]:
        return self.read_yaml("manifest.yaml")


class ImageExecutor(LocalExecutor):
    """A container image run with ``engine`` (docker or podman); img-man files are read with
    ``ENGINE run --rm --network none IMAGE cat /img-man/<file>``, as the platform does."""

    kind = "image"

    def __init__(self, image: str, engine: str) -> None:  # noqa: D107 - no folder to check
        self.image = image
        self.engine = engine
        self.name = image
        self.ref = image
        self._cache: Dict[str, Optional[str]] = {}

    @property
    def manifest_file(self) -> str:
        return "/img-man/manifest.yaml"

    def read_text(self, name: str) -> Optional[str]:
        if name not in self._cache:
            try:
                proc = subprocess.run([self.engine, "run", "--rm", "--network", "none", self.image, "cat",
                                       f"/img-man/{name}"], capture_output=True, text=True, timeout=300)
            except FileNotFoundError:
                raise RuntimeError(f"{self.engine} is not installed: it is needed to run the image {self.image}") from None
            no_such_file = "No such file" in proc.stderr or "No such file" in proc.stdout
            # podman's Docker-compatible API answers `docker run --rm` with exit status 0 even when
            # cat failed: "No such file" on stderr with nothing on stdout is a missing file too.
            if no_such_file and (proc.returncode != 0 or not proc.stdout.strip()):
                self._cache[name] = None
            elif proc.returncode != 0:
                raise RuntimeError(f"{self.engine} could not read /img-man/{name} from {self.image}: "
                                   f"{(proc.stderr or proc.stdout).strip()[-500:]}")
            else:
                self._cache[name] = proc.stdout
        return self._cache[name]

    def read_yaml(self, name: str) -> Dict[str, Any]:
        text = self.read_text(name)
        return {} if text is None else parse_img_man_yaml(text, f"{self.image}:/img-man/{name}")


def engine_works(engine: str) -> bool:
    """True when ``engine`` exists and answers ``ENGINE info`` (a docker CLI without a daemon fails)."""
    if shutil.which(engine) is None:
        return False
    try:
        return subprocess.run([engine, "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def resolve_executor(ref: str, runtime: str = "auto") -> Tuple[LocalExecutor, str]:
    """(executor, runtime) for a folder or an image tag.

    ``auto``: an existing folder runs locally; an image runs with docker when its daemon
    answers, else podman.

    Raises:
        FileNotFoundError: a folder that is not an executor folder, or ``--runtime local`` on a
            path that does not exist.
        RuntimeError: an image with no working docker or podman.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; one of {RUNTIMES}")
    if runtime == "local" or (runtime == "auto" and Path(ref).is_dir()):
        return LocalExecutor(ref), "local"
    if runtime == "auto":
        for engine in ("docker", "podman"):
            if engine_works(engine):
                return ImageExecutor(ref, engine), engine
        raise RuntimeError(f"{ref!r} is not an executor folder, and neither docker nor podman works here")
    return ImageExecutor(ref, runtime), runtime
