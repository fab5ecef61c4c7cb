"""What the harness runs: an executor folder (local runtime) or an image (docker / podman).

Both answer the same questions: its name, its img-man files (manifest and templates) and how it
is started. ``resolve_executor`` picks the kind from the argument and ``--runtime``.
"""

from __future__ import annotations

import difflib
import os
import shutil
import string
import subprocess
from pathlib import Path
from typing import Any

from ymir_exc.errors import ConfigFileError

TEMPLATE_FILES = {
    "training": "training-template.yaml",
    "mining": "mining-template.yaml",
    "infer": "infer-template.yaml",
}
RUNTIMES = ("auto", "local", "docker", "podman")
#: executors shipped inside the package (``ymir_exc/executors/<name>``), runnable by name
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "executors"
#: the folder ``ymir-exc init`` copies: the repository's examples/minimal-tmi, shipped as package
#: data (its name in the copied files becomes the new executor's name)
TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "examples" / "minimal-tmi"
#: the name of the example, replaced by the new executor's name
TEMPLATE_NAME = "minimal-tmi"
#: the files and folders of the example that ``init`` copies (its README speaks of the repository)
TEMPLATE_PARTS = ("app", "img-man", "Dockerfile")
#: the README ``init`` writes in place of the example's
INIT_README = """# $name

A YMIR executor written by `ymir-exc init` from ymir-exc's examples/minimal-tmi: `app/start.py`
(training, mining and inference on the typed API: `Executor` runs the class `MeanColour`, whose
`setup` loads the model once per run), `img-man/` (manifest and hyper-parameter templates) and a
`Dockerfile` FROM the ymir-exc base image.

    ymir-exc verify $name                                  # every task, checked against the contract
    ymir-exc run $name --task training                     # train on the bundled sample
    ymir-exc run $name --task infer --source photos/ --model latest

The image is built FROM the ymir-exc base image, which comes from `Dockerfile.base` in a clone of
the ymir-exc repository (the pip package does not ship it); build the base once, then yours:

    git clone <ymir-exc repository URL> ymir-exc
    docker build -t ymir/ymir-exc-base -f ymir-exc/Dockerfile.base ymir-exc
    docker build -t ymir/$name $name
    ymir-exc verify ymir/$name --runtime docker --network-none --user 1000:1000

Replace `detect` and the training loop with your model. What each file must hold is in
docs/contract.md of ymir-exc; the walk-through is docs/writing-an-executor.md.
"""


def bundled_executors() -> dict[str, Path]:
    """``{name: folder}`` of the executors shipped with the package (det-demo-tmi, det-yolo-tmi)."""
    if not BUNDLED_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(BUNDLED_DIR.iterdir()) if (p / "img-man").is_dir()}


def _looks_like_path(ref: str) -> bool:
    """A reference meant as a folder: starts with ``.``, ``/`` or ``~``, or has a ``/`` whose
    first part is an existing folder here (``templates/det-yolo-tmx``); an image tag such as
    ``repo/name:tag`` is not one."""
    if ref.startswith((".", "/", "~")) or os.sep != "/" and os.sep in ref:
        return True
    first, sep, _ = ref.partition("/")
    return bool(sep) and ":" not in ref and Path(first).is_dir()


def _not_found(ref: str, engines_tried: bool) -> FileNotFoundError:
    names = list(bundled_executors())
    close = difflib.get_close_matches(os.path.basename(ref.rstrip("/")), names, n=1, cutoff=0.6)
    msg = f"{ref!r}: no such executor folder"
    if close:
        msg += f"; did you mean {close[0]!r}?"
    msg += f" (bundled executors: {', '.join(names) or 'none'}; or give a folder with img-man/ inside"
    msg += ", or an image tag once docker or podman works here)" if engines_tried else ")"
    return FileNotFoundError(msg)


