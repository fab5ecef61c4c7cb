"""Streaming result writers: infer-result.json and result.tsv in bounded memory.

:func:`ymir_exc.result_writer.write_infer_result` and
:func:`~ymir_exc.result_writer.write_mining_result` take the whole result at once. For a million
candidates, or results produced by several processes, write them piece by piece instead::

    from ymir_exc.streaming import InferResultWriter, MiningResultWriter, merge_mining_parts

    with InferResultWriter() as w:              # infer-result.json
        for path in paths:
            w.add(path, annotations_of(path))   # [rw.Annotation, ...] or dicts

    with MiningResultWriter() as w:             # result.tsv
        for path in paths:
            w.add(path, score_of(path))

    # or: each process writes a sorted part, one process merges them (k-way, heapq.merge)
    write_mining_part("part-0.tsv", [(index, path, score), ...])
    merge_mining_parts(["part-0.tsv", "part-1.tsv"])

Both give the same bytes as the one-shot writers for the same input (same validation, same
errors, same warning for dropped degenerate boxes) and replace the target atomically when the
``with`` block ends without an exception; on an exception the target is left untouched.

Memory: the infer writer keeps a write buffer (``buffer_bytes``) and a 16-byte digest per image
(duplicate basenames); the mining writer keeps ``run_items`` pairs, spilling each sorted run to a
temp file beside result.tsv, plus a 16-byte digest per path (duplicate paths). The digests live
in a sorted numpy array (:class:`ymir_exc._digests.SeenNames`): measured peak, about 37 bytes
per image or path at 2M and 35 at 4M (41 MiB of numpy and Python aside). A name repeated from
long before is reported by a later ``add`` or when the ``with`` block ends (the target is
untouched either way). Formats: docs/contract.md.
"""

from __future__ import annotations

import heapq
import math
import numbers
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from typing import Any

from ymir_exc import env
from ymir_exc._digests import SeenNames
from ymir_exc._io import atomic_file
from ymir_exc.errors import NotSupportedError, ResultError

__all__ = ["InferResultWriter", "MiningResultWriter", "write_mining_part", "merge_mining_parts", "read_mining_part"]


# ------------------------------------------------------------------ inference


