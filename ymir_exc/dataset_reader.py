"""Read the task's dataset: index files, then ark / VOC / COCO annotations as typed boxes.

Upstream-compatible calls::

    from ymir_exc import dataset_reader as dr, env
    for asset_path, annotation_path in dr.item_paths(env.DatasetType.TRAINING):
        ...                                   # annotation_path is '' for candidates
    n = dr.items_count(env.DatasetType.CANDIDATE)

Typed API for new executors::

    for item in dr.read_items(env.DatasetType.VALIDATION):      # export_format from config.yaml
        item.image_path, [(b.class_name, b.x, b.y, b.w, b.h) for b in item.boxes]

Formats: docs/contract.md. Boxes are integer pixels ``x, y, w, h`` with ``(x, y)`` the top
left corner; ark and VOC store ``xmin, ymin, xmax, ymax`` with xmax/ymax inclusive, so
``w = xmax - xmin + 1``. Differences from upstream: a blank or one-column training line is an
:class:`~ymir_exc.errors.IndexFileError` naming the file and line (upstream yielded empty paths),
and a malformed annotation is an :class:`~ymir_exc.errors.AnnotationError`, never a silent drop.
"""

from __future__ import annotations

import itertools
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from ymir_exc import _fast, env
from ymir_exc.env import DatasetType
from ymir_exc.errors import AnnotationError, ConfigFileError, IndexFileError

#: export_format values and the annotation format each one means (docs/contract.md)
EXPORT_FORMATS = {
    "ark:raw": "ark",
    "det-ark:raw": "ark",
    "voc:raw": "voc",
    "det-voc:raw": "voc",
    "seg-coco:raw": "coco",
}
DEFAULT_EXPORT_FORMAT = "det-voc:raw"


@dataclass(frozen=True)
class BBox:
    """One ground-truth box, integer pixels.

    Attributes:
        class_id: 0-based index into ``class_names``.
        class_name: ``class_names[class_id]``.
        x, y: top-left corner (pixels, may be 0).
        w, h: width and height (pixels, > 0).
        quality: ark's optional 6th column (-1.0 when absent).
        angle: ark's optional 7th column (0.0 when absent).

    Example::

        >>> box = BBox(class_id=0, class_name="tree", x=10, y=20, w=30, h=40)
        >>> (box.class_name, box.x + box.w, box.y + box.h)   # right and bottom edges
        ('tree', 40, 60)
    """

    class_id: int
    class_name: str
    x: int
    y: int
    w: int
    h: int
    quality: float = -1.0
    angle: float = 0.0

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        """``(xmin, ymin, xmax, ymax)`` with xmax/ymax exclusive (``x + w``)."""
        return (self.x, self.y, self.x + self.w, self.y + self.h)


@dataclass
class DatasetItem:
    """One image of an index file with its boxes (empty for candidates).

    Attributes:
        image_path: the asset's absolute path.
        annotation_path: its annotation file ("" for candidates).
        boxes: the parsed ground truth (:class:`BBox`, integer pixels).

    Example::

        for item in read_items("train"):            # or Task.items("train")
            print(item.image_path, len(item.boxes))
    """

    image_path: str
    annotation_path: str = ""
    boxes: list[BBox] = field(default_factory=list)


_SPLIT_NAMES = {
    "train": DatasetType.TRAINING,
    "training": DatasetType.TRAINING,
    "val": DatasetType.VALIDATION,
    "validation": DatasetType.VALIDATION,
    "test": DatasetType.CANDIDATE,
    "candidate": DatasetType.CANDIDATE,
    "mining": DatasetType.CANDIDATE,
    "infer": DatasetType.CANDIDATE,
}


def _as_dataset_type(split: DatasetType | str | int) -> DatasetType:
    if isinstance(split, str):
        try:
            return _SPLIT_NAMES[split.lower()]
        except KeyError:
            raise ValueError(f"unknown split {split!r}; one of {sorted(_SPLIT_NAMES)}") from None
    return DatasetType(split)


def index_file_path(dataset_type: DatasetType | str, env_config: env.EnvConfig | None = None) -> str:
    """The index file env.yaml names for a dataset type.

    Raises:
        IndexFileError: env.yaml sets no index file for this dataset type.
    """
    env_config = env_config or env.current_env()
    dataset_type = _as_dataset_type(dataset_type)
    key = {
        DatasetType.TRAINING: "training_index_file",
        DatasetType.VALIDATION: "val_index_file",
        DatasetType.CANDIDATE: "candidate_index_file",
    }.get(dataset_type)
    path = getattr(env_config.input, key) if key else ""
    if not path:
        raise IndexFileError(
            f"env.yaml sets no index file for {dataset_type.name}", key=f"input.{key or dataset_type.name}"
        )
    return path