def init_executor(dest: str) -> Path:
    """Write a new minimal executor into the folder ``dest`` (must not exist or be empty).

    The files are the repository's examples/minimal-tmi (shipped in the package as
    ``ymir_exc/examples/minimal-tmi``): ``app/start.py`` (training, mining and inference on the
    typed API), ``img-man/`` (manifest and templates) and the ``Dockerfile`` FROM the ymir-exc
    base image, byte for byte except that ``minimal-tmi`` becomes the folder's name; plus a short
    README. Files are written with the user's umask.

    Returns:
        the folder written (absolute).

    Raises:
        FileExistsError: ``dest`` exists and is not an empty folder.
    """
    root = Path(dest).resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{dest}: already exists and is not empty; choose a new name")
    name = root.name
    for src in sorted(TEMPLATE_DIR.rglob("*")):
        rel = src.relative_to(TEMPLATE_DIR)
        if (
            not src.is_file()
            or rel.parts[0] not in TEMPLATE_PARTS
            or "__pycache__" in rel.parts
            or src.suffix == ".pyc"
        ):
            continue
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(src.read_text(encoding="utf-8").replace(TEMPLATE_NAME, name), encoding="utf-8")
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text(string.Template(INIT_README).safe_substitute(name=name), encoding="utf-8")
    return root


def parse_img_man_yaml(text: str, where: str) -> dict[str, Any]:
    """An img-man file's text as a mapping ({} when empty).

    Raises:
        ConfigFileError: not pure YAML (e.g. a banner printed before it) or not a mapping.
    """
    from ymir_exc.env import parse_yaml_text, yaml_mapping

    return yaml_mapping(
        parse_yaml_text(text, ConfigFileError, where, problem="not pure YAML"),
        ConfigFileError,
        where,
        "an img-man file",
    )


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

    def read_text(self, name: str) -> str | None:
        """An img-man file's text, or None when absent."""
        path = self.folder / "img-man" / name
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def read_yaml(self, name: str) -> dict[str, Any]:
        """An img-man file as a dict ({} when absent or empty). Raises ConfigFileError."""
        text = self.read_text(name)
        return {} if text is None else parse_img_man_yaml(text, str(self.folder / "img-man" / name))

    def templates(self) -> dict[str, dict[str, Any]]:
        """``{task: template}`` for the tasks whose template file exists."""
        out = {}
        for t, f in TEMPLATE_FILES.items():
            if self.read_text(f) is not None:
                out[t] = self.read_yaml(f)
        return out

    def manifest(self) -> dict[str, Any]:
        return self.read_yaml("manifest.yaml")

    def mining_algorithms(self) -> list[str] | None:
        """The ``mining_algorithm`` choices the manifest lists, or None when it lists none.

        Raises:
            ConfigFileError: the manifest's ``mining_algorithm`` is not a list of strings.
        """
        value = self.manifest().get("mining_algorithm")
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigFileError(
                "expected a list of names", path=f"{self.name}:/img-man/manifest.yaml", key="mining_algorithm"
            )
        return list(value)