class InferResultWriter:
    """Write infer-result.json (detection) one image at a time.

    Args:
        algorithm: ``"detection"`` (the only per-image format; segmentation results are one
            COCO document: use :func:`~ymir_exc.result_writer.write_infer_result`).
        path: target file; default env.yaml's ``infer_result_file``.
        buffer_bytes: text kept before each write to the temp file (default 1 MiB).
        protocol_version: the result format's protocol (``"1.0.0"``: boxes under ``"boxes"``;
            ``"0.x"``: under ``"annotations"``); default env.yaml's ``protocol_version``.
        class_names: the class names boxes may carry; default config.yaml's ``class_names``
            when it can be read and sets them (else any name is accepted).

    env.yaml is read only when ``path`` or ``protocol_version`` is not given.

    Raises:
        NotSupportedError: another ``algorithm``.
        EnvFileError: env.yaml is missing or bad while ``path`` or ``protocol_version`` is not
            given.
        ValueError: a ``protocol_version`` that is not ``MAJOR.MINOR.PATCH`` of a supported major.
        ResultError: from :meth:`add` (the target is untouched: nothing is replaced).
        OSError: the output folder cannot be written (names the target).
    """

    def __init__(
        self,
        algorithm: str = "detection",
        path: str | None = None,
        buffer_bytes: int = 1 << 20,
        *,
        protocol_version: str | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if algorithm != "detection":
            raise NotSupportedError(
                f"InferResultWriter writes detection results, not {algorithm!r}: write "
                "segmentation results with write_infer_result",
                key="algorithm",
            )
        from ymir_exc.result_writer import _class_names_or_none, _DetectionEncoder

        if path and protocol_version is not None:
            protocol = env.parse_protocol_version(protocol_version)
        else:
            env_config = env.current_env()
            path = path or env_config.output.infer_result_file
            protocol = env_config.protocol_tuple
        self.path = path
        names = list(class_names) if class_names is not None else _class_names_or_none()
        self._enc = _DetectionEncoder(protocol, names or None, digests_only=True)
        self._algorithm = algorithm
        self._limit = max(1, int(buffer_bytes))
        self._buf: list[str] = []
        self._size = 0
        self._count = 0
        self._stack: ExitStack | None = None
        self._write: Callable[[str | bytes], None] | None = None

    def __enter__(self) -> InferResultWriter:
        self._stack = ExitStack()
        self._write = self._stack.enter_context(atomic_file(self.path))
        self._buf = [self._enc.head(self._algorithm)]
        return self

    def add(self, asset_path: str, annotations: Sequence[Any]) -> None:
        """One image's boxes (``[]`` for none): :class:`~ymir_exc.result_writer.Annotation` or
        dicts of its fields. Boxes with ``w`` or ``h`` <= 0 are dropped (counted in a warning).

        Raises:
            ResultError: no basename, a basename given before, a bad annotation, a class name not
                in config.yaml's class_names.
            RuntimeError: called outside the ``with`` block.
        """
        if self._write is None:
            raise RuntimeError("InferResultWriter.add outside its with block")
        text = self._enc.entry(asset_path, annotations)
        if self._count:
            text = "," + text
        self._count += 1
        self._buf.append(text)
        self._size += len(text)
        if self._size >= self._limit:
            self._flush()

    @property
    def count(self) -> int:
        """Images added so far."""
        return self._count

    def _flush(self) -> None:
        assert self._write is not None
        self._write("".join(self._buf))
        self._buf, self._size = [], 0

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._stack is not None
        try:
            if exc_type is None:
                self._enc.finish()
                self._buf.append("}}")
                self._flush()
                self._enc.warn_degenerate("InferResultWriter")
        except BaseException:
            self._write = None
            if not self._stack.__exit__(*sys.exc_info()):  # removes the temp file
                raise
            return
        self._write = None
        self._stack.__exit__(exc_type, exc, tb)


# ------------------------------------------------------------------ mining


def _check_pair(path: Any, score: Any, where: str) -> float:
    """The score as a float; ResultError for what write_mining_result refuses."""
    if type(score) is float:
        f = score
    elif isinstance(score, bool) or not isinstance(score, numbers.Real):
        raise ResultError(f"score of {path!r} is not a number: {score!r}", key=where)
    else:
        f = float(score)
    if not -math.inf < f < math.inf:
        raise ResultError(f"score of {path!r} is not finite: {score!r}", key=where)
    if type(path) is not str or not path or "\t" in path or "\n" in path or "\r" in path:
        if not isinstance(path, str) or not path or "\t" in path or "\n" in path or "\r" in path:
            raise ResultError(f"asset path {path!r} is empty or holds a tab / newline", key=where)
    return f


def read_mining_part(part: str) -> Iterator[tuple[float, int, str]]:
    """The ``(score, index, path)`` rows of a part file, in file order.

    Raises:
        ResultError: a line that is not ``<score>\\t<index>\\t<path>``, or whose score is not
            finite (NaN, inf) (names file and line).
    """
    with open(part, encoding="utf-8", newline="\n") as f:
        for n, line in enumerate(f, 1):
            try:
                s, i, p = line[:-1].split("\t", 2)
                score, index = float(s), int(i)
            except ValueError:
                raise ResultError(
                    f"not a mining part line (<score>\\t<index>\\t<path>): {line[:80]!r}", path=part, line=n
                ) from None
            if not -math.inf < score < math.inf:
                raise ResultError(f"score is not finite: {s!r}", path=part, line=n)
            yield score, index, p


def write_mining_part(part: str, rows: Iterable[tuple[int, str, float]]) -> int:
    """Write a sorted part file: ``<score repr>\\t<index>\\t<path>`` lines ordered by score
    descending, then index ascending (so merged parts keep the one-shot writer's stable order).

    Args:
        part: the file (written atomically).
        rows: ``(index, path, score)``: ``index`` is the candidate's position in the whole
            candidate list (0-based), unique across all parts; held in memory while sorting.

    Returns:
        How many rows were written.

    Raises:
        ResultError: a bad path or score (as :func:`~ymir_exc.result_writer.write_mining_result`),
            an index given twice.
    """
    items = [(-_check_pair(p, s, f"mining_result[{i}]"), int(i), p) for i, p, s in rows]
    indexes: set[int] = set()
    for _, i, p in items:
        if i in indexes:
            raise ResultError(f"index {i} is given twice (the second: {p!r})", path=part, key=f"mining_result[{i}]")
        indexes.add(i)
    return _write_sorted(part, items)


def _write_sorted(part: str, items: list[tuple[float, int, str]]) -> int:
    """Sort ``(-score, index, path)`` items and write them as a part file."""
    items.sort()
    with atomic_file(part, fsync=False) as write:
        for start in range(0, len(items), 4096):
            write("".join([f"{-ns!r}\t{i}\t{p}\n" for ns, i, p in items[start : start + 4096]]))
    return len(items)


def merge_mining_parts(parts: Sequence[str], path: str | None = None, expected: int | None = None) -> int:
    """Merge sorted part files (:func:`write_mining_part`) into result.tsv, k-way
    (``heapq.merge``): memory is one line per part plus a 16-byte digest per path (about
    37 bytes per path in all: :class:`ymir_exc._digests.SeenNames`).

    Args:
        parts: the part files.
        path: target; default env.yaml's ``mining_result_file``.
        expected: when given, the number of rows the parts must hold together.

    Returns:
        Rows written.

    Raises:
        ResultError: a duplicate path, a part that is not sorted, a malformed line, a row count
            other than ``expected``. The target is untouched then.
    """
    target = path or env.current_env().output.mining_result_file
    seen = SeenNames()
    n = 0
    last: tuple[float, int] | None = None
    streams = [((-s, i, p) for s, i, p in read_mining_part(part)) for part in parts]
    with atomic_file(target) as write:
        buf: list[str] = []
        for ns, i, p in heapq.merge(*streams):
            if last is not None and (ns, i) < last:
                raise ResultError(
                    "part files are not sorted by score descending, index ascending", path=", ".join(parts)
                )
            last = (ns, i)
            repeated = seen.add(p, p)
            if repeated is not None:
                _repeated_path(repeated)
            buf.append(f"{p}\t{-ns!r}\n")
            n += 1
            if len(buf) >= 4096:
                write("".join(buf))
                buf.clear()
        repeated = seen.finish()
        if repeated is not None:
            _repeated_path(repeated)
        if expected is not None and n != expected:
            raise ResultError(f"the mining parts hold {n} row(s), expected {expected}", key="mining_result")
        write("".join(buf))
    return n


def _repeated_path(path: str) -> None:
    raise ResultError(f"asset path {path!r} appears more than once", key="mining_result")


class MiningResultWriter:
    """Write result.tsv from ``(path, score)`` pairs given one at a time, in bounded memory:
    runs of ``run_items`` pairs are sorted and spilled to temp part files beside the target,
    and merged k-way when the ``with`` block ends. Same bytes as
    :func:`~ymir_exc.result_writer.write_mining_result` for the same pairs in the same order.

    Args:
        path: target; default env.yaml's ``mining_result_file``.
        run_items: pairs held in memory before a run is spilled (default 200,000).

    Raises:
        ResultError: from :meth:`add` (bad path or score) or at the end (a duplicate path);
            the target is untouched then.
    """

    def __init__(self, path: str | None = None, run_items: int = 200_000) -> None:
        self.path = path or env.current_env().output.mining_result_file
        self._run_items = max(1, int(run_items))
        self._rows: list[tuple[float, int, str]] = []  # (-score, index, path), validated
        self._parts: list[str] = []
        self._count = 0
        self._open = False

    def __enter__(self) -> MiningResultWriter:
        self._open = True
        return self

    def add(self, asset_path: str, score: float) -> None:
        """One candidate's score (a finite number; numpy ok).

        Raises:
            ResultError: an empty path or one holding a tab / newline, a score that is not a
                finite number.
        """
        if not self._open:
            raise RuntimeError("MiningResultWriter.add outside its with block")
        f = _check_pair(asset_path, score, f"mining_result[{self._count}]")
        self._rows.append((-f, self._count, asset_path))
        self._count += 1
        if len(self._rows) >= self._run_items:
            self._spill()

    def add_all(self, pairs: Iterable[tuple[str, float]]) -> None:
        """:meth:`add` for each ``(path, score)``."""
        for p, s in pairs:
            self.add(p, s)

    def _spill(self) -> None:
        folder, base = os.path.split(self.path)
        part = os.path.join(folder or ".", f".{base}.{os.getpid()}.run{len(self._parts)}.part")
        self._parts.append(part)
        _write_sorted(part, self._rows)
        self._rows = []

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._open = False
        try:
            if exc_type is None:
                if self._rows or not self._parts:
                    self._spill()
                merge_mining_parts(self._parts, self.path)
        finally:
            for part in self._parts:
                try:
                    os.unlink(part)
                except OSError:
                    pass
            self._rows, self._parts = [], []