def item_paths(dataset_type: DatasetType | str, env_config: env.EnvConfig | None = None) -> Iterator[tuple[str, str]]:
    """Yield ``(asset_path, annotation_path)`` for every line of the index file.

    Training and validation lines are ``<image>\\t<annotation>``; candidate lines are ``<image>``
    and yield ``annotation_path == ''``.

    The returned iterator is lazy like a generator (nothing is read, and no error raised, before
    the first item is asked for) and has ``close()``.

    Raises:
        IndexFileError: the index file is not set, missing or unreadable, or a line is blank or
            (training / validation) has no annotation column; names the file and line.
    """
    live: list[Any] = [None]
    gen = _item_path_blocks(dataset_type, env_config, live)
    it = cast(_ItemPaths, _ItemPaths.from_iterable(gen))  # a classmethod: an _ItemPaths at run time
    it._blocks, it._live = gen, live
    return it


class _ItemPaths(itertools.chain[tuple[str, str]]):
    """What :func:`item_paths` returns: the pairs of each block of lines, chained in C (a Python
    generator costs a frame resume per line). ``close()`` closes the file like a generator's."""

    __slots__ = ("_blocks", "_live")
    _blocks: Generator[Iterable[tuple[str, str]], None, None]
    _live: list[Any]

    def close(self) -> None:
        self._blocks.close()
        current, self._live[0] = self._live[0], None
        if isinstance(current, list):
            current.clear()  # ends the block being iterated
        elif current is not None:
            current.close()


def _item_path_blocks(
    dataset_type: DatasetType | str, env_config: env.EnvConfig | None, live: list[Any]
) -> Generator[Iterable[tuple[str, str]], None, None]:
    """Blocks of ``(asset, annotation)`` pairs for :func:`item_paths` (resolved on the first
    item asked for; see :func:`ymir_exc._fast.item_path_blocks`)."""
    dataset_type = _as_dataset_type(dataset_type)
    path = index_file_path(dataset_type, env_config)
    yield from _fast.item_path_blocks(path, dataset_type != DatasetType.CANDIDATE, live)


def items_count(dataset_type: DatasetType | str, env_config: env.EnvConfig | None = None) -> int:
    """Number of lines (items) of an index file; validates every line like :func:`item_paths`."""
    return sum(1 for _ in item_paths(dataset_type, env_config))


def images_count(cfg: Any = None, split: DatasetType | str = DatasetType.TRAINING) -> int:
    """Number of images of a split (``'train'``, ``'val'``, ``'candidate'`` or a DatasetType).

    ``cfg`` is the merged config (``util.get_merged_config()``) or None for the current env.
    """
    return items_count(split, _env_of(cfg))


def bboxes_count(cfg: Any = None, split: DatasetType | str = DatasetType.TRAINING) -> int:
    """Number of ground-truth boxes of a split, parsing every annotation.

    Raises:
        AnnotationError / IndexFileError: see :func:`read_items`.
    """
    return sum(len(item.boxes) for item in read_items(split, cfg=cfg))


def _env_of(cfg: Any) -> env.EnvConfig | None:
    if cfg is None:
        return None
    ymir = cfg.get("ymir") if isinstance(cfg, dict) else getattr(cfg, "ymir", None)
    if isinstance(ymir, env.EnvConfig):
        return ymir
    if isinstance(ymir, dict):
        return env.EnvConfig.model_validate(ymir)
    return None


# ---------------------------------------------------------------- annotations


