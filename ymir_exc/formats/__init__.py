"""pydantic models: the single definition of each file format, one module per file family.

- :mod:`ymir_exc.formats.results`: result.yaml (model stages), result.tsv (mining lines),
  infer-result.json (detection boxes, segmentation COCO result);
- :mod:`ymir_exc.formats.monitor`: the monitor.txt line, written and parsed;
- :mod:`ymir_exc.formats.package`: a model package's ymir-info.yaml;
- :mod:`ymir_exc.formats.env`: env.yaml; :mod:`ymir_exc.formats.annotations`: the dataset's
  annotation files (import those from their modules; they are not re-exported here).

The writers an executor calls (``result_writer``, ``monitor``), the checks the host runs
(``harness``) and ``ymir-exc schema`` (:func:`file_models`) all use these same models, so they
cannot drift. JSON Schema for the docs: ``ymir-exc schema``, or ``TrainingResult.model_json_schema()``.

The names below are re-exported from their modules on first use (importing this package builds
no pydantic schema, which keeps ``import ymir_exc.monitor`` fast)::

    >>> from ymir_exc.formats import TrainingResult, parse_monitor

Sources: docs/contract.md (result.yaml, result.tsv, infer-result.json, monitor.txt, ymir-info.yaml).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ymir_exc.formats.monitor import MonitorState, format_monitor_line, parse_monitor
    from ymir_exc.formats.package import INFO_NAME, PACKAGE_VERSION, ModelPackageInfo
    from ymir_exc.formats.results import (
        ABSENT_METRIC,
        COUNT_KEYS,
        INFER_ALGORITHMS,
        MAX_MODEL_STAGES,
        PRIMARY_METRIC_KEYS,
        STAGE_RESERVED_KEYS,
        InferAnnotation,
        InferBox,
        InferImageResult,
        InferResult,
        LegacyTrainingResult,
        MiningLine,
        ModelStage,
        TrainingResult,
        best_stage,
        check_coco_result,
        check_evaluation_value,
        decode_rle,
        format_mining_line,
        infer_box_problem,
        parse_mining_line,
        primary_metric_key,
        rle_counts,
        to_builtin,
    )

__all__ = [
    "ABSENT_METRIC",
    "COUNT_KEYS",
    "INFER_ALGORITHMS",
    "INFO_NAME",
    "MAX_MODEL_STAGES",
    "PACKAGE_VERSION",
    "PRIMARY_METRIC_KEYS",
    "STAGE_RESERVED_KEYS",
    "InferAnnotation",
    "InferBox",
    "InferImageResult",
    "InferResult",
    "LegacyTrainingResult",
    "MiningLine",
    "ModelPackageInfo",
    "ModelStage",
    "MonitorState",
    "TrainingResult",
    "best_stage",
    "check_coco_result",
    "check_evaluation_value",
    "decode_rle",
    "file_models",
    "format_mining_line",
    "format_monitor_line",
    "infer_box_problem",
    "parse_mining_line",
    "parse_monitor",
    "primary_metric_key",
    "rle_counts",
    "to_builtin",
]

#: where the re-exported names live, looked up in this order (monitor builds no schema)
_HOMES = ("monitor", "results", "package")


def file_models() -> dict[str, type[BaseModel]]:
    """``{file (as the docs name it): its pydantic model}`` for every result / package file:
    what ``ymir-exc schema`` prints and what the writers and the harness's checks validate
    against (env.yaml's model is :class:`ymir_exc.env.EnvConfig`)."""
    from ymir_exc.formats.monitor import MonitorState
    from ymir_exc.formats.package import ModelPackageInfo
    from ymir_exc.formats.results import (
        InferAnnotation,
        InferResult,
        LegacyTrainingResult,
        MiningLine,
        TrainingResult,
    )

    return {
        "result.yaml": TrainingResult,
        "result.yaml (legacy, protocol < 1.0.0)": LegacyTrainingResult,
        "result.tsv line": MiningLine,
        "infer-result.json (detection)": InferResult,
        "infer-result.json box": InferAnnotation,
        "monitor.txt": MonitorState,
        "ymir-info.yaml": ModelPackageInfo,
    }


def __getattr__(name: str) -> Any:
    if name in __all__:
        for home in _HOMES:
            module = importlib.import_module(f"{__name__}.{home}")
            if hasattr(module, name):
                value = getattr(module, name)
                globals()[name] = value
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
