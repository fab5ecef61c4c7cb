"""Write the task's results: model stages (result.yaml), mining scores, inference boxes.

Upstream-compatible calls::

    from ymir_exc import result_writer as rw
    rw.write_model_stage(stage_name="epoch_10", files=["epoch_10.pt"], mAP=0.61)
    rw.write_mining_result([("/in/assets/ab/ab12.jpg", 0.93), ...])
    rw.write_infer_result({"/in/assets/ab/ab12.jpg": [rw.Annotation(class_name="tree", score=0.8,
                                                       box=rw.Box(x=10, y=20, w=30, h=40))]})

Formats: docs/contract.md; the models are in :mod:`ymir_exc.formats`. Every file is validated
first and then written atomically, so a bad result raises :class:`~ymir_exc.errors.ResultError`
and leaves the previous file untouched. Every read-modify-write of result.yaml holds a lock
(``fcntl.flock`` on ``.result.yaml.lock`` beside it), so concurrent writers lose no stage, and
files copied into the models dir go through a temp name (no partial file after a full disk).

What differs from upstream, and why, is listed in docs/differences-from-upstream.md.
"""

from __future__ import annotations

import decimal
import json
import logging
import math
import numbers
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ymir_exc import _fast, env
from ymir_exc._digests import SeenNames
from ymir_exc._io import atomic_copy, atomic_file, atomic_write, locked
from ymir_exc.errors import NotSupportedError, ResultError
from ymir_exc.formats.results import (
    INFER_ALGORITHMS,
    MAX_MODEL_STAGES,
    PRIMARY_METRIC_KEYS,
    STAGE_RESERVED_KEYS,
    LegacyTrainingResult,
    ModelStage,
    TrainingResult,
    best_stage,
    check_coco_result,
    check_evaluation_value,
    format_mining_line,
    primary_metric_key,
    to_builtin,
)

logger = logging.getLogger("ymir_exc")

# The formats' models and Box / Annotation build their validators on first use (defer_build):
# importing this module builds no pydantic schema, which keeps `import ymir_exc.result_writer` fast.


def _to_int(v: Any) -> int:
    """What pydantic 1's ``int`` field did (upstream's Box): ``int(v)`` for numbers (a float is
    truncated toward zero: 10.7 -> 10) and numeric strings; NaN, infinity, ``"1.5"`` raise."""
    if type(v) is int:
        return v
    if isinstance(v, (str, bytes)) or isinstance(v, numbers.Number) or hasattr(v, "__int__"):
        try:
            return int(v)
        except (TypeError, ValueError, OverflowError):
            pass
    raise ValueError(f"value is not a valid integer: {v!r}")


def _to_float(v: Any) -> float:
    """What pydantic 1's ``float`` field did: ``float(v)`` (numbers, numeric strings)."""
    if type(v) is float:
        return v
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"value is not a valid float: {v!r}") from None


class Box(BaseModel):
    """A box in integer pixels: ``(x, y)`` top-left corner, width ``w``, height ``h``.

    As upstream (pydantic 1): any int is accepted (a zero-width box constructs fine), a float is
    converted with ``int()`` (truncated toward zero: 10.7 -> 10), a numeric string is parsed.
    Boxes with ``w`` or ``h`` <= 0 are dropped (and counted in a warning) when the infer result
    is written.

    Raises:
        pydantic.ValidationError: a value that ``int()`` cannot convert (NaN, ``"abc"``, ...).

    Example::

        >>> Box(x=10, y=20.7, w="30", h=40)
        Box(x=10, y=20, w=30, h=40)
    """

    model_config = ConfigDict(defer_build=True)

    x: int
    y: int
    w: int
    h: int

    @field_validator("x", "y", "w", "h", mode="before")
    @classmethod
    def _int(cls, v: Any) -> int:
        return _to_int(v)


