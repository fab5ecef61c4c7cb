"""Helpers executors use around the SDK: merged config, weights lookup, stage progress.

Upstream-compatible calls::

    from ymir_exc.util import get_merged_config, get_weight_files, write_ymir_training_result
    cfg = get_merged_config()            # EasyDict: .param = config.yaml, .ymir = env.yaml
    cfg.param.class_names, cfg.ymir.input.training_index_file
    weights = get_weight_files(cfg)      # ['/in/models/epoch_10/best.pt'] or []
    write_ymir_training_result(cfg, ["/out/models/best.pt"], id="10", map50=0.6)   # stage_10
"""

from __future__ import annotations

import os
import re
import shutil
from enum import IntEnum
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from easydict import EasyDict as edict

from ymir_exc import env, monitor
from ymir_exc import result_writer as rw
from ymir_exc.errors import ConfigFileError, ResultError


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
    param: Dict[str, Any] = {}
    code_config = exe_cfg.get("code_config")
    if exe_cfg.get("git_url") and code_config:
        param.update(env.load_yaml_mapping(str(code_config), ConfigFileError, what="code_config file"))
    param.update(exe_cfg)
    merged = edict()
    merged.param = param
    merged.ymir = env.get_current_env()
    return merged


def get_weight_files(cfg: edict, suffix: Union[str, Tuple[str, ...]] = (".pt", ".pth")) -> List[str]:
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


def get_bool(cfg: edict, key: str, default: bool = True) -> bool:
    """A boolean hyper-parameter that may be written as ``true`` / ``"True"`` / ``"f"`` / ``1``.

    Raises:
        ConfigFileError: a value that is not a recognisable boolean (names the key).
    """
    v = cfg.param.get(key, default)
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return bool(v)
    if isinstance(v, str):
        t = v.strip().lower()
        if t in ("t", "true", "yes", "y", "1", "on"):
            return True
        if t in ("f", "false", "no", "n", "0", "off"):
            return False
    raise ConfigFileError(f"not a boolean: {v!r}", key=key)


def filter_saved_files(cfg: edict, files: Sequence[str]) -> List[str]:
    """Keep the files matching any regex in ``ymir_saved_file_patterns`` (comma-separated;
    ``re.search`` on the path). No patterns keeps every file.

    Raises:
        ConfigFileError: a pattern that is not a valid regex (upstream silently dropped files).
    """
    raw = cfg.param.get("ymir_saved_file_patterns") or ""
    patterns = [p.strip() for p in (raw.split(",") if isinstance(raw, str) else raw) if str(p).strip()]
    if not patterns:
        return list(files)
    compiled = []
    for p in patterns:
        try:
            compiled.append(re.compile(p))
        except re.error as e:
            raise ConfigFileError(f"invalid regex {p!r}: {e}", key="ymir_saved_file_patterns") from None
    return [f for f in files if any(c.search(f) for c in compiled)]


def format_saved_files(cfg: edict, files: Sequence[str]) -> List[str]:
    """Paths relative to ``output.models_dir``; files outside it are copied in first (no shell).

    Raises:
        ResultError: a file that does not exist.
    """
    models_dir = os.path.abspath(cfg.ymir.output.models_dir)
    out = []
    for f in files:
        path = os.path.abspath(f if os.path.isabs(f) else os.path.join(models_dir, f))
        if not os.path.isfile(path):
            raise ResultError(f"file to save does not exist: {path}", key="files")
        if not path.startswith(models_dir + os.sep):
            dst = os.path.join(models_dir, os.path.basename(path))
            os.makedirs(models_dir, exist_ok=True)
            shutil.copy2(path, dst)
            path = dst
        out.append(os.path.relpath(path, models_dir).replace(os.sep, "/"))
    return out


def write_ymir_training_result(cfg: edict, files: Sequence[str], id: Union[str, int], map50: Optional[float] = None,
                               evaluation_result: Optional[Dict[str, Any]] = None,
                               evaluate_config: Optional[Dict[str, Any]] = None,
                               attachments: Optional[Dict[str, List[str]]] = None) -> None:
    """Save one model stage: filter files by ``ymir_saved_file_patterns``, then
    :func:`ymir_exc.result_writer.write_model_stage`. A numeric ``id`` names the stage
    ``stage_<id>``; ``map50`` is the stage's mAP (fraction 0-1).

    Raises:
        ResultError: see write_model_stage (also when the filter leaves no file).
    """
    stage_name = f"stage_{id}" if isinstance(id, int) or str(id).isdigit() else str(id)
    kept = filter_saved_files(cfg, files)
    if not kept:
        raise ResultError(f"no file left after ymir_saved_file_patterns filtered {list(files)}", key="files")
    metrics = dict(evaluation_result or {})
    if map50 is not None and "mAP" not in metrics:
        metrics["mAP"] = map50
    rw.write_model_stage(stage_name=stage_name, files=list(kept), evaluation_result=metrics,
                         attachments=attachments, evaluate_config=evaluate_config)


class YmirStage(IntEnum):
    """Phases of one task, for progress: data preparation, the work itself, export."""

    PREPROCESS = 1
    TASK = 2
    POSTPROCESS = 3


class YmirStageWeight:
    """Share of each phase in a task's progress (fractions summing to 1; default 0.1/0.8/0.1)."""

    def __init__(self, weights: Sequence[float] = (0.1, 0.8, 0.1)) -> None:
        if len(weights) != 3 or abs(sum(weights) - 1.0) > 1e-6 or min(weights) < 0:
            raise ValueError(f"stage weights must be 3 non-negative fractions summing to 1, got {list(weights)}")
        self.PREPROCESS, self.TASK, self.POSTPROCESS = (float(w) for w in weights)


def get_ymir_process(stage: YmirStage, p: float, task_idx: int = 0, task_num: int = 1,
                     stage_weights: Optional[YmirStageWeight] = None) -> float:
    """Map a phase's own progress ``p`` (0-1) to the task's progress (0-1).

    With ``task_num`` tasks in one run, task ``task_idx`` owns ``[idx/num, (idx+1)/num]``.

    Raises:
        ValueError: p outside [0, 1].
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    w = stage_weights or YmirStageWeight()
    ratio = 1.0 / task_num
    init = task_idx / task_num
    before = {YmirStage.PREPROCESS: 0.0, YmirStage.TASK: w.PREPROCESS,
              YmirStage.POSTPROCESS: w.PREPROCESS + w.TASK}[YmirStage(stage)]
    share = {YmirStage.PREPROCESS: w.PREPROCESS, YmirStage.TASK: w.TASK,
             YmirStage.POSTPROCESS: w.POSTPROCESS}[YmirStage(stage)]
    return init + (before + p * share) * ratio


def write_ymir_monitor_process(cfg: edict, task: Union[str, monitor.YmirTask], naive_stage_percent: float,
                               stage: YmirStage, stage_weights: Optional[YmirStageWeight] = None,
                               task_order: str = "tmi") -> None:
    """Report progress ``naive_stage_percent`` (0-1) of phase ``stage`` of ``task``.

    Raises:
        MonitorError / ValueError: a percent outside [0, 1] or a task env.yaml does not enable.
    """
    percent = get_ymir_process(stage, naive_stage_percent, stage_weights=stage_weights)
    monitor.write_monitor_logger_for_multiple_tasks(cfg, task, percent, order=task_order)
