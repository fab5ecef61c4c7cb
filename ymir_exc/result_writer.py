"""Write the task's results: model stages (result.yaml), mining scores, inference boxes.

Upstream-compatible calls::

    from ymir_exc import result_writer as rw
    rw.write_model_stage(stage_name="epoch_10", files=["epoch_10.pt"], mAP=0.61)
    rw.write_mining_result([("/in/assets/ab/ab12.jpg", 0.93), ...])
    rw.write_infer_result({"/in/assets/ab/ab12.jpg": [rw.Annotation(class_name="tree", score=0.8,
                                                       box=rw.Box(x=10, y=20, w=30, h=40))]})

Formats: CONTRACT.md section 2; the models are in :mod:`ymir_exc.formats`. Every file is
validated first and then written atomically, so a bad result raises
:class:`~ymir_exc.errors.ResultError` and leaves the previous file untouched.

Where this differs from upstream (on purpose):
- files are written atomically (upstream: a reader could see half a file);
- stage files that do not exist are an error (upstream listed them anyway); files outside the
  models dir are copied in with ``shutil`` (upstream: ``cp`` through a shell, broken by spaces);
- evaluation keys may not overwrite ``stage_name`` / ``files`` / ``timestamp``; a metric of 0.0 is a
  metric, not "missing"; the top-level metric always matches the best stage (no stale key);
- an empty or missing result.yaml starts a new one; a corrupt one is an error, never overwritten;
- numpy numbers are converted; non-finite or out-of-range metrics and scores are errors;
- two inference results with the same basename are an error naming both paths (upstream: the
  second silently overwrote the first);
- box coordinates given as floats are rounded to integer pixels (a fractional coordinate fails the
  platform's whole task); w and h must be > 0.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import shutil
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import yaml
from pydantic import BaseModel, ValidationError, field_validator

from ymir_exc import env
from ymir_exc._io import atomic_write
from ymir_exc.errors import ResultError
from ymir_exc.formats import (MAX_MODEL_STAGES, PRIMARY_METRIC_KEYS, STAGE_RESERVED_KEYS, LegacyTrainingResult,
                              ModelStage, TrainingResult, best_stage, check_evaluation_value, primary_metric_key,
                              to_builtin)


class Box(BaseModel):
    """A box in integer pixels: ``(x, y)`` top-left corner, ``w`` / ``h`` > 0.

    Floats are rounded to the nearest integer; NaN / infinity raise.
    """

    x: int
    y: int
    w: int
    h: int

    @field_validator("x", "y", "w", "h", mode="before")
    @classmethod
    def _round(cls, v: Any) -> Any:
        if isinstance(v, numbers.Real) and not isinstance(v, (bool, numbers.Integral)):
            f = float(v)
            if not math.isfinite(f):
                raise ValueError(f"box coordinate must be finite, got {v!r}")
            return int(round(f))
        if isinstance(v, numbers.Integral) and not isinstance(v, bool):
            return int(v)
        return v

    @field_validator("w", "h")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v <= 0:
            raise ValueError(f"box width and height must be > 0 pixels, got {v}")
        return v


class Annotation(BaseModel):
    """One detected object: class name (one of class_names), score in [0, 1], box."""

    class_name: str
    score: float
    box: Box

    @field_validator("score", mode="before")
    @classmethod
    def _score(cls, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ValueError(f"score must be a number, got {v!r}")
        f = float(v)
        if not math.isfinite(f) or not 0.0 <= f <= 1.0:
            raise ValueError(f"score must be a finite number in [0, 1], got {v!r}")
        return f


def multiple_model_stages_supportable(env_config: Optional[env.EnvConfig] = None) -> bool:
    """True when the protocol (>= 1.0.0) takes ``model_stages``; False for the legacy format."""
    env_config = env_config or env.get_current_env()
    return env_config.protocol_tuple >= (1, 0, 0)


# ------------------------------------------------------------------ training

def _stage_file_name(stage_name: str, f: str, models_dir: str) -> str:
    """Map one given file to the name stored in result.yaml (relative to the stage folder or to
    the models dir), copying a file from outside the models dir into ``models_dir/<stage>/``."""
    if not isinstance(f, (str, os.PathLike)) or not os.fspath(f):
        raise ResultError(f"stage file must be a non-empty path, got {f!r}", key=f"model_stages.{stage_name}.files")
    f = os.fspath(f)
    models_dir = os.path.abspath(models_dir)
    stage_dir = os.path.join(models_dir, stage_name)
    if os.path.isabs(f):
        src = os.path.normpath(f)
        if not os.path.isfile(src):
            raise ResultError(f"stage file does not exist: {src}", key=f"model_stages.{stage_name}.files")
        for base in (stage_dir, models_dir):
            if src.startswith(base + os.sep):
                return os.path.relpath(src, base).replace(os.sep, "/")
        os.makedirs(stage_dir, exist_ok=True)
        dst = os.path.join(stage_dir, os.path.basename(src))
        shutil.copy2(src, dst)
        return os.path.basename(src)
    rel = os.path.normpath(f).replace(os.sep, "/")
    if rel.startswith("../") or rel == "..":
        raise ResultError(f"stage file {f!r} points outside the models dir", key=f"model_stages.{stage_name}.files")
    if rel.startswith(stage_name + "/") and not os.path.isfile(os.path.join(stage_dir, rel)):
        rel = rel[len(stage_name) + 1:]
    if os.path.isfile(os.path.join(stage_dir, rel)) or os.path.isfile(os.path.join(models_dir, rel)):
        return rel
    raise ResultError(f"stage file {f!r} found neither in {stage_dir} nor in {models_dir}",
                      key=f"model_stages.{stage_name}.files")


def resolve_stage_file(models_dir: str, stage_name: str, name: str) -> Optional[str]:
    """Where a stage file listed in result.yaml lives: ``models_dir/<stage>/<name>`` if it exists,
    else ``models_dir/<name>``, else None. (The platform's packer looks in the same order.)"""
    for p in (os.path.join(models_dir, stage_name, name), os.path.join(models_dir, name)):
        if os.path.isfile(p):
            return p
    return None


def _load_result_yaml(path: str) -> Dict[str, Any]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ResultError(f"existing result file is not valid YAML ({e}); not overwriting it", path=path,
                          line=mark.line + 1 if mark else None) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ResultError("existing result file is not a mapping; not overwriting it", path=path)
    return data


def _normalise_stage_name(stage_name: Any) -> str:
    if not isinstance(stage_name, str) or not stage_name:
        raise ResultError(f"stage_name must be a non-empty string, got {stage_name!r}", key="stage_name")
    name = stage_name.replace("-", "_")
    if not name.isidentifier():
        raise ResultError(f"stage_name {stage_name!r} is not an identifier (letters, digits, '_'; '-' becomes '_')",
                          key="stage_name")
    return name


def _attachments(attachments: Optional[Mapping[str, Sequence[str]]], models_dir: str) -> Optional[Dict[str, List[str]]]:
    if attachments is None:
        return None
    out: Dict[str, List[str]] = {}
    for section, files in attachments.items():
        names = []
        for f in files:
            f = os.fspath(f)
            base = os.path.join(models_dir, "attachments", section)
            if os.path.isabs(f):
                if not os.path.isfile(f):
                    raise ResultError(f"attachment does not exist: {f}", key=f"attachments.{section}")
                os.makedirs(base, exist_ok=True)
                dst = os.path.join(base, os.path.basename(f))
                if os.path.abspath(f) != os.path.abspath(dst):
                    shutil.copy2(f, dst)
                names.append(os.path.basename(f))
            elif os.path.isfile(os.path.join(base, f)) or os.path.isfile(os.path.join(models_dir, f)):
                names.append(f)
            else:
                raise ResultError(f"attachment {f!r} found neither in {base} nor in {models_dir}",
                                  key=f"attachments.{section}")
        out[str(section)] = names
    return out


def write_model_stage(stage_name: str, files: List[str], evaluation_result: Optional[Dict[str, Any]] = None,
                      mAP: Optional[float] = None, timestamp: Optional[int] = None,
                      attachments: Optional[Dict[str, List[str]]] = None,
                      evaluate_config: Optional[Dict[str, Any]] = None) -> None:
    """Add (or replace) one model stage in ``result.yaml`` and recompute the best stage.

    Args:
        stage_name: identifier; ``-`` becomes ``_`` (e.g. ``epoch_10``).
        files: weight files of this stage: names relative to ``/out/models/<stage>/`` or
            ``/out/models/``, or absolute paths (outside the models dir they are copied into
            ``/out/models/<stage>/``). Every file must exist.
        evaluation_result: metrics, e.g. ``{"mAP": 0.61, "mAR": 0.7, "tp": 60}``; fractions in
            [0, 1], counts tp/fp/fn as ints. Primary metric: maskAP > mIoU > mAP.
        mAP: shorthand for ``evaluation_result["mAP"]`` (fraction 0-1).
        timestamp: unix seconds; default now. The best stage is max of (metric, timestamp).
        attachments: ``{section: [files]}`` (e.g. plots), relative to
            ``/out/models/attachments/<section>/`` or absolute.
        evaluate_config: how the metric was computed, e.g. ``{"iou_thr": 0.5, "conf_thr": 0.1}``.

    At most 11 stages are kept: the oldest stage that is not the best is evicted (its files stay).
    Below protocol 1.0.0 the legacy ``{model: [files], map: float}`` is written for the best stage.

    Raises:
        ResultError: bad stage name, no or missing files, a reserved key in evaluation_result, no
            primary metric, a metric outside [0, 1], a corrupt existing result.yaml. Nothing is
            written then.
    """
    env_config = env.get_current_env()
    out = env_config.output
    name = _normalise_stage_name(stage_name)
    if isinstance(files, (str, os.PathLike)) or not files:
        raise ResultError(f"files must be a non-empty list of paths, got {files!r}", key=f"model_stages.{name}.files")
    metrics: Dict[str, Any] = dict(to_builtin(evaluation_result or {}))
    clash = STAGE_RESERVED_KEYS.intersection(metrics)
    if clash:
        raise ResultError(f"evaluation_result may not set {sorted(clash)}", key="evaluation_result")
    if mAP is not None:
        if "mAP" in metrics and float(metrics["mAP"]) != float(mAP):
            raise ResultError(f"mAP={mAP} disagrees with evaluation_result['mAP']={metrics['mAP']}", key="mAP")
        metrics["mAP"] = to_builtin(mAP)
    for k, v in metrics.items():
        try:
            metrics[k] = check_evaluation_value(k, v)
        except ValueError as e:
            raise ResultError(str(e), key=f"model_stages.{name}.{k}") from None
    if primary_metric_key(metrics) is None:
        raise ResultError(f"stage {name!r} has no primary metric: give mAP (or maskAP / mIoU) as a fraction in [0, 1]",
                          key=f"model_stages.{name}.mAP")
    ts = int(time.time()) if timestamp is None else to_builtin(timestamp)
    if isinstance(ts, bool) or not isinstance(ts, numbers.Real) or not math.isfinite(ts):
        raise ResultError(f"timestamp must be unix seconds, got {timestamp!r}", key="timestamp")
    ts = int(ts)

    stored = [_stage_file_name(name, f, out.models_dir) for f in files]
    entry = {"stage_name": name, "files": stored, "timestamp": ts, **metrics}
    path = out.training_result_file

    if env_config.protocol_tuple < (1, 0, 0):
        _write_legacy(path, entry)
        return

    result = _load_result_yaml(path)
    raw_stages = result.get("model_stages") or {}
    if not isinstance(raw_stages, dict):
        raise ResultError("existing model_stages is not a mapping; not overwriting it", path=path, key="model_stages")
    stages: Dict[str, ModelStage] = {}
    for k, v in raw_stages.items():
        try:
            stages[k] = ModelStage.model_validate(v)
        except ValidationError as e:
            raise ResultError(f"existing stage is invalid: {e.errors()[0]['msg']}", path=path,
                              key=f"model_stages.{k}") from None
    stages.pop(name, None)
    stages[name] = ModelStage.model_validate(entry)
    best = best_stage(stages)
    while len(stages) > MAX_MODEL_STAGES:
        oldest = min((s for s in stages.values() if s.stage_name != best), key=lambda s: s.timestamp)
        del stages[oldest.stage_name]
    key = primary_metric_key({k for s in stages.values() for k in s.evaluation_result()}) or "mAP"
    for k in PRIMARY_METRIC_KEYS:
        result.pop(k, None)
    result["best_stage_name"] = best
    result[key] = stages[best].evaluation_result().get(key, 0.0)
    result["model_stages"] = {k: s.model_dump(exclude_none=True) for k, s in stages.items()}
    if attachments is not None:
        result["attachments"] = _attachments(attachments, out.models_dir)
    if evaluate_config is not None:
        result["evaluate_config"] = to_builtin(dict(evaluate_config))
    try:
        TrainingResult.model_validate(result)
    except ValidationError as e:
        raise ResultError(f"result would break the contract: {e.errors()[0]['msg']}", path=path) from None
    atomic_write(path, yaml.safe_dump(to_builtin(result), sort_keys=False, allow_unicode=True))


def _write_legacy(path: str, entry: Dict[str, Any]) -> None:
    """Legacy result (protocol < 1.0.0): keep the best of (map, timestamp) seen so far."""
    key = primary_metric_key(entry)
    new = {"model": entry["files"], "map": float(entry[key]), "timestamp": entry["timestamp"]}
    old = _load_result_yaml(path)
    if old.get("model") and isinstance(old.get("map"), numbers.Real):
        if (float(old["map"]), old.get("timestamp", 0)) > (new["map"], new["timestamp"]):
            return
    LegacyTrainingResult.model_validate(new)
    atomic_write(path, yaml.safe_dump(new, sort_keys=False))


def write_training_result(stage_name: str, files: List[str], evaluation_result: Optional[Dict[str, Any]] = None,
                          mAP: Optional[float] = None, timestamp: Optional[int] = None,
                          attachments: Optional[Dict[str, List[str]]] = None,
                          evaluate_config: Optional[Dict[str, Any]] = None) -> None:
    """Same as :func:`write_model_stage` (the upstream 2.x alias)."""
    write_model_stage(stage_name, files, evaluation_result, mAP, timestamp, attachments, evaluate_config)


# ------------------------------------------------------------------ mining

def write_mining_result(mining_result: Iterable[Tuple[str, float]]) -> None:
    """Write ``result.tsv``: one ``<path>\\t<score>`` line per candidate, sorted by score
    descending (stable: equal scores keep their input order).

    Args:
        mining_result: ``(asset_path, score)`` pairs; scores are finite numbers (numpy ok).

    Raises:
        ResultError: a path that is empty or holds a tab / newline, a duplicate path, or a
            score that is not a finite number (names the item index). Nothing is written then.
    """
    import numpy as np

    paths: List[str] = []
    raw_scores: List[Any] = []
    for path, score in mining_result:
        paths.append(path)
        raw_scores.append(score)
    if not all(map(_is_number, raw_scores)):
        bad = next(i for i, s in enumerate(raw_scores) if not _is_number(s))
        raise ResultError(f"score of {paths[bad]!r} is not a number: {raw_scores[bad]!r}",
                          key=f"mining_result[{bad}]")
    scores = np.asarray(raw_scores, dtype=np.float64).reshape(-1)
    finite = np.isfinite(scores)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise ResultError(f"score of {paths[bad]!r} is not finite: {raw_scores[bad]!r}", key=f"mining_result[{bad}]")
    text = "".join(paths)
    if "\t" in text or "\n" in text or "\r" in text or not all(paths):
        bad = next(i for i, p in enumerate(paths) if not p or any(c in p for c in "\t\r\n"))
        raise ResultError(f"asset path {paths[bad]!r} is empty or holds a tab / newline", key=f"mining_result[{bad}]")
    if len(set(paths)) != len(paths):
        seen = set()
        dup = next(p for p in paths if p in seen or seen.add(p))  # type: ignore[func-returns-value]
        raise ResultError(f"asset path {dup!r} appears more than once", key="mining_result")
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order].tolist()
    lines = [f"{paths[i]}\t{s!r}\n" for i, s in zip(order.tolist(), sorted_scores)]
    atomic_write(env.get_current_env().output.mining_result_file, "".join(lines))


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


