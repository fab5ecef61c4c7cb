"""The SDK's speed paths, each beside the plain reference implementation it must equal.
Internal module.

Kept because bench/ shows they matter to a user-visible workload (bench/README.md): a
training / validation index of a million lines, a mining result of a million candidates, an
infer result of a million boxes. tests/sdk/test_fast_paths.py runs every fast path against its
reference on random valid and broken inputs (same output, same error).

- :func:`item_path_blocks` (reference :func:`item_path_lines`): index files read a block of
  lines at a time;
- :func:`split_pairs`, :func:`all_numbers`, :func:`may_repeat`, :func:`descending_order`,
  :func:`write_mining_lines` (reference :func:`mining_text_plain`): result.tsv's checks, ranking
  and text with numpy and ``str.join``;
- :func:`box_json_fn` (reference :func:`box_json_plain`, and :func:`infer_text_plain` for the
  whole file): infer-result.json's boxes as f-strings, not a dict per box through ``json.dumps``.

numpy is imported by the functions that use it (an executor that writes no mining result does
not load it).
"""

from __future__ import annotations

import codecs
import itertools
import json
import math
import numbers
import os
from collections.abc import Callable, Generator, Iterable, Iterator
from operator import itemgetter
from typing import IO, Any

from ymir_exc.errors import IndexFileError, ResultError

# ------------------------------------------------------------------ index files


