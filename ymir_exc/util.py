"""Helpers executors use around the SDK: merged config, weights lookup, stage progress.

Upstream-compatible calls::

    from ymir_exc.util import get_merged_config, get_weight_files, write_ymir_training_result
    cfg = get_merged_config()            # EasyDict: .param = config.yaml, .ymir = env.yaml
    cfg.param.class_names, cfg.ymir.input.training_index_file
    weights = get_weight_files(cfg)      # ['/in/models/epoch_10/best.pt'] or []
    write_ymir_training_result(cfg, ["/out/models/best.pt"], id="10", map50=0.6)   # stage_10
    write_ymir_training_result(cfg, files=[], id="last", map50=0.6)    # every file in /out/models
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from enum import IntEnum
from typing import Any

from easydict import EasyDict as edict

from ymir_exc import env, monitor
from ymir_exc import result_writer as rw
from ymir_exc._io import atomic_copy
from ymir_exc.errors import ConfigFileError, ResultError
from ymir_exc.monitor import YmirTask, write_monitor_logger_for_multiple_tasks  # noqa: F401 - upstream's util has them

logger = logging.getLogger("ymir_exc")


def get_merged_config() -> edict:
    """The task's configuration in one object.

    Returns:
        EasyDict with ``.param`` = config.yaml (when ``git_url`` is set: the file named by
        ``code_config`` updated by config.yaml) and ``.ymir`` = the :class:`~ymir_exc.env.EnvConfig`.

    Raises:
        ConfigFileError: config.yaml or the code_config file is missing or not a YAML mapping.
        EnvFileError: env.yaml is bad.
    """
    exe_cfg = env.get_executor_config()
    param: dict[str, Any] = {}
    code_config = exe_cfg.get("code_config")
    if exe_cfg.get("git_url") and code_config:
        param.update(env.load_yaml_mapping(str(code_config), ConfigFileError, what="code_config file"))
    param.update(exe_cfg)
    merged = edict()
    merged.param = param
    merged.ymir = env.get_current_env()
    return merged


def get_weight_files(cfg: edict, suffix: str | tuple[str, ...] = (".pt", ".pth")) -> list[str]:
    """Existing weight files the platform handed in, filtered by suffix.

    Training reads ``pretrained_model_params``, mining / infer ``model_params_path``; entries are
    absolute (``/in/models/<stage>/<file>``) or relative to ``input.models_dir``.

    Returns:
        absolute paths that exist, in the config's order (may be empty).
    """
    key = "pretrained_model_params" if cfg.ymir.run_training else "model_params_path"
    entries = cfg.param.get(key) or []
    if isinstance(entries, str):
        entries = [entries]
    models_dir = cfg.ymir.input.models_dir
    found = []
    for p in entries:
        path = p if os.path.isabs(p) else os.path.join(models_dir, p)
        if str(path).endswith(suffix) and os.path.isfile(path):
            found.append(path)
    return found


def get_bool(cfg: edict, key: str, default_value: Any = True, *, default: Any = None) -> bool:
    """A boolean hyper-parameter of config.yaml, as upstream reads it.

    Args:
        cfg: the merged config (:func:`get_merged_config`).
        key: the config.yaml key.
        default_value: used when the key is absent (upstream's keyword); ``default`` is accepted
            as an alias.

    Returns:
        ``True`` for ``True``, ``1`` and the strings ``t`` / ``true`` / ``1`` (any case);
        ``False`` for ``False``, ``0``, ``f`` / ``false`` / ``0``.

    Raises:
        ConfigFileError: any other value (names the key).
    """
    if default is not None:
        default_value = default
    v = cfg.param.get(key, default_value)
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        t = v.lower()
        if t in ("t", "true", "1"):
            return True
        if t in ("f", "false", "0"):
            return False
    raise ConfigFileError(f"not a boolean (true / false / t / f / 1 / 0): {v!r}", key=key)


def find_free_port() -> int:
    """A TCP port free right now on this host (for a DDP rendezvous): bind to port 0, read the
    port the kernel chose, close. Another process may take it before it is used."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _saved_file_patterns(cfg: edict) -> list[re.Pattern[str]]:
    raw = cfg.param.get("ymir_saved_file_patterns") or ""
    parts = raw.split(",") if isinstance(raw, str) else [str(p) for p in raw]
    compiled = []
    for p in (p.strip() for p in parts):
        if not p:
            continue
        try:
            compiled.append(re.compile(p))
        except re.error as e:
            logger.warning(
                "ymir_saved_file_patterns: dropping invalid regex %r (%s); the other patterns still apply", p, e
            )
    return compiled


def filter_saved_files(cfg: edict, files: Sequence[str]) -> list[str]:
    """The files to save, as upstream chooses them.

    Args:
        cfg: the merged config.
        files: paths, absolute or relative to ``output.models_dir``; ``[]`` means every file
            directly in ``output.models_dir`` (dot files, ``result.yaml`` and the SDK's temp /
            lock files excluded).

    Returns:
        the files, absolute ones made relative to ``output.models_dir`` (``../x`` for a file
        outside it), kept when any comma-separated regex of ``ymir_saved_file_patterns`` matches
        (``re.search``); every file when no pattern is set. An invalid pattern is dropped with a
        warning on the ``ymir_exc`` logger.
    """
    models_dir = os.path.abspath(cfg.ymir.output.models_dir)
    if not files:
        result_file = os.path.abspath(cfg.ymir.output.training_result_file)
        try:
            names = sorted(os.listdir(models_dir))
        except FileNotFoundError:
            names = []
        files = [
            os.path.join(models_dir, n)
            for n in names
            if not n.startswith(".")
            and os.path.isfile(os.path.join(models_dir, n))
            and os.path.join(models_dir, n) != result_file
        ]
    rel = [os.path.relpath(f, models_dir) if os.path.isabs(os.fspath(f)) else os.fspath(f) for f in files]
    patterns = _saved_file_patterns(cfg)
    if not patterns:
        return rel
    return [f for f in rel if any(p.search(f) for p in patterns)]


def format_saved_files(cfg: edict, files: Sequence[str]) -> list[str]:
    """Bring the files to save into ``output.models_dir`` and name them by basename, as upstream.

    A symlink is resolved; a file outside the models dir, or in a sub folder of it, is copied
    (``shutil``, atomically: a full disk leaves no partial file) to
    ``output.models_dir/<basename>``.

    Args:
        files: paths, absolute or relative to ``output.models_dir``.

    Returns:
        basenames, in the given order.

    Raises:
        ResultError: a file that does not exist (names it).
        OSError: the copy failed (names the target).
    """
    models_dir = os.path.realpath(cfg.ymir.output.models_dir)
    out = []
    for f in files:
        f = os.fspath(f)
        path = f if os.path.isabs(f) else os.path.join(cfg.ymir.output.models_dir, f)
        if os.path.islink(path):
            path = os.path.realpath(path)
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            raise ResultError(f"file to save does not exist: {path}", key="files")
        base = os.path.basename(path)
        if os.path.dirname(os.path.realpath(path)) != models_dir:
            atomic_copy(path, os.path.join(models_dir, base))
        out.append(base)
    return out


def write_ymir_training_result(
    cfg: edict,
    files: Sequence[str],
    id: str | int,
    map50: float | None = None,
    evaluation_result: dict[str, Any] | None = None,
    evaluate_config: dict[str, Any] | None = None,
    attachments: dict[str, list[str]] | None = None,
) -> None:
    """Save one model stage, as upstream: :func:`filter_saved_files`, :func:`format_saved_files`,
    then :func:`ymir_exc.result_writer.write_model_stage`.

    Args:
        cfg: the merged config.
        files: weight files (absolute, or relative to ``output.models_dir``); ``[]`` = every
            file in the models dir (``files=[]`` at the end of training saves everything).
        id: stage id; a number (``5`` or ``"5"``) names the stage ``stage_5``, else the id is
            the stage name (``"last"``, ``"epoch-3"`` -> ``epoch_3``).
        map50: the stage's mAP (fraction 0-1; 0 is a metric).
        evaluation_result: other metrics (``{"mIoU": 0.6}``).
        evaluate_config: as write_model_stage.
        attachments: as write_model_stage.

    When ``ymir_saved_file_patterns`` leaves no file, nothing is written and a warning says so
    (that is how users choose the stages to keep).

    Raises:
        ResultError: see write_model_stage.
    """
    stage_name = f"stage_{id}" if isinstance(id, int) or str(id).isdigit() else str(id)
    kept = filter_saved_files(cfg, files)
    if not kept:
        logger.warning(
            "stage %s not written: no file left after ymir_saved_file_patterns (%r) filtered %s",
            stage_name,
            cfg.param.get("ymir_saved_file_patterns"),
            list(files) or "the models dir",
        )
        return
    names = format_saved_files(cfg, kept)
    metrics = dict(evaluation_result or {})
    if map50 is not None:
        metrics["mAP"] = map50
    rw.write_model_stage(
        stage_name=stage_name,
        files=names,
        evaluation_result=metrics,
        attachments=attachments,
        evaluate_config=evaluate_config,
    )


class YmirStage(IntEnum):
    """Phases of one task, for progress: data preparation, the work itself, export."""

    PREPROCESS = 1
    TASK = 2
    POSTPROCESS = 3


def _as_stage(stage: YmirStage | str | int) -> YmirStage:
    if isinstance(stage, str):
        try:
            return YmirStage[stage.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown stage {stage!r}: preprocess, task or postprocess") from None
    return YmirStage(int(stage))


class YmirStageWeight:
    """Share of each phase in a task's progress.

    Args:
        weights: ``[preprocess, task, postprocess]``, non-negative, summing to 1. Default: the
            environment variables ``PREPROCESS_WEIGHT``, ``TASK_WEIGHT``, ``POSTPROCESS_WEIGHT``,
            else ``[0.00001, 0.99998, 0.00001]`` (upstream's).

    Attributes:
        weights: the three floats; also ``PREPROCESS``, ``TASK``, ``POSTPROCESS``.

    Raises:
        ValueError: not three non-negative numbers summing to 1 (within 1e-6).
    """

    def __init__(self, weights: Sequence[float] | None = None) -> None:
        if not weights:
            weights = [
                float(os.environ.get("PREPROCESS_WEIGHT", 0.00001)),
                float(os.environ.get("TASK_WEIGHT", 0.99998)),
                float(os.environ.get("POSTPROCESS_WEIGHT", 0.00001)),
            ]
        weights = [float(w) for w in weights]
        if len(weights) != 3 or abs(sum(weights) - 1.0) > 1e-6 or min(weights) < 0:
            raise ValueError(f"stage weights must be 3 non-negative fractions summing to 1, got {weights}")
        self.weights: list[float] = weights

    @property
    def PREPROCESS(self) -> float:
        return self.weights[0]

    @property
    def TASK(self) -> float:
        return self.weights[1]

    @property
    def POSTPROCESS(self) -> float:
        return self.weights[2]

    def get_stage_process(self, stage: YmirStage | str | int, p: float) -> float:
        """Progress of the whole task when phase ``stage`` is at ``p`` (0-1):
        ``w0 * p``, ``w0 + w1 * p`` or ``w0 + w1 + w2 * p``."""
        w0, w1, w2 = self.weights
        st = _as_stage(stage)
        if st == YmirStage.PREPROCESS:
            return w0 * p
        if st == YmirStage.TASK:
            return w0 + w1 * p
        return w0 + w1 + w2 * p


def _stage_weights(weights: YmirStageWeight | Sequence[float] | None) -> YmirStageWeight:
    """A :class:`YmirStageWeight` from one, from a list / tuple of 3 floats (as upstream's
    ``isinstance(stage_weights, List)``), or the default for None."""
    if isinstance(weights, YmirStageWeight):
        return weights
    if weights is None or isinstance(weights, (list, tuple)):
        return YmirStageWeight(weights=weights)
    raise ValueError(f"stage weights must be a YmirStageWeight or a list of 3 floats, got {weights!r}")


def get_ymir_process(
    stage: YmirStage | str | int,
    p: float,
    task_idx: int = 0,
    task_num: int = 1,
    weights: YmirStageWeight | Sequence[float] | None = None,
    *,
    stage_weights: YmirStageWeight | Sequence[float] | None = None,
) -> float:
    """Map a phase's own progress ``p`` (0-1) to the task's progress (0-1), as upstream:
    ``task_idx / task_num + (1 / task_num) * weights.get_stage_process(stage, p)``.

    ``weights`` is a :class:`YmirStageWeight` or a list / tuple ``[preprocess, task,
    postprocess]`` (default: :class:`YmirStageWeight` ()); ``stage_weights`` is accepted as an
    alias of ``weights``.

    Raises:
        ValueError: p outside [0, 1], an unknown stage, or weights that are not 3 non-negative
            fractions summing to 1.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    w = _stage_weights(weights if weights is not None else stage_weights)
    return task_idx / task_num + (1.0 / task_num) * w.get_stage_process(stage, p)


def write_ymir_monitor_process(
    cfg: edict,
    task: str | monitor.YmirTask,
    naive_stage_percent: float,
    stage: YmirStage | str,
    stage_weights: YmirStageWeight | Sequence[float] | None = None,
    task_order: str = "tmi",
) -> None:
    """Report progress ``naive_stage_percent`` (0-1) of phase ``stage`` of ``task``: the phase
    mapping of :func:`get_ymir_process`, then
    :func:`ymir_exc.monitor.write_monitor_logger_for_multiple_tasks`.

    Args:
        stage_weights: a :class:`YmirStageWeight`, or a list / tuple of the 3 phase weights
            (``[0.1, 0.8, 0.1]``, as upstream accepts); None for the default.

    Raises:
        ValueError / MonitorError: a percent outside [0, 1], an unknown stage or task name, bad
            stage weights.
    """
    percent = get_ymir_process(stage, naive_stage_percent, weights=stage_weights)
    monitor.write_monitor_logger_for_multiple_tasks(cfg, task, min(max(percent, 0.0), 1.0), order=task_order)