# ------------------------------------------------------------------ inference

def _annotation_dict(a: Any, where: str) -> Dict[str, Any]:
    if not isinstance(a, Annotation):
        try:
            a = Annotation.model_validate(a)
        except ValidationError as e:
            err = e.errors()[0]
            raise ResultError(err["msg"], key=f"{where}." + ".".join(map(str, err["loc"]))) from None
    b = a.box
    return {"class_name": a.class_name, "score": a.score, "box": {"x": b.x, "y": b.y, "w": b.w, "h": b.h}}


def write_infer_result(infer_result: Mapping[str, Sequence[Union[Annotation, Dict[str, Any]]]],
                       algorithm: str = "detection") -> None:
    """Write ``infer-result.json``: ``{algorithm: {<basename>: {"boxes": [...]}}}``.

    Args:
        infer_result: ``{asset_path: [Annotation, ...]}``; an empty list for an image with no
            detection. Keys are reduced to their basename, as the platform expects.
        algorithm: top-level key, ``detection`` (default) or another algorithm name.

    Below protocol 1.0.0 each entry's key is ``annotations`` instead of ``boxes``.

    Raises:
        ResultError: two paths with the same basename (names both), a class name not in
            config.yaml's ``class_names`` (when set), a bad score or box. Nothing is written then.
    """
    env_config = env.get_current_env()
    box_key = "boxes" if env_config.protocol_tuple >= (1, 0, 0) else "annotations"
    class_names = _class_names_or_none()
    known = set(class_names) if class_names else None
    result: Dict[str, Any] = {}
    origin: Dict[str, str] = {}
    for asset_path, annotations in infer_result.items():
        key = os.path.basename(str(asset_path))
        if not key:
            raise ResultError(f"asset path {asset_path!r} has no basename", key="infer_result")
        if key in origin:
            raise ResultError(f"two results share the basename {key!r}: {origin[key]!r} and {asset_path!r}",
                              key="infer_result")
        origin[key] = str(asset_path)
        boxes = [_annotation_dict(a, f"{key}[{i}]") for i, a in enumerate(annotations)]
        if known is not None:
            for i, b in enumerate(boxes):
                if b["class_name"] not in known:
                    raise ResultError(f"class_name {b['class_name']!r} not in class_names {class_names}",
                                      key=f"{key}[{i}].class_name")
        result[key] = {box_key: boxes}
    atomic_write(env_config.output.infer_result_file,
                 json.dumps({algorithm: result}, ensure_ascii=False, separators=(",", ":")))


def _class_names_or_none() -> Optional[List[str]]:
    try:
        names = env.get_executor_config().get("class_names")
    except Exception:  # noqa: BLE001 - no config: class names cannot be checked here
        return None
    return list(names) if isinstance(names, list) and names else None