class ImageExecutor(LocalExecutor):
    """A container image run with ``engine`` (docker or podman); img-man files are read with
    ``ENGINE run --rm --network none IMAGE cat /img-man/<file>``, as the platform does."""

    kind = "image"

    def __init__(self, image: str, engine: str) -> None:
        self.image = image
        self.engine = engine
        self.name = image
        self.ref = image
        self._cache: dict[str, str | None] = {}

    @property
    def manifest_file(self) -> str:
        return "/img-man/manifest.yaml"

    def read_text(self, name: str) -> str | None:
        if name not in self._cache:
            try:
                proc = subprocess.run(
                    [self.engine, "run", "--rm", "--network", "none", self.image, "cat", f"/img-man/{name}"],
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
            except FileNotFoundError:
                raise RuntimeError(
                    f"{self.engine} is not installed: it is needed to run the image {self.image}"
                ) from None
            no_such_file = "No such file" in proc.stderr or "No such file" in proc.stdout
            # podman's Docker-compatible API answers `docker run --rm` with exit status 0 even when
            # cat failed: "No such file" on stderr with nothing on stdout is a missing file too.
            if no_such_file and (proc.returncode != 0 or not proc.stdout.strip()):
                self._cache[name] = None
            elif proc.returncode != 0:
                raise RuntimeError(
                    f"{self.engine} could not read /img-man/{name} from {self.image}: "
                    f"{(proc.stderr or proc.stdout).strip()[-500:]}"
                )
            else:
                self._cache[name] = proc.stdout
        return self._cache[name]

    def read_yaml(self, name: str) -> dict[str, Any]:
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


def resolve_executor(ref: str, runtime: str = "auto") -> tuple[LocalExecutor, str]:
    """(executor, runtime) for a folder or an image tag.

    ``auto``: an existing folder runs locally; an image runs with docker when its daemon
    answers, else podman.

    A name that is not a folder here but is a bundled executor (``det-demo-tmi``,
    ``det-yolo-tmi``, or a path ending in one, e.g. ``templates/det-yolo-tmi``) runs the bundled
    copy, so the names work from any folder after ``pip install``.

    Raises:
        FileNotFoundError: a folder that is not an executor folder; a path that does not exist
            (the message lists the bundled executors and the closest name).
        RuntimeError: an image with no working docker or podman.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; one of {RUNTIMES}")
    if runtime in ("auto", "local") and not Path(ref).exists():
        bundled = bundled_executors().get(os.path.basename(ref.rstrip("/")))
        if bundled is not None:
            return LocalExecutor(str(bundled)), "local"
        typo = (
            ":" not in ref
            and "/" not in ref
            and difflib.get_close_matches(ref, list(bundled_executors()), n=1, cutoff=0.8)
        )
        if runtime == "local" or _looks_like_path(ref) or typo:
            raise _not_found(ref, engines_tried=False)
    if runtime == "local" or (runtime == "auto" and Path(ref).is_dir()):
        return LocalExecutor(ref), "local"
    if runtime == "auto":
        for engine in ("docker", "podman"):
            if engine_works(engine):
                return ImageExecutor(ref, engine), engine
        raise _not_found(ref, engines_tried=True)
    return ImageExecutor(ref, runtime), runtime


#: config keys the platform or the SDK read beside an image's own hyper-parameters: the reserved
#: keys the platform sets, and the optional keys it and ymir_exc understand (docs/contract.md)
PLATFORM_CONFIG_KEYS = (
    "class_names",
    "gpu_id",
    "gpu_count",
    "task_id",
    "pretrained_model_params",
    "model_params_path",
    "export_format",
    "shm_size",
    "ymir_saved_file_patterns",
    "ymir_debug",
    "git_url",
    "git_branch",
    "code_config",
    "preprocess",
    "openpai_host",
    "openpai_token",
    "openpai_storage",
    "openpai_user",
    "openpai_cluster",
    "openpai_gputype",
)


def check_config_keys(config: dict[str, Any], executor: LocalExecutor, allow_unknown: bool = False) -> None:
    """Refuse user config keys that neither the executor's templates nor the platform know.

    A typo (``epoch`` for ``epochs``) would otherwise train the defaults silently.

    Raises:
        ConfigFileError: naming the unknown keys, with the closest known key for each and the
            way through (``--allow-unknown-keys`` / ``RunOptions(allow_unknown_keys=True)``).
    """
    if allow_unknown or not config:
        return
    known = set(PLATFORM_CONFIG_KEYS)
    for template in executor.templates().values():
        known.update(template)
    unknown = [k for k in config if k not in known]
    if not unknown:
        return
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(k, sorted(known), n=1, cutoff=0.6)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ConfigFileError(
        f"unknown config key(s) {', '.join(hints)}: not in {executor.name}'s img-man templates nor "
        f"among the keys the platform reads; pass --allow-unknown-keys / "
        f"RunOptions(allow_unknown_keys=True) to hand them over anyway",
        key=unknown[0],
    )


def keys_for_other_tasks(
    config: dict[str, Any], templates: dict[str, dict[str, Any]], tasks: list[str]
) -> dict[str, list[str]]:
    """The user's config keys that no template of ``tasks`` declares but another task's does
    (``max_det`` of the infer template given to a training), each with the tasks that declare
    it: ``{key: [task, ...]}``. Keys the platform reads are never listed.

    ``templates`` is :meth:`LocalExecutor.templates`' ``{task: template}``.
    """
    out: dict[str, list[str]] = {}
    for key in config:
        if key in PLATFORM_CONFIG_KEYS or any(key in templates.get(t, {}) for t in tasks):
            continue
        others = [t for t, template in templates.items() if key in template]
        if others:
            out[key] = others
    return out


def check_mining_algorithm(executor: LocalExecutor, algorithms: list[str]) -> None:
    """Refuse ``mining_algorithm`` values the executor's manifest does not list (no-op when the
    manifest lists none).

    Raises:
        ConfigFileError: an unknown name, with the choices and the closest one.
    """
    choices = executor.mining_algorithms()
    if not choices:
        return
    for a in algorithms:
        if a not in choices:
            close = difflib.get_close_matches(str(a), choices, n=1, cutoff=0.5)
            raise ConfigFileError(
                f"mining_algorithm {a!r} is not one of {executor.name}'s choices {choices}"
                + (f"; did you mean {close[0]!r}?" if close else ""),
                path=f"{executor.name}:/img-man/manifest.yaml",
                key="mining_algorithm",
            )
