"""The model package's ``ymir-info.yaml`` (package_version 2.0.0).

A model package is a tar.gz of the stage folders plus ``ymir-info.yaml``; the harness writes it
when it collects a training task (:func:`ymir_exc.harness.models.build_info`) and checks it when
it imports a package (:func:`ymir_exc.harness.models.scan_package`), both through
:class:`ModelPackageInfo`; ``ymir-exc schema`` prints its JSON Schema.

Example::

    >>> from ymir_exc.formats.package import ModelPackageInfo
    >>> info = ModelPackageInfo.model_validate({
    ...     "executor_config": {"class_names": ["tree"]}, "task_context": {},
    ...     "stages": {"s1": {"stage_name": "s1", "files": ["w.pt"], "timestamp": 1, "mAP": 0.5}},
    ...     "best_stage_name": "s1"})
    >>> info.package_version
    '2.0.0'

Source: docs/contract.md (model packages).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ymir_exc.formats.results import ModelStage

#: the file's name inside a package
INFO_NAME = "ymir-info.yaml"
#: the package layout this project writes (stage folders + ymir-info.yaml)
PACKAGE_VERSION = "2.0.0"


class ModelPackageInfo(BaseModel):
    """``ymir-info.yaml`` inside a model package (package_version 2.0.0; docs/contract.md)."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    executor_config: dict[str, Any]
    task_context: dict[str, Any]
    stages: dict[str, ModelStage] = Field(min_length=1)
    best_stage_name: str
    package_version: str = PACKAGE_VERSION

    @field_validator("executor_config")
    @classmethod
    def _class_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        names = v.get("class_names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError("executor_config.class_names must be a non-empty list of names")
        return v

    @model_validator(mode="after")
    def _best(self) -> ModelPackageInfo:
        if self.best_stage_name not in self.stages:
            raise ValueError(f"best_stage_name {self.best_stage_name!r} is not one of stages {sorted(self.stages)}")
        return self