def parse_ark_annotation(path: str, class_names: Sequence[str]) -> list[BBox]:
    """Parse an ark txt annotation: lines ``class_idx, xmin, ymin, xmax, ymax[, quality, angle]``.

    Integers in pixels, xmax/ymax inclusive; blank lines are skipped (an image with no box has an
    empty file).

    Raises:
        AnnotationError: the file is missing, or a line has too few fields, a non-number, a class
            index outside ``class_names``, a negative coordinate or xmax < xmin; names file and line.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise AnnotationError("annotation file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f"cannot read annotation: {e}", path=path) from None
    boxes = []
    names = ("class_idx", "xmin", "ymin", "xmax", "ymax", "quality", "angle")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = [p.strip() for p in line.split(",")]
        if len(fields) < 5:
            raise AnnotationError(
                f"expected 'class_idx, xmin, ymin, xmax, ymax[, quality, angle]', got {len(fields)} field(s)",
                path=path,
                line=n,
            )
        if len(fields) > 7:
            raise AnnotationError(f"too many fields ({len(fields)}, at most 7)", path=path, line=n)
        values: list[float] = []
        for key, text in zip(names, fields, strict=False):  # quality and angle are optional
            try:
                v = float(text)
            except ValueError:
                raise AnnotationError(f"not a number: {text!r}", path=path, line=n, key=key) from None
            if not math.isfinite(v):
                raise AnnotationError(f"not a finite number: {text!r}", path=path, line=n, key=key)
            values.append(v)
        cid = values[0]
        if cid != int(cid) or not 0 <= cid < len(class_names):
            raise AnnotationError(
                f"class index {fields[0]} outside 0..{len(class_names) - 1} (class_names: {list(class_names)})",
                path=path,
                line=n,
                key="class_idx",
            )
        boxes.append(
            _box_from_corners(
                int(cid),
                class_names,
                values[1:5],
                path,
                n,
                quality=values[5] if len(values) > 5 else -1.0,
                angle=values[6] if len(values) > 6 else 0.0,
            )
        )
    return boxes


def _box_from_corners(
    cid: int,
    class_names: Sequence[str],
    corners: Sequence[float],
    path: str,
    line: int | None,
    quality: float = -1.0,
    angle: float = 0.0,
) -> BBox:
    xmin, ymin, xmax, ymax = (int(round(v)) for v in corners)
    for key, v in zip(("xmin", "ymin"), (xmin, ymin), strict=True):
        if v < 0:
            raise AnnotationError(f"negative coordinate {v}", path=path, line=line, key=key)
    if xmax < xmin:
        raise AnnotationError(f"inverted box: xmax {xmax} < xmin {xmin}", path=path, line=line, key="xmax")
    if ymax < ymin:
        raise AnnotationError(f"inverted box: ymax {ymax} < ymin {ymin}", path=path, line=line, key="ymax")
    return BBox(cid, class_names[cid], xmin, ymin, xmax - xmin + 1, ymax - ymin + 1, quality, angle)


def parse_voc_annotation(path: str, class_names: Sequence[str]) -> list[BBox]:
    """Parse a Pascal VOC xml annotation (``<object><name>``, ``<bndbox>`` xmin..ymax inclusive).

    Raises:
        AnnotationError: missing file, invalid XML, an object without name / bndbox, a
            coordinate that is not a number, a class not in ``class_names``, an inverted box.
    """
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise AnnotationError("annotation file not found", path=path) from None
    except ET.ParseError as e:
        raise AnnotationError(f"not valid XML: {e}", path=path, line=e.position[0]) from None
    except OSError as e:
        raise AnnotationError(f"cannot read annotation: {e}", path=path) from None
    index = {name: i for i, name in enumerate(class_names)}
    boxes = []
    for k, obj in enumerate(root.iter("object"), 1):
        name = (obj.findtext("name") or "").strip()
        where = f"object[{k}]"
        if not name:
            raise AnnotationError("object without <name>", path=path, key=where)
        if name not in index:
            raise AnnotationError(
                f"class {name!r} not in class_names {list(class_names)}", path=path, key=f"{where}.name"
            )
        bnd = obj.find("bndbox")
        if bnd is None:
            raise AnnotationError("object without <bndbox>", path=path, key=where)
        corners = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            text = bnd.findtext(tag)
            try:
                v = float(text)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise AnnotationError(
                    f"<{tag}> is not a number: {text!r}", path=path, key=f"{where}.bndbox.{tag}"
                ) from None
            if not math.isfinite(v):
                raise AnnotationError(f"<{tag}> is not finite", path=path, key=f"{where}.bndbox.{tag}")
            corners.append(v)
        try:
            boxes.append(_box_from_corners(index[name], class_names, corners, path, None))
        except AnnotationError as e:
            raise AnnotationError(e.message, path=path, key=f"{where}.bndbox.{e.key}") from None
    return boxes


def load_coco_annotations(path: str, class_names: Sequence[str]) -> dict[str, list[BBox]]:
    """Parse a COCO json (``seg-coco:raw``) into ``{image file_name, as written in the json: [BBox]}``.

    Boxes are matched to images by image id, so images with the same base name in different
    folders (``images/a/0001.jpg``, ``images/b/0001.jpg``) keep their own boxes. Look an image
    file up with :func:`coco_boxes_lookup`. Category names map to ``class_names`` by name;
    ``bbox`` is ``[x, y, w, h]`` in pixels.

    Raises:
        AnnotationError: missing / invalid json, a category not in class_names, a bad bbox, two
            images with the same ``file_name`` or the same ``id`` (key ``images[i]...`` named).
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise AnnotationError("COCO annotation file not found", path=path) from None
    except (OSError, ValueError, RecursionError) as e:
        raise AnnotationError(f"not valid JSON: {e}", path=path) from None
    index = {name: i for i, name in enumerate(class_names)}
    try:
        cats = {c["id"]: c["name"] for c in data.get("categories", [])}
        images: dict[Any, str] = {}
        first: dict[str, int] = {}
        for i, im in enumerate(data.get("images", [])):
            file_name, image_id = im["file_name"], im["id"]
            if not isinstance(file_name, str) or not file_name:
                raise AnnotationError("file_name must be a non-empty string", path=path, key=f"images[{i}].file_name")
            if file_name in first:
                raise AnnotationError(
                    f"file_name {file_name!r} is also images[{first[file_name]}]'s: each image "
                    f"needs its own file_name (boxes are matched to image files by it)",
                    path=path,
                    key=f"images[{i}].file_name",
                )
            if image_id in images:
                raise AnnotationError(f"image id {image_id!r} is used twice", path=path, key=f"images[{i}].id")
            first[file_name] = i
            images[image_id] = file_name
        result: dict[str, list[BBox]] = {name: [] for name in images.values()}
        for k, ann in enumerate(data.get("annotations", [])):
            key = f"annotations[{k}]"
            name = cats.get(ann["category_id"])
            if name not in index:
                raise AnnotationError(
                    f"category {name or ann['category_id']!r} not in class_names", path=path, key=f"{key}.category_id"
                )
            x, y, w, h = (float(v) for v in ann["bbox"])
            if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
                raise AnnotationError(f"bad bbox {ann['bbox']}", path=path, key=f"{key}.bbox")
            box = _box_from_corners(index[name], class_names, (x, y, x + w - 1, y + h - 1), path, None)
            if ann["image_id"] not in images:
                raise AnnotationError(
                    f"image_id {ann['image_id']!r} names no image in 'images'", path=path, key=f"{key}.image_id"
                )
            result[images[ann["image_id"]]].append(box)
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # AttributeError: null / a list for an object
        if isinstance(e, AnnotationError):
            raise
        raise AnnotationError(f"malformed COCO structure: {e!r}", path=path) from None
    return result


