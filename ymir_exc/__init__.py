"""ymir_exc: the executor SDK for the YMIR platform, plus a local host harness.

The public surface is :data:`__all__`, grouped below; a whole executor::

    from ymir_exc import Detection, Executor, Task

    def train(task: Task) -> None:
        for item in task.items("train"):              # image_path, boxes (class_name, x, y, w, h)
            ...
        task.save_stage("last", ["model.json"], mAP=0.61)

    def infer(task: Task) -> None:
        task.save_infer({i.image_path: [Detection("tree", 0.9, 10, 20, 30, 40)]
                         for i in task.items("candidate")})

    if __name__ == "__main__":
        Executor(training=train, infer=infer).main()

The names are loaded on first use, so ``import ymir_exc`` stays light (never torch, the harness,
the command line or tensorboardX). The upstream-compatible modules (``env``, ``dataset_reader``,
``result_writer``, ``monitor``, ``util``, ``settings``, ``executor.Executor(apps=...).start()``)
are the compatibility layer for images written against the upstream SDK: import them as
modules (``from ymir_exc import monitor``). The rules behind every file are in docs/contract.md.

Host side: the ``ymir-exc`` command (``ymir_exc.cli``).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from ymir_exc.code import ExecutorReturnCode, ExecutorState
    from ymir_exc.dataset_reader import BBox, DatasetItem
    from ymir_exc.env import DatasetType, EnvConfig
    from ymir_exc.errors import (
        AnnotationError,
        ConfigFileError,
        EnvFileError,
        ImageError,
        IndexFileError,
        ModelError,
        MonitorError,
        NotSupportedError,
        ResultError,
        YmirExcError,
    )
    from ymir_exc.executor import Executor, return_code_for
    from ymir_exc.metrics import evaluate_detections
    from ymir_exc.params import HyperParams
    from ymir_exc.result_writer import Annotation, Box
    from ymir_exc.task import Detection, Task

__version__ = "2.1.0"

#: public name -> the module that defines it (imported on first access)
_EXPORTS: dict[str, str] = {
    # the task and executor API
    "Task": "ymir_exc.task",
    "Detection": "ymir_exc.task",
    "Executor": "ymir_exc.executor",
    "evaluate_detections": "ymir_exc.metrics",
    "HyperParams": "ymir_exc.params",
    # typed items and boxes
    "DatasetType": "ymir_exc.env",
    "EnvConfig": "ymir_exc.env",
    "DatasetItem": "ymir_exc.dataset_reader",
    "BBox": "ymir_exc.dataset_reader",
    "Annotation": "ymir_exc.result_writer",
    "Box": "ymir_exc.result_writer",
    # errors (each carries its monitor.txt return code)
    "YmirExcError": "ymir_exc.errors",
    "EnvFileError": "ymir_exc.errors",
    "ConfigFileError": "ymir_exc.errors",
    "IndexFileError": "ymir_exc.errors",
    "AnnotationError": "ymir_exc.errors",
    "ImageError": "ymir_exc.errors",
    "ModelError": "ymir_exc.errors",
    "ResultError": "ymir_exc.errors",
    "MonitorError": "ymir_exc.errors",
    "NotSupportedError": "ymir_exc.errors",
    # states and return codes
    "ExecutorState": "ymir_exc.code",
    "ExecutorReturnCode": "ymir_exc.code",
    "return_code_for": "ymir_exc.executor",
}

__all__ = [
    "__version__",
    # the task and executor API
    "Task",
    "Detection",
    "Executor",
    "evaluate_detections",
    "HyperParams",
    # typed items and boxes
    "DatasetType",
    "EnvConfig",
    "DatasetItem",
    "BBox",
    "Annotation",
    "Box",
    # errors
    "YmirExcError",
    "EnvFileError",
    "ConfigFileError",
    "IndexFileError",
    "AnnotationError",
    "ImageError",
    "ModelError",
    "ResultError",
    "MonitorError",
    "NotSupportedError",
    # states and return codes
    "ExecutorState",
    "ExecutorReturnCode",
    "return_code_for",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


# an uncaught exception in an executor process ends in state 4 (see ymir_exc._crash)
from ymir_exc import _crash as _crash  # noqa: E402

_crash.install()
