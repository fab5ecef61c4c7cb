"""The container contract's input side: ``/in/env.yaml``, as one typed object.

Every path an executor needs lives here, with its example value; code asks this object and never
rebuilds a path (after AWS sagemaker-training-toolkit's ``environment.py``)::

    from ymir_exc import env
    cfg = env.get_current_env()            # reads settings.DEFAULT_ENV_FILE_PATH
    cfg.run_training, cfg.input.training_index_file, cfg.output.monitor_file
    # (True, '/in/train-index.tsv', '/out/monitor.txt')

Format: docs/contract.md (the input side). ``protocol_version`` absent means ``0.0.1`` (legacy result
formats). Unknown keys are kept (the platform adds some over time).
"""

from __future__ import annotations

import os
from enum import IntEnum
from typing import Any

import yaml
from pydantic import ValidationError

from ymir_exc import settings
from ymir_exc.errors import ConfigFileError, EnvFileError

# the env.yaml format lives in ymir_exc.formats.env; re-exported: importable from here as before
from ymir_exc.formats.env import DEFAULT_PROTOCOL_VERSION as DEFAULT_PROTOCOL_VERSION
from ymir_exc.formats.env import SUPPORTED_PROTOCOL_MAJORS as SUPPORTED_PROTOCOL_MAJORS
from ymir_exc.formats.env import TASKS as TASKS
from ymir_exc.formats.env import EnvConfig as EnvConfig
from ymir_exc.formats.env import EnvInputConfig as EnvInputConfig
from ymir_exc.formats.env import EnvOutputConfig as EnvOutputConfig
from ymir_exc.formats.env import parse_protocol_version as parse_protocol_version


class DatasetType(IntEnum):
    """Which index file to read: training (train-index.tsv), validation (val-index.tsv) or
    candidate (candidate-index.tsv, mining and inference).

    Example::

        >>> from ymir_exc.dataset_reader import index_file_path
        >>> DatasetType.CANDIDATE.name
        'CANDIDATE'
        >>> index_file_path(DatasetType.TRAINING)   # doctest: +SKIP
        '/in/train-index.tsv'
    """

    UNKNOWN = 1
    TRAINING = 2
    VALIDATION = 3
    CANDIDATE = 4


# defer_build: the validators are built on first use, not at import (keeps `import ymir_exc.tes of
#: nested aliases, "billion laughs", would otherwise expand to billions of nodes in any copy)
MAX_YAML_NODES = 1_000_000


def yaml_expanded_nodes(data: Any, limit: int = MAX_YAML_NODES) -> int:
    """How many nodes ``data`` (from ``yaml.safe_load``) holds once every alias is expanded: each
    scalar, mapping, sequence and mapping key counts 1. Time and memory O(unique containers): a
    shared container is counted once and its size reused (memoised by ``id``).

    Returns:
        the count, or ``limit + 1`` as soon as it is known to exceed ``limit``.
    Raises:
        ValueError: the structure contains itself (a recursive alias such as ``&a [*a]``).
    """
    sizes: dict[int, int | None] = {}  # id -> expanded size; None while its children are counted
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        obj, children_done = stack.pop()
        if not isinstance(obj, (dict, list)):
            continue
        children = [x for kv in obj.items() for x in kv] if isinstance(obj, dict) else obj
        if children_done:
            n = 1 + sum(sizes.get(id(c)) or 1 for c in children)
            if n > limit:
                return limit + 1
            sizes[id(obj)] = n
            continue
        if id(obj) in sizes:
            if sizes[id(obj)] is None:
                raise ValueError("a recursive alias (the structure contains itself)")
            continue
        sizes[id(obj)] = None
        stack.append((obj, True))
        stack.extend((c, False) for c in children if isinstance(c, (dict, list)))
    return sizes.get(id(data)) or 1