def _name_parts(name: str) -> tuple[str, ...]:
    """A file name's path components (``\\`` read as ``/``; no root, no ``.``)."""
    return tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))


def coco_boxes_lookup(boxes: dict[str, list[BBox]], where: str = "") -> Callable[[str], list[BBox]]:
    """A function ``image path -> [BBox]`` over :func:`load_coco_annotations`' result.

    An image's entry is the one whose ``file_name`` is the path's ending, component by component
    (``images/a/0001.jpg`` names ``/data/images/a/0001.jpg``, not ``/data/images/b/0001.jpg``);
    the longest such ending wins. Failing that, the one entry with the path's base name (a json
    that names images by absolute paths elsewhere). An image no entry names has no boxes.

    Raises (from the returned function):
        AnnotationError: several entries share the path's base name and none is its ending
            (``where``: the json, named in the error).
    """
    by_base: dict[str, list[tuple[tuple[str, ...], str]]] = {}
    for name in boxes:
        parts = _name_parts(name)
        if parts:
            by_base.setdefault(parts[-1], []).append((parts, name))

    def lookup(image_path: str) -> list[BBox]:
        parts = _name_parts(image_path)
        entries = by_base.get(parts[-1], []) if parts else []
        ends = [(len(p), n) for p, n in entries if len(p) <= len(parts) and parts[len(parts) - len(p) :] == p]
        if ends:
            return boxes[max(ends)[1]]
        if len(entries) == 1:
            return boxes[entries[0][1]]
        if entries:
            raise AnnotationError(
                f"image {image_path}: {len(entries)} images of the json have its base name "
                f"({', '.join(sorted(n for _, n in entries)[:5])}) and none names its folder",
                path=where or None,
                key="images.file_name",
            )
        return []

    return lookup


