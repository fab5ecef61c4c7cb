"""Run an executor's tasks from env.yaml, turning any failure into state 4 and an exit code.

Our typed entry for new images::

    from ymir_exc.executor import Executor

    def train(cfg): ...                       # cfg = util.get_merged_config()
    def mine(cfg): ...
    def infer(cfg): ...

    if __name__ == "__main__":
        Executor(training=train, mining=mine, infer=infer).main()   # exits 0 or 1

It dispatches on ``run_training`` / ``run_mining`` / ``run_infer`` (mining then infer when both
are set, as the platform's "add prediction" does), and on failure writes monitor.txt with state 4,
the return code of the error and its message and traceback, prints the traceback to stderr and
exits 1. Return codes: ``ymir_exc.errors`` classes carry their own; out of memory -> 300103; other
CUDA errors -> 300101; an image that cannot be opened -> 300003; a NaN loss -> 300201; anything
else -> 160004. An error code the task already wrote to monitor.txt (state 4) is kept.

The upstream entry, for images whose tasks are separate scripts::

    Executor(apps={"training": "python3 ymir/ymir_training.py"}).start()

runs the shell command of each enabled task (training; or mining, then infer), and raises
after them when config.yaml sets ``ymir_debug: true`` (upstream keeps such a container for
debugging that way). One class serves both entries.
"""

from __future__ import annotations

import subprocess
import sys
import traceback
from typing import Any, Callable, Dict, Mapping, Optional, Union

from ymir_exc import monitor
from ymir_exc.code import ExecutorReturnCode as RC
from ymir_exc.code import ExecutorState

TaskFn = Callable[[Any], None]


def return_code_for(exc: BaseException) -> int:
    """The monitor.txt return code for an exception (see the module docstring)."""
    code = getattr(exc, "return_code", None)
    if isinstance(code, int) and code:
        return code
    text = f"{type(exc).__name__}: {exc}".lower()
    if isinstance(exc, MemoryError) or "out of memory" in text or "outofmemory" in text:
        return RC.RC_EXEC_OOM
    if "no cuda gpus are available" in text or "found no nvidia driver" in text:
        return RC.RC_EXEC_NO_GPU
    if "cuda" in text or "cudnn" in text:
        return RC.RC_EXEC_CUDA_GPU_ERROR
    if type(exc).__name__ in ("UnidentifiedImageError", "DecompressionBombError") or "cannot identify image" in text:
        return RC.RC_EXEC_UNKNOWN_IMAGE_FORMAT
    if "nan" in text.split() or "nan loss" in text or "loss is nan" in text:
        return RC.RC_EXEC_NAN_ERROR
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return RC.RC_EXEC_NETWORK_ERROR
    return RC.RC_CMD_CONTAINER_ERROR


#: upstream's default shell command per task (``Executor(apps=...)``)
DEFAULT_APPS: Dict[str, str] = {"training": "python3 ymir/ymir_training.py",
                                "mining": "python3 ymir/ymir_mining.py",
                                "infer": "python3 ymir/ymir_infer.py"}


