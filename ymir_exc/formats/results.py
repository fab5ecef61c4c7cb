"""The result files an executor writes: result.yaml (model stages), result.tsv (mining lines),
infer-result.json (detection boxes, segmentation COCO result).

:mod:`ymir_exc.result_writer` writes them, :mod:`ymir_exc.harness.collect` checks them and
``ymir-exc schema`` prints their JSON Schema, all from the models and checkers below.

Example::

    >>> from ymir_exc.formats.results import InferAnnotation, infer_box_problem
    >>> box = {"class_name": "tree", "score": 0.9, "box": {"x": 1, "y": 2, "w": 3, "h": 0}}
    >>> infer_box_problem(box, ["tree"])
    'w or h <= 0'

Sources: docs/contract.md (result.yaml, result.tsv, infer-result.json).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Collection, Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: primary metric keys, in order of precedence (docs/contract.md)
PRIMARY_METRIC_KEYS = ("maskAP", "mIoU", "mAP")
#: evaluation keys that are counts (non-negative integers), not fractions
COUNT_KEYS = frozenset({"tp", "fp", "fn", "TP", "FP", "FN"})
#: keys of a stage that are not evaluation results
STAGE_RESERVED_KEYS = frozenset({"stage_name", "files", "timestamp"})
#: most stages result.yaml keeps; the best one is never evicted
MAX_MODEL_STAGES = 11


def to_builtin(value: Any) -> Any:
    """Convert numpy scalars / arrays (and nested containers) to plain Python for YAML / JSON."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, dict):
        return {str(to_builtin(k)): to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_builtin(v) for v in value]
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return to_builtin(tolist())
    return value


#: COCO evaluation's value for a metric it could not compute (e.g. ``mAP_s`` when no object is
#: small); accepted, and written as given, for any metric but the primary one
ABSENT_METRIC = -1


def check_evaluation_value(key: str, value: Any, primary: bool = True) -> Any:
    """Validate one evaluation entry: counts are ints >= 0, every other metric a float in [0, 1];
    a metric that is not the stage's primary one (``primary=False``) may also be exactly -1,
    COCO's "absent" sentinel (MMDetection passes ``mAP_s=-1.0`` for a size range with no
    object), returned as given.

    Raises:
        ValueError: not a number, not finite, or out of range; the message names the key.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"metric {key!r} must be a number, got {value!r}")
    if key in COUNT_KEYS:
        if not isinstance(value, numbers.Integral) and not float(value).is_integer():
            raise ValueError(f"count {key!r} must be an integer, got {value!r}")
        if value < 0:
            raise ValueError(f"count {key!r} must be >= 0, got {value!r}")
        return math.trunc(value)
    v = float(value)
    if not primary and v == ABSENT_METRIC:
        return value
    if not math.isfinite(v) or not 0.0 <= v <= 1.0:
        raise ValueError(
            f"metric {key!r} must be a finite fraction in [0, 1]"
            + ("" if primary else " (or -1: not computed)")
            + f", got {value!r}"
        )
    return v


def primary_metric_key(keys: Iterable[str]) -> str | None:
    """The first of maskAP > mIoU > mAP among ``keys``, or None."""
    for k in PRIMARY_METRIC_KEYS:
        if k in keys:
            return k
    return None


#: JSON Schema of a stage name (``str.isidentifier()``; the schema's pattern covers ASCII names only)
_IDENTIFIER_SCHEMA: dict[str, Any] = {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"}
#: JSON Schema of a metric: a fraction in [0, 1], or -1 (allowed by the model only when the metric
#: is not the stage's primary one, a cross-field rule the schema cannot state)
_METRIC_SCHEMA: dict[str, Any] = {"anyOf": [{"type": "number", "minimum": 0, "maximum": 1}, {"const": ABSENT_METRIC}]}
#: JSON Schema of a count (tp, fp, fn, ...): an integer >= 0
_COUNT_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 0}


def _stage_schema(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of :class:`ModelStage`: extra keys are metrics or counts."""
    schema["patternProperties"] = {"^(" + "|".join(sorted(COUNT_KEYS)) + ")$": _COUNT_SCHEMA}
    schema["additionalProperties"] = _METRIC_SCHEMA


