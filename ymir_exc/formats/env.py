"""env.yaml, the file the platform writes at ``/in/env.yaml``: one pydantic model, and the one
builder of every env.yaml the project writes (:meth:`EnvConfig.for_task`)::

    from ymir_exc.formats.env import EnvConfig
    cfg = EnvConfig.for_task("/in", "/out", ["mining", "infer"], task_id="t1")
    (cfg.run_mining, cfg.input.candidate_index_file, cfg.output.infer_result_file)
    # (True, '/in/candidate-index.tsv', '/out/infer-result.json')
    cfg.to_yaml_dict()          # what goes into env.yaml (key order as the platform writes it)

Format: docs/contract.md#envyaml. ``protocol_version`` absent means ``0.0.1`` (legacy result
formats). Unknown keys are kept (the platform adds some over time). Readers: :mod:`ymir_exc.env`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from ymir_exc import settings

#: Major protocol versions this SDK reads and writes.
SUPPORTED_PROTOCOL_MAJORS = (0, 1, 2)
#: the protocol version the harness hands an executor unless told otherwise
#: (:data:`ymir_exc.settings.PROTOCOL_VERSION`, defined there once)
DEFAULT_PROTOCOL_VERSION = settings.PROTOCOL_VERSION
#: the task kinds, in the order a combined task runs them (:data:`ymir_exc.settings.TASKS`)
TASKS = settings.TASKS


# defer_build: the validators are built on first use, not at import (keeps `import ymir_exc.*`
# fast; behaviour is the same)


#: where each input lies below ``input.root_dir`` (the index files only for the tasks that read them)
IN_LAYOUT = {
    "assets_dir": "assets",
    "annotations_dir": "annotations",
    "models_dir": "models",
    "config_file": "config.yaml",
}
INDEX_FILES = {
    "training_index_file": "train-index.tsv",
    "val_index_file": "val-index.tsv",
    "candidate_index_file": "candidate-index.tsv",
}
#: where each output goes below ``output.root_dir``
OUT_LAYOUT = {
    "models_dir": "models",
    "tensorboard_dir": "tensorboard",
    "training_result_file": "models/result.yaml",
    "mining_result_file": "result.tsv",
    "infer_result_file": "infer-result.json",
    "monitor_file": "monitor.txt",
    "executor_log_file": "ymir-executor-out.log",
}


class EnvInputConfig(BaseModel):
    """``input:`` of env.yaml: where the read-only inputs are (all absolute paths)."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    #: the read-only input folder
    root_dir: str = "/in"
    #: images, ``<root>/assets/<sha1[-2:]>/<sha1>.<ext>``
    assets_dir: str = "/in/assets"
    #: one ark / VOC file per image, or one COCO json
    annotations_dir: str = "/in/annotations"
    #: the model files of ``model_params_path`` / ``pretrained_model_params``
    models_dir: str = "/in/models"
    #: the hyper-parameters (config.yaml)
    config_file: str = "/in/config.yaml"
    #: lines ``<abs image>\\t<abs annotation>``; '' when the task has no training set
    training_index_file: str = ""
    #: as training_index_file, for the validation set
    val_index_file: str = ""
    #: lines ``<abs image>``; '' for training
    candidate_index_file: str = ""


