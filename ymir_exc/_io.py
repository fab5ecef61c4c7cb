"""Atomic file writes and copies, and the lock around result.yaml. Internal module.

- :func:`atomic_write` / :func:`atomic_file`: a temp file in the target's folder, then
  ``os.replace``: a reader (the platform polling monitor.txt) never sees half a file, and a crash
  mid-write leaves the previous version intact.
- :func:`atomic_copy`: the same for a copied file (stage weights, attachments): a full disk
  mid-copy leaves no partial file under the target's name.
- :func:`locked`: an exclusive ``fcntl.flock`` on a lock file beside a target, held around a
  read-modify-write (two processes writing stages at once lose none).

Temp files are named ``.<target name>.<pid>.<thread id>.tmp``. A process killed mid-write leaves
one behind; the first write of the same target by a later process removes those whose writer
pid is no longer alive (once per target and process). Write errors name the target, never the
temp file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator

#: targets whose stale temp files this process already looked for
_swept: set[str] = set()
_TMP_RE = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<tid>\d+)\.tmp\Z")


def temp_name(path: str) -> str:
    """The temp file this process and thread use for ``path`` (same folder)."""
    folder, base = os.path.split(path)
    return os.path.join(folder or ".", f".{base}.{os.getpid()}.{threading.get_ident()}.tmp")


def lock_name(path: str) -> str:
    """The lock file of ``path``: ``.<name>.lock`` in the same folder."""
    folder, base = os.path.split(path)
    return os.path.join(folder or ".", f".{base}.lock")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: the process exists (another user's)
        return True
    return True


def sweep_stale_temps(path: str) -> int:
    """Remove temp files of ``path`` left by writers that are no longer alive; once per process
    and target. Returns how many were removed (errors are ignored: this is housekeeping)."""
    path = os.path.abspath(path)
    if path in _swept:
        return 0
    _swept.add(path)
    folder, base = os.path.split(path)
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    prefix = f".{base}."
    for n in names:
        if not n.startswith(prefix) or not n.endswith(".tmp"):
            continue
        m = _TMP_RE.match(n)
        if m is None or m.group("name") != base or _pid_alive(int(m.group("pid"))):
            continue
        try:
            os.unlink(os.path.join(folder, n))
            removed += 1
        except OSError:
            pass
    return removed


def _named_error(e: OSError, path: str, what: str) -> OSError:
    """The same kind of OSError, naming the target ``path`` instead of a temp file."""
    if e.errno is None:
        err = type(e)(f"cannot {what} {path}: {e}")
    else:
        err = type(e)(e.errno, f"cannot {what} {path}: {e.strerror or os.strerror(e.errno)}")
    err.filename = path
    return err


def atomic_write(path: str | os.PathLike[str], data: str | bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically, creating the parent folder if needed.

    Args:
        path: target file.
        data: text (written as UTF-8) or bytes.
        fsync: flush to disk before the rename (result files); monitor.txt skips it for speed.

    Raises:
        OSError: the folder cannot be created or written (read-only, full); the message and
            ``filename`` name ``path``; the target is left as it was.
    """
    with atomic_file(path, fsync=fsync) as write:
        write(data)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Callable[[str | bytes], None]]:
    """Like :func:`atomic_write`, for data produced in pieces: yields ``write(str | bytes)``;
    the file replaces ``path`` when the block ends without an exception (else it is removed).

    Raises:
        OSError: the folder cannot be created or written, naming ``path``; the target is left
            as it was.
    """
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    # one temp name per process and thread: concurrent writers never share a temp file
    tmp = temp_name(path)
    opened = in_block = False
    try:
        os.makedirs(folder, exist_ok=True)
        sweep_stale_temps(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        opened = True
        try:

            def write(data: str | bytes) -> None:
                if isinstance(data, str):
                    data = data.encode("utf-8")
                view = memoryview(data)
                while view:
                    try:
                        view = view[os.write(fd, view) :]
                    except OSError as e:
                        raise _named_error(e, path, "write") from None

            in_block = True
            yield write
            in_block = False
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        if opened:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(e, OSError) and not in_block and e.filename != path:
            raise _named_error(e, path, "write") from None
        raise


def atomic_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy ``src`` to ``dst`` (content and mode / times, as ``shutil.copy2``) through a temp file
    in ``dst``'s folder renamed at the end: ``dst`` is either the old file or the complete copy.

    Raises:
        OSError: ``src`` cannot be read, or ``dst``'s folder cannot be written (the message names
            ``dst``); no partial file is left.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    folder = os.path.dirname(dst) or "."
    tmp = temp_name(dst)
    try:
        os.makedirs(folder, exist_ok=True)
        sweep_stale_temps(dst)
        shutil.copyfile(src, tmp)
        shutil.copystat(src, tmp)
        os.replace(tmp, dst)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.filename != src:
            raise _named_error(e, dst, "copy to") from None
        raise


@contextlib.contextmanager
def locked(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``.<name>.lock`` beside ``path`` for the block.

    Without ``fcntl`` (not POSIX) the block runs unlocked.

    Raises:
        OSError: the lock file cannot be created (names ``path``'s lock file).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - POSIX only
        yield
        return
    lock = lock_name(os.fspath(path))
    os.makedirs(os.path.dirname(lock) or ".", exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