def _optional_metric_schema(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of ``ModelStage.mAP``: a metric or null."""
    schema.pop("anyOf", None)
    schema["anyOf"] = [*_METRIC_SCHEMA["anyOf"], {"type": "null"}]


class ModelStage(BaseModel):
    """One entry of ``model_stages`` in result.yaml.

    Evaluation keys beside the named fields are allowed (mAR, precision, tp, ...): counts are
    non-negative ints, everything else a fraction in [0, 1] (or -1, COCO's "not computed", for
    any metric but the primary one).
    """

    model_config = ConfigDict(extra="allow", defer_build=True, json_schema_extra=_stage_schema)

    stage_name: str = Field(json_schema_extra=_IDENTIFIER_SCHEMA, description="a Python identifier")
    files: list[str] = Field(
        min_length=1,
        json_schema_extra={"items": {"type": "string", "pattern": r"^(?!/)(?!(.*/)?\.\.(/|$)).+$"}},
        description="paths relative to the models dir",
    )
    timestamp: int
    mAP: float | None = Field(default=None, json_schema_extra=_optional_metric_schema)

    @field_validator("stage_name")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not v.isidentifier():
            raise ValueError(f"stage_name {v!r} is not an identifier")
        return v

    @field_validator("files")
    @classmethod
    def _relative(cls, v: list[str]) -> list[str]:
        for f in v:
            if not f or f.startswith("/") or ".." in f.split("/"):
                raise ValueError(f"stage file {f!r} must be a relative path inside the models dir")
        return v

    @model_validator(mode="after")
    def _metrics(self) -> ModelStage:
        primary = primary_metric_key(self.evaluation_result())
        for key, value in self.evaluation_result().items():
            check_evaluation_value(key, value, primary=key == primary)
        if primary is None:
            raise ValueError("a stage needs a primary metric (maskAP, mIoU or mAP)")
        return self

    def evaluation_result(self) -> dict[str, Any]:
        """The metrics of this stage (every key but stage_name, files, timestamp; no None)."""
        data = self.model_dump(exclude=set(STAGE_RESERVED_KEYS))
        return {k: v for k, v in data.items() if v is not None}


def _result_schema(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of :class:`TrainingResult`: a top-level primary metric, when
    given, is a fraction in [0, 1] (the model also holds it equal to the best stage's)."""
    for key in PRIMARY_METRIC_KEYS:
        schema["properties"][key] = {"type": "number", "minimum": 0, "maximum": 1}


class TrainingResult(BaseModel):
    """``/out/models/result.yaml`` for protocol >= 1.0.0."""

    model_config = ConfigDict(extra="allow", defer_build=True, json_schema_extra=_result_schema)

    best_stage_name: str = Field(json_schema_extra=_IDENTIFIER_SCHEMA, description="the name of a model stage")
    model_stages: dict[str, ModelStage] = Field(
        min_length=1,
        json_schema_extra={"maxProperties": MAX_MODEL_STAGES, "propertyNames": _IDENTIFIER_SCHEMA},
    )
    attachments: dict[str, list[str]] | None = None
    evaluate_config: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TrainingResult:
        if len(self.model_stages) > MAX_MODEL_STAGES:
            raise ValueError(f"{len(self.model_stages)} model stages, at most {MAX_MODEL_STAGES}")
        for name, stage in self.model_stages.items():
            if name != stage.stage_name:
                raise ValueError(f"model_stages key {name!r} != its stage_name {stage.stage_name!r}")
        if self.best_stage_name not in self.model_stages:
            raise ValueError(f"best_stage_name {self.best_stage_name!r} is not a model stage")
        expected = best_stage(self.model_stages)
        best = self.model_stages[self.best_stage_name]
        key = primary_metric_key(best.evaluation_result())
        exp_stage = self.model_stages[expected]
        if key is not None and (exp_stage.evaluation_result().get(key), exp_stage.timestamp) != (
            best.evaluation_result().get(key),
            best.timestamp,
        ):
            raise ValueError(
                f"best_stage_name {self.best_stage_name!r} is not the stage with the highest "
                f"{key} (then latest timestamp): {expected!r}"
            )
        top = (self.model_extra or {}).get(key) if key else None
        if key is not None and top is not None and abs(float(top) - float(best.evaluation_result()[key])) > 1e-9:
            raise ValueError(f"top-level {key} {top} != best stage's {best.evaluation_result()[key]}")
        return self


def best_stage(stages: dict[str, ModelStage]) -> str:
    """Name of the best stage: the max of (primary metric, timestamp); on a full tie the stage
    that comes later in ``stages`` wins (upstream's order). The primary metric key is the first
    of maskAP > mIoU > mAP present in any stage; a stage lacking it counts as 0."""
    keys: set[str] = set()
    for s in stages.values():
        keys.update(s.evaluation_result())
    key = primary_metric_key(keys) or "mAP"
    best_name, best_key = "", None
    for s in stages.values():
        k = (float(s.evaluation_result().get(key, 0.0)), s.timestamp)
        if best_key is None or k >= best_key:
            best_name, best_key = s.stage_name, k
    return best_name


class LegacyTrainingResult(BaseModel):
    """result.yaml below protocol 1.0.0: ``{model: [files], map: <float>}``."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    model: list[str] = Field(min_length=1)
    map: float = Field(ge=0.0, le=1.0)


# ------------------------------------------------------------------ result.tsv (mining)


class MiningLine(BaseModel):
    """One line of result.tsv: ``<asset path>\\t<score>\\n`` (:func:`format_mining_line`); the
    lines are sorted by score, descending."""

    model_config = ConfigDict(defer_build=True)

    path: str = Field(min_length=1, pattern=r"^[^\t\r\n]+$", description="the candidate's path, as in the index")
    score: float = Field(allow_inf_nan=False, description="any finite number; higher is more informative")


def format_mining_line(path: str, score: float) -> str:
    """The result.tsv line of one candidate: ``f"{path}\\t{score!r}\\n"`` (the shortest repr of
    the float, what upstream writes). No check: see :class:`MiningLine`."""
    return f"{path}\t{score!r}\n"


class MiningLineError(ValueError):
    """A result.tsv line that breaks :class:`MiningLine`; ``kind`` is ``"columns"``,
    ``"number"`` or ``"finite"`` (the harness counts problems by kind)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def parse_mining_line(line: str) -> tuple[str, float]:
    """``(path, score)`` of one result.tsv line (without its newline).

    Raises:
        MiningLineError: not two tab-separated columns (``columns``), a score that ``float()``
            cannot read (``number``) or that is not finite (``finite``).
    """
    parts = line.split("\t")
    if len(parts) != 2:
        raise MiningLineError("columns", f"expected '<path>\\t<score>', got {len(parts)} column(s)")
    asset, sc = parts
    try:
        score = float(sc)
    except ValueError:
        raise MiningLineError("number", f"score {sc[:40]!r} is not a number") from None
    if not math.isfinite(score):
        raise MiningLineError("finite", f"score {sc!r} is not finite")
    return asset, score


# ------------------------------------------------------------------ infer-result.json (detection)

#: the top-level keys of infer-result.json, the ``algorithm`` values ``write_infer_result`` knows
#: (upstream's list; classification is not implemented)
INFER_ALGORITHMS = ("classification", "detection", "segmentation")


class InferBox(BaseModel):
    """A box of infer-result.json, integer pixels (docs/contract.md): ``(x, y)`` top-left
    corner, width ``w`` > 0 and height ``h`` > 0. Strict: a float or a bool is not a coordinate."""

    model_config = ConfigDict(strict=True, defer_build=True)

    x: int
    y: int
    w: int = Field(gt=0)
    h: int = Field(gt=0)


class InferAnnotation(BaseModel):
    """One box of infer-result.json: ``{"class_name", "score", "box"}``. The class name must be
    one of config.yaml's ``class_names`` (checked by :func:`infer_box_problem`, which knows them);
    the score is a finite number in [0, 1]."""

    model_config = ConfigDict(strict=True, defer_build=True)

    class_name: str
    score: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    box: InferBox


class InferImageResult(BaseModel):
    """One image's entry of a detection infer-result.json: ``{"boxes": [box, ...]}`` (an empty
    list for an image with nothing found). Below protocol 1.0.0 the list is named ``annotations``
    instead of ``boxes`` (not described by this model)."""

    model_config = ConfigDict(strict=True, defer_build=True)

    boxes: list[InferAnnotation]


class InferResult(BaseModel):
    """A whole detection infer-result.json: ``{"detection": {<image basename>: {"boxes": [...]}}}``,
    one entry per candidate image. The class names are checked against config.yaml's
    ``class_names`` by the harness, not by this model; the segmentation result (COCO style) has
    no model: :func:`check_coco_result` checks it."""

    model_config = ConfigDict(strict=True, defer_build=True)

    detection: dict[str, InferImageResult]


def infer_box_problem(b: Any, class_names: Collection[str] | None) -> str | None:
    """Why the JSON value ``b`` is not a valid :class:`InferAnnotation` whose class is in
    ``class_names`` (None: any name), or None when it is. The same verdict as the model (a test holds them
    equal), at the cost of a few type checks: infer-result.json has millions of boxes.

    Returns:
        None, or the first of ``"not an object"``, ``"class not in class_names"``, ``"score not
        in [0, 1]"``, ``"box lacks x, y, w or h"``, ``"coordinate not an integer"``, ``"w or h <= 0"``.
    """
    if not isinstance(b, dict):
        return "not an object"
    name = b.get("class_name")
    if not isinstance(name, str) or (class_names is not None and name not in class_names):
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


# ------------------------------------------------------------------ segmentation results


def rle_counts(rle: Any) -> list[int]:
    """The run lengths of a COCO RLE (``{"size": [h, w], "counts": str | [int, ...]}``), decoding
    the compressed string form (COCO's ``rleFrString``) in pure Python.

    Raises:
        ValueError: not an RLE dict, a size that is not two ints >= 0, a malformed counts string,
            a negative run, or runs that do not add up to ``h * w``.
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("an RLE must be an object with 'size' [h, w] and 'counts'")
    size = rle["size"]
    if (
        not isinstance(size, list)
        or len(size) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in size)
    ):
        raise ValueError(f"RLE size must be [height, width] integers >= 0, got {size!r}")
    counts = rle["counts"]
    if isinstance(counts, str):
        runs: list[int] = []
        p, n = 0, len(counts)
        while p < n:
            x = k = 0
            more = True
            while more:
                if p >= n:
                    raise ValueError("RLE counts string ends inside a number")
                c = ord(counts[p]) - 48
                if not 0 <= c < 64:
                    raise ValueError(f"RLE counts string holds {counts[p]!r} (expected characters '0' to 'o')")
                x |= (c & 0x1F) << (5 * k)
                more = bool(c & 0x20)
                p += 1
                k += 1
                if not more and c & 0x10:
                    x |= -1 << (5 * k)
            if len(runs) > 2:
                x += runs[-2]
            runs.append(x)
        counts = runs
    elif not isinstance(counts, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in counts):
        raise ValueError("RLE counts must be a string or a list of integers")
    if any(v < 0 for v in counts):
        raise ValueError("RLE counts hold a negative run")
    if sum(counts) != size[0] * size[1]:
        raise ValueError(f"RLE runs add up to {sum(counts)} pixels, size {size[0]}x{size[1]} has {size[0] * size[1]}")
    return list(counts)


def decode_rle(rle: Any) -> Any:
    """A COCO RLE as a ``(h, w)`` numpy uint8 mask (1 = inside). Runs alternate 0 / 1 starting
    with 0, over the pixels in column-major order, as COCO defines them.

    Raises:
        ValueError: see :func:`rle_counts`.
    """
    import numpy as np

    counts = rle_counts(rle)
    h, w = rle["size"]
    values = np.zeros(len(counts), dtype=np.uint8)
    values[1::2] = 1
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T.copy()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_polygons(seg: list[Any]) -> None:
    if not seg:
        raise ValueError("polygon list is empty")
    for i, poly in enumerate(seg):
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2 or not all(map(_is_num, poly)):
            raise ValueError(f"polygon {i} must be a list of at least 3 (x, y) number pairs")


def _coco_by_id(
    entries: list[Any], section: str, text_key: str, check: Callable[[str, dict[str, Any]], None]
) -> dict[int, dict[str, Any]]:
    """``{id: entry}`` of a COCO result's ``images`` or ``categories`` (``section``): each an
    object with an integer ``id`` and a non-empty string ``text_key``, then ``check(where,
    entry)``, then an id not seen before.

    Raises:
        ValueError: ``"<section>[i].<key>: ..."``.
    """
    what = section[:-1].replace("categorie", "category")
    out: dict[int, dict[str, Any]] = {}
    for i, e in enumerate(entries):
        where = f"{section}[{i}]"
        if not isinstance(e, dict) or not _is_int(e.get("id")):
            raise ValueError(f"{where}.id: each {what} needs an integer id")
        if not isinstance(e.get(text_key), str) or not e[text_key]:
            raise ValueError(f"{where}.{text_key}: each {what} needs a {text_key}")
        check(where, e)
        if e["id"] in out:
            raise ValueError(f"{where}.id: {what} id {e['id']} appears twice")
        out[e["id"]] = e
    return out


def _coco_images(images: list[Any]) -> dict[int, dict[str, Any]]:
    """``{id: image}`` of a COCO result's ``images``: an integer id, a file_name, optional
    width / height integers > 0.

    Raises:
        ValueError: ``"images[i].<key>: ..."``.
    """

    def size(where: str, im: dict[str, Any]) -> None:
        for k in ("width", "height"):
            if k in im and (not _is_int(im[k]) or im[k] <= 0):
                raise ValueError(f"{where}.{k}: must be an integer > 0")

    return _coco_by_id(images, "images", "file_name", size)


def _coco_categories(categories: list[Any], class_names: list[str] | None) -> dict[int, str]:
    """``{id: name}`` of a COCO result's ``categories``: an integer id, a name (one of
    ``class_names`` when given).

    Raises:
        ValueError: ``"categories[i].<key>: ..."``.
    """

    def known(where: str, c: dict[str, Any]) -> None:
        if class_names is not None and c["name"] not in class_names:
            raise ValueError(f"{where}.name: {c['name']!r} is not in class_names {list(class_names)}")

    return {k: c["name"] for k, c in _coco_by_id(categories, "categories", "name", known).items()}


def _check_coco_annotation(where: str, a: Any, images: dict[int, dict[str, Any]], cats: dict[int, str]) -> None:
    """One entry of a COCO result's ``annotations`` (see :func:`check_coco_result`).

    Raises:
        ValueError: ``"<where>.<key>: ..."``.
    """
    if not isinstance(a, dict):
        raise ValueError(f"{where}: must be an object")
    if not _is_int(a.get("image_id")) or a["image_id"] not in images:
        raise ValueError(f"{where}.image_id: {a.get('image_id')!r} is not the id of an image")
    if not _is_int(a.get("category_id")) or a["category_id"] not in cats:
        raise ValueError(f"{where}.category_id: {a.get('category_id')!r} is not the id of a category")
    try:
        _check_segmentation(a.get("segmentation"), images[a["image_id"]])
    except ValueError as e:
        raise ValueError(f"{where}.segmentation: {e}") from None
    if "bbox" in a:
        bb = a["bbox"]
        if not isinstance(bb, list) or len(bb) != 4 or not all(map(_is_num, bb)) or bb[2] < 0 or bb[3] < 0:
            raise ValueError(f"{where}.bbox: must be [x, y, w, h], finite numbers, w and h >= 0")
    if "score" in a:
        s = a["score"]
        if not _is_num(s) or not 0.0 <= s <= 1.0:
            raise ValueError(f"{where}.score: must be a number in [0, 1], got {s!r}")


def _check_segmentation(seg: Any, im: dict[str, Any]) -> None:
    """An RLE whose size is the image's (when the image gives one), or polygons.

    Raises:
        ValueError: what is wrong (without the key path).
    """
    if isinstance(seg, dict):
        rle_counts(seg)
        if "height" in im and "width" in im and seg["size"] != [im["height"], im["width"]]:
            raise ValueError(
                f"RLE size {seg['size']} differs from the image's [height, width] [{im['height']}, {im['width']}]"
            )
    elif isinstance(seg, list):
        _check_polygons(seg)
    else:
        raise ValueError("must be an RLE object or a list of polygons")


def check_coco_result(data: Any, class_names: list[str] | None = None) -> dict[str, int]:
    """Validate a segmentation infer result (COCO style), as ``write_infer_result(...,
    algorithm="segmentation")`` and the harness read it.

    The dict holds ``images`` (``id`` int, unique; ``file_name``; optional ``width`` /
    ``height``), ``categories`` (``id`` int, unique; ``name``, one of ``class_names`` when given)
    and ``annotations`` (``image_id`` and ``category_id`` that resolve; ``segmentation`` an RLE
    ``{"size": [h, w], "counts": str | [int]}`` whose runs cover ``h * w`` pixels (and match the
    image's size when given), or polygons ``[[x1, y1, x2, y2, x3, y3, ...], ...]``; optional
    ``bbox`` ``[x, y, w, h]`` of finite numbers with w, h >= 0; optional ``score`` in [0, 1]).

    Returns:
        counts: ``{"images": n, "annotations": n, "categories": n}``.

    Raises:
        ValueError: ``"<key path>: <what is wrong>"``, e.g. ``"annotations[3].score: ..."``.
    """
    if not isinstance(data, dict):
        raise ValueError(f"infer_result: a segmentation result must be an object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{key}: must be a list")
    images = _coco_images(data["images"])
    cats = _coco_categories(data["categories"], class_names)
    for i, a in enumerate(data["annotations"]):
        _check_coco_annotation(f"annotations[{i}]", a, images, cats)
    return {"images": len(images), "annotations": len(data["annotations"]), "categories": len(cats)}
