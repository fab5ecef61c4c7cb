"""Run an executor's tasks from env.yaml, turning any failure into state 4 and an exit code.

Our typed entry for new images, with one function per task::

    from ymir_exc import Executor, Task

    def train(task: Task) -> None: ...        # task.items("train"), task.save_stage(...)
    def mine(task: Task) -> None: ...         # task.save_mining({path: score})
    def infer(task: Task) -> None: ...        # task.save_infer({path: [Detection, ...]})

    if __name__ == "__main__":
        Executor(training=train, mining=mine, infer=infer).main()   # exits 0 or 1

or with a class whose ``setup(task)`` loads the model once, so that mining and inference in one
run (the platform's "add prediction") share it::

    class Detector:
        def setup(self, task: Task) -> None:
            self.model = load(task.weights()[0])
        def mine(self, task: Task) -> None: ...
        def infer(self, task: Task) -> None: ...

    Executor(Detector).main()

Each task function (or method) gets a :class:`~ymir_exc.task.Task` whose ``progress`` reports
that task's share of the run. Compatibility: a function whose first parameter is named ``cfg``
(``def train(cfg)``, ``lambda cfg: ...``) gets the upstream merged config instead (an EasyDict,
``cfg.param`` = config.yaml, ``cfg.ymir`` = env.yaml), as in earlier versions; a function
without parameters gets nothing.

It dispatches on ``run_training`` / ``run_mining`` / ``run_infer`` (mining then infer when both
are set), and on failure writes monitor.txt with state 4, the return code of the error and its
message and traceback, prints the traceback to stderr and exits 1. Return codes
(`docs/contract.md#return-codes`): ``ymir_exc.errors`` classes carry their own; out of
memory -> 300103; other CUDA errors -> 300101; an image that cannot be opened -> 300003; a NaN
loss -> 300201; anything else -> 160004. An error code the task already wrote to monitor.txt
(state 4) is kept.

The upstream entry, for images whose tasks are separate scripts::

    Executor(apps={"training": "python3 ymir/ymir_training.py"}).start()

runs the shell command of each enabled task (training; or mining, then infer), and raises
after them when config.yaml sets ``ymir_debug: true`` (upstream keeps such a container for
debugging that way). One class serves both entries.
"""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ymir_exc import monitor
from ymir_exc.code import ExecutorReturnCode as RC
from ymir_exc.code import ExecutorState

if TYPE_CHECKING:
    from ymir_exc.task import Task

#: a task function: ``fn(task)``, ``fn(cfg)`` (upstream merged config) or ``fn()``
TaskFn = Callable[..., None]

#: the method names a task class may define, per task (``Executor(MyClass)``)
TASK_METHODS: dict[str, str] = {"training": "train", "mining": "mine", "infer": "infer"}


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
DEFAULT_APPS: dict[str, str] = {
    "training": "python3 ymir/ymir_training.py",
    "mining": "python3 ymir/ymir_mining.py",
    "infer": "python3 ymir/ymir_infer.py",
}