class Annotation(BaseModel):
    """One detected object: class name (one of class_names), score, box.

    As upstream (pydantic 1): the score is converted with ``float()`` (numbers, numpy scalars,
    numeric strings) and any float constructs; a number or bytes given as the class name
    becomes its string. The score must be in [0, 1] when the infer result is written
    (:func:`write_infer_result` raises ``ResultError`` naming the key otherwise).

    Raises:
        pydantic.ValidationError: a score that ``float()`` cannot convert.

    Example::

        >>> a = Annotation(class_name="tree", score=0.9, box=Box(x=10, y=20, w=30, h=40))
        >>> write_infer_result({"/in/assets/ab/abc.jpg": [a]})   # doctest: +SKIP
    """

    model_config = ConfigDict(defer_build=True)

    class_name: str
    score: float
    box: Box

    @field_validator("class_name", mode="before")
    @classmethod
    def _name(cls, v: Any) -> Any:
        if type(v) is str:
            return v
        if isinstance(v, str):  # a str Enum: its value, as pydantic 1
            return getattr(v, "value", str(v))
        if isinstance(v, (bytes, bytearray)):
            return v.decode()
        if isinstance(v, (float, int, decimal.Decimal)):
            return str(v)
        return v

    @field_validator("score", mode="before")
    @classmethod
    def _score(cls, v: Any) -> float:
        return _to_float(v)  # the [0, 1] range is checked when the result is written


#: upstream's module constant: most stages result.yaml keeps (10 latest + the best);
#: the same as :data:`ymir_exc.formats.MAX_MODEL_STAGES`
_MAX_MODEL_STAGES_COUNT_ = 11


def _metric_scalar(value: Any) -> Any:
    """A metric given as a one-element array (YOLOv5 passes ``map50=best_fitness``, a numpy
    array of shape (1,)), a 0-d array or a numpy scalar, as its Python number (``.item()``);
    anything else unchanged."""
    if getattr(value, "ndim", None) is None or not callable(getattr(value, "item", None)):
        return value
    size = getattr(value, "size", None)
    if callable(size):  # a torch tensor: size() is its shape
        numel = getattr(value, "numel", None)
        size = numel() if callable(numel) else None
    return value.item() if size == 1 else value


def multiple_model_stages_supportable(env_config: env.EnvConfig | None = None) -> bool:
    """True when result.yaml takes ``model_stages``, as upstream decides: env.yaml's
    ``protocol_version`` >= 1.0.0, else the platform version in ``$YMIR_VERSION`` >= 1.2.0
    (default ``"1.1.0"``). False means the legacy ``{model, map}`` format."""
    env_config = env_config or env.current_env()
    if env_config.protocol_tuple >= (1, 0, 0):
        return True
    try:
        version = tuple(int(p) for p in os.environ.get("YMIR_VERSION", "1.1.0").strip().split("."))
    except ValueError:
        return False
    return version >= (1, 2, 0)


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
        atomic_copy(src, os.path.join(stage_dir, os.path.basename(src)))
        return os.path.basename(src)
    rel = os.path.normpath(f).replace(os.sep, "/")
    if rel.startswith("../") or rel == "..":
        raise ResultError(f"stage file {f!r} points outside the models dir", key=f"model_stages.{stage_name}.files")
    if rel.startswith(stage_name + "/") and not os.path.isfile(os.path.join(stage_dir, rel)):
        rel = rel[len(stage_name) + 1 :]
    if os.path.isfile(os.path.join(stage_dir, rel)) or os.path.isfile(os.path.join(models_dir, rel)):
        return rel
    raise ResultError(
        f"stage file {f!r} found neither in {stage_dir} nor in {models_dir}", key=f"model_stages.{stage_name}.files"
    )


def resolve_stage_file(models_dir: str, stage_name: str, name: str) -> str | None:
    """Where a stage file listed in result.yaml lives: ``models_dir/<stage>/<name>`` if it exists,
    else ``models_dir/<name>``, else None. (The platform's packer looks in the same order.)"""
    for p in (os.path.join(models_dir, stage_name, name), os.path.join(models_dir, name)):
        if os.path.isfile(p):
            return p
    return None


def _load_result_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    data = env.parse_yaml_text(
        text, ResultError, path, problem="existing result file is not valid YAML", suffix="; not overwriting it"
    )
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ResultError("existing result file is not a mapping; not overwriting it", path=path)
    return data


#: longest stage name, in bytes of UTF-8 (stage names become folder names)
MAX_STAGE_NAME_BYTES = 100


def _normalise_stage_name(stage_name: Any) -> str:
    if not isinstance(stage_name, str) or not stage_name:
        raise ResultError(f"stage_name must be a non-empty string, got {stage_name!r}", key="stage_name")
    name = stage_name.replace("-", "_")
    if len(name.encode("utf-8")) > MAX_STAGE_NAME_BYTES:
        raise ResultError(
            f"stage_name is {len(name.encode('utf-8'))} bytes of UTF-8, at most {MAX_STAGE_NAME_BYTES} "
            f"(it becomes a folder name in model packages): {stage_name[:40]!r}...",
            key="stage_name",
        )
    if not name.isidentifier():
        raise ResultError(
            f"stage_name {stage_name!r} is not an identifier (letters, digits, '_'; '-' becomes '_')", key="stage_name"
        )
    return name