class EnvOutputConfig(BaseModel):
    """``output:`` of env.yaml: where the executor writes (all absolute paths)."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    #: the writable output folder
    root_dir: str = "/out"
    #: model files and result.yaml (training)
    models_dir: str = "/out/models"
    #: tensorboard event files, shown by the platform
    tensorboard_dir: str = "/out/tensorboard"
    #: model stages and metrics (training)
    training_result_file: str = "/out/models/result.yaml"
    #: ``<asset path>\\t<score>`` lines (mining)
    mining_result_file: str = "/out/result.tsv"
    #: boxes per image (inference)
    infer_result_file: str = "/out/infer-result.json"
    #: progress and state
    monitor_file: str = "/out/monitor.txt"
    #: the executor's log
    executor_log_file: str = "/out/ymir-executor-out.log"


class EnvConfig(BaseModel):
    """The whole of env.yaml (see docs/contract.md#envyaml).

    Example::

        >>> cfg = EnvConfig.model_validate({"task_id": "t1", "run_training": True,
        ...                                 "output": {"models_dir": "/out/models"}})
        >>> (cfg.task_id, cfg.run_training, cfg.output.models_dir)
        ('t1', True, '/out/models')
    """

    model_config = ConfigDict(extra="allow", defer_build=True)

    protocol_version: str = "0.0.1"
    task_id: str = "default-task"
    run_training: bool = False
    run_mining: bool = False
    run_infer: bool = False
    manifest_file: str = "/img-man/manifest.yaml"
    # model_construct(): the all-defaults instance, without building the validator at import
    input: EnvInputConfig = EnvInputConfig.model_construct()
    output: EnvOutputConfig = EnvOutputConfig.model_construct()

    @field_validator("protocol_version", mode="before")
    @classmethod
    def _check_protocol_version(cls, v: Any) -> str:
        if v is None:
            return "0.0.1"
        text = str(v)
        parse_protocol_version(text)
        return text

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        # the schema shows the default input / output instances, which needs their (deferred)
        # serializers built first
        EnvInputConfig.model_rebuild()
        EnvOutputConfig.model_rebuild()
        return super().model_json_schema(*args, **kwargs)

    @property
    def protocol_tuple(self) -> tuple[int, ...]:
        """``protocol_version`` as a tuple of ints, e.g. ``(1, 1, 0)``."""
        return parse_protocol_version(self.protocol_version)

    @classmethod
    def for_task(
        cls,
        in_root: str,
        out_root: str,
        tasks: Sequence[str],
        *,
        task_id: str = "default-task",
        protocol_version: str = DEFAULT_PROTOCOL_VERSION,
        manifest_file: str = "/img-man/manifest.yaml",
    ) -> EnvConfig:
        """The env.yaml the platform writes for ``tasks``, paths under ``in_root`` / ``out_root``
        (``/in`` and ``/out`` in a container; absolute host folders for a local run).

        Training reads train-index.tsv and val-index.tsv (candidate_index_file is ''); mining and
        inference read candidate-index.tsv (the other two are ''). Write it with
        :meth:`to_yaml_dict`.

        Args:
            tasks: any of :data:`TASKS` (``["mining", "infer"]`` for a combined task).
            protocol_version: ``MAJOR.MINOR.PATCH``; below 1.0.0 :meth:`to_yaml_dict` leaves the
                key out, as old platforms did.

        Raises:
            ValueError: a task not in :data:`TASKS`, or an unsupported protocol_version.
        """
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; one of {', '.join(TASKS)}")
        training = "training" in tasks
        wanted = {"training_index_file": training, "val_index_file": training, "candidate_index_file": not training}
        inputs = {"root_dir": in_root, **{k: f"{in_root}/{v}" for k, v in IN_LAYOUT.items()}}
        inputs.update({k: f"{in_root}/{v}" if wanted[k] else "" for k, v in INDEX_FILES.items()})
        outputs = {"root_dir": out_root, **{k: f"{out_root}/{v}" for k, v in OUT_LAYOUT.items()}}
        return cls.model_validate(
            {
                "protocol_version": protocol_version,
                "task_id": task_id,
                "run_training": training,
                "run_mining": "mining" in tasks,
                "run_infer": "infer" in tasks,
                "manifest_file": manifest_file,
                "input": inputs,
                "output": outputs,
            }
        )

    def to_yaml_dict(self) -> dict[str, Any]:
        """The mapping to ``yaml.safe_dump(..., sort_keys=False)`` into env.yaml: every key, in
        the platform's order; ``protocol_version`` left out below 1.0.0 (as old platforms wrote it)."""
        data = self.model_dump(mode="json")
        if self.protocol_tuple[0] == 0:
            data.pop("protocol_version")
        return data


def parse_protocol_version(version: str) -> tuple[int, ...]:
    """``"1.1.0"`` -> ``(1, 1, 0)``.

    Raises:
        ValueError: not dotted integers, or a major version outside SUPPORTED_PROTOCOL_MAJORS.
    """
    try:
        parts = tuple(int(p) for p in str(version).strip().split("."))
    except ValueError:
        raise ValueError(f"protocol_version {version!r} is not of the form MAJOR.MINOR.PATCH") from None
    if not parts or parts[0] not in SUPPORTED_PROTOCOL_MAJORS:
        raise ValueError(
            f"unknown protocol_version {version!r}; supported majors: {', '.join(map(str, SUPPORTED_PROTOCOL_MAJORS))}"
        )
    return parts
