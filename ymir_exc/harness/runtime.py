"""Run an executor for a prepared work dir and follow its progress.

Runtime ``local``: an executor folder (``img-man/`` + ``app/start.py``, ``app/start.sh``,
``start.py`` or ``start.sh``: :data:`ENTRY_POINTS`) run as a child process of this Python, with
``DEFAULT_ENV_FILE_PATH`` / ``DEFAULT_CONFIG_FILE_PATH`` pointing at ``W/in``. stdout and stderr are appended to
``W/out/ymir-executor-out.log`` as the platform does; a progress bar follows
``W/out/monitor.txt``. ``--timeout`` and Ctrl-C stop the child (SIGTERM, then SIGKILL after 10 s)
and write state 4 to monitor.txt if the executor did not.

Process hygiene (local runtime): the executor runs in its own session / process group; the whole
group is stopped on timeout or Ctrl-C (a second Ctrl-C sends SIGKILL at once instead of waiting
for the grace period), and is killed after the executor exits, so children it leaves behind in
that group do not outlive the task (one that leaves the group, with ``setsid`` or a double fork,
escapes this). On Linux the executor also gets ``PR_SET_PDEATHSIG`` = SIGKILL, so a
harness killed with SIGKILL does not leave it running; any group still alive when the harness's
Python exits is killed by an ``atexit`` hook. An executor that dies without writing state 4 (a
crash, a segfault, a timeout) gets state 4 written by the harness. monitor.txt is read and
rewritten without following a link the executor may have put in its place.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ymir_exc.code import ExecutorReturnCode, ExecutorState
from ymir_exc.formats.monitor import MonitorState, format_monitor_line, parse_monitor
from ymir_exc.harness.options import RunOptions
from ymir_exc.harness.output import write_line

POLL_SECONDS = 0.2
KILL_GRACE_SECONDS = 10.0


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, ``kill``, a CI runner) turned into the Ctrl-C path: the ``ymir-exc``
    command installs a handler that raises it, so the executor's process group is stopped, state 4
    written and temp dirs removed as for Ctrl-C (exit status 143 instead of 130)."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signum


MONITOR_MAX_BYTES = 1 << 20


def read_text_nofollow(path: Path, limit: int = MONITOR_MAX_BYTES) -> str:
    """The first ``limit`` bytes of a regular file as UTF-8, never through a symbolic link.

    Raises:
        OSError: missing, a link (``ELOOP``), not a regular file, unreadable.
        UnicodeDecodeError: not UTF-8.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        import stat

        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}: not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit)
    finally:
        os.close(fd)
    return data.decode("utf-8")


def replace_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and a rename: a link in its place is
    replaced, never followed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def read_monitor(path: Path) -> MonitorState | None:
    """monitor.txt parsed, or None when it is missing, a link or unparsable (see :func:`parse_monitor`)."""
    try:
        return parse_monitor(read_text_nofollow(Path(path)))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


@dataclass
class RunResult:
    """How a run ended."""

    exit_code: int
    seconds: float
    monitor: MonitorState | None
    log_path: Path
    timed_out: bool = False
    interrupted: bool = False
    percents: list[float] = field(default_factory=list)
    monitor_errors: list[str] = field(default_factory=list)
    #: True when the harness wrote monitor.txt's state 4 (the executor failed without writing it)
    error_state_by_harness: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.interrupted

    def log_tail(self, n: int = 30) -> str:
        """The last ``n`` lines of the log (its last 1 MiB at most; never through a link)."""
        try:
            fd = os.open(self.log_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return ""
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - (1 << 20)))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
        return "\n".join(lines[-n:])


#: where an executor folder's entry point is looked for, first found wins: ``app/`` (the layout
#: of an image's ``/app``) before the folder root, a Python script before a bash one
ENTRY_POINTS = ("app/start.py", "app/start.sh", "start.py", "start.sh")


def find_entry_point(executor_dir: Path) -> list[str]:
    """The command that starts an executor folder: the first of :data:`ENTRY_POINTS` that
    exists (``app/start.py``, ``app/start.sh``, ``start.py``, ``start.sh``), a ``.py`` run by
    this Python, a ``.sh`` by ``bash``.

    Raises:
        FileNotFoundError: none of them exists (one line naming the folder and the four paths).
    """
    d = Path(executor_dir)
    for rel in ENTRY_POINTS:
        if (d / rel).is_file():
            return [sys.executable if rel.endswith(".py") else "bash", str((d / rel).resolve())]
    raise FileNotFoundError(f"{d}: no {', '.join(ENTRY_POINTS[:-1])} or {ENTRY_POINTS[-1]} to run")


