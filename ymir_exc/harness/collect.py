"""Check what an executor wrote against the contract, then collect it (docs/contract.md#what-an-executor-must-write).

- training: result.yaml validated, every stage file found, then a model package is stored;
- mining: result.tsv parsed line by line (unknown, duplicate, blank lines, unsorted scores
  reported), top-k by score (stable);
- inference (segmentation): the COCO-style result validated, one image per candidate;
- inference (detection): every box validated (integer pixels, class in class_names, score in [0, 1],
  w and h > 0); bad boxes are dropped and counted by reason instead of failing the task (the
  platform fails the whole task on one bad box).

- monitor.txt, on every run: after an exit status 0 it must parse and say state 3 (done), or
  state 2 (running) at percent 1.00 (what upstream executors leave: the platform marks such a
  task done when it exits 0).

Each check returns a report whose ``problems`` say precisely what is wrong; nothing is stored
when a training output is invalid. One function per kind of output file (``check_training``,
``check_mining``, ``check_infer``, ``check_monitor``).

Hostile outputs: nothing under ``/out`` is trusted. Only regular files inside the output tree
are read or packed; a symbolic link anywhere on the way (the file, ``models/``, a stage
folder), a path leaving the tree, a fifo or a device is a named problem, never followed.
result.tsv and infer-result.json are streamed (ijson); what is kept per result line or image is
fixed-size (a 16-byte blake2b digest of the path or key, a score, a file offset), so memory is
bounded by about 200 MB plus 40 bytes per line or image whatever the files hold. Before ijson
builds any prefix, infer-result.json is refused when a string, key or number is longer than
:data:`MAX_JSON_TOKEN_BYTES` or the nesting is deeper than :data:`MAX_JSON_DEPTH` (ijson's costs
grow with the square of both); result.yaml is read with :func:`ymir_exc.env.parse_yaml_text`,
which refuses alias bombs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from ymir_exc import __version__
from ymir_exc.code import ExecutorState
from ymir_exc.env import EnvConfig, parse_env_file, parse_yaml_text
from ymir_exc.errors import ResultError
from ymir_exc.formats.monitor import parse_monitor
from ymir_exc.formats.results import (
    LegacyTrainingResult,
    MiningLineError,
    ModelStage,
    TrainingResult,
    check_coco_result,
    infer_box_problem,
    parse_mining_line,
    primary_metric_key,
)
from ymir_exc.harness.models import (
    LEGACY_STAGE_NAME,
    MAX_STAGE_NAME_BYTES,
    OBJECT_TYPE_METRIC,
    ModelStore,
    build_info,
    stage_entries,
)
from ymir_exc.harness.runtime import read_text_nofollow

#: result.yaml larger than this is a problem, not something to parse
RESULT_YAML_MAX_BYTES = 16 << 20
#: a result.tsv line longer than this is a problem (and is not kept)
MAX_LINE_BYTES = 64 << 10
#: at most this many messages per kind of problem; the rest are counted
MAX_MESSAGES = 5


def output_file_problem(root: str | Path, path: str | Path) -> str | None:
    """Why ``path`` may not be read as an output file under ``root``, or None when it is a
    regular file inside ``root`` reached without any symbolic link.

    Every component below ``root`` is checked with ``lstat`` (never followed); ``root`` itself
    is the harness's own ``W/out``. A message ending in ``: missing`` means nothing is there.
    """
    root = os.path.abspath(root)
    if os.path.islink(root):
        return f"{root}: the output folder itself is a symbolic link (refused)"
    full = os.path.abspath(path)
    rel = os.path.relpath(full, root)
    if rel in (".", "..") or rel.startswith(".." + os.sep) or os.path.isabs(rel):
        return f"{path}: outside the output folder {root} (refused)"
    cur = root
    parts = rel.split(os.sep)
    for i, part in enumerate(parts):
        cur = os.path.join(cur, part)
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return f"{cur}: missing"
        except OSError as e:
            return f"{cur}: {e.strerror}"
        if stat.S_ISLNK(st.st_mode):
            return f"{cur}: a symbolic link (refused: the harness never follows links in outputs)"
        if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            return f"{cur}: not a folder"
        if i == len(parts) - 1 and not stat.S_ISREG(st.st_mode):
            return f"{cur}: not a regular file (refused)"
    return None


def _locate_stage_file(root: str, models_dir: str, stage: str | None, name: str) -> tuple[str | None, str]:
    """(path, "") of a stage file: ``<stage>/<name>`` first, then ``<name>``, as the platform's
    packer looks; (None, why) when the first one present is refused; (None, "") when neither is."""
    cands = ([os.path.join(models_dir, stage, name)] if stage else []) + [os.path.join(models_dir, name)]
    for c in cands:
        why = output_file_problem(root, c)
        if why is None:
            return c, ""
        if not why.endswith(": missing"):
            return None, why
    return None, ""


@dataclass
class TrainingReport:
    problems: list[str] = field(default_factory=list)
    stages: dict[str, ModelStage] = field(default_factory=dict)
    best_stage_name: str = ""
    #: the best stage's primary metric (maskAP > mIoU > mAP), under the name ``mAP`` for the
    #: platform's messages; its key is ``metric_key``
    mAP: float = 0.0
    metric_key: str = "mAP"
    members: list[tuple[str, str]] = field(default_factory=list)
    attachments: dict[str, list[str]] = field(default_factory=dict)
    evaluate_config: dict[str, Any] | None = None
    model_hash: str | None = None


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(map(str, err.get("loc", ())))
    return f"{loc}: {err['msg']}" if loc else err["msg"]


def check_training(env: EnvConfig) -> TrainingReport:
    """Validate ``result.yaml`` and locate every stage / attachment file (regular files inside
    ``out/`` only; see :func:`output_file_problem`)."""
    rep = TrainingReport()
    raw = _read_result_yaml(env, rep.problems)
    if rep.problems:
        return rep
    _read_stages(env, raw, rep)
    if rep.problems:
        return rep
    best = rep.stages[rep.best_stage_name].evaluation_result()
    rep.metric_key = primary_metric_key(best) or "mAP"
    rep.mAP = float(best.get(rep.metric_key, 0.0))
    _locate_members(env, rep)
    return rep


def _read_result_yaml(env: EnvConfig, problems: list[str]) -> Any:
    """result.yaml parsed (a regular file inside ``out/``, at most :data:`RESULT_YAML_MAX_BYTES`),
    or None after adding the problem."""
    path = env.output.training_result_file
    why = output_file_problem(env.output.root_dir, path)
    if why:
        problems.append(
            f"{path}: missing (a training task must write result.yaml)" if why.endswith(": missing") else why
        )
        return None
    try:
        text = read_text_nofollow(Path(path), RESULT_YAML_MAX_BYTES + 1)
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"{path}: unreadable: {e}")
        return None
    if len(text.encode("utf-8")) > RESULT_YAML_MAX_BYTES:
        problems.append(f"{path}: larger than {RESULT_YAML_MAX_BYTES >> 20} MiB")
        return None
    try:
        return parse_yaml_text(text, ResultError, path)
    except ResultError as e:
        problems.append(str(e))
        return None


def _read_stages(env: EnvConfig, raw: Any, rep: TrainingReport) -> None:
    """Fill ``rep``'s stages, best stage, attachments and evaluate_config from result.yaml's
    content: :class:`TrainingResult`, or below protocol 1.0.0 :class:`LegacyTrainingResult` as
    one stage; problems (the format's first error, too long stage names) go to ``rep.problems``."""
    path = env.output.training_result_file
    if env.protocol_tuple < (1, 0, 0):
        try:
            legacy = LegacyTrainingResult.model_validate(raw)
        except ValidationError as e:
            rep.problems.append(f"{path}: legacy result (protocol {env.protocol_version}): {_first_error(e)}")
            return
        st = ModelStage(
            stage_name=LEGACY_STAGE_NAME,
            files=legacy.model,
            timestamp=int((raw or {}).get("timestamp", 0)),
            mAP=legacy.map,
        )
        rep.stages = {LEGACY_STAGE_NAME: st}
        rep.best_stage_name = LEGACY_STAGE_NAME
    else:
        try:
            result = TrainingResult.model_validate(raw)
        except ValidationError as e:
            rep.problems.append(f"{path}: {_first_error(e)}")
            return
        rep.stages = dict(result.model_stages)
        rep.best_stage_name = result.best_stage_name
        rep.attachments = dict(result.attachments or {})
        rep.evaluate_config = result.evaluate_config
    for name in rep.stages:
        size = len(name.encode("utf-8"))
        if size > MAX_STAGE_NAME_BYTES:
            rep.problems.append(
                f"{path}: stage name {name[:40]!r}... is {size} bytes of UTF-8; at most {MAX_STAGE_NAME_BYTES}"
            )


def _locate_members(env: EnvConfig, rep: TrainingReport) -> None:
    """Find each stage file and attachment (``rep.members``: (name in the package, path)); the
    ones missing or refused go to ``rep.problems``."""
    path = env.output.training_result_file
    models_dir = env.output.models_dir
    root = env.output.root_dir
    legacy_layout = env.protocol_tuple < (1, 0, 0)
    for name, st in rep.stages.items():
        for f in st.files:
            src, why = _locate_stage_file(root, models_dir, None if legacy_layout else name, f)
            if src is None:
                rep.problems.append(
                    f"{path}: stage {name!r} lists {f!r}: {why}"
                    if why
                    else f"{path}: stage {name!r} lists {f!r}, found neither in "
                    f"{models_dir}/{name}/ nor in {models_dir}/"
                )
            else:
                rep.members.append((f"{name}/{f}", src))
    for section, files in rep.attachments.items():
        for f in files:
            src, why = _locate_stage_file(root, os.path.join(models_dir, "attachments"), section, f)
            if src is None and not why:
                src, why = _locate_stage_file(root, models_dir, None, f)
            if src is None:
                rep.problems.append(
                    f"{path}: attachment {section}/{f}: {why}" if why else f"{path}: attachment {section}/{f} not found"
                )
            else:
                rep.members.append((f"attachments/{section}/{os.path.basename(f)}", src))


def collect_training(
    env: EnvConfig, executor_config: dict[str, Any], executor: str, store: ModelStore, object_type: int | None = None
) -> TrainingReport:
    """Check, then pack and store the model package (nothing stored when a problem is found).

    ``object_type`` (the executor manifest's: 2, 3 or 4; another value is left out) is recorded
    in the package's ``task_context``, where ``ymir-exc models`` reads it."""
    rep = check_training(env)
    if rep.problems:
        return rep
    ctx = {
        "executor": executor,
        "producer": f"ymir-exc {__version__}",
        "mAP": rep.mAP,
        "task_id": env.task_id,
        "protocol_version": env.protocol_version,
    }
    if object_type in OBJECT_TYPE_METRIC and not isinstance(object_type, bool):
        ctx["object_type"] = object_type
    if rep.metric_key != "mAP":  # a segmentation model: its own metric too (mIoU / maskAP)
        ctx[rep.metric_key] = rep.mAP
        ctx["primary_metric"] = rep.metric_key
    if rep.evaluate_config:
        ctx["evaluate_config"] = rep.evaluate_config
    info = build_info(executor_config, ctx, stage_entries(rep.stages), rep.best_stage_name)
    rep.model_hash = store.pack(rep.members, info)
    return rep


def _digest(text: str | bytes, size: int = 16) -> bytes:
    """A fixed-size blake2b digest of a path / key (what duplicate and membership checks keep)."""
    return hashlib.blake2b(
        text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text, digest_size=size
    ).digest()


def _asset_id(path: str) -> str:
    """The platform's asset id of a result path: its basename without extension."""
    return os.path.splitext(os.path.basename(path))[0]


class _Messages:
    """Problems of one kind: the first :data:`MAX_MESSAGES` messages, and a count."""

    def __init__(self) -> None:
        self.count = 0
        self.first: list[str] = []

    def add(self, msg: str) -> None:
        self.count += 1
        if len(self.first) < MAX_MESSAGES:
            self.first.append(msg)

    def flush(self, into: list[str], what: str) -> None:
        into.extend(self.first)
        if self.count > len(self.first):
            into.append(f"... and {self.count - len(self.first)} more {what}")


class _Candidates:
    """The candidate images as sorted digests: of each path (16 bytes) and of each asset id
    (16 bytes), with a matched flag per candidate (what :func:`check_mining` marks)."""

    def __init__(self, paths: Sequence[str] | None, index_file: str | None) -> None:
        self.index_file = index_file
        self.paths = paths
        path_d, id_d = bytearray(), bytearray()
        for p in self._iter():
            path_d += _digest(p)
            id_d += _digest(_asset_id(p))
        n = len(path_d) // 16
        self.n = n
        pd = np.frombuffer(bytes(path_d), dtype="V16") if n else np.zeros(0, dtype="V16")
        idd = np.frombuffer(bytes(id_d), dtype="V16") if n else np.zeros(0, dtype="V16")
        self.path_order = np.argsort(pd, kind="stable")
        self.path_sorted = pd[self.path_order]
        self.id_order = np.argsort(idd, kind="stable")
        self.id_sorted = idd[self.id_order]
        self.matched = np.zeros(n, dtype=bool)

    def _iter(self) -> Iterator[str]:
        if self.paths is not None:
            yield from self.paths
            return
        if not self.index_file or not os.path.isfile(self.index_file):
            return
        with open(self.index_file, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                if line.strip():
                    yield line.rstrip("\n").split("\t")[0]

    @staticmethod
    def _find(sorted_d: np.ndarray, order: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Index into the candidates of each key, -1 when absent."""
        if not len(sorted_d):
            return np.full(len(keys), -1, dtype=np.int64)
        pos = np.searchsorted(sorted_d, keys)
        pos_c = np.minimum(pos, len(sorted_d) - 1)
        hit = sorted_d[pos_c] == keys
        return np.where(hit, order[pos_c], -1)

    def match(self, path_keys: np.ndarray, id_keys: np.ndarray) -> np.ndarray:
        """Mark the candidates named by these lines (by path, else by asset id); returns whether
        each line names a candidate."""
        by_path = self._find(self.path_sorted, self.path_order, path_keys)
        by_id = self._find(self.id_sorted, self.id_order, id_keys)
        which = np.where(by_path >= 0, by_path, by_id)
        self.matched[which[which >= 0]] = True
        return which >= 0

    def unmatched(self, limit: int = 1) -> tuple[int, list[str]]:
        """(how many candidates no line named, the first ``limit`` of them)."""
        missing = int((~self.matched).sum())
        examples: list[str] = []
        if missing:
            for i, p in enumerate(self._iter()):
                if not self.matched[i]:
                    examples.append(p)
                    if len(examples) >= limit:
                        break
        return missing, examples


class RankedLines(Sequence[tuple[str, float]]):
    """Mining results ``(path, score)``, best first, read from result.tsv on demand: only each
    line's offset and score, and the ranking, are held (24 bytes a line).

    Args:
        path: result.tsv.
        offsets, scores: per line kept, in file order (int64 byte offsets, float64).
        order: the ranking, as indices into ``offsets`` / ``scores`` (default: file order).
    """

    def __init__(
        self,
        path: str | None = None,
        offsets: np.ndarray | None = None,
        scores: np.ndarray | None = None,
        order: np.ndarray | None = None,
    ) -> None:
        self.path = path
        self.offsets = offsets if offsets is not None else np.zeros(0, dtype=np.int64)
        self.scores = scores if scores is not None else np.zeros(0, dtype=np.float64)
        self.order = order if order is not None else np.arange(len(self.offsets))

    def __len__(self) -> int:
        return len(self.order)

    def _read(self, f: Any, i: int) -> tuple[str, float]:
        j = int(self.order[i])
        f.seek(int(self.offsets[j]))
        line = f.readline(MAX_LINE_BYTES).decode("utf-8", "surrogateescape").rstrip("\r\n")
        return line.split("\t")[0], float(self.scores[j])

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            idx = range(len(self))[i]
            if not len(idx):
                return []
            with open(self.path, "rb") as f:  # type: ignore[arg-type]
                return [self._read(f, j) for j in idx]
        j = range(len(self))[i]
        with open(self.path, "rb") as f:  # type: ignore[arg-type]
            return self._read(f, j)

    def __iter__(self) -> Iterator[tuple[str, float]]:
        if not len(self):
            return
        with open(self.path, "rb") as f:  # type: ignore[arg-type]
            for j in range(len(self)):
                yield self._read(f, j)


@dataclass
class MiningReport:
    """What :func:`check_mining` found. ``ranked`` is a sequence of ``(path, score)``, best first."""

    problems: list[str] = field(default_factory=list)
    ranked: Sequence[tuple[str, float]] = field(default_factory=RankedLines)
    blank: int = 0
    unknown: int = 0
    duplicates: int = 0
    missing: int = 0
    lines: int = 0


def read_candidates(env: EnvConfig) -> list[str]:
    """The candidate index's image paths, in order (small datasets; collect streams instead)."""
    return list(_Candidates(None, env.input.candidate_index_file)._iter())


def _open_output(root: str, path: str, what: str, problems: list[str]) -> Any | None:
    """A binary file object for an output file, or None after adding the problem (missing, a
    link, not a regular file)."""
    why = output_file_problem(root, path)
    if why is not None:
        problems.append(
            f"{path}: missing (a {what} task must write {os.path.basename(path)})" if why.endswith(": missing") else why
        )
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        problems.append(f"{path}: {e.strerror}")
        return None
    return os.fdopen(fd, "rb")


def _line_number(path: str, offset: int) -> int:
    """1-based number of the line starting at byte ``offset``."""
    n = 1
    with open(path, "rb") as f:
        left = offset
        while left > 0:
            b = f.read(min(left, 1 << 20))
            if not b:
                break
            n += b.count(b"\n")
            left -= len(b)
    return n


def check_mining(env: EnvConfig, candidates: list[str] | None = None) -> MiningReport:
    """Stream result.tsv: one ``<path>\\t<score>`` line per candidate, finite scores, sorted
    descending. Unknown paths, duplicates, blank lines and missing candidates are reported.

    A line names a candidate by its path or by its asset id (basename without extension), as
    the platform reads it. Memory: 16-byte digests, a score and an offset per line (33 bytes),
    33 bytes per candidate, plus sort buffers at the end.

    Args:
        candidates: the candidate paths (default: streamed from the candidate index file).
    """
    rep = MiningReport()
    path = env.output.mining_result_file
    f = _open_output(env.output.root_dir, path, "mining", rep.problems)
    if f is None:
        return rep
    scan = _MiningScan(_Candidates(candidates, env.input.candidate_index_file))
    with f:
        rep.lines = _scan_mining_lines(f, path, scan)
    scan.flush()
    rep.blank = scan.blank
    for kind, what in (
        ("long", "long lines"),
        ("utf8", "lines not UTF-8"),
        ("columns", "malformed lines"),
        ("number", "scores not numbers"),
        ("finite", "scores not finite"),
    ):
        scan.bad[kind].flush(rep.problems, what)
    _rank_mining(rep, path, scan)
    return rep


class _MiningScan:
    """What :func:`check_mining` keeps per result.tsv line while streaming it: the path's
    16-byte digest, the line's offset and score; every 65,536 lines the candidates named are
    marked (``known``: per line, whether it names one)."""

    def __init__(self, cands: _Candidates) -> None:
        self.cands = cands
        self.digests, self.offsets, self.scores = bytearray(), array("q"), array("d")
        self.known_parts: list[np.ndarray] = []
        self.chunk_paths, self.chunk_ids = bytearray(), bytearray()
        #: digests of the paths of lines whose score is bad: their candidate is named (not also "without a score")
        self.named_paths, self.named_ids = bytearray(), bytearray()
        self.bad = {k: _Messages() for k in ("columns", "number", "finite", "utf8", "long")}
        self.blank = 0

    def add(self, asset: str, score: float, offset: int) -> None:
        d = _digest(asset)
        self.digests += d
        self.chunk_paths += d
        self.chunk_ids += _digest(_asset_id(asset))
        self.offsets.append(offset)
        self.scores.append(score)
        if len(self.chunk_paths) >= (1 << 16) * 16:
            self.flush()

    def name_only(self, asset: str) -> None:
        """A line that names ``asset`` with a bad score: the score is its problem, so its
        candidate is not reported again as one without a score."""
        self.named_paths += _digest(asset)
        self.named_ids += _digest(_asset_id(asset))
        if len(self.named_paths) >= (1 << 16) * 16:
            self.flush()

    def flush(self) -> None:
        if self.named_paths:
            self.cands.match(
                np.frombuffer(bytes(self.named_paths), dtype="V16"), np.frombuffer(bytes(self.named_ids), dtype="V16")
            )
            self.named_paths.clear()
            self.named_ids.clear()
        if self.chunk_paths:
            self.known_parts.append(
                self.cands.match(
                    np.frombuffer(bytes(self.chunk_paths), dtype="V16"),
                    np.frombuffer(bytes(self.chunk_ids), dtype="V16"),
                )
            )
            self.chunk_paths.clear()
            self.chunk_ids.clear()

    def known(self) -> np.ndarray:
        """Per line kept, whether it names a candidate (the chunks' memory is released)."""
        known = np.concatenate(self.known_parts) if self.known_parts else np.zeros(0, dtype=bool)
        self.known_parts.clear()
        return known


def _scan_mining_lines(f: Any, path: str, scan: _MiningScan) -> int:
    """Read result.tsv line by line (at most :data:`MAX_LINE_BYTES` a line) into ``scan``, each
    line parsed by :func:`~ymir_exc.formats.results.parse_mining_line`; returns the number of lines."""
    pos = 0
    n = 0
    while True:
        raw = f.readline(MAX_LINE_BYTES)
        if not raw:
            return n
        start, pos = pos, pos + len(raw)
        n += 1
        if not raw.endswith(b"\n") and len(raw) >= MAX_LINE_BYTES:
            scan.bad["long"].add(f"{path}:{n}: line longer than {MAX_LINE_BYTES >> 10} KiB")
            while raw and not raw.endswith(b"\n"):  # skip the rest of it
                raw = f.readline(MAX_LINE_BYTES)
                pos += len(raw)
            continue
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            scan.bad["utf8"].add(f"{path}:{n}: not UTF-8 ({e.reason} at byte {e.start})")
            continue
        if not line.strip():
            scan.blank += 1
            continue
        try:
            asset, score = parse_mining_line(line)
        except MiningLineError as e:
            scan.bad[e.kind].add(f"{path}:{n}: {e}")
            if e.kind != "columns":  # the path is read; only its score is wrong
                scan.name_only(line.split("\t")[0])
            continue
        scan.add(asset, score, start)


def _first_occurrences(digests: bytearray, count: int) -> np.ndarray:
    """Per line, False when an earlier line has the same path digest."""
    keep = np.ones(count, dtype=bool)
    if count > 1:
        dig = np.frombuffer(digests, dtype="V16")
        order = np.argsort(dig, kind="stable")  # equal paths: first occurrence first
        step = 1 << 20
        for i in range(0, count - 1, step):  # neighbours in sorted order, a chunk at a time (no full copy)
            idx = order[i : i + step + 1]
            same = dig[idx[1:]] == dig[idx[:-1]]
            keep[idx[1:][same]] = False
    return keep


def _rank_mining(rep: MiningReport, path: str, scan: _MiningScan) -> None:
    """Duplicates, unknown paths, the order of the scores and missing candidates into ``rep``;
    ``rep.ranked``: the first occurrence of each path, best first (ties keep file order)."""
    count = len(scan.offsets)
    known = scan.known()
    keep = _first_occurrences(scan.digests, count)
    del scan.digests
    off = np.frombuffer(scan.offsets, dtype=np.int64)
    sco = np.frombuffer(scan.scores, dtype=np.float64)
    rep.duplicates = int(count - keep.sum())
    unknown = np.nonzero(keep & ~known)[0]
    rep.unknown = int(len(unknown))
    kept = np.nonzero(keep)[0] if rep.duplicates else None
    ranked_sco = sco[kept] if kept is not None else sco
    rising = np.nonzero(ranked_sco[1:] > ranked_sco[:-1])[0]
    if len(rising):
        at = int(kept[rising[0] + 1]) if kept is not None else int(rising[0] + 1)
        rep.problems.append(f"{path}:{_line_number(path, int(off[at]))}: scores are not sorted in descending order")
    neg = np.negative(ranked_sco, out=ranked_sco if kept is not None else None)
    order = np.argsort(neg, kind="stable")  # best first; ties keep file order
    del neg
    if kept is not None:
        order = kept[order]
    rep.ranked = RankedLines(path, off, sco, order)
    rep.missing, missing_examples = scan.cands.unmatched()
    if rep.blank:
        rep.problems.append(f"{path}: {rep.blank} blank line(s)")
    if rep.duplicates:
        rep.problems.append(
            f"{path}: {rep.duplicates} duplicate path(s), e.g. "
            f"{RankedLines(path, off, sco, np.nonzero(~keep)[0][:1])[0][0]}"
        )
    if rep.unknown:
        rep.problems.append(
            f"{path}: {rep.unknown} path(s) not among the candidates, e.g. "
            f"{RankedLines(path, off, sco, unknown[:1])[0][0]}"
        )
    if rep.missing:
        rep.problems.append(f"{path}: {rep.missing} candidate(s) without a score, e.g. {missing_examples[0]}")


@dataclass
class InferReport:
    """What :func:`check_infer` found (counts only: results are not held in memory)."""

    problems: list[str] = field(default_factory=list)
    images: int = 0
    with_boxes: int = 0
    boxes: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    per_class: Counter[str] = field(default_factory=Counter)
    missing: int = 0
    unknown: int = 0
    duplicates: int = 0
    #: ``{key: kept boxes}``, only with ``check_infer(..., keep_results=True)`` (memory grows with it)
    results: dict[str, list[dict[str, Any]]] | None = None
    #: the result's format as read: ``detection`` (a ``detection`` object) or ``segmentation``
    #: (COCO style); empty when the file could not be read that far
    format: str = ""


#: infer-result.json nested deeper than this is refused before any prefix-building parse (the
#: format needs fewer than 10 levels; ijson's ``parse`` takes memory quadratic in the depth)
MAX_JSON_DEPTH = 64
#: a string, key or number in infer-result.json longer than this (bytes) is refused, like a
#: result.tsv line over :data:`MAX_LINE_BYTES` (ijson's C lexer takes time quadratic in a token's length)
MAX_JSON_TOKEN_BYTES = 64 << 10
_SCAN_CHUNK = 4 << 20
_STRING_BODY = re.compile(rb'(?:[^"\\]|\\.){0,%d}' % (MAX_JSON_TOKEN_BYTES + 1), re.DOTALL)
_NUMBER_BYTE = np.zeros(256, dtype=bool)
_NUMBER_BYTE[list(b"-+.0123456789eE")] = True


def _longest_run(chunk: bytes, is_quote: bool) -> tuple[int, int, int]:
    """(bytes before the first break, longest run between breaks, bytes after the last break) of
    ``chunk``, where a break is a ``"`` (``is_quote``) or a byte that cannot be part of a number."""
    a = np.frombuffer(chunk, dtype=np.uint8)
    breaks = np.flatnonzero(a == 0x22 if is_quote else ~_NUMBER_BYTE[a])
    if not len(breaks):
        return len(a), len(a), len(a)
    inner = int(np.diff(breaks).max()) - 1 if len(breaks) > 1 else 0
    return int(breaks[0]), max(inner, int(breaks[0]), len(a) - 1 - int(breaks[-1])), len(a) - 1 - int(breaks[-1])


def _quote_gaps_short(f: Any) -> bool:
    """Fast pass (numpy, no Python step per token): True when no run of more than
    :data:`MAX_JSON_TOKEN_BYTES` bytes lacks a ``"`` and no ``\\"`` occurs, so that no string or
    number can be that long; False when a closer look is needed."""
    carry = 0  # bytes since the last quote, from earlier chunks
    prev_last = b""
    while True:
        chunk = f.read(_SCAN_CHUNK)
        if not chunk:
            return True
        if b'\\"' in chunk or (prev_last == b"\\" and chunk[:1] == b'"'):
            return False
        head, longest, tail = _longest_run(chunk, True)
        if max(longest, carry + head) > MAX_JSON_TOKEN_BYTES:
            return False
        carry = carry + tail if tail == len(chunk) else tail
        prev_last = chunk[-1:]


def _long_token(f: Any) -> bool:
    """Whether a string (or key) or a number in the JSON file ``f`` is longer than
    :data:`MAX_JSON_TOKEN_BYTES`. Linear time: at most one Python step per string, the rest in C;
    memory: a few chunks of :data:`_SCAN_CHUNK` bytes."""
    if _quote_gaps_short(f):
        return False
    f.seek(0)
    buf, pos = b"", 0
    while True:
        q = buf.find(b'"', pos)
        end = len(buf) if q < 0 else q
        if end - pos > MAX_JSON_TOKEN_BYTES and _longest_run(buf[pos:end], False)[1] > MAX_JSON_TOKEN_BYTES:
            return True  # a number that long (outside strings only digits, signs, dots and e make one)
        if q < 0:  # keep the last bytes: a number may go on in the next chunk
            data = f.read(_SCAN_CHUNK)
            if not data:
                return False
            buf, pos = buf[max(pos, len(buf) - MAX_JSON_TOKEN_BYTES) :] + data, 0
            continue
        m = _STRING_BODY.match(buf, q + 1)
        assert m is not None  # {0,n} matches the empty string too
        if m.end() - q - 1 > MAX_JSON_TOKEN_BYTES:
            return True
        if m.end() < len(buf) and buf[m.end()] == 0x22:
            pos = m.end() + 1
            continue
        data = f.read(_SCAN_CHUNK)  # the string goes on past the chunk: look again from its quote
        if not data:
            return False  # unterminated: the JSON parse says so
        buf, pos = buf[q:] + data, 0


def _json_layout_problem(f: Any, section: str) -> str | None:
    """Stream the whole file: None when it is valid JSON whose top level is an object with an
    object ``section``, no string or number longer than :data:`MAX_JSON_TOKEN_BYTES` and no
    nesting deeper than :data:`MAX_JSON_DEPTH`; else what is wrong. Time linear in the file's
    size, memory bounded (``ijson.basic_parse`` builds no prefixes)."""
    import ijson

    if _long_token(f):
        return f"a string or number longer than {MAX_JSON_TOKEN_BYTES} bytes (refused)"
    f.seek(0)
    top = None
    found = None
    depth = 0
    want = False  # the previous event was the top-level key ``section``
    try:
        for event, value in ijson.basic_parse(f, use_float=True):
            if top is None:
                top = event
            if want and found is None:
                found = event
            want = depth == 1 and event == "map_key" and value == section
            if event in ("start_map", "start_array"):
                depth += 1
                if depth > MAX_JSON_DEPTH:
                    return f"nested deeper than {MAX_JSON_DEPTH} levels (refused)"
            elif event in ("end_map", "end_array"):
                depth -= 1
    except ijson.JSONError as e:
        return f"not valid JSON: {e}"
    if top != "start_map":
        return "the top level is not an object"
    if found != "start_map":
        return f"no '{section}' object at the top level"
    return None


def _json_has_top_key(f: Any, key: str) -> bool:
    """Whether the JSON object in ``f`` (already checked to be valid) has ``key`` at the top level."""
    import ijson

    f.seek(0)
    for prefix, event, value in ijson.parse(f):
        if prefix == "" and event == "map_key" and value == key:
            return True
    return False


def _check_detection_entry(
    rep: InferReport, key: str, entry: Any, box_key: str, class_names: list[str], path: str, bad_entries: _Messages
) -> None:
    """One image of ``detection``: its boxes validated, counted; bad boxes dropped by reason."""
    boxes = entry.get(box_key) if isinstance(entry, dict) else None
    if not isinstance(boxes, list):
        bad_entries.add(f"{path}: detection.{key[:80]}: no '{box_key}' list")
        return
    kept = 0
    good: list[dict[str, Any]] | None = [] if rep.results is not None else None
    for b in boxes:
        why = infer_box_problem(b, class_names)
        if why:
            rep.dropped[why] += 1
        else:
            kept += 1
            rep.per_class[b["class_name"]] += 1
            if good is not None:
                good.append(b)
    if good is not None:
        rep.results[key] = good  # type: ignore[index]
    rep.images += 1
    rep.boxes += kept
    rep.with_boxes += kept > 0


def check_infer(
    env: EnvConfig, class_names: list[str], candidates: list[str] | None = None, keep_results: bool = False
) -> InferReport:
    """Stream infer-result.json (ijson) and validate it box by box; keys must be exactly the
    candidates' basenames (each once). Memory: a 16-byte digest per image key and per candidate.

    Args:
        candidates: the candidate paths (default: streamed from the candidate index file).
        keep_results: also return the kept boxes per key in ``results`` (memory grows with them).
    """
    rep = InferReport(results={} if keep_results else None)
    path = env.output.infer_result_file
    f = _open_output(env.output.root_dir, path, "infer", rep.problems)
    if f is None:
        return rep
    bad_entries = _Messages()
    with f:
        why = _json_layout_problem(f, "detection")
        if why == "no 'detection' object at the top level" and _json_has_top_key(f, "annotations"):
            f.seek(0)
            rep.format = "segmentation"
            return _check_segmentation(
                rep, f, path, class_names, _Candidates(candidates, env.input.candidate_index_file)
            )
        if why:
            rep.problems.append(f"{path}: {why}")
            return rep
        rep.format = "detection"
        box_key = "boxes" if env.protocol_tuple >= (1, 0, 0) else "annotations"
        keys = _stream_detection(rep, f, path, box_key, class_names, bad_entries)
    if keys is not None:
        _match_infer_keys(rep, path, keys, _Candidates(candidates, env.input.candidate_index_file), bad_entries)
    return rep


def _stream_detection(
    rep: InferReport, f: Any, path: str, box_key: str, class_names: list[str], bad_entries: _Messages
) -> bytearray | None:
    """Every image of ``detection`` checked (:func:`_check_detection_entry`); returns the
    16-byte digests of the keys, or None after adding the problem when the JSON breaks."""
    import ijson

    f.seek(0)
    keys = bytearray()
    try:
        for key, entry in ijson.kvitems(f, "detection", use_float=True):
            keys += _digest(key)
            _check_detection_entry(rep, key, entry, box_key, class_names, path, bad_entries)
    except ijson.JSONError as e:  # the file changed since the first pass
        rep.problems.append(f"{path}: not valid JSON: {e}")
        return None
    return keys


def _match_infer_keys(rep: InferReport, path: str, keys: bytearray, cands: _Candidates, bad_entries: _Messages) -> None:
    """The keys' digests against the candidates' basenames into ``rep``: basenames shared by
    candidates, entries without a box list, repeated keys, candidates without an entry, unknown
    keys, then the dropped boxes by reason."""
    names = _sorted_digests(os.path.basename(p) for p in cands._iter())
    clashes = _digest_duplicates(names)
    if clashes:
        rep.problems.append(
            f"{path}: {clashes} candidate basename(s) shared by several images: their results cannot be told apart"
        )
    bad_entries.flush(rep.problems, "entries without a box list")
    ks = np.sort(np.frombuffer(bytes(keys), dtype="V16"), kind="stable") if keys else np.zeros(0, dtype="V16")
    del keys
    rep.duplicates = _digest_duplicates(ks)
    if rep.duplicates:
        rep.problems.append(f"{path}: {rep.duplicates} key(s) repeated in 'detection'")
    rep.unknown = int((~_member(names, ks)).sum())
    uniq = names[np.r_[True, names[1:] != names[:-1]]] if len(names) else names
    rep.missing = int((~_member(ks, uniq)).sum())
    if rep.missing:
        example = next(
            (
                os.path.basename(p)
                for p in cands._iter()
                if not _member(ks, np.frombuffer(_digest(os.path.basename(p)), dtype="V16"))[0]
            ),
            "?",
        )
        rep.problems.append(f"{path}: {rep.missing} candidate(s) without an entry, e.g. {example}")
    if rep.unknown:
        rep.problems.append(f"{path}: {rep.unknown} key(s) not among the candidates")
    for why, n in sorted(rep.dropped.items()):
        rep.problems.append(f"{path}: {n} box(es) dropped: {why}")


def _sorted_digests(texts: Any) -> np.ndarray:
    """The 16-byte digests of ``texts``, sorted (a ``V16`` array)."""
    d = bytearray()
    for t in texts:
        d += _digest(t)
    return np.sort(np.frombuffer(bytes(d), dtype="V16"), kind="stable") if d else np.zeros(0, dtype="V16")


def _member(sorted_d: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Whether each key is in the sorted digest array."""
    if not len(sorted_d):
        return np.zeros(len(keys), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_d, keys), len(sorted_d) - 1)
    found: np.ndarray = sorted_d[pos] == keys
    return found


def _digest_duplicates(sorted_d: np.ndarray) -> int:
    """How many entries of a sorted digest array repeat an earlier one."""
    return int((sorted_d[1:] == sorted_d[:-1]).sum()) if len(sorted_d) > 1 else 0


def check_monitor(env: EnvConfig, task_id: str | None = None, exit_code: int = 0) -> list[str]:
    """Problems of monitor.txt after an executor exited: it must be a regular file whose first
    line parses (``task_id\ttime\tpercent\tstate\treturn_code``) with a percent in [0, 1],
    the task's id (when given), and say the task is done: state 3, or state 2 (running) at
    percent 1.00 with ``exit_code`` 0 (upstream's ``write_monitor_logger`` only writes state 2,
    and its executors end with ``write_monitor_logger(percent=1.0)``; the platform marks a task
    that then exits 0 as done). Any other state (2 below 1.00, 4, ...) is a problem."""
    path = env.output.monitor_file
    why = output_file_problem(env.output.root_dir, path)
    if why:
        return [why]
    try:
        st = parse_monitor(read_text_nofollow(Path(path)))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return [f"{path}: not a monitor file: {e}"]
    problems = []
    finished_running = st.state == ExecutorState.ES_RUNNING and st.percent == 1.0 and exit_code == 0
    if st.state != ExecutorState.ES_DONE and not finished_running:
        problems.append(
            f"{path}: state {st.state} at percent {st.percent:.2f} after exit status {exit_code}; "
            "expected 3 (done), or 2 (running) at 1.00 with exit status 0"
        )
    if not (math.isfinite(st.percent) and 0 <= st.percent <= 1):
        problems.append(f"{path}: percent {st.percent} not in [0, 1]")
    if task_id and st.task_id != task_id:
        problems.append(f"{path}: task id {st.task_id!r}, expected {task_id!r}")
    return problems


def task_env(env: dict[str, Any], work_dir: Path) -> EnvConfig:
    """The env.yaml content the harness wrote (kept in memory: the copy under ``in/`` may have
    been changed by a local executor), with ``/in`` and ``/out`` mapped to ``work_dir``.

    Raises:
        EnvFileError: (from validation) never for content the harness produced.
    """
    return host_env(EnvConfig.model_validate(env), Path(work_dir))


def _check_segmentation(
    rep: InferReport, f: Any, path: str, class_names: list[str], candidates: _Candidates
) -> InferReport:
    """A segmentation infer result (COCO style, see :func:`ymir_exc.formats.check_coco_result`):
    valid structure, one image per candidate basename. With ``rep.results`` kept, it maps
    basenames to ``{"class_name", "score", "segmentation"[, "bbox"]}`` annotations.

    The file is read whole (a COCO-style result has no per-image key to stream by)."""
    try:
        data = json.load(f)
        counts = check_coco_result(data, class_names=class_names or None)
    except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
        rep.problems.append(f"{path}: {e}")
        return rep
    names = {os.path.basename(c) for c in candidates._iter()}
    by_id = {im["id"]: os.path.basename(im["file_name"]) for im in data["images"]}
    cat_names = {c["id"]: c["name"] for c in data["categories"]}
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in by_id.values()}
    for a in data["annotations"]:
        kept = {
            "class_name": cat_names[a["category_id"]],
            "score": float(a.get("score", 1.0)),
            "segmentation": a["segmentation"],
        }
        if "bbox" in a:
            kept["bbox"] = a["bbox"]
        results[by_id[a["image_id"]]].append(kept)
        rep.per_class[kept["class_name"]] += 1
    if rep.results is not None:
        rep.results = results
    rep.images = counts["images"]
    rep.with_boxes = sum(1 for v in results.values() if v)
    rep.boxes = counts["annotations"]
    unknown = [n for n in results if n not in names]
    missing = [n for n in names if n not in results]
    rep.unknown, rep.missing = len(unknown), len(missing)
    if missing:
        rep.problems.append(f"{path}: {len(missing)} candidate(s) without an image entry, e.g. {missing[0]}")
    if unknown:
        rep.problems.append(f"{path}: {len(unknown)} image(s) not among the candidates, e.g. {unknown[0]}")
    return rep


def load_env(in_dir: Path) -> EnvConfig:
    """The env.yaml of a prepared work dir, with container paths mapped back to the host."""
    env = parse_env_file(str(in_dir / "env.yaml"))
    return host_env(env, in_dir.parent)


def host_env(env: EnvConfig, work_dir: Path) -> EnvConfig:
    """Map ``/in/...`` and ``/out/...`` paths of a container's env.yaml to ``work_dir``."""

    def fix(v: Any) -> Any:
        if isinstance(v, str):
            for root in ("/in", "/out"):
                if v == root or v.startswith(root + "/"):
                    return str(work_dir) + v
        return v

    data = env.model_dump()
    for section in ("input", "output"):
        data[section] = {k: fix(v) for k, v in data[section].items()}
    return EnvConfig.model_validate(data)