def _attachments(attachments: Mapping[str, Sequence[str]] | None, models_dir: str) -> dict[str, list[str]] | None:
    if attachments is None:
        return None
    out: dict[str, list[str]] = {}
    for section, files in attachments.items():
        names = []
        for f in files:
            f = os.fspath(f)
            base = os.path.join(models_dir, "attachments", section)
            if os.path.isabs(f):
                if not os.path.isfile(f):
                    raise ResultError(f"attachment does not exist: {f}", key=f"attachments.{section}")
                dst = os.path.join(base, os.path.basename(f))
                if os.path.abspath(f) != os.path.abspath(dst):
                    atomic_copy(f, dst)
                names.append(os.path.basename(f))
            elif os.path.isfile(os.path.join(base, f)) or os.path.isfile(os.path.join(models_dir, f)):
                names.append(f)
            else:
                raise ResultError(
                    f"attachment {f!r} found neither in {base} nor in {models_dir}", key=f"attachments.{section}"
                )
        out[str(section)] = names
    return out


def _stage_metrics(name: str, evaluation_result: dict[str, Any] | None, mAP: Any) -> dict[str, Any]:
    """A stage's metrics as plain Python, checked (counts ints >= 0, fractions in [0, 1], -1
    allowed for a metric that is not the primary one); ``mAP`` sets ``"mAP"``, as upstream.

    Raises:
        ResultError: a reserved key (stage_name, files, timestamp), a bad value (names the
            key), no primary metric.
    """
    metrics: dict[str, Any] = dict(to_builtin({k: _metric_scalar(v) for k, v in dict(evaluation_result or {}).items()}))
    clash = STAGE_RESERVED_KEYS.intersection(metrics)
    if clash:
        raise ResultError(f"evaluation_result may not set {sorted(clash)}", key="evaluation_result")
    if mAP is not None:  # as upstream: mAP= sets evaluation_result["mAP"]
        metrics["mAP"] = to_builtin(_metric_scalar(mAP))
    primary = primary_metric_key(metrics)
    for k, v in metrics.items():
        try:
            metrics[k] = check_evaluation_value(k, v, primary=k == primary)
        except ValueError as e:
            raise ResultError(str(e), key=f"model_stages.{name}.{k}") from None
    if primary is None:
        raise ResultError(
            f"stage {name!r} has no primary metric: give mAP (or maskAP / mIoU) as a fraction in [0, 1]",
            key=f"model_stages.{name}.mAP",
        )
    return metrics


def _stage_timestamp(timestamp: Any) -> int:
    """Unix seconds (now when None), truncated to an int.

    Raises:
        ResultError: not a finite number.
    """
    ts = int(time.time()) if timestamp is None else to_builtin(timestamp)
    if isinstance(ts, bool) or not isinstance(ts, numbers.Real) or not math.isfinite(ts):
        raise ResultError(f"timestamp must be unix seconds, got {timestamp!r}", key="timestamp")
    return int(math.trunc(ts))