class _Display:
    """A rich progress bar on a terminal; a line per 10 % step otherwise."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.enabled = enabled
        self.label = label
        self.last_step = -1
        self.progress = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            # on stderr: stdout stays for results (and the one JSON document of --json)
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                transient=False,
                console=Console(stderr=True),
            )
            self.progress.start()
            self.task = self.progress.add_task(label, total=1.0)
        self.t0 = time.monotonic()

    def update(self, percent: float) -> None:
        if not self.enabled:
            return
        if self.progress is not None:
            self.progress.update(self.task, completed=percent)
            return
        step = int(percent * 10 + 1e-9)
        if step > self.last_step:
            self.last_step = step
            el = time.monotonic() - self.t0
            eta = f", eta {el / percent - el:.0f}s" if 0 < percent < 1 else ""
            write_line(f"{self.label}: {percent * 100:5.1f}% ({el:.1f}s{eta})", sys.stderr)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


#: process groups of executors still running; killed when this Python exits
_LIVE_GROUPS: set[int] = set()


@atexit.register
def _kill_live_groups() -> None:
    for pgid in list(_LIVE_GROUPS):
        _kill_group(pgid, signal.SIGKILL)


def _kill_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False when no process is left in it."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to SIGKILL the child when this process dies
    (``prctl(PR_SET_PDEATHSIG)``); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        if os.getppid() != parent:  # the harness died before prctl took effect
            os._exit(137)

    return preexec


class _Stopper:
    """Stops a run: ``terminate()`` (SIGTERM or ``engine stop``), waits up to the grace period,
    then ``kill()``. A Ctrl-C during the wait calls ``kill()`` at once instead of raising; so does
    a SIGTERM when a Python handler is installed for it (the ``ymir-exc`` command's)."""

    def __init__(
        self,
        proc: subprocess.Popen[Any],
        terminate: Callable[[], None],
        kill: Callable[[], None],
        grace: float = KILL_GRACE_SECONDS,
    ) -> None:
        self.proc, self.terminate, self.kill, self.grace = proc, terminate, kill, grace

    def __call__(self) -> None:
        hurried: list[int] = []

        def hurry(signum: int, frame: object) -> None:
            if not hurried:
                hurried.append(True)
                write_line("ymir-exc: second interruption: killing the executor now", sys.stderr)
            self.kill()

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                if sig == signal.SIGTERM and not callable(signal.getsignal(sig)):
                    continue  # SIGTERM's default action stays (the CLI installs a handler; a library user may not)
                previous[sig] = signal.signal(sig, hurry)
            except ValueError:  # not the main thread: no handler, plain wait
                break
        try:
            self.terminate()
            try:
                self.proc.wait(self.grace)
            except subprocess.TimeoutExpired:
                self.kill()
                self.proc.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _stop(proc: subprocess.Popen[Any], kill_group: bool = True) -> None:
    def send(sig: int) -> None:
        if kill_group:
            _kill_group(proc.pid, sig)
        else:
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass

    _Stopper(proc, lambda: send(signal.SIGTERM), lambda: send(signal.SIGKILL))()


class _MonitorWatch:
    """Reads monitor.txt while an executor runs: every distinct percent (for the monotonicity
    check), the parse errors of the final read, and the progress display.

    A read while the executor runs may catch the file mid-write (``printf ... > monitor.txt``
    truncates, then writes): an empty or unparsable text then is skipped and read again at the
    next poll. Only the read after the executor exited (``final``) records a parse error."""

    def __init__(self, path: Path, label: str, show: bool) -> None:
        self.path = path
        self.display = _Display(label, show)
        self.percents: list[float] = []
        self.errors: list[str] = []
        self.last_raw: str | None = None

    def poll(self, final: bool = False) -> None:
        """Read monitor.txt once; a missing, unreadable or unchanged file is skipped, and so is
        an unparsable one unless ``final`` (the executor has exited: its parse error is kept)."""
        try:
            text = read_text_nofollow(self.path)
        except (OSError, UnicodeDecodeError):
            return
        if text == self.last_raw and not final:
            return
        self.last_raw = text
        try:
            st = parse_monitor(text)
        except ValueError as e:
            if final:
                self.errors.append(str(e))
            return
        if not self.percents or st.percent != self.percents[-1]:
            self.percents.append(st.percent)
        self.display.update(st.percent)


def _watch_until_exit(
    proc: subprocess.Popen[Any], watch: _MonitorWatch, timeout: float | None, stop: Callable[[], None], t0: float
) -> tuple[bool, str | None]:
    """Poll ``watch`` until ``proc`` exits; ``stop`` it after ``timeout`` seconds from ``t0`` or on
    Ctrl-C / SIGTERM. Returns (timed out, why it was interrupted or None)."""
    try:
        while proc.poll() is None:
            watch.poll()
            if timeout is not None and time.monotonic() - t0 > timeout:
                stop()
                return True, None
            try:
                proc.wait(POLL_SECONDS)  # returns as soon as the executor ends
            except subprocess.TimeoutExpired:
                pass
    except KeyboardInterrupt as e:
        signame = signal.Signals(e.signum).name if isinstance(e, Terminated) else None
        write_line(f"\ninterrupted ({signame or 'Ctrl-C'}): stopping the executor ...", sys.stderr)
        stop()
        return False, f"stopped by {signame}" if signame else CTRL_C
    finally:
        watch.poll(final=True)
        watch.display.close()
    return False, None


#: why a run stopped, as written to monitor.txt, after Ctrl-C
CTRL_C = "interrupted by the user (Ctrl-C)"


def _write_error_state(monitor_path: Path, mon: MonitorState | None, task_id: str, why: str) -> MonitorState | None:
    """Rewrite monitor.txt in state 4 (keeping its task id and percent) with ``why`` on the next
    line; returns it read back (None when it cannot be written)."""
    line = format_monitor_line(
        mon.task_id if mon else task_id,
        time.time(),
        mon.percent if mon else 0.0,
        ExecutorState.ES_ERROR,
        ExecutorReturnCode.RC_CMD_CONTAINER_ERROR,
    )
    try:
        replace_text(monitor_path, f"{line}\nymir-exc: executor {why}\n")
    except OSError:
        pass
    return read_monitor(monitor_path)


def follow(
    proc: subprocess.Popen[Any],
    monitor_path: Path,
    log_path: Path,
    *,
    label: str,
    timeout: float | None,
    show: bool = True,
    stop: Callable[[], None] | None = None,
    task_id: str = "",
) -> RunResult:
    """Poll monitor.txt while ``proc`` runs; enforce ``timeout`` (seconds); handle Ctrl-C.

    A run that failed (timed out, interrupted, non-zero exit) without writing state 4 gets
    state 4 written, with the reason on monitor.txt's second line.

    Returns:
        RunResult with every distinct percent seen (for monotonicity checks).
    """
    stop_run = stop or (lambda: _stop(proc))
    t0 = time.monotonic()
    watch = _MonitorWatch(monitor_path, label, show)
    timed_out, why_interrupted = _watch_until_exit(proc, watch, timeout, stop_run, t0)
    try:
        code = proc.wait()
    except KeyboardInterrupt:  # a Ctrl-C after the stop: it only hurries the end
        why_interrupted = why_interrupted or CTRL_C
        stop_run()
        code = proc.wait()
    interrupted = why_interrupted is not None
    seconds = time.monotonic() - t0
    mon = read_monitor(monitor_path)
    by_harness = False
    if (timed_out or interrupted or code != 0) and (mon is None or mon.state != ExecutorState.ES_ERROR):
        why = (
            f"timed out after {timeout:.0f} s"
            if timed_out
            else why_interrupted
            if why_interrupted
            else _exit_description(code) + (" without writing state 4" if mon else " without writing monitor.txt")
        )
        mon = _write_error_state(monitor_path, mon, task_id, why)
        by_harness = True
    return RunResult(
        code if not (timed_out or interrupted) else (code or 1),
        seconds,
        mon,
        log_path,
        timed_out,
        interrupted,
        watch.percents,
        watch.errors,
        by_harness,
    )


def _exit_description(code: int) -> str:
    """``exited with status 3`` / ``killed by signal 11 (SIGSEGV)``."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "?"
        return f"killed by signal {-code} ({name})"
    return f"exited with status {code}"


def run_local(
    executor_dir: Path,
    in_dir: Path,
    out_dir: Path,
    *,
    label: str,
    timeout: float | None = None,
    show: bool = True,
    gpu_ids: str = "",
    task_id: str = "",
) -> RunResult:
    """Run an executor folder as a child process (see the module docstring), with
    ``DEFAULT_ENV_FILE_PATH`` / ``DEFAULT_CONFIG_FILE_PATH`` set to ``in_dir``'s env.yaml and
    config.yaml, ``CUDA_VISIBLE_DEVICES`` to ``gpu_ids``; stopped after ``timeout`` seconds.

    Raises:
        FileNotFoundError: ``executor_dir`` has no entry point (:func:`find_entry_point`).
    """
    argv = find_entry_point(executor_dir)
    env = dict(os.environ)
    env.update(
        {
            "DEFAULT_ENV_FILE_PATH": str(Path(in_dir) / "env.yaml"),
            "DEFAULT_CONFIG_FILE_PATH": str(Path(in_dir) / "config.yaml"),
            "PYTHONUNBUFFERED": "1",
            "CUDA_VISIBLE_DEVICES": gpu_ids,
            "YMIR_EXC_MONITOR_FILE": str(out_dir / "monitor.txt"),
        }
    )
    log_path = out_dir / "ymir-executor-out.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            cwd=str(Path(executor_dir).resolve()),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_pdeathsig_preexec(),
        )
        _LIVE_GROUPS.add(proc.pid)
        try:
            return follow(
                proc, out_dir / "monitor.txt", log_path, label=label, timeout=timeout, show=show, task_id=task_id
            )
        finally:
            # children the executor left behind (same process group) do not outlive the task
            if proc.poll() is None:
                _stop(proc)
            _kill_group(proc.pid, signal.SIGKILL)
            _LIVE_GROUPS.discard(proc.pid)


def shm_size_for(config_shm: str | None, gpu_count: int) -> str:
    """``--shm-size``: config.yaml's ``shm_size`` if set, else 16G per GPU (16G on CPU)."""
    if config_shm:
        return str(config_shm)
    return f"{16 * max(1, gpu_count)}G"


def container_argv(
    options: RunOptions, image: str, in_dir: Path, out_dir: Path, name: str, *, shm_size: str = "16G"
) -> list[str]:
    """The ``run`` command line the platform builds (docs/contract.md#how-the-platform-runs-an-image)::

        ENGINE run --rm -v W/in:/in:ro -v W/out:/out --user UID:GID [--gpus '"device=3,5"']
               --shm-size=16G --name TASK [--network none] IMAGE

    ENGINE is ``options.runtime``; ``options.user`` defaults to the caller's ``uid:gid``;
    ``--gpus`` follows ``options.gpu_id``, ``--network none`` ``options.network_none``. No command
    follows the image (its CMD runs).
    """
    engine, user, gpu_ids = options.runtime, options.user or f"{os.getuid()}:{os.getgid()}", options.gpu_id
    argv = [
        engine,
        "run",
        "--rm",
        "-v",
        f"{Path(in_dir).resolve()}:/in:ro",
        "-v",
        f"{Path(out_dir).resolve()}:/out",
        "--user",
        user,
    ]
    if gpu_ids:
        argv += ["--gpus", f'"device={gpu_ids}"']
    argv += [f"--shm-size={shm_size}", "--name", name]
    if options.network_none:
        argv += ["--network", "none"]
    argv.append(image)
    return argv


@functools.cache
def _docker_api_is_podman(engine: str, docker_host: str) -> bool:
    """True when ``engine`` is a docker CLI talking to podman's Docker-compatible API
    (``podman system service``). ``docker_host`` ($DOCKER_HOST) is only part of the cache key."""
    if Path(engine).name != "docker":
        return False
    try:
        proc = subprocess.run(
            [engine, "version", "--format", "{{range .Server.Components}}{{.Name}};{{end}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "podman" in proc.stdout.lower()


def run_container(
    argv: list[str], out_dir: Path, *, label: str, timeout: float | None = None, show: bool = True, task_id: str = ""
) -> RunResult:
    """Run a container built by :func:`container_argv`, appending its output to the log.

    On timeout or Ctrl-C the container is stopped by name (``ENGINE stop -t 10``, then
    ``ENGINE kill``). One deviation from ``argv``: podman's Docker-compatible API (4.x) answers
    ``docker run --rm`` with exit status 0 whatever the container returned, so against it the
    container runs without ``--rm``; its exit status is then the real one, and the harness removes
    the container itself afterwards (``docker rm -f NAME``), also after a timeout or Ctrl-C.
    """
    engine = argv[0]
    name = argv[argv.index("--name") + 1]
    log_path = out_dir / "ymir-executor-out.log"
    run_argv = list(argv)
    remove_after = "--rm" in run_argv and _docker_api_is_podman(engine, os.environ.get("DOCKER_HOST", ""))
    if remove_after:
        run_argv.remove("--rm")

    def kill() -> None:
        subprocess.run([engine, "kill", name], capture_output=True)
        proc.kill()

    def engine_stop() -> None:
        subprocess.run([engine, "stop", "-t", str(int(KILL_GRACE_SECONDS)), name], capture_output=True)

    def stop() -> None:
        _Stopper(
            proc,
            engine_stop,
            kill,
            KILL_GRACE_SECONDS + 5,
        )()

    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(run_argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            return follow(
                proc,
                out_dir / "monitor.txt",
                log_path,
                label=label,
                timeout=timeout,
                show=show,
                stop=stop,
                task_id=task_id,
            )
    finally:
        if remove_after:
            subprocess.run([engine, "rm", "-f", name], capture_output=True)