class Executor:
    """Dispatches the tasks env.yaml enables to the functions (or commands) given.

    Args:
        training: function run for training, taking the merged config (EasyDict); a task
            enabled in env.yaml without a function is a config error (300001).
        mining: the same, for mining.
        infer: the same, for inference.
        apps: upstream's form, ``{"training" | "mining" | "infer": shell command}`` (defaults
            :data:`DEFAULT_APPS`); also accepted as the first positional argument. Used by
            :meth:`start`.
    """

    def __init__(self, training: Union[TaskFn, Mapping[str, str], None] = None, mining: Optional[TaskFn] = None,
                 infer: Optional[TaskFn] = None, apps: Optional[Mapping[str, str]] = None) -> None:
        if isinstance(training, Mapping):  # Executor({"training": "..."}), upstream's positional apps
            apps, training = training, None
        self.training, self.mining, self.infer = training, mining, infer
        self.apps: Dict[str, str] = dict(DEFAULT_APPS)
        self.apps.update(apps or {})

    def start(self) -> None:
        """Upstream's entry: run the shell command of each enabled task (training; else mining
        then infer, as env.yaml enables them), in the current folder.

        Raises:
            subprocess.CalledProcessError: a command exited non-zero (its monitor.txt stays).
            RuntimeError: config.yaml sets ``ymir_debug`` true (after the commands ran).
            EnvFileError / ConfigFileError: env.yaml or config.yaml is bad.
        """
        from ymir_exc import env
        from ymir_exc.util import get_bool, get_merged_config

        ymir = env.current_env()
        if ymir.run_training:
            self._run_app("training")
        else:
            if ymir.run_mining:
                self._run_app("mining")
            if ymir.run_infer:
                self._run_app("infer")
        if get_bool(get_merged_config(), "ymir_debug", default_value=False):
            raise RuntimeError("ymir_debug is set in config.yaml: the executor stops here for debugging")

    def _run_app(self, task: str) -> None:
        cmd = self.apps[task]
        print(f"ymir_exc: running {task}: {cmd}", flush=True)
        subprocess.run(cmd, shell=True, check=True)

    def run(self) -> int:
        """Run the enabled tasks; returns 0 on success, 1 after writing state 4 on failure."""
        try:
            from ymir_exc.errors import ConfigFileError
            from ymir_exc.util import get_merged_config

            cfg = get_merged_config()
            todo = [(flag, fn, name) for flag, fn, name in (
                (cfg.ymir.run_training, self.training, "training"),
                (cfg.ymir.run_mining, self.mining, "mining"),
                (cfg.ymir.run_infer, self.infer, "infer")) if flag]
            if not todo:
                raise ConfigFileError("env.yaml enables no task (run_training, run_mining, run_infer all false)",
                                      key="run_training")
            for _, fn, name in todo:
                if fn is None:
                    raise ConfigFileError(f"this executor does not support {name}", key=f"run_{name}")
            for _, fn, _name in todo:
                fn(cfg)  # type: ignore[misc]
            monitor.write_monitor_logger(1.0, ExecutorState.ES_DONE)
            return 0
        except BaseException as exc:  # noqa: BLE001 - every failure must reach monitor.txt
            if isinstance(exc, SystemExit) and exc.code in (0, None):
                raise
            code = RC.RC_CMD_CONTAINER_ERROR if isinstance(exc, KeyboardInterrupt) else return_code_for(exc)
            code = monitor.written_error_code() or code  # keep a code the task wrote itself
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            try:
                monitor.write_error(exc, code, traceback_lines=tb[-20:])
            except Exception as e2:  # noqa: BLE001
                print(f"ymir_exc: could not write monitor.txt: {e2}", file=sys.stderr)
            sys.stderr.write("".join(tb))
            sys.stderr.write(f"ymir_exc: task failed with return code {int(code)}\n")
            sys.stderr.flush()
            return 1

    def main(self) -> None:
        """:meth:`run`, then ``sys.exit`` with its status."""
        sys.exit(self.run())


def run(training: Optional[TaskFn] = None, mining: Optional[TaskFn] = None, infer: Optional[TaskFn] = None) -> None:
    """Shorthand for ``Executor(training, mining, infer).main()``."""
    Executor(training, mining, infer).main()


#: names upstream's ``ymir_exc.executor`` module imports from ``ymir_exc.util`` (so code may take
#: them from here too); resolved on first access, keeping this module's import light
_UTIL_NAMES = frozenset({"YmirStage", "YmirStageWeight", "get_bool", "get_merged_config", "get_ymir_process",
                         "write_ymir_monitor_process"})


def __getattr__(name: str) -> Any:
    if name in _UTIL_NAMES:
        from ymir_exc import util

        return getattr(util, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
