"""Atomic file writes: a temp file in the target's folder, then ``os.replace``.

A reader (the platform polling monitor.txt) never sees half a file, and a crash mid-write leaves
the previous version intact. Internal module.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Callable, Iterator, Union


def atomic_write(path: Union[str, os.PathLike], data: Union[str, bytes], *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically, creating the parent folder if needed.

    Args:
        path: target file.
        data: text (written as UTF-8) or bytes.
        fsync: flush to disk before the rename (result files); monitor.txt skips it for speed.

    Raises:
        OSError: the folder cannot be created or written; the target is left as it was.
    """
    with atomic_file(path, fsync=fsync) as write:
        write(data)


@contextlib.contextmanager
def atomic_file(path: Union[str, os.PathLike], *, fsync: bool = True) -> Iterator[Callable[[Union[str, bytes]], None]]:
    """Like :func:`atomic_write`, for data produced in pieces: yields ``write(str | bytes)``;
    the file replaces ``path`` when the block ends without an exception (else it is removed).

    Raises:
        OSError: the folder cannot be created or written; the target is left as it was.
    """
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    # one temp name per process and thread: concurrent writers never share a temp file
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            def write(data: Union[str, bytes]) -> None:
                if isinstance(data, str):
                    data = data.encode("utf-8")
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]

            yield write
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
