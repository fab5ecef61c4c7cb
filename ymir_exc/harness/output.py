"""Lines for the user that survive a closed pipe.

``ymir-exc run ... | head -1`` closes stdout while the executor still has work to do. A write to
it then raises ``BrokenPipeError``; the harness must not stop there (the task's results,
``mining.tsv``, ``ymir-exc-run.json``, the model store, must still be written, and the exit status
must say how the work went). :func:`write_line` catches the error, points that stream's file
descriptor at ``/dev/null`` (so later writes, and the interpreter's flush at exit, succeed
silently) and carries on.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import IO, TypeVar

T = TypeVar("T")


def silence(stream: IO[str]) -> None:
    """Point ``stream``'s file descriptor at ``/dev/null`` and drop what its buffer holds (a
    stream without a file descriptor, e.g. pytest's capture, is left alone)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    try:
        stream.flush()  # what was buffered for the closed pipe now goes to /dev/null
    except (OSError, ValueError):
        pass


def write_line(msg: str = "", stream: IO[str] | None = None) -> None:
    """``print(msg)`` on ``stream`` (default ``sys.stdout``), flushed; a closed pipe switches
    the stream to ``/dev/null`` (:func:`silence`) instead of raising."""
    stream = stream if stream is not None else sys.stdout
    try:
        print(msg, file=stream, flush=True)
    except BrokenPipeError:
        silence(stream)


def pipe_safe(stream: IO[str], write: Callable[[], T]) -> T | None:
    """Call ``write()`` (something that writes to ``stream``, e.g. a rich ``Console.print``);
    a closed pipe silences ``stream`` (:func:`silence`) and returns None instead of raising."""
    try:
        return write()
    except BrokenPipeError:
        silence(stream)
        return None


__all__ = ["silence", "write_line", "pipe_safe"]