def write_model_stage(
    stage_name: str,
    files: list[str],
    evaluation_result: dict[str, Any] | None = None,
    mAP: float | None = None,
    timestamp: int | None = None,
    attachments: dict[str, list[str]] | None = None,
    evaluate_config: dict[str, Any] | None = None,
) -> None:
    """Add (or replace) one model stage in ``result.yaml`` and recompute the best stage.

    Args:
        stage_name: identifier; ``-`` becomes ``_`` (e.g. ``epoch_10``); at most 100 bytes of
            UTF-8.
        files: weight files of this stage: names relative to ``/out/models/<stage>/`` or
            ``/out/models/``, or absolute paths (outside the models dir they are copied into
            ``/out/models/<stage>/``). Every file must exist.
        evaluation_result: metrics, e.g. ``{"mAP": 0.61, "mAR": 0.7, "tp": 60}``; fractions in
            [0, 1], counts tp/fp/fn as ints. Primary metric: maskAP > mIoU > mAP. Any other
            metric may be exactly -1 (COCO's "not computed", e.g. ``mAP_s`` with no small
            object), written as given. A one-element numpy array counts as its number.
        mAP: sets ``evaluation_result["mAP"]`` (fraction 0-1; 0 is a metric; a one-element
            array, e.g. YOLOv5's ``best_fitness``, counts as its number).
        timestamp: unix seconds; default now. The best stage is the max of (metric,
            timestamp); on a full tie the stage later in result.yaml wins, as upstream.
        attachments: ``{section: [files]}`` (e.g. plots), relative to
            ``/out/models/attachments/<section>/`` or absolute.
        evaluate_config: how the metric was computed, e.g. ``{"iou_thr": 0.5, "conf_thr": 0.1}``.

    At most 11 stages are kept: the oldest stage that is not the best is evicted (its files stay).
    Below protocol 1.0.0 (see :func:`multiple_model_stages_supportable`) the legacy
    ``{model: [files], map: float}`` is written for the best stage. The read-modify-write of
    result.yaml holds an exclusive lock (``.result.yaml.lock``); the file is replaced atomically.

    Raises:
        ResultError: bad or too long stage name, no or missing files, a reserved key in evaluation_result, no
            primary metric, a metric outside [0, 1] (but -1 for a non-primary one), a corrupt
            existing result.yaml. Nothing is written then.
    """
    env_config = env.current_env()
    out = env_config.output
    name = _normalise_stage_name(stage_name)
    if isinstance(files, (str, os.PathLike)) or not files:
        raise ResultError(f"files must be a non-empty list of paths, got {files!r}", key=f"model_stages.{name}.files")
    metrics = _stage_metrics(name, evaluation_result, mAP)
    stored = [_stage_file_name(name, f, out.models_dir) for f in files]
    entry = {"stage_name": name, "files": stored, "timestamp": _stage_timestamp(timestamp), **metrics}
    path = out.training_result_file
    if not multiple_model_stages_supportable(env_config):
        # legacy results have no stage folders: name files relative to the models dir
        entry["files"] = [f if os.path.isfile(os.path.join(out.models_dir, f)) else f"{name}/{f}" for f in stored]
        with locked(path):
            _write_legacy(path, entry)
        return

    # read-modify-write under a lock: two processes writing stages at once lose none
    with locked(path):
        _update_result(path, name, entry, attachments, evaluate_config, out.models_dir)


def _update_result(
    path: str,
    name: str,
    entry: dict[str, Any],
    attachments: dict[str, list[str]] | None,
    evaluate_config: dict[str, Any] | None,
    models_dir: str,
) -> None:
    """Merge one stage into result.yaml (the caller holds the lock)."""
    result, stages = _current_result(path)
    # a stage written again keeps its place (upstream updates its dict in place): on a tie of
    # (metric, timestamp) the stage later in result.yaml is the best
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
        result["attachments"] = _attachments(attachments, models_dir)
    if evaluate_config is not None:
        result["evaluate_config"] = to_builtin(dict(evaluate_config))
    _write_result(path, result, stages)


def _current_result(path: str) -> tuple[dict[str, Any], dict[str, ModelStage]]:
    """(result.yaml as a dict, its stages validated); {} and {} when there is none. What this
    process wrote last is taken from :data:`_result_cache` when the file is still that one.

    Raises:
        ResultError: the file is not YAML, not a mapping, or a stage breaks :class:`ModelStage`.
    """
    cached = _result_cache.get(path)
    if cached is not None and _file_stamp(path) == cached[0]:
        # result.yaml is what this process wrote last: skip parsing and re-validating it
        return dict(cached[1]), dict(cached[2])
    result = _load_result_yaml(path)
    raw_stages = result.get("model_stages") or {}
    if not isinstance(raw_stages, dict):
        raise ResultError("existing model_stages is not a mapping; not overwriting it", path=path, key="model_stages")
    stages = {}
    for k, v in raw_stages.items():
        try:
            stages[k] = ModelStage.model_validate(v)
        except ValidationError as e:
            raise ResultError(
                f"existing stage is invalid: {e.errors()[0]['msg']}", path=path, key=f"model_stages.{k}"
            ) from None
    return result, stages