def parse_yaml_text(text: str, error_cls: type, path: str, *, problem: str = "not valid YAML", suffix: str = "") -> Any:
    """``yaml.safe_load(text)``; a syntax error becomes ``error_cls`` naming ``path`` and the line.
    This is the one reader of untrusted YAML (config.yaml, result.yaml, ymir-info.yaml, img-man
    files, ...): besides syntax it refuses nesting too deep for the parser and aliases that expand
    to more than :data:`MAX_YAML_NODES` nodes (anchors and aliases that stay under it, as
    ``yaml.safe_dump`` writes for shared objects, are fine).

    Raises:
        error_cls: ``"<problem>: <what PyYAML says><suffix>"`` with the 1-based line when known;
            ``"... expand to more than N nodes (refused)"``; ``"nested too deeply ..."``.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        what = getattr(e, "problem", None) or str(e)
        raise error_cls(f"{problem}: {what}{suffix}", path=path, line=line) from None
    except RecursionError:
        raise error_cls(f"{problem}: nested too deeply to parse{suffix}", path=path) from None
    try:
        if yaml_expanded_nodes(data) > MAX_YAML_NODES:
            raise error_cls(
                f"{problem}: its aliases expand to more than {MAX_YAML_NODES} nodes (refused as an alias bomb){suffix}",
                path=path,
            )
    except ValueError as e:
        if isinstance(e, error_cls):
            raise
        raise error_cls(f"{problem}: {e} (refused){suffix}", path=path) from None
    return data


def load_yaml_file(path: str, error_cls: type = ConfigFileError, *, what: str = "file") -> Any:
    """Read a YAML file, turning every failure into ``error_cls`` naming the file (and line).

    Raises:
        error_cls: the file is missing, unreadable or not valid YAML.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise error_cls(f"{what} not found", path=path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise error_cls(f"cannot read {what}: {e}", path=path) from None
    return parse_yaml_text(text, error_cls, path)


def yaml_mapping(data: Any, error_cls: type, path: str, what: str) -> dict[str, Any]:
    """``data`` from a YAML file that must be a mapping: None (an empty file) gives ``{}``.

    Raises:
        error_cls: a list, a scalar, ... naming ``path``.
    """
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error_cls(f"{what} must be a YAML mapping, got {type(data).__name__}: {str(data)[:80]!r}", path=path)
    return data


def load_yaml_mapping(path: str, error_cls: type = ConfigFileError, *, what: str = "file") -> dict[str, Any]:
    """:func:`load_yaml_file` that must give a mapping (an empty file gives ``{}``)."""
    return yaml_mapping(load_yaml_file(path, error_cls, what=what), error_cls, path, what)


def _pydantic_key(err: ValidationError) -> tuple[str, str]:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first.get("loc", ()))
    return key, first.get("msg", str(err))


def _line_of_key(path: str, key: str) -> int | None:
    """Best effort: the 1-based line where the last part of a dotted key appears in the file."""
    leaf = key.split(".")[-1]
    try:
        with open(path, encoding="utf-8") as f:
            for n, text in enumerate(f, 1):
                if text.lstrip().startswith(f"{leaf}:"):
                    return n
    except OSError:
        pass
    return None


_env_cache: dict[str, tuple[tuple[int, int], EnvConfig]] = {}


def parse_env_file(path: str) -> EnvConfig:
    """Read and validate an env.yaml.

    Raises:
        EnvFileError: missing, not YAML, not a mapping, a key of the wrong type, or an unknown
            protocol_version; the message names the file, line and key.
    """
    data = load_yaml_file(path, EnvFileError, what="env.yaml")
    if data is None:
        raise EnvFileError("env.yaml is empty", path=path)
    if not isinstance(data, dict):
        raise EnvFileError(f"env.yaml must be a mapping, got {type(data).__name__}", path=path)
    try:
        return EnvConfig.model_validate(data)
    except ValidationError as e:
        key, msg = _pydantic_key(e)
        raise EnvFileError(msg, path=path, line=_line_of_key(path, key), key=key) from None


def current_env() -> EnvConfig:
    """The parsed env.yaml shared inside the SDK (cached; callers must not mutate it).

    Executors call :func:`get_current_env`, which hands out a copy.

    Raises:
        EnvFileError: see :func:`parse_env_file`.
    """
    path = settings.DEFAULT_ENV_FILE_PATH
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise EnvFileError("env.yaml not found (set DEFAULT_ENV_FILE_PATH to its location)", path=path) from None
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _env_cache.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    cfg = parse_env_file(path)
    _env_cache[path] = (stamp, cfg)
    return cfg


def get_current_env() -> EnvConfig:
    """The current task's env.yaml (``settings.DEFAULT_ENV_FILE_PATH``), parsed.

    Each call returns a new object: a caller may mutate it (``cfg.run_infer = True``) without
    changing what the next call returns. The file is parsed once per change of its mtime or
    size (the parsed model is cached and deep-copied), so a call costs a ``stat`` and a copy.

    Raises:
        EnvFileError: see :func:`parse_env_file`.
    """
    return current_env().model_copy(deep=True)


def get_executor_config() -> dict[str, Any]:
    """config.yaml as a dict; an empty file gives ``{}``.

    The file is the one env.yaml names in ``input.config_file`` (as upstream reads it); without an
    env.yaml, ``settings.DEFAULT_CONFIG_FILE_PATH``.

    Raises:
        ConfigFileError: missing, not YAML, or not a mapping.
        EnvFileError: env.yaml exists but is bad.
    """
    path = settings.DEFAULT_CONFIG_FILE_PATH
    if os.path.exists(settings.DEFAULT_ENV_FILE_PATH):
        path = current_env().input.config_file or path
    return load_yaml_mapping(path, ConfigFileError, what="config.yaml")
