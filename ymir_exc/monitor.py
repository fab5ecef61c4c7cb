"""Report progress to the platform through ``/out/monitor.txt``.

Upstream-compatible calls::

    from ymir_exc import monitor
    monitor.write_monitor_logger(percent=0.3)                       # running, 30 %
    monitor.write_monitor_logger(percent=1.0)                       # running, 100 %
    monitor.write_monitor_logger(percent=0.3, state=ExecutorState.ES_ERROR,
                                 return_code=ExecutorReturnCode.RC_EXEC_OOM)

The file holds one line, rewritten atomically by every call that changes it (docs/contract.md)::

    <task_id>\\t<unix time, seconds>\\t<percent %.2f in [0, 1]>\\t<state>\\t<return code>

followed, for an error, by optional lines with the message / traceback.

Differences from upstream (none in what a valid call writes, but the clamp): progress never
goes backwards within a process (a lower percent is raised to the last one written); env.yaml is
parsed once per change and cached; the write is atomic; a call that would only refresh the
timestamp (same line as this process last wrote, still there) rewrites the file at most once per
:data:`MIN_REFRESH_SECONDS`, so a per-iteration call in a training loop costs microseconds;
``percent`` must be a number in [0, 1] (:class:`~ymir_exc.errors.MonitorError` otherwise; a value
within :data:`PERCENT_TOLERANCE` outside it, float rounding such as ``1.0000000000000002``, is
clamped into it).
The state written is the one given: ``percent=1.0`` stays "running" unless ``state`` says done
(the platform finishes a task that exits 0).
"""

from __future__ import annotations

import math
import numbers
import os
import time
from collections.abc import Sequence
from enum import IntEnum
from typing import Any

from ymir_exc import env
from ymir_exc._io import atomic_write
from ymir_exc.code import ExecutorReturnCode, ExecutorState
from ymir_exc.errors import MonitorError
from ymir_exc.formats.monitor import format_monitor_line, parse_monitor


class YmirTask(IntEnum):
    """The three tasks an executor can run."""

    TRAINING = 1
    MINING = 2
    INFER = 3


#: upstream's module constant: the "running" state, as an int (``ExecutorState.ES_RUNNING``)
TASK_STATE_RUNNING = 2

#: a percent this close outside [0, 1] (float rounding, e.g. ``1.0000000000000002``) is clamped into it
PERCENT_TOLERANCE = 1e-6

_TASK_LETTER = {YmirTask.TRAINING: "t", YmirTask.MINING: "m", YmirTask.INFER: "i"}
_last_percent: dict[str, float] = {}
#: a call that changes nothing but the timestamp rewrites monitor.txt at most this often
MIN_REFRESH_SECONDS = 1.0
#: monitor file -> (line without its timestamp, time.monotonic() of the write, file identity after it)
_last_write: dict[str, tuple[tuple[str, str], float, tuple[int, int, int, int]]] = {}


def _check_percent(percent: Any) -> float:
    if isinstance(percent, bool) or not isinstance(percent, numbers.Real):
        raise MonitorError(f"percent must be a number in [0, 1], got {percent!r}", key="percent")
    p = float(percent)
    if not math.isfinite(p) or not -PERCENT_TOLERANCE <= p <= 1.0 + PERCENT_TOLERANCE:
        raise MonitorError(f"percent must be a fraction in [0, 1], got {percent!r}", key="percent")
    return min(max(p, 0.0), 1.0)  # float rounding just outside [0, 1] is clamped into it