def _write_result(path: str, result: dict[str, Any], stages: dict[str, ModelStage]) -> None:
    """Validate ``result`` as a :class:`TrainingResult`, then replace result.yaml with it.

    Raises:
        ResultError: it would break the format (nothing written then).
    """
    try:
        TrainingResult.model_validate(result)
    except ValidationError as e:
        raise ResultError(f"result would break the contract: {e.errors()[0]['msg']}", path=path) from None
    # model_dump gives plain Python already; convert the other top-level values
    data = {k: (v if k == "model_stages" else to_builtin(v)) for k, v in result.items()}
    text = _yaml_dump(data)
    _result_cache.pop(path, None)
    # result.yaml is rewritten at every stage: atomic (a reader never sees half a file), not fsynced
    atomic_write(path, text, fsync=False)
    stamp = _file_stamp(path)
    if stamp is not None:
        _result_cache[path] = (stamp, result, stages)


#: result.yaml path -> (file identity right after this process wrote it, the result dict written,
#: its validated stages); lets the next write_model_stage skip re-reading its own file
_result_cache: dict[str, tuple[tuple[int, int, int, int], dict[str, Any], dict[str, ModelStage]]] = {}


def _file_stamp(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


_YAML_DUMPER = getattr(yaml, "CSafeDumper", None) or yaml.SafeDumper


def _yaml_dump(data: Any) -> str:
    """``yaml.safe_dump(data, sort_keys=False, allow_unicode=True)``: the same text, through
    libyaml's emitter when PyYAML has it."""
    return yaml.dump(data, Dumper=_YAML_DUMPER, sort_keys=False, allow_unicode=True)


def _write_legacy(path: str, entry: dict[str, Any]) -> None:
    """Legacy result (protocol < 1.0.0): keep the best of (map, timestamp) seen so far."""

    key = primary_metric_key(entry)
    if key is None:
        raise ResultError("the stage has no primary metric (mAP, maskAP or mIoU)", key="mAP")
    new = {"model": entry["files"], "map": float(entry[key]), "timestamp": entry["timestamp"]}
    old = _load_result_yaml(path)
    if old.get("model") and isinstance(old.get("map"), numbers.Real):
        if (float(old["map"]), old.get("timestamp", 0)) > (new["map"], new["timestamp"]):
            return
    LegacyTrainingResult.model_validate(new)
    atomic_write(path, yaml.safe_dump(new, sort_keys=False))


#: the upstream 2.x name of :func:`write_model_stage` (the same function)
write_training_result = write_model_stage


# ------------------------------------------------------------------ mining


def write_mining_result(mining_result: Iterable[tuple[str, float]]) -> None:
    """Write ``result.tsv``: one ``<path>\\t<score>`` line per candidate, sorted by score
    descending (stable: equal scores keep their input order).

    Args:
        mining_result: ``(asset_path, score)`` pairs; scores are finite numbers (numpy ok).

    Raises:
        ResultError: a path that is empty or holds a tab / newline, a duplicate path, or a
            score that is not a finite number (names the item index). Nothing is written then.
    """
    import numpy as np

    paths, raw_scores = _fast.split_pairs(mining_result)
    if not _fast.all_numbers(raw_scores):
        bad = next(i for i, s in enumerate(raw_scores) if not _fast.is_number(s))
        raise ResultError(f"score of {paths[bad]!r} is not a number: {raw_scores[bad]!r}", key=f"mining_result[{bad}]")
    scores = np.asarray(raw_scores, dtype=np.float64).reshape(-1)
    finite = np.isfinite(scores)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise ResultError(f"score of {paths[bad]!r} is not finite: {raw_scores[bad]!r}", key=f"mining_result[{bad}]")
    text = "".join(paths)
    if "\t" in text or "\n" in text or "\r" in text or not all(paths):
        bad = next(i for i, p in enumerate(paths) if not p or any(c in p for c in "\t\r\n"))
        raise ResultError(f"asset path {paths[bad]!r} is empty or holds a tab / newline", key=f"mining_result[{bad}]")
    del text
    if _fast.may_repeat(paths) and len(set(paths)) != len(paths):
        seen = set()
        dup = next(p for p in paths if p in seen or seen.add(p))  # type: ignore[func-returns-value]
        raise ResultError(f"asset path {dup!r} appears more than once", key="mining_result")
    order = _fast.descending_order(scores)
    sorted_scores = scores[order].tolist()
    path = env.current_env().output.mining_result_file
    take = order.tolist()
    del raw_scores, scores, finite, order
    with atomic_file(path) as write:
        if set(map(type, paths)) <= {str}:
            _fast.write_mining_lines(write, paths, take, sorted_scores)
        else:  # str subclasses: what their own __format__ gives
            write("".join([format_mining_line(paths[i], s) for i, s in zip(take, sorted_scores, strict=True)]))


# ------------------------------------------------------------------ inference


def _validated_annotation(a: Any, where: str) -> Annotation:
    if isinstance(a, Annotation):
        return a
    try:
        return Annotation.model_validate(a)
    except ValidationError as e:
        err = e.errors()[0]
        raise ResultError(err["msg"], key=f"{where}." + ".".join(map(str, err["loc"]))) from None


def write_infer_result(infer_result: Any, algorithm: str = "detection") -> None:
    """Write ``infer-result.json``.

    Args:
        infer_result: for ``detection``, ``{asset_path: [Annotation, ...]}`` (an empty list for
            an image with no detection; keys are reduced to their basename, as the platform
            expects). For ``segmentation``, a COCO-style result dict: ``images`` (``id``,
            ``file_name``), ``annotations`` (``image_id``, ``category_id``, ``segmentation``
            as RLE ``{"size": [h, w], "counts": ...}`` or polygons ``[[x1, y1, x2, y2, ...]]``,
            optional ``bbox`` ``[x, y, w, h]`` and ``score`` in [0, 1]) and ``categories``
            (``id``, ``name``); it is validated (:func:`ymir_exc.formats.check_coco_result`)
            and written as it is.
        algorithm: ``detection`` (default), ``segmentation``; ``classification`` is not
            supported (as upstream).

    Detection: ``{"detection": {<basename>: {"boxes": [...]}}}``; below protocol 1.0.0 each
    entry's key is ``annotations``. Boxes with ``w`` or ``h`` <= 0 are dropped, with a warning
    on the ``ymir_exc`` logger counting them.

    Raises:
        NotSupportedError: ``algorithm="classification"``.
        ResultError: an algorithm that is not one of :data:`INFER_ALGORITHMS` (as upstream's
            assert); two paths with the same basename (names both), a class name not in
            config.yaml's ``class_names`` (when set), a score that is not a finite number in
            [0, 1] (names ``<basename>[i].score``), a bad box; for segmentation, a
            structure that breaks the format (names the key). Nothing is written then.
    """
    if algorithm not in INFER_ALGORITHMS:
        raise ResultError(f"unknown algorithm {algorithm!r}: one of {', '.join(INFER_ALGORITHMS)}", key="algorithm")
    if algorithm == "classification":
        raise NotSupportedError(
            "write_infer_result(algorithm='classification') is not supported (nor upstream): "
            "write detection or segmentation results",
            key="algorithm",
        )
    env_config = env.current_env()
    if algorithm == "segmentation":
        _write_segmentation(infer_result, env_config)
        return
    enc = _DetectionEncoder(env_config.protocol_tuple, _class_names_or_none())
    parts = list(map(enc.entry, infer_result.keys(), infer_result.values()))
    text = enc.head(algorithm) + ",".join(parts) + "}}"
    enc.warn_degenerate("write_infer_result")
    atomic_write(env_config.output.infer_result_file, text)


class _DetectionEncoder:
    """The JSON text of a detection infer result, one image entry at a time (shared by
    :func:`write_infer_result` and :class:`ymir_exc.streaming.InferResultWriter`, so both give
    the same bytes): ``head(algorithm)``, the ``entry()`` strings joined by ``,``, then ``}}``.

    The text is built here, one string per box (same bytes as json.dumps of the nested dicts
    with separators (",", ":")): a million boxes would otherwise be three million dicts.
    ``protocol`` is env.yaml's protocol version as a tuple (``(1, 0, 0)``: ``"boxes"``, older:
    ``"annotations"``); ``class_names`` (None: any name) is what class names are checked against.
    Duplicate basenames are caught as entries are made: ``origin`` maps each basename to its
    path, or (``digests_only``) a :class:`~ymir_exc._digests.SeenNames` keeps a digest per
    basename (a basename repeated from long before is then reported by a later ``entry()`` or
    by ``finish()``).
    """

    def __init__(self, protocol: tuple[int, ...], class_names: list[str] | None, digests_only: bool = False) -> None:
        self.box_key = "boxes" if protocol >= (1, 0, 0) else "annotations"
        self.class_names = class_names
        self.known = set(self.class_names) if self.class_names else None
        self.encode_str = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) uses
        self.origin: dict[str, str] = {}
        self.digests: SeenNames | None = SeenNames() if digests_only else None
        self.entry_head = "{" + self.encode_str(self.box_key) + ":["
        self._degenerate = [0]
        self.box_json = _fast.box_json_fn(self.encode_str, self._degenerate)

    @property
    def degenerate(self) -> int:
        """Boxes dropped so far (w or h <= 0)."""
        return self._degenerate[0]

    def head(self, algorithm: Any) -> str:
        if type(algorithm) is str:
            return "{" + self.encode_str(algorithm) + ":{"
        return _fast.json_text({algorithm: {}})[:-3] + "{"  # json.dumps turns a non-str key into a string its own way

    def finish(self) -> None:
        """The last duplicate check (``digests_only``: basenames still pending in the store).

        Raises:
            ResultError: a basename given twice.
        """
        if self.digests is not None:
            repeated = self.digests.finish()
            if repeated is not None:
                _repeated_basename(repeated)

    def warn_degenerate(self, who: str) -> None:
        if self.degenerate:
            logger.warning("%s: dropped %d box(es) with w or h <= 0", who, self.degenerate)

    def entry(self, asset_path: Any, given: Any) -> str:
        """``"<basename>":{"boxes":[...]}`` for one image.

        Raises:
            ResultError: no basename, a basename seen before, a bad annotation, a class name
                not in class_names.
        """
        key = os.path.basename(str(asset_path))
        if not key:
            raise ResultError(f"asset path {asset_path!r} has no basename", key="infer_result")
        if self.digests is None:
            if key in self.origin:
                raise ResultError(
                    f"two results share the basename {key!r}: {self.origin[key]!r} and {asset_path!r}",
                    key="infer_result",
                )
            self.origin[key] = str(asset_path)
        else:
            repeated = self.digests.add(key, str(asset_path))
            if repeated is not None:
                _repeated_basename(repeated)
        if type(given) in (list, tuple) and set(map(type, given)) <= {Annotation}:
            anns = given
        else:
            anns = [_validated_annotation(a, f"{key}[{i}]") for i, a in enumerate(given)]
        scores = list(map(_SCORE, anns))
        if not all(map(_in_unit_range, scores)):  # NaN fails the comparison too
            i = next(i for i, s in enumerate(scores) if not _in_unit_range(s))
            raise ResultError(f"score must be a finite number in [0, 1], got {scores[i]!r}", key=f"{key}[{i}].score")
        try:
            boxes = ",".join(filter(None, map(self.box_json, anns)))
        except _fast.BadBox as e:
            i = next(i for i, a in enumerate(anns) if a is e.annotation)
            raise _fast.bad_box_error(e, f"{key}[{i}]") from None
        if self.known is not None:
            names = list(map(_CLASS_NAME, anns))
            if not self.known.issuperset(names):
                i = next(i for i, n in enumerate(names) if n not in self.known)
                raise ResultError(
                    f"class_name {names[i]!r} not in class_names {self.class_names}", key=f"{key}[{i}].class_name"
                )
        return f"{self.encode_str(key)}:{self.entry_head}{boxes}]}}"


def _repeated_basename(asset_path: str) -> None:
    key = os.path.basename(asset_path)
    raise ResultError(f"two results share the basename {key!r} (the second: {asset_path!r})", key="infer_result")


def _write_segmentation(infer_result: Any, env_config: env.EnvConfig) -> None:

    data = to_builtin_json(infer_result)
    try:
        check_coco_result(data, class_names=_class_names_or_none())
    except ValueError as e:
        key, _, msg = str(e).partition(": ")
        raise ResultError(msg or str(e), key=key if msg else "infer_result") from None
    atomic_write(env_config.output.infer_result_file, _fast.json_text(data))


def to_builtin_json(value: Any) -> Any:
    """numpy numbers / arrays in a nested result converted to plain Python (JSON-ready)."""
    return to_builtin(value)


_CLASS_NAME = attrgetter("class_name")
_SCORE = attrgetter("score")


def _in_unit_range(score: float) -> bool:
    return 0.0 <= score <= 1.0


def _class_names_or_none() -> list[str] | None:
    try:
        names = env.get_executor_config().get("class_names")
    except Exception:
        return None
    return list(names) if isinstance(names, list) and names else None