def annotation_format(export_format: str | None) -> str:
    """``'ark'``, ``'voc'`` or ``'coco'`` for an ``export_format`` value (None -> the default).

    Raises:
        ConfigFileError: an unknown value, or one without ``:raw`` (docs/contract.md: an error, not
            "no annotations").
    """
    fmt = (export_format or DEFAULT_EXPORT_FORMAT).strip()
    try:
        return EXPORT_FORMATS[fmt]
    except KeyError:
        raise ConfigFileError(
            f"unknown export_format {export_format!r}; one of {sorted(EXPORT_FORMATS)}", key="export_format"
        ) from None


def read_items(
    dataset_type: DatasetType | str,
    cfg: Any = None,
    *,
    class_names: Sequence[str] | None = None,
    export_format: str | None = None,
) -> Iterator[DatasetItem]:
    """Yield typed :class:`DatasetItem` objects with parsed boxes.

    Args:
        dataset_type: TRAINING / VALIDATION (boxes parsed) or CANDIDATE (no boxes).
        cfg: merged config (``util.get_merged_config()``); None reads env.yaml and config.yaml.
        class_names: defaults to ``cfg.param.class_names``.
        export_format: defaults to ``cfg.param.export_format``, else ``det-voc:raw``.

    Raises:
        IndexFileError, AnnotationError, ConfigFileError: naming the file, line and key at fault.
    """
    env_config = _env_of(cfg)
    if cfg is None or class_names is None or export_format is None:
        param = _param_of(cfg)
        if class_names is None:
            class_names = param.get("class_names")
        if export_format is None:
            export_format = param.get("export_format")
    dataset_type = _as_dataset_type(dataset_type)
    if dataset_type == DatasetType.CANDIDATE:
        for asset, annotation in item_paths(dataset_type, env_config):
            yield DatasetItem(asset, annotation)
        return
    if not class_names:
        raise ConfigFileError("class_names is not set", key="class_names")
    if isinstance(class_names, str) or not all(isinstance(n, str) and n for n in class_names):
        raise ConfigFileError(f"class_names must be a list of names, got {class_names!r}", key="class_names")
    fmt = annotation_format(export_format)
    coco: Callable[[str], list[BBox]] | None = None
    for asset, annotation in item_paths(dataset_type, env_config):
        if fmt == "ark":
            boxes = parse_ark_annotation(annotation, class_names)
        elif fmt == "voc":
            boxes = parse_voc_annotation(annotation, class_names)
        else:
            if coco is None:
                coco = coco_boxes_lookup(load_coco_annotations(annotation, class_names), annotation)
            boxes = coco(asset)
        yield DatasetItem(asset, annotation, boxes)


def _param_of(cfg: Any) -> dict[str, Any]:
    if cfg is None:
        return env.get_executor_config()
    param = cfg.get("param") if isinstance(cfg, dict) else getattr(cfg, "param", None)
    return dict(param or {})


def filter_broken_images(files: Iterable[str]) -> list[str]:
    """Return the files that are readable, decodable images (Pillow ``verify``), in order.

    Unlike upstream, what is dropped is not silent: each dropped file is reported on stderr with
    the reason. Use :func:`check_image` to raise instead.
    """
    import sys

    good = []
    for path in files:
        try:
            check_image(path)
        except Exception as e:
            print(f"ymir_exc: dropping broken image {path}: {e}", file=sys.stderr)
        else:
            good.append(path)
    return good


def check_image(path: str) -> tuple[int, int]:
    """Open an image with Pillow and verify it; returns ``(width, height)`` in pixels.

    Raises:
        ImageError: missing, unreadable or not a decodable image.
    """
    from ymir_exc.errors import ImageError

    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        raise ImageError("Pillow is needed to check images", path=path) from None
    try:
        with Image.open(path) as im:
            size = im.size
            im.verify()
        with Image.open(path) as im:
            im.load()
    except FileNotFoundError:
        raise ImageError("image not found", path=path) from None
    except Exception as e:
        raise ImageError(f"not a readable image: {e}", path=path) from None
    return int(size[0]), int(size[1])
