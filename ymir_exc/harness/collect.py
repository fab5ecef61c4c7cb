"""Check what an executor wrote against the contract, then collect it (CONTRACT.md section 2).

- training: result.yaml validated, every stage file found, then a model package is stored;
- mining: result.tsv parsed line by line (unknown, duplicate, blank lines, unsorted scores
  reported), top-k by score (stable);
- inference (segmentation): the COCO-style result validated, one image per candidate;
- inference (detection): every box validated (integer pixels, class in class_names, score in [0, 1],
  w and h > 0); bad boxes are dropped and counted by reason instead of failing the task (the
  platform fails the whole task on one bad box).

Each check returns a report whose ``problems`` say precisely what is wrong; nothing is stored
when a training output is invalid.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml
from pydantic import ValidationError

from ymir_exc import __version__
from ymir_exc.env import EnvConfig, parse_env_file
from ymir_exc.formats import (LegacyTrainingResult, ModelStage, TrainingResult, check_coco_result,
                              primary_metric_key)
from ymir_exc.harness.models import LEGACY_STAGE_NAME, ModelStore, build_info, stage_entries
from ymir_exc.result_writer import resolve_stage_file


@dataclass
class TrainingReport:
    problems: List[str] = field(default_factory=list)
    stages: Dict[str, ModelStage] = field(default_factory=dict)
    best_stage_name: str = ""
    #: the best stage's primary metric (maskAP > mIoU > mAP), under the name ``mAP`` for the
    #: platform's messages; its key is ``metric_key``
    mAP: float = 0.0
    metric_key: str = "mAP"
    members: List[Tuple[str, str]] = field(default_factory=list)
    attachments: Dict[str, List[str]] = field(default_factory=dict)
    evaluate_config: Optional[Dict[str, Any]] = None
    model_hash: Optional[str] = None


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(map(str, err.get("loc", ())))
    return f"{loc}: {err['msg']}" if loc else err["msg"]


def check_training(env: EnvConfig) -> TrainingReport:
    """Validate ``result.yaml`` and locate every stage / attachment file."""
    rep = TrainingReport()
    path = env.output.training_result_file
    models_dir = env.output.models_dir
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        rep.problems.append(f"{path}: missing (a training task must write result.yaml)")
        return rep
    except yaml.YAMLError as e:
        rep.problems.append(f"{path}: not valid YAML: {e}")
        return rep
    if env.protocol_tuple < (1, 0, 0):
        try:
            legacy = LegacyTrainingResult.model_validate(raw)
        except ValidationError as e:
            rep.problems.append(f"{path}: legacy result (protocol {env.protocol_version}): {_first_error(e)}")
            return rep
        st = ModelStage(stage_name=LEGACY_STAGE_NAME, files=legacy.model, timestamp=int((raw or {}).get("timestamp", 0)),
                        mAP=legacy.map)
        rep.stages = {LEGACY_STAGE_NAME: st}
        rep.best_stage_name = LEGACY_STAGE_NAME
    else:
        try:
            result = TrainingResult.model_validate(raw)
        except ValidationError as e:
            rep.problems.append(f"{path}: {_first_error(e)}")
            return rep
        rep.stages = dict(result.model_stages)
        rep.best_stage_name = result.best_stage_name
        rep.attachments = dict(result.attachments or {})
        rep.evaluate_config = result.evaluate_config
    best = rep.stages[rep.best_stage_name].evaluation_result()
    rep.metric_key = primary_metric_key(best) or "mAP"
    rep.mAP = float(best.get(rep.metric_key, 0.0))
    for name, st in rep.stages.items():
        for f in st.files:
            src = resolve_stage_file(models_dir, name, f) if env.protocol_tuple >= (1, 0, 0) else \
                (os.path.join(models_dir, f) if os.path.isfile(os.path.join(models_dir, f)) else None)
            if src is None:
                rep.problems.append(f"{path}: stage {name!r} lists {f!r}, found neither in "
                                    f"{models_dir}/{name}/ nor in {models_dir}/")
            else:
                rep.members.append((f"{name}/{f}", src))
    for section, files in rep.attachments.items():
        for f in files:
            cands = [os.path.join(models_dir, "attachments", section, f), os.path.join(models_dir, f)]
            src = next((c for c in cands if os.path.isfile(c)), None)
            if src is None:
                rep.problems.append(f"{path}: attachment {section}/{f} not found")
            else:
                rep.members.append((f"attachments/{section}/{os.path.basename(f)}", src))
    return rep


def collect_training(env: EnvConfig, executor_config: Dict[str, Any], executor: str,
                     store: ModelStore) -> TrainingReport:
    """Check, then pack and store the model package (nothing stored when a problem is found)."""
    rep = check_training(env)
    if rep.problems:
        return rep
    ctx = {"executor": executor, "producer": f"ymir-exc {__version__}", "mAP": rep.mAP,
           "task_id": env.task_id, "protocol_version": env.protocol_version}
    if rep.metric_key != "mAP":  # a segmentation model: its own metric too (mIoU / maskAP)
        ctx[rep.metric_key] = rep.mAP
        ctx["primary_metric"] = rep.metric_key
    if rep.evaluate_config:
        ctx["evaluate_config"] = rep.evaluate_config
    info = build_info(executor_config, ctx, stage_entries(rep.stages), rep.best_stage_name)
    rep.model_hash = store.pack(rep.members, info)
    return rep


@dataclass
class MiningReport:
    problems: List[str] = field(default_factory=list)
    ranked: List[Tuple[str, float]] = field(default_factory=list)
    blank: int = 0
    unknown: List[str] = field(default_factory=list)
    duplicates: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)


def read_candidates(env: EnvConfig) -> List[str]:
    path = env.input.candidate_index_file
    if not path or not os.path.isfile(path):
        return []
    return [line.split("\t")[0] for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def check_mining(env: EnvConfig, candidates: Optional[List[str]] = None) -> MiningReport:
    """Parse result.tsv: one ``<path>\\t<score>`` line per candidate, finite scores, sorted
    descending. Unknown paths, duplicates, blank lines and missing candidates are reported."""
    rep = MiningReport()
    path = env.output.mining_result_file
    candidates = read_candidates(env) if candidates is None else candidates
    known = set(candidates)
    known_ids = {os.path.splitext(os.path.basename(c))[0] for c in candidates}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        rep.problems.append(f"{path}: missing (a mining task must write result.tsv)")
        return rep
    seen = set()
    prev = math.inf
    unsorted_at = None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            rep.blank += 1
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            rep.problems.append(f"{path}:{n}: expected '<path>\\t<score>', got {len(parts)} column(s)")
            continue
        asset, s = parts
        try:
            score = float(s)
        except ValueError:
            rep.problems.append(f"{path}:{n}: score {s!r} is not a number")
            continue
        if not math.isfinite(score):
            rep.problems.append(f"{path}:{n}: score {s!r} is not finite")
            continue
        if asset in seen:
            rep.duplicates.append(asset)
            continue
        seen.add(asset)
        if asset not in known and os.path.splitext(os.path.basename(asset))[0] not in known_ids:
            rep.unknown.append(asset)
        if score > prev and unsorted_at is None:
            unsorted_at = n
        prev = score
        rep.ranked.append((asset, score))
    if unsorted_at is not None:
        rep.problems.append(f"{path}:{unsorted_at}: scores are not sorted in descending order")
    seen_ids = {os.path.splitext(os.path.basename(a))[0] for a, _ in rep.ranked}
    rep.missing = [c for c in candidates if c not in seen and os.path.splitext(os.path.basename(c))[0] not in seen_ids]
    if rep.blank:
        rep.problems.append(f"{path}: {rep.blank} blank line(s)")
    if rep.duplicates:
        rep.problems.append(f"{path}: {len(rep.duplicates)} duplicate path(s), e.g. {rep.duplicates[0]}")
    if rep.unknown:
        rep.problems.append(f"{path}: {len(rep.unknown)} path(s) not among the candidates, e.g. {rep.unknown[0]}")
    if rep.missing:
        rep.problems.append(f"{path}: {len(rep.missing)} candidate(s) without a score, e.g. {rep.missing[0]}")
    rep.ranked.sort(key=lambda r: -r[1])  # stable: ties keep file order
    return rep


@dataclass
class InferReport:
    problems: List[str] = field(default_factory=list)
    results: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)
    boxes: int = 0
    dropped: Counter = field(default_factory=Counter)
    per_class: Counter = field(default_factory=Counter)
    missing: List[str] = field(default_factory=list)
    unknown: List[str] = field(default_factory=list)


def _box_problem(b: Any, class_names: List[str]) -> Optional[str]:
    if not isinstance(b, dict):
        return "not an object"
    if b.get("class_name") not in class_names:
        return "class not in class_names"
    s = b.get("score")
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or not 0 <= s <= 1:
        return "score not in [0, 1]"
    box = b.get("box")
    if not isinstance(box, dict) or any(k not in box for k in "xywh"):
        return "box lacks x, y, w or h"
    if any(isinstance(box[k], bool) or not isinstance(box[k], int) for k in "xywh"):
        return "coordinate not an integer"
    if box["w"] <= 0 or box["h"] <= 0:
        return "w or h <= 0"
    return None


def check_infer(env: EnvConfig, class_names: List[str], candidates: Optional[List[str]] = None) -> InferReport:
    """Validate infer-result.json box by box; keys must be exactly the candidates' basenames."""
    rep = InferReport()
    path = env.output.infer_result_file
    candidates = read_candidates(env) if candidates is None else candidates
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        rep.problems.append(f"{path}: missing (an infer task must write infer-result.json)")
        return rep
    except ValueError as e:
        rep.problems.append(f"{path}: not valid JSON: {e}")
        return rep
    if isinstance(data, dict) and "detection" not in data and "annotations" in data:
        return _check_segmentation(rep, data, path, class_names, candidates)
    box_key = "boxes" if env.protocol_tuple >= (1, 0, 0) else "annotations"
    det = data.get("detection") if isinstance(data, dict) else None
    if not isinstance(det, dict):
        rep.problems.append(f"{path}: no 'detection' object at the top level")
        return rep
    names = Counter(os.path.basename(c) for c in candidates)
    clashes = [n for n, k in names.items() if k > 1]
    if clashes:
        rep.problems.append(f"{path}: {len(clashes)} candidate basename(s) shared by several images, e.g. {clashes[0]}: "
                            f"their results cannot be told apart")
    for key, entry in det.items():
        if key not in names:
            rep.unknown.append(key)
        boxes = entry.get(box_key) if isinstance(entry, dict) else None
        if not isinstance(boxes, list):
            rep.problems.append(f"{path}: detection.{key}: no '{box_key}' list")
            continue
        kept = []
        for b in boxes:
            why = _box_problem(b, class_names)
            if why:
                rep.dropped[why] += 1
            else:
                kept.append(b)
                rep.per_class[b["class_name"]] += 1
        rep.results[key] = kept
        rep.boxes += len(kept)
    rep.missing = [n for n in names if n not in det]
    if rep.missing:
        rep.problems.append(f"{path}: {len(rep.missing)} candidate(s) without an entry, e.g. {rep.missing[0]}")
    if rep.unknown:
        rep.problems.append(f"{path}: {len(rep.unknown)} key(s) not among the candidates, e.g. {rep.unknown[0]}")
    for why, k in sorted(rep.dropped.items()):
        rep.problems.append(f"{path}: {k} box(es) dropped: {why}")
    return rep


def _check_segmentation(rep: InferReport, data: Dict[str, Any], path: str, class_names: List[str],
                        candidates: List[str]) -> InferReport:
    """A segmentation infer result (COCO style, see :func:`ymir_exc.formats.check_coco_result`):
    valid structure, one image per candidate. ``rep.results`` maps basenames to annotations."""
    try:
        check_coco_result(data, class_names=class_names or None)
    except ValueError as e:
        rep.problems.append(f"{path}: {e}")
        return rep
    names = {os.path.basename(c) for c in candidates}
    by_id = {im["id"]: os.path.basename(im["file_name"]) for im in data["images"]}
    rep.results = {n: [] for n in by_id.values()}
    for a in data["annotations"]:
        rep.results[by_id[a["image_id"]]].append(a)
    rep.boxes = len(data["annotations"])
    rep.unknown = [n for n in rep.results if n not in names]
    rep.missing = [n for n in names if n not in rep.results]
    if rep.missing:
        rep.problems.append(f"{path}: {len(rep.missing)} candidate(s) without an image entry, e.g. {rep.missing[0]}")
    if rep.unknown:
        rep.problems.append(f"{path}: {len(rep.unknown)} image(s) not among the candidates, e.g. {rep.unknown[0]}")
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