class Executor:
    """Dispatches the tasks env.yaml enables to the functions, methods or commands given.

    Args:
        training: function run for training (see the module docstring for what it gets); a
            task enabled in env.yaml without a function is a config error (300001). Also
            accepted here: a class (instantiated without arguments) or an object with
            ``train`` / ``mine`` / ``infer`` methods and an optional ``setup(task)``, or
            upstream's apps mapping.
        mining: the same, for mining.
        infer: the same, for inference.
        apps: upstream's form, ``{"training" | "mining" | "infer": shell command}`` (defaults
            :data:`DEFAULT_APPS`); also accepted as the first positional argument. Used by
            :meth:`start`.

    Raises:
        TypeError: a class given together with task functions, or an object with none of the
            ``train`` / ``mine`` / ``infer`` methods.

    Example:
        Functions::

            def train(task):
                task.save_stage("last", ["model.json"], mAP=0.5)

            Executor(training=train).main()

        A class whose model is loaded once for mining and inference::

            class Detector:
                def setup(self, task):                 # once, before the first task
                    self.model = json.loads(Path(task.weights(".json")[0]).read_text())
                def mine(self, task):
                    task.save_mining({i.image_path: 0.5 for i in task.items("candidate")})
                def infer(self, task):
                    task.save_infer({i.image_path: [] for i in task.items("candidate")})

            Executor(Detector).main()
    """

    def __init__(
        self,
        training: Any = None,
        mining: TaskFn | None = None,
        infer: TaskFn | None = None,
        apps: Mapping[str, str] | None = None,
    ) -> None:
        self.handler: object | None = None
        if isinstance(training, Mapping):  # Executor({"training": "..."}), upstream's positional apps
            apps, training = training, None
        elif training is not None and _is_task_class(training):
            if mining is not None or infer is not None:
                raise TypeError(
                    "Executor(cls): give either a class with train / mine / infer methods or task functions, not both"
                )
            self.handler = training() if isinstance(training, type) else training
            methods = [getattr(self.handler, m, None) for m in TASK_METHODS.values()]
            training, mining, infer = (m if callable(m) else None for m in methods)
            if training is None and mining is None and infer is None:
                raise TypeError(f"{type(self.handler).__name__} has none of the methods train, mine, infer")
        self.training: TaskFn | None = training
        self.mining, self.infer = mining, infer
        self.apps: dict[str, str] = dict(DEFAULT_APPS)
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
            todo: list[tuple[str, TaskFn]] = []
            for name, flag, fn in (
                ("training", cfg.ymir.run_training, self.training),
                ("mining", cfg.ymir.run_mining, self.mining),
                ("infer", cfg.ymir.run_infer, self.infer),
            ):
                if flag:
                    if fn is None:
                        raise ConfigFileError(f"this executor does not support {name}", key=f"run_{name}")
                    todo.append((name, fn))
            if not todo:
                raise ConfigFileError(
                    "env.yaml enables no task (run_training, run_mining, run_infer all false)", key="run_training"
                )
            from ymir_exc.task import Task

            task = Task(cfg.ymir, dict(cfg.param))
            setup = getattr(self.handler, "setup", None)
            if setup is not None:
                _call(setup, task, cfg)
            for name, fn in todo:
                _call(fn, dataclasses.replace(task, running=name), cfg)
            monitor.write_monitor_logger(1.0, ExecutorState.ES_DONE)
            return 0
        except BaseException as exc:
            if isinstance(exc, SystemExit) and exc.code in (0, None):
                raise
            code = RC.RC_CMD_CONTAINER_ERROR if isinstance(exc, KeyboardInterrupt) else return_code_for(exc)
            code = monitor.written_error_code() or code  # keep a code the task wrote itself
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            try:
                monitor.write_error(exc, code, traceback_lines=tb[-20:])
            except Exception as e2:
                print(f"ymir_exc: could not write monitor.txt: {e2}", file=sys.stderr)
            sys.stderr.write("".join(tb))
            sys.stderr.write(f"ymir_exc: task failed with return code {int(code)}\n")
            sys.stderr.flush()
            return 1

    def main(self) -> None:
        """:meth:`run`, then ``sys.exit`` with its status."""
        sys.exit(self.run())


def _is_task_class(obj: Any) -> bool:
    """A class, or an object that is not a plain function and defines one of the task methods."""
    if isinstance(obj, type):
        return True
    if inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isbuiltin(obj):
        return False
    return any(callable(getattr(obj, m, None)) for m in TASK_METHODS.values())


def _wants_merged_config(fn: Callable[..., Any]) -> bool | None:
    """None: ``fn`` takes no argument; True: its first parameter is named ``cfg`` and not
    annotated ``Task`` (the upstream merged config); False: it gets the :class:`Task`."""
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
    except (TypeError, ValueError):  # a builtin without a signature: give it the Task
        return False
    if not params:
        return None
    first = params[0]
    annotation = first.annotation if isinstance(first.annotation, str) else getattr(first.annotation, "__name__", "")
    return first.name == "cfg" and annotation.rsplit(".", 1)[-1] != "Task"


def _call(fn: Callable[..., Any], task: Task, cfg: Any) -> None:
    """Call a task function or method with what its signature asks for (see the module docstring)."""
    wants = _wants_merged_config(fn)
    if wants is None:
        fn()
    else:
        fn(cfg if wants else task)


def run(training: Any = None, mining: TaskFn | None = None, infer: TaskFn | None = None) -> None:
    """Shorthand for ``Executor(training, mining, infer).main()`` (``training`` may be a class,
    as for :class:`Executor`)."""
    Executor(training, mining, infer).main()


#: names upstream's ``ymir_exc.executor`` module imports from ``ymir_exc.util`` (so code may take
#: them from here too); resolved on first access, keeping this module's import light
_UTIL_NAMES = frozenset(
    {"YmirStage", "YmirStageWeight", "get_bool", "get_merged_config", "get_ymir_process", "write_ymir_monitor_process"}
)


def __getattr__(name: str) -> Any:
    if name in _UTIL_NAMES:
        from ymir_exc import util

        return getattr(util, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