def write_monitor_logger(
    percent: float,
    state: ExecutorState = ExecutorState.ES_RUNNING,
    return_code: ExecutorReturnCode | int = ExecutorReturnCode.RC_EXEC_NO_ERROR,
    msg: str | None = None,
) -> None:
    """Rewrite monitor.txt with the task's progress.

    Args:
        percent: fraction 0-1 of the whole task (within 1e-6 outside [0, 1] is clamped).
        state: ExecutorState (2 running, 3 done, 4 error), written as given.
        return_code: ExecutorReturnCode; 0 unless the state is error.
        msg: optional text (error message, traceback) written after the first line.

    Raises:
        MonitorError: percent is not a number in [0, 1] (more than 1e-6 outside it).
        EnvFileError: env.yaml cannot be read.
    """
    p = _check_percent(percent)
    state = ExecutorState(int(state))
    cfg = env.current_env()
    path = cfg.output.monitor_file
    if state != ExecutorState.ES_ERROR:
        p = max(p, _last_percent.get(path, 0.0))
    _last_percent[path] = p
    text = format_monitor_line(cfg.task_id, time.time(), p, state, return_code) + "\n"
    if msg:
        text += msg.rstrip("\n") + "\n"
    task_id, _, rest = text.partition("\t")
    content = (task_id, rest.partition("\t")[2])  # the line less its timestamp
    now = time.monotonic()
    last = _last_write.get(path)
    if last is not None and last[0] == content and now - last[1] < MIN_REFRESH_SECONDS:
        try:
            st = os.stat(path)
            if (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns) == last[2]:
                return  # the file already says this, written moments ago by this process
        except OSError:
            pass
    atomic_write(path, text, fsync=False)
    try:
        st = os.stat(path)
        _last_write[path] = (content, now, (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns))
    except OSError:
        _last_write.pop(path, None)


def write_monitor_logger_for_multiple_tasks(
    cfg: Any,
    task: YmirTask | str | int,
    percent: float,
    order: str = "tmi",
    state: ExecutorState = ExecutorState.ES_RUNNING,
    return_code: ExecutorReturnCode = ExecutorReturnCode.RC_EXEC_NO_ERROR,
) -> None:
    """Report the progress of one task of a run that may do two (mining + infer in one run).

    With both mining and infer enabled in env.yaml, the one of them that comes first in ``order``
    (``t`` training, ``m`` mining, ``i`` infer; default mining first) maps to [0, 0.5] and the
    other to [0.5, 1]; otherwise (and for training) ``percent`` is written as is, as upstream
    does. A task env.yaml does not enable is not an error.

    Args:
        cfg: the merged config (``util.get_merged_config()``), or None to read env.yaml.
        task: YmirTask, or ``'training'`` / ``'mining'`` / ``'infer'``.
        percent: fraction 0-1 of this task.
        order: the tasks' order, e.g. ``"tmi"`` (mining first) or ``"tim"`` (infer first).

    Raises:
        MonitorError: a percent that is not a number in [0, 1], or an unknown task name.
    """
    p = _check_percent(percent)
    letter = _task_letter(task)
    ymir = getattr(cfg, "ymir", None) if cfg is not None else None
    ymir = ymir if isinstance(ymir, env.EnvConfig) else env.current_env()
    total = p
    if ymir.run_mining and ymir.run_infer and letter in "mi":
        pair = [c for c in str(order) if c in "mi"]
        first = pair[0] if pair else "m"
        total = 0.5 * p if letter == first else 0.5 + 0.5 * p
    write_monitor_logger(total, state, return_code)


def _task_letter(task: YmirTask | str | int) -> str:
    if isinstance(task, str):
        t = task.lower()
        for name, letter in (("train", "t"), ("min", "m"), ("infer", "i")):
            if t.startswith(name):
                return letter
        raise MonitorError(f"unknown task {task!r}", key="task")
    return _TASK_LETTER[YmirTask(int(task))]


_tb_writers: dict[str, Any] = {}


def _tensorboard_writer() -> Any:
    """One tensorboardX SummaryWriter per log dir for the whole process, flushed after each call
    and closed at exit. (A writer per call loses entries: tensorboardX names event files by the
    second and host, so two writers opened within one second overwrite each other.)"""
    import atexit

    from tensorboardX import SummaryWriter

    log_dir = env.current_env().output.tensorboard_dir
    writer = _tb_writers.get(log_dir)
    if writer is None:
        os.makedirs(log_dir, exist_ok=True)
        writer = SummaryWriter(log_dir=log_dir)
        if not _tb_writers:
            atexit.register(close_tensorboard_writers)
        _tb_writers[log_dir] = writer
    return writer


def close_tensorboard_writers() -> None:
    """Write out and close the tensorboard writers this process opened (also done at exit)."""
    while _tb_writers:
        _tb_writers.popitem()[1].close()


def write_tensorboard_text(text: str, tag: str | None = None) -> None:
    """Add a text entry to the task's tensorboard log (``output.tensorboard_dir``).

    Uses tensorboardX (a dependency of this package), imported on first use.
    """
    writer = _tensorboard_writer()
    writer.add_text(tag=tag or "ymir", text_string=text)
    writer.flush()


