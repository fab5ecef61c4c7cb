"""pydantic models: the single definition of each output file format.

The writers an executor calls (``result_writer``) and the checks the host runs (``harness``)
validate against these same models. JSON Schema for the docs: ``ymir-exc schema``, or
``TrainingResult.model_json_schema()``.

Sources: CONTRACT.md section 2 (result.yaml, result.tsv, infer-result.json) and 4 (ymir-info.yaml).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Dict, List, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: primary metric keys, in order of precedence (CONTRACT.md section 2)
PRIMARY_METRIC_KEYS = ("maskAP", "mIoU", "mAP")
#: evaluation keys that are counts (non-negative integers), not fractions
COUNT_KEYS = frozenset({"tp", "fp", "fn", "TP", "FP", "FN"})
#: keys of a stage that are not evaluation results
STAGE_RESERVED_KEYS = frozenset({"stage_name", "files", "timestamp"})
#: most stages result.yaml keeps; the best one is never evicted
MAX_MODEL_STAGES = 11


def to_builtin(value: Any) -> Any:
    """Convert numpy scalars / arrays (and nested containers) to plain Python for YAML / JSON."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, dict):
        return {str(to_builtin(k)): to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_builtin(v) for v in value]
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return to_builtin(tolist())
    return value


def check_evaluation_value(key: str, value: Any) -> Any:
    """Validate one evaluation entry: counts are ints >= 0, every other metric a float in [0, 1].

    Raises:
        ValueError: not a number, not finite, or out of range; the message names the key.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"metric {key!r} must be a number, got {value!r}")
    if key in COUNT_KEYS:
        if not isinstance(value, numbers.Integral) and not float(value).is_integer():
            raise ValueError(f"count {key!r} must be an integer, got {value!r}")
        if value < 0:
            raise ValueError(f"count {key!r} must be >= 0, got {value!r}")
        return int(value)
    v = float(value)
    if not math.isfinite(v) or not 0.0 <= v <= 1.0:
        raise ValueError(f"metric {key!r} must be a finite fraction in [0, 1], got {value!r}")
    return v


def primary_metric_key(keys) -> Optional[str]:
    """The first of maskAP > mIoU > mAP among ``keys``, or None."""
    for k in PRIMARY_METRIC_KEYS:
        if k in keys:
            return k
    return None


class ModelStage(BaseModel):
    """One entry of ``model_stages`` in result.yaml.

    Evaluation keys beside the named fields are allowed (mAR, precision, tp, ...): counts are
    non-negative ints, everything else a fraction in [0, 1].
    """

    model_config = ConfigDict(extra="allow")

    stage_name: str
    files: List[str] = Field(min_length=1)
    timestamp: int
    mAP: Optional[float] = None

    @field_validator("stage_name")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not v.isidentifier():
            raise ValueError(f"stage_name {v!r} is not an identifier")
        return v

    @field_validator("files")
    @classmethod
    def _relative(cls, v: List[str]) -> List[str]:
        for f in v:
            if not f or f.startswith("/") or ".." in f.split("/"):
                raise ValueError(f"stage file {f!r} must be a relative path inside the models dir")
        return v

    @model_validator(mode="after")
    def _metrics(self) -> "ModelStage":
        for key, value in self.evaluation_result().items():
            check_evaluation_value(key, value)
        if primary_metric_key(self.evaluation_result()) is None:
            raise ValueError("a stage needs a primary metric (maskAP, mIoU or mAP)")
        return self

    def evaluation_result(self) -> Dict[str, Any]:
        """The metrics of this stage (every key but stage_name, files, timestamp; no None)."""
        data = self.model_dump(exclude=set(STAGE_RESERVED_KEYS))
        return {k: v for k, v in data.items() if v is not None}


class TrainingResult(BaseModel):
    """``/out/models/result.yaml`` for protocol >= 1.0.0."""

    model_config = ConfigDict(extra="allow")

    best_stage_name: str
    model_stages: Dict[str, ModelStage] = Field(min_length=1)
    attachments: Optional[Dict[str, List[str]]] = None
    evaluate_config: Optional[Dict[str, Any]] = None

    @model_validator(mode="after")
    def _consistent(self) -> "TrainingResult":
        if len(self.model_stages) > MAX_MODEL_STAGES:
            raise ValueError(f"{len(self.model_stages)} model stages, at most {MAX_MODEL_STAGES}")
        for name, stage in self.model_stages.items():
            if name != stage.stage_name:
                raise ValueError(f"model_stages key {name!r} != its stage_name {stage.stage_name!r}")
        if self.best_stage_name not in self.model_stages:
            raise ValueError(f"best_stage_name {self.best_stage_name!r} is not a model stage")
        expected = best_stage(self.model_stages)
        best = self.model_stages[self.best_stage_name]
        key = primary_metric_key(best.evaluation_result())
        exp_stage = self.model_stages[expected]
        if key is not None and (exp_stage.evaluation_result().get(key), exp_stage.timestamp) != (
                best.evaluation_result().get(key), best.timestamp):
            raise ValueError(f"best_stage_name {self.best_stage_name!r} is not the stage with the highest "
                             f"{key} (then latest timestamp): {expected!r}")
        top = (self.model_extra or {}).get(key) if key else None
        if key is not None and top is not None and abs(float(top) - float(best.evaluation_result()[key])) > 1e-9:
            raise ValueError(f"top-level {key} {top} != best stage's {best.evaluation_result()[key]}")
        return self


def best_stage(stages: Dict[str, ModelStage]) -> str:
    """Name of the best stage: the max of (primary metric, timestamp). The primary metric key is
    the first of maskAP > mIoU > mAP present in any stage; a stage lacking it counts as 0."""
    keys = set()
    for s in stages.values():
        keys.update(s.evaluation_result())
    key = primary_metric_key(keys) or "mAP"
    return max(stages.values(), key=lambda s: (float(s.evaluation_result().get(key, 0.0)), s.timestamp)).stage_name


class LegacyTrainingResult(BaseModel):
    """result.yaml below protocol 1.0.0: ``{model: [files], map: <float>}``."""

    model_config = ConfigDict(extra="allow")

    model: List[str] = Field(min_length=1)
    map: float = Field(ge=0.0, le=1.0)


class InferBox(BaseModel):
    """A box of infer-result.json, integer pixels (CONTRACT.md section 2)."""

    x: int
    y: int
    w: int = Field(gt=0)
    h: int = Field(gt=0)


class InferAnnotation(BaseModel):
    class_name: str
    score: float = Field(ge=0.0, le=1.0)
    box: InferBox


class ModelPackageInfo(BaseModel):
    """``ymir-info.yaml`` inside a model package (package_version 2.0.0; CONTRACT.md section 4)."""

    model_config = ConfigDict(extra="allow")

    executor_config: Dict[str, Any]
    task_context: Dict[str, Any]
    stages: Dict[str, ModelStage] = Field(min_length=1)
    best_stage_name: str
    package_version: str = "2.0.0"

    @field_validator("executor_config")
    @classmethod
    def _class_names(cls, v: Dict[str, Any]) -> Dict[str, Any]:
        names = v.get("class_names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError("executor_config.class_names must be a non-empty list of names")
        return v

    @model_validator(mode="after")
    def _best(self) -> "ModelPackageInfo":
        if self.best_stage_name not in self.stages:
            raise ValueError(f"best_stage_name {self.best_stage_name!r} is not one of stages {sorted(self.stages)}")
        return self