#: bytes read per block: a multiple of the text layer's 8192-byte chunks, so that a decoding
#: error is met at the same line as by line-by-line reading (see item_path_lines)
_BLOCK_SIZE = 8 * 8192
#: ``bytes.translate`` with this deletes every byte but 0..32: what is left of a block is its tab
#: and newline structure, plus any space / control character (those blocks take the slow path)
_NOT_STRUCTURE = bytes(range(33, 256))
_PAIRS = b"\t\n" * (_BLOCK_SIZE // 2 + 1)
_LINES = b"\n" * (_BLOCK_SIZE + 1)


def item_path_blocks(
    path: str, need_annotation: bool, live: list[Any]
) -> Generator[Iterable[tuple[str, str]], None, None]:
    """Blocks of ``(asset, annotation)`` pairs, whole lines at a time, for :func:`ymir_exc.dataset_reader.item_paths`.

    Fast path: a block of plain lines (training: exactly one tab per line, both columns
    non-empty; candidate: no tab, non-empty) is split in two C calls. Anything else (blank line,
    missing column, extra column, space, CR, control character, bad UTF-8, whitespace-only path)
    hands the rest of the file to :func:`item_path_lines`, the line-by-line reader, which yields
    the same pairs and raises the same errors at the same line. ``live[0]`` is the block being
    iterated (for ``close()``).
    """
    done = 0  # lines yielded so far
    with _open_index(path, "rb") as f:
        for block in _line_blocks(f):
            if block is None:
                break
            fields, seps, is_ascii = block
            pairs = _block_pairs(fields, seps, is_ascii, need_annotation)
            if pairs is None:
                break
            live[0] = fields
            done += pairs[1]
            yield pairs[0]
        else:
            return
    live[0] = item_path_lines(path, need_annotation, skip=done)
    yield live[0]


def _open_index(path: str, mode: str) -> IO[Any]:
    """``open(path, mode)`` of an index file (text modes as UTF-8).

    Raises:
        IndexFileError: missing or unreadable.
    """
    try:
        return open(path, mode, encoding=None if "b" in mode else "utf-8")
    except FileNotFoundError:
        raise IndexFileError("index file not found", path=path) from None
    except OSError as e:
        raise IndexFileError(f"cannot read index file: {e.strerror}", path=path) from None


def _line_blocks(f: IO[bytes]) -> Iterator[tuple[list[str], bytes, bool] | None]:
    """The complete lines of each :data:`_BLOCK_SIZE` block of ``f``: ``(fields, seps,
    is_ascii)`` with ``fields`` the lines split at tabs and newlines, ``seps`` the block's tab
    and newline bytes (plus any other byte below 33) in order, ``is_ascii`` whether those lines
    are ASCII. The partial line after a block's last newline is carried into the next block.
    Yields ``None`` (and stops) at bytes that are not UTF-8; ends after the last line."""
    decode = codecs.getincrementaldecoder("utf-8")().decode
    # the partial line after a block's last newline: its fields (split at tabs) and tab bytes
    carry: list[str] = [""]
    carry_seps = b""
    carry_ascii = True
    read = f.read
    while True:
        block = read(_BLOCK_SIZE)
        final = not block
        try:
            text = decode(block, final)
        except UnicodeDecodeError:
            yield None
            return
        # one split of the whole block at tabs and newlines; the block's bytes reduced to its
        # tabs and newlines tell, for the price of one more pass, whether that split is a
        # clean (asset, annotation) pairing
        fields = text.replace("\t", "\n").split("\n")
        seps = block.translate(None, _NOT_STRUCTURE)
        if carry_seps:
            seps = carry_seps + seps
        if len(carry) > 1 or carry[0]:
            fields[0] = carry[-1] + fields[0]
            if len(carry) > 1:
                fields[0:0] = carry[:-1]
        is_ascii = carry_ascii and text.isascii()
        if final:
            if len(fields) > 1 or fields[0]:  # else the file ended with a newline (or is empty)
                yield fields, seps, is_ascii
            return
        cut = seps.rfind(b"\n")
        if cut < 0:  # no line ends in this block
            carry, carry_seps, carry_ascii = fields, seps, is_ascii
            continue
        carry_seps = seps[cut + 1 :]
        m = len(carry_seps) + 1
        carry = fields[-m:]
        del fields[-m:]
        carry_ascii = text.isascii()
        yield fields, seps[:cut], is_ascii


def _block_pairs(
    fields: list[str], seps: bytes, is_ascii: bool, need_annotation: bool
) -> tuple[Iterable[tuple[str, str]], int] | None:
    """``(the pairs of a block's lines, how many)`` when the block is plain lines (see
    :func:`item_path_blocks`), else None (the line-by-line reader takes over)."""
    k = len(seps)
    if need_annotation or seps != _LINES[:k]:
        if not (k & 1 and seps == _PAIRS[:k]):
            return None
        ok = all(fields) if need_annotation else all(fields[0::2])
        if ok and not is_ascii:
            ok = not any(map(str.isspace, fields[0::2]))
        if not ok:
            return None
        pairs = iter(fields)
        return zip(pairs, pairs, strict=True), len(fields) >> 1
    if not all(fields) or (not is_ascii and any(map(str.isspace, fields))):
        return None
    return zip(fields, itertools.repeat("")), len(fields)


def item_path_lines(path: str, need_annotation: bool, skip: int = 0) -> Iterator[tuple[str, str]]:
    """The line-by-line reader (every check, exact line numbers), from line ``skip + 1`` on."""
    with _open_index(path, "r") as f:
        try:
            for n, line in enumerate(f, 1):
                if n <= skip:
                    continue
                asset, sep, annotation = line.rstrip("\r\n").partition("\t")
                if not asset or asset.isspace():
                    raise IndexFileError("blank line (expected an image path)", path=path, line=n)
                if need_annotation and not annotation:
                    raise IndexFileError("expected '<image path>\\t<annotation path>'", path=path, line=n)
                if "\t" in annotation:
                    annotation = annotation.partition("\t")[0]
                yield asset, annotation
        except UnicodeDecodeError:
            raise IndexFileError("index file is not UTF-8 text", path=path) from None


# ------------------------------------------------------------------ result.tsv


def is_number(v: Any) -> bool:
    """A real number (numpy scalars included, bool excluded), or a 0-d numeric numpy array
    (e.g. ``np.asarray(score)``; upstream wrote its ``str``, which is the number)."""
    if isinstance(v, numbers.Real):
        return not isinstance(v, bool)
    kind = getattr(getattr(v, "dtype", None), "kind", None)
    return getattr(v, "ndim", None) == 0 and kind is not None and kind in "iuf"


def split_pairs(pairs: Iterable[tuple[str, float]]) -> tuple[list[Any], list[Any]]:
    """``([path, ...], [score, ...])`` from ``(path, score)`` pairs, exactly as
    ``for path, score in pairs`` unpacks them (errors included), in C for a list of 2-tuples."""
    if type(pairs) in (list, tuple) and set(map(type, pairs)) <= {tuple, list} and set(map(len, pairs)) <= {2}:
        return list(map(itemgetter(0), pairs)), list(map(itemgetter(1), pairs))
    paths: list[Any] = []
    scores: list[Any] = []
    for path, score in pairs:
        paths.append(path)
        scores.append(score)
    return paths, scores


def all_numbers(values: list[Any]) -> bool:
    """``all(map(is_number, values))``, deciding once per distinct type."""
    return all(issubclass(t, numbers.Real) and not issubclass(t, bool) for t in set(map(type, values))) or all(
        map(is_number, values)
    )


def may_repeat(paths: list[str]) -> bool:
    """False when no two paths can be equal: their hashes all differ (sorting int64 hashes is
    cheaper than a million-entry set); True means "look with a set"."""
    import numpy as np

    if len(paths) < 2:
        return False
    h = np.fromiter(map(hash, paths), dtype=np.int64, count=len(paths))
    h.sort()
    return bool((h[1:] == h[:-1]).any())


def descending_order(scores: Any) -> Any:
    """``np.argsort(-scores, kind="stable")`` of a float64 array: a plain (faster) argsort when
    no two scores tie, since the order is then the same."""
    import numpy as np

    neg = -scores
    order = np.argsort(neg)
    ranked = neg[order]
    if len(ranked) > 1 and (ranked[1:] == ranked[:-1]).any():
        order = np.argsort(neg, kind="stable")
    return order


#: lines per formatted chunk (small enough to stay in the CPU cache)
MINING_CHUNK = 4096


def write_mining_lines(
    write: Callable[[str], None], paths: list[str], take: list[int], sorted_scores: list[float]
) -> None:
    """``write`` the lines ``format_mining_line(paths[i], s)`` for ``i, s`` in
    ``zip(take, sorted_scores)``, a chunk of :data:`MINING_CHUNK` lines at a time, assembled by
    one ``str.join`` (path, tab, ``repr(score)``, newline). ``paths`` are all ``str``."""
    tabs, newlines = ["\t"] * MINING_CHUNK, ["\n"] * MINING_CHUNK
    for start in range(0, len(take), MINING_CHUNK):
        idx = take[start : start + MINING_CHUNK]
        k = len(idx)
        cells: list[Any] = [None] * (4 * k)
        cells[0::4] = [paths[idx[0]]] if k == 1 else itemgetter(*idx)(paths)
        cells[1::4] = tabs[:k]
        cells[2::4] = map(repr, sorted_scores[start : start + MINING_CHUNK])
        cells[3::4] = newlines[:k]
        write("".join(cells))


def mining_text_plain(mining_result: Iterable[tuple[str, float]]) -> str:
    """Reference: what ``write_mining_result`` writes, or the error it raises, one item at a time
    (the checks in the writer's order: every score a number, every score finite, every path
    non-empty without tab / newline, no path twice)."""
    from ymir_exc.formats.results import format_mining_line

    pairs = [(path, score) for path, score in mining_result]
    for i, (path, score) in enumerate(pairs):
        if not is_number(score):
            raise ResultError(f"score of {path!r} is not a number: {score!r}", key=f"mining_result[{i}]")
    for i, (path, score) in enumerate(pairs):
        if not math.isfinite(float(score)):
            raise ResultError(f"score of {path!r} is not finite: {score!r}", key=f"mining_result[{i}]")
    for i, (path, _) in enumerate(pairs):
        if not path or any(c in path for c in "\t\r\n"):
            raise ResultError(f"asset path {path!r} is empty or holds a tab / newline", key=f"mining_result[{i}]")
    seen: set[str] = set()
    for path, _ in pairs:
        if path in seen:
            raise ResultError(f"asset path {path!r} appears more than once", key="mining_result")
        seen.add(path)
    ranked = sorted(pairs, key=lambda pair: -float(pair[1]))  # sorted() is stable
    return "".join(format_mining_line(path, float(score)) for path, score in ranked)


# ------------------------------------------------------------------ infer-result.json


class BadBox(ValueError):
    """A box that breaks :class:`~ymir_exc.formats.results.InferAnnotation` (beyond a
    degenerate one, which is dropped): ``annotation`` is the object, ``reason`` what
    :func:`~ymir_exc.formats.results.infer_box_problem` says."""

    def __init__(self, annotation: Any, reason: str) -> None:
        super().__init__(reason)
        self.annotation = annotation
        self.reason = reason


def box_dict(a: Any) -> dict[str, Any]:
    """An annotation (``class_name``, ``score``, ``box.x/y/w/h`` attributes) as the nested dict
    infer-result.json holds."""
    b = a.box
    return {"class_name": a.class_name, "score": a.score, "box": {"x": b.x, "y": b.y, "w": b.w, "h": b.h}}


def json_text(value: Any) -> str:
    """``json.dumps`` as infer-result.json is written: UTF-8 kept, no spaces."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def box_json_plain(a: Any) -> str:
    """Reference of :func:`box_json_fn`'s function: "" for a degenerate box (w or h <= 0), the
    JSON text of a valid one.

    Raises:
        BadBox: the box breaks the format otherwise (checked without a class list)."""
    from ymir_exc.formats.results import infer_box_problem

    d = box_dict(a)
    why = infer_box_problem(d, None)
    if why == "w or h <= 0":
        return ""
    if why is not None:
        raise BadBox(a, why)
    return json_text(d)


def box_json_fn(encode_str: Callable[[str], str], degenerate: list[int]) -> Callable[[Any], str]:
    """``box_json(annotation)``, the same as :func:`box_json_plain` (degenerate boxes also
    counted in ``degenerate[0]``): a box of plain ``str`` / ``float`` / ``int`` values is written
    by one f-string, anything else goes through the reference. A closure over locals (no
    attribute lookups per box: a million boxes per call); ``encode_str`` is JSON's string
    encoder, cached per class name."""
    names_json: dict[str, str] = {}

    def box_json(a: Any) -> str:
        b = a.box
        name, score, x, y, w, h = a.class_name, a.score, b.x, b.y, b.w, b.h
        if (
            type(score) is float
            and 0.0 <= score <= 1.0
            and type(x) is int
            and type(y) is int
            and type(w) is int
            and type(h) is int
            and type(name) is str
        ):
            if w <= 0 or h <= 0:
                degenerate[0] += 1
                return ""
            n = names_json.get(name)
            if n is None:
                n = names_json[name] = encode_str(name)
            return f'{{"class_name":{n},"score":{score!r},"box":{{"x":{x},"y":{y},"w":{w},"h":{h}}}}}'
        text = box_json_plain(a)
        degenerate[0] += not text
        return text

    return box_json


def infer_text_plain(
    infer_result: Any,
    algorithm: Any,
    box_key: str,
    class_names: list[str] | None,
    validate: Callable[[Any, str], Any],
) -> str:
    """Reference: what ``write_infer_result`` writes for a detection result (or the error it
    raises), one image and one box at a time. ``class_names`` None accepts any name;
    ``validate(given, where)`` is how the writer turns one given annotation (an ``Annotation``,
    or a dict) into an ``Annotation``, raising ``ResultError`` naming ``where`` (the writer's
    ``_validated_annotation``: this module sits below ``result_writer`` and imports nothing from it)."""
    from ymir_exc.formats.results import INFER_ALGORITHMS

    if algorithm not in INFER_ALGORITHMS:  # upstream's assert
        raise ResultError(f"unknown algorithm {algorithm!r}: one of {', '.join(INFER_ALGORITHMS)}", key="algorithm")
    result: dict[str, str] = {}
    origin: dict[str, str] = {}
    for asset_path, given in infer_result.items():
        key = os.path.basename(str(asset_path))
        if not key:
            raise ResultError(f"asset path {asset_path!r} has no basename", key="infer_result")
        if key in origin:
            raise ResultError(
                f"two results share the basename {key!r}: {origin[key]!r} and {asset_path!r}", key="infer_result"
            )
        origin[key] = str(asset_path)
        anns = [validate(a, f"{key}[{i}]") for i, a in enumerate(given)]
        for i, a in enumerate(anns):  # NaN fails the comparison too
            if not 0.0 <= a.score <= 1.0:
                raise ResultError(f"score must be a finite number in [0, 1], got {a.score!r}", key=f"{key}[{i}].score")
        texts = []
        for i, a in enumerate(anns):
            try:
                texts.append(box_json_plain(a))
            except BadBox as e:
                raise bad_box_error(e, f"{key}[{i}]") from None
        for i, a in enumerate(anns):
            if class_names is not None and a.class_name not in class_names:
                raise ResultError(
                    f"class_name {a.class_name!r} not in class_names {class_names}", key=f"{key}[{i}].class_name"
                )
        result[key] = "{" + json_text(box_key) + ":[" + ",".join(t for t in texts if t) + "]}"
    body = ",".join(f"{json_text(k)}:{v}" for k, v in result.items())
    return json_text({algorithm: {}})[:-3] + "{" + body + "}}"


def bad_box_error(e: BadBox, where: str) -> ResultError:
    """The writer's error for a box that breaks the format, naming ``where`` (``"<image>[i]"``)
    and the key at fault."""
    a = e.annotation
    if e.reason == "score not in [0, 1]":
        return ResultError(f"score must be a finite number in [0, 1], got {a.score!r}", key=f"{where}.score")
    if e.reason == "class not in class_names":
        return ResultError(f"class_name must be a string, got {a.class_name!r}", key=f"{where}.class_name")
    return ResultError(f"box {e.reason}: {box_dict(a)['box']!r}", key=f"{where}.box")