def write_tensorboard_scalars(scalars: dict[str, float], step: int) -> None:
    """Add scalars (e.g. ``{"train/loss": 0.3, "val/mAP50": 0.5}``) at ``step`` to the
    tensorboard log."""
    writer = _tensorboard_writer()
    for k, v in scalars.items():
        writer.add_scalar(k, float(v), step)
    writer.flush()


def write_final_executor_log(tag: str | None = None) -> None:
    """Append the executor's log file (``output.executor_log_file``) to the tensorboard log as
    text, so that the platform's TensorBoard shows it. Does nothing if there is no log file."""
    cfg = env.current_env()
    path = cfg.output.executor_log_file
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return
    write_tensorboard_text("```\n" + text[-60000:] + "\n```", tag=tag or "executor_log")


def written_error_code(path: str | None = None) -> int | None:
    """The return code of monitor.txt when its first line says state 4 (error) with a non-zero
    code, else None (no file, another state, unparsable). ``path`` defaults to env.yaml's
    ``output.monitor_file``."""
    try:
        path = path or env.current_env().output.monitor_file
        with open(path, encoding="utf-8") as f:
            st = parse_monitor(f.readline())
        if st.state == ExecutorState.ES_ERROR and st.return_code != 0:
            return st.return_code
    except Exception:
        pass
    return None


def write_error(
    exc: BaseException,
    return_code: int | None = None,
    percent: float | None = None,
    traceback_lines: Sequence[str] | None = None,
    keep_written_code: bool = True,
) -> None:
    """Write state 4 with a return code and the error message (plus traceback lines).

    ``return_code`` defaults to ``exc.return_code`` for :mod:`ymir_exc.errors` classes, else
    the generic container error 160004; ``percent`` defaults to the last reported progress.
    With ``keep_written_code`` (default), an error code the executor already wrote to
    monitor.txt (state 4, e.g. ``write_monitor_logger(p, ES_ERROR, RC_EXEC_DATASET_ERROR)``
    before raising) is kept instead of ``return_code``.
    """
    if return_code is None:
        return_code = getattr(exc, "return_code", ExecutorReturnCode.RC_CMD_CONTAINER_ERROR)
    try:
        cfg = env.current_env()
        last = _last_percent.get(cfg.output.monitor_file, 0.0)
    except Exception:
        cfg, last = None, 0.0
    if keep_written_code and cfg is not None:
        written = written_error_code(cfg.output.monitor_file)
        if written is not None:
            return_code = written
    msg = f"{type(exc).__name__}: {exc}"
    if traceback_lines:
        msg += "\n" + "".join(traceback_lines).rstrip("\n")
    p = last if percent is None else percent
    if cfg is None:
        # env.yaml is unreadable: fall back to the contract's default location
        path, task_id = _fallback_monitor_target()
        atomic_write(
            path,
            format_monitor_line(task_id, time.time(), p, ExecutorState.ES_ERROR, return_code) + "\n" + msg + "\n",
            fsync=False,
        )
        return
    write_monitor_logger(p, ExecutorState.ES_ERROR, return_code, msg=msg)


def _fallback_monitor_target() -> tuple[str, str]:
    """Where to report when env.yaml does not validate: its ``output.monitor_file`` if the YAML
    at least parses, else ``$YMIR_EXC_MONITOR_FILE`` (set by the harness's local runtime), else
    ``/out/monitor.txt`` when /out exists, else ``./monitor.txt``."""
    from ymir_exc import settings

    task_id = "default-task"
    try:
        import yaml

        with open(settings.DEFAULT_ENV_FILE_PATH, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
        if isinstance(raw, dict):
            task_id = str(raw.get("task_id") or task_id)
            path = (raw.get("output") or {}).get("monitor_file")
            if isinstance(path, str) and path and os.path.isdir(os.path.dirname(path) or "."):
                return path, task_id
    except Exception:
        pass
    # the harness's local runtime names the work dir's monitor.txt (there is no /out)
    hinted = os.environ.get("YMIR_EXC_MONITOR_FILE")
    if hinted and os.path.isdir(os.path.dirname(hinted) or "."):
        return hinted, task_id
    default = env.EnvOutputConfig().monitor_file
    if os.path.isdir(os.path.dirname(default)) and os.access(os.path.dirname(default), os.W_OK):
        return default, task_id
    return "monitor.txt", task_id
