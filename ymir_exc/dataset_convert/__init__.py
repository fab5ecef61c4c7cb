"""Turn the task's YMIR dataset into the layouts training frameworks read: Ultralytics YOLO and COCO.

Neither function copies an image nor writes under the input root (``/in``); both read the boxes
through :func:`ymir_exc.dataset_reader.read_items`, so every export format (``ark:raw``,
``voc:raw``, ``seg-coco:raw``) works and a malformed annotation is an error naming the file and
line. Nothing here imports torch or ultralytics (Pillow reads image sizes from the headers)::

    from ymir_exc.util import get_merged_config
    from ymir_exc.dataset_convert import convert_ymir_to_yolov5, convert_ymir_to_coco

    cfg = get_merged_config()
    data_yaml = convert_ymir_to_yolov5(cfg)      # '/out/yolo_dataset/data.yaml'
    YOLO("yolov8n.yaml").train(data=data_yaml)   # in the executor (Ultralytics)

    coco = convert_ymir_to_coco()                # {'train': {'img_prefix': ..., 'ann_file': ...}, 'val': ...}

Ultralytics YOLO layout written by :func:`convert_ymir_to_yolov5` (``OUT`` = ``out_dir``)::

    OUT/images/train/<name>.<ext>   symlink -> the asset (a hard link where symlinks fail)
    OUT/labels/train/<name>.txt     one line per box: 'cid xc yc w h'
    OUT/images/val/..., OUT/labels/val/...
    OUT/train.txt, OUT/val.txt      absolute paths of the links, one per line
    OUT/data.yaml                   {path: OUT, train: OUT/train.txt, val: OUT/val.txt,
                                     nc: <number of classes>, names: {0: name0, 1: name1, ...}}

Label units: ``cid`` is the 0-based index into ``class_names``; ``xc yc`` is the box centre and
``w h`` its size, as fractions (0-1) of the image width / height. A YMIR box ``x, y, w, h``
(integer pixels, covering columns ``x .. x+w-1``) becomes ``xc = (x + w/2) / W``,
``yc = (y + h/2) / H``, ``w/W``, ``h/H``. Ultralytics finds a label by replacing the last
``/images/`` of the image path with ``/labels/``, hence the links (YMIR assets live in
``/in/assets/<xx>/<sha1>.<ext>``, which has no ``images`` folder).

Sizes ``W, H`` are the image's size after its EXIF orientation is applied (what Ultralytics and
OpenCV decode). A box that sticks out of the image is clipped to it; a box left empty by the
clipping is dropped; both are counted and reported on stderr (Ultralytics would otherwise drop
the whole image as "out of bounds"). A missing or undecodable image header is an
:class:`~ymir_exc.errors.ImageError` (return code 300003) naming the file.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import yaml

from ymir_exc import dataset_reader as dr
from ymir_exc.dataset_reader import BBox, DatasetItem
from ymir_exc.env import DatasetType
from ymir_exc.errors import ConfigFileError, ImageError, IndexFileError
from ymir_exc.formats.annotations import image_size

__all__ = [
    "convert_ymir_to_yolov5",
    "convert_ymir_to_yolo",
    "convert_ymir_to_coco",
    "ymir_to_coco_dict",
    "yolo_label_lines",
    "image_size",
    "ConvertStats",
    "find_blank_area_in_dataset",
    "coco_union_mask",
]

#: folder under ``output.root_dir`` used when no ``out_dir`` is given
DEFAULT_YOLO_DIR = "yolo_dataset"
DEFAULT_COCO_DIR = "coco_dataset"

_SPLITS = (("train", DatasetType.TRAINING), ("val", DatasetType.VALIDATION))


class ConvertStats:
    """Counts of what a conversion did (``images``, ``boxes``, ``clipped``, ``dropped`` per split)."""

    def __init__(self) -> None:
        self.images: dict[str, int] = {}
        self.boxes: dict[str, int] = {}
        self.clipped: dict[str, int] = {}
        self.dropped: dict[str, int] = {}

    def add(self, split: str, boxes: int, clipped: int, dropped: int) -> None:
        self.images[split] = self.images.get(split, 0) + 1
        self.boxes[split] = self.boxes.get(split, 0) + boxes
        self.clipped[split] = self.clipped.get(split, 0) + clipped
        self.dropped[split] = self.dropped.get(split, 0) + dropped

    def report(self, what: str) -> None:
        """One stderr line when a box was clipped or dropped."""
        for split in self.images:
            if self.clipped.get(split) or self.dropped.get(split):
                print(
                    f"ymir_exc.dataset_convert ({what}, {split}): {self.clipped[split]} box(es) clipped to the "
                    f"image, {self.dropped[split]} dropped (empty after clipping)",
                    file=sys.stderr,
                )


def _clip(box: BBox, width: int, height: int) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` pixel edges (x1 exclusive) of ``box`` clipped to the image, or None if empty."""
    x0, y0 = max(0, box.x), max(0, box.y)
    x1, y1 = min(width, box.x + box.w), min(height, box.y + box.h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def yolo_label_lines(boxes: Sequence[BBox], width: int, height: int) -> tuple[list[str], int, int]:
    """Ultralytics label lines for ``boxes`` of an image of ``width`` x ``height`` pixels.

    Returns:
        ``(lines, clipped, dropped)``: lines ``'cid xc yc w h'`` (fractions 0-1, 6 decimals, no
        newline), the number of boxes clipped to the image and of boxes dropped as empty.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    lines, clipped, dropped = [], 0, 0
    for b in boxes:
        edges = _clip(b, width, height)
        if edges is None:
            dropped += 1
            continue
        x0, y0, x1, y1 = edges
        if edges != (b.x, b.y, b.x + b.w, b.y + b.h):
            clipped += 1
        lines.append(
            f"{b.class_id} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
            f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}"
        )
    return lines, clipped, dropped


def _cfg_or_current(cfg: Any) -> Any:
    if cfg is None:
        from ymir_exc.util import get_merged_config

        return get_merged_config()
    return cfg


def _ymir(cfg: Any) -> Any:
    return cfg["ymir"] if isinstance(cfg, dict) and "ymir" in cfg else cfg.ymir


def _param(cfg: Any) -> dict[str, Any]:
    p = cfg.get("param") if isinstance(cfg, dict) else getattr(cfg, "param", None)
    return dict(p or {})


def _check_out_dir(out_dir: str, cfg: Any) -> str:
    """Absolute ``out_dir``; refuses a folder inside the task's input root (read-only ``/in``)."""
    out_dir = os.path.abspath(out_dir)
    in_root = os.path.abspath(_ymir(cfg).input.root_dir)
    if out_dir == in_root or out_dir.startswith(in_root.rstrip(os.sep) + os.sep):
        raise ConfigFileError(
            f"refusing to write the converted dataset under the input root {in_root}: "
            f"{out_dir} (choose a folder under the output root or a temp dir)",
            key="out_dir",
        )
    return out_dir


def _class_names(cfg: Any) -> list[str]:
    names = _param(cfg).get("class_names")
    if not names or not isinstance(names, (list, tuple)):
        raise ConfigFileError("class_names is not set (a non-empty list is needed)", key="class_names")
    return [str(n) for n in names]


def _link(src: str, dst: str) -> None:
    """Symlink ``dst`` -> ``src`` (absolute); a hard link where symlinks are refused. Never a copy."""
    if os.path.lexists(dst):
        os.remove(dst)
    try:
        os.symlink(os.path.abspath(src), dst)
    except OSError:
        try:
            os.link(src, dst)
        except OSError as e:
            raise ImageError(
                f"cannot link the image into {os.path.dirname(dst)} "
                f"(neither a symlink nor a hard link works): {e.strerror}",
                path=src,
            ) from None


def _unique_name(path: str, used: set[str]) -> str:
    base = os.path.basename(path)
    stem, ext = os.path.splitext(base)
    name, n = stem + ext.lower(), 1
    while name in used:
        name = f"{stem}_{n}{ext.lower()}"
        n += 1
    used.add(name)
    return name


def convert_ymir_to_yolov5(cfg: Any = None, out_dir: str | None = None) -> str:
    """Write the train and val sets in the Ultralytics YOLO layout (see the module docstring).

    Args:
        cfg: merged config (``util.get_merged_config()``: ``.param`` with ``class_names`` and
            optionally ``export_format``, ``.ymir`` the env); None reads the current task's files.
        out_dir: where to write; default ``<output.root_dir>/yolo_dataset`` (``/out/yolo_dataset``).
            Must not be inside the input root. Existing links and labels there are replaced.

    Returns:
        the absolute path of ``data.yaml``.

    Raises:
        ConfigFileError: no class_names, an unknown export_format, or out_dir under the input root.
        IndexFileError: an index file is missing or malformed, or the train / val set is empty.
        AnnotationError: a malformed annotation (file, line and key named).
        ImageError: an image is missing or has no readable header.
    """
    cfg = _cfg_or_current(cfg)
    class_names = _class_names(cfg)
    out_dir = _check_out_dir(out_dir or os.path.join(_ymir(cfg).output.root_dir, DEFAULT_YOLO_DIR), cfg)
    stats = ConvertStats()
    data: dict[str, Any] = {"path": out_dir}
    for split, dataset_type in _SPLITS:
        img_dir = os.path.join(out_dir, "images", split)
        lbl_dir = os.path.join(out_dir, "labels", split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(lbl_dir, exist_ok=True)
        used: set[str] = set()
        listed: list[str] = []
        for item in dr.read_items(dataset_type, cfg, class_names=class_names):
            w, h = image_size(item.image_path)
            name = _unique_name(item.image_path, used)
            link = os.path.join(img_dir, name)
            _link(item.image_path, link)
            lines, clipped, dropped = yolo_label_lines(item.boxes, w, h)
            label = os.path.join(lbl_dir, os.path.splitext(name)[0] + ".txt")
            with open(label, "w", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in lines))
            stats.add(split, len(lines), clipped, dropped)
            listed.append(link)
        if not listed:
            path = dr.index_file_path(dataset_type, _ymir(cfg))
            raise IndexFileError(f"the {split} set is empty: training needs images in it", path=path)
        list_file = os.path.join(out_dir, f"{split}.txt")
        with open(list_file, "w", encoding="utf-8") as f:
            f.write("".join(p + "\n" for p in listed))
        data[split] = list_file
    data["nc"] = len(class_names)
    data["names"] = {i: n for i, n in enumerate(class_names)}
    stats.report("yolo")
    data_yaml = os.path.join(out_dir, "data.yaml")
    with open(data_yaml, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False, allow_unicode=True)
    return data_yaml


#: the same function under a framework-neutral name
convert_ymir_to_yolo = convert_ymir_to_yolov5


def ymir_to_coco_dict(
    items: Iterable[DatasetItem],
    class_names: Sequence[str],
    *,
    cat_id_from_zero: bool = False,
    stats: ConvertStats | None = None,
    split: str = "",
) -> dict[str, Any]:
    """A COCO detection dict for ``items``.

    Format: ``images`` ``{id, file_name (absolute image path), width, height}`` (ids from 1);
    ``annotations`` ``{id (from 1), image_id, category_id, bbox [x, y, w, h] in pixels, area
    (w * h, pixels^2), iscrowd 0}``; ``categories`` ``{id, name, supercategory 'none'}`` with
    ``id = class index + 1`` (``+ 0`` with ``cat_id_from_zero``). Boxes are clipped to the image
    as for YOLO; annotation ids start at 1 because pycocotools treats id 0 as "no match".
    """
    start = 0 if cat_id_from_zero else 1
    data: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "licenses": [],
        "categories": [{"id": i + start, "name": n, "supercategory": "none"} for i, n in enumerate(class_names)],
    }
    for item in items:
        w, h = image_size(item.image_path)
        image_id = len(data["images"]) + 1
        data["images"].append({"id": image_id, "file_name": os.path.abspath(item.image_path), "width": w, "height": h})
        kept = clipped = dropped = 0
        for b in item.boxes:
            edges = _clip(b, w, h)
            if edges is None:
                dropped += 1
                continue
            x0, y0, x1, y1 = edges
            clipped += edges != (b.x, b.y, b.x + b.w, b.y + b.h)
            kept += 1
            data["annotations"].append(
                {
                    "id": len(data["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": b.class_id + start,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                    "segmentation": [],
                }
            )
        if stats is not None:
            stats.add(split, kept, clipped, dropped)
    return data


def convert_ymir_to_coco(
    cat_id_from_zero: bool = False, cfg: Any = None, out_dir: str | None = None
) -> dict[str, dict[str, str]]:
    """Write ``ymir_train.json`` and ``ymir_val.json`` (COCO detection, see
    :func:`ymir_to_coco_dict`) for the train and val sets.

    Args:
        cat_id_from_zero: category ids ``0..n-1`` instead of COCO's usual ``1..n``.
        cfg: merged config; None reads the current task's files.
        out_dir: default ``<output.root_dir>/coco_dataset``; never under the input root.

    Returns:
        ``{"train": {"img_prefix": <assets dir>, "ann_file": <json path>}, "val": {...}}``
        (the shape upstream executors pass to mmdetection; ``file_name`` entries are absolute,
        so joining them to ``img_prefix`` gives the same path).

    Raises:
        ConfigFileError, IndexFileError, AnnotationError, ImageError: as
        :func:`convert_ymir_to_yolov5`.
    """
    cfg = _cfg_or_current(cfg)
    class_names = _class_names(cfg)
    out_dir = _check_out_dir(out_dir or os.path.join(_ymir(cfg).output.root_dir, DEFAULT_COCO_DIR), cfg)
    os.makedirs(out_dir, exist_ok=True)
    stats = ConvertStats()
    result: dict[str, dict[str, str]] = {}
    for split, dataset_type in _SPLITS:
        items = dr.read_items(dataset_type, cfg, class_names=class_names)
        data = ymir_to_coco_dict(items, class_names, cat_id_from_zero=cat_id_from_zero, stats=stats, split=split)
        path = os.path.join(out_dir, f"ymir_{split}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False)
        result[split] = {"img_prefix": _ymir(cfg).input.assets_dir, "ann_file": path}
    stats.report("coco")
    return result


# ------------------------------------------------------------------ semantic segmentation


def coco_union_mask(annotations: Sequence[dict[str, Any]], width: int, height: int) -> Any:
    """The union of COCO segmentations (RLE or polygons) as a ``(height, width)`` numpy bool
    array (True = labeled). Polygons are filled with Pillow; RLEs decoded with
    :func:`ymir_exc.formats.decode_rle` (an RLE of another size is an error).

    Raises:
        ValueError: a malformed segmentation, or an RLE whose size is not ``[height, width]``.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    from ymir_exc.formats import decode_rle

    mask = np.zeros((height, width), dtype=bool)
    canvas = None
    for ann in annotations:
        seg = ann.get("segmentation")
        if isinstance(seg, dict):
            if list(seg.get("size", [])) != [height, width]:
                raise ValueError(f"RLE size {seg.get('size')} is not the image's [height, width] [{height}, {width}]")
            mask |= decode_rle(seg).astype(bool)
        elif isinstance(seg, list):
            if canvas is None:
                canvas = Image.new("1", (width, height), 0)
            draw = ImageDraw.Draw(canvas)
            for poly in seg:
                if not isinstance(poly, list) or len(poly) < 6:
                    raise ValueError("a polygon needs at least 3 (x, y) pairs")
                draw.polygon([(float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly) - 1, 2)], fill=1)
        else:
            raise ValueError("segmentation must be an RLE object or a list of polygons")
    if canvas is not None:
        mask |= np.asarray(canvas, dtype=bool)
    return mask


def find_blank_area_in_dataset(ymir_cfg: Any = None, max_sample_num: int = 100) -> bool:
    """Semantic segmentation: whether any sampled training image has unlabeled pixels (pixels
    that no annotation covers: the "background" a model must then learn as a class).

    Reads the training split's ``seg-coco:raw`` annotations (one COCO json shared by the index
    lines); samples at most ``max_sample_num`` images, evenly spaced over the index (the same
    ones on every call); an image without annotations is all blank. Uses numpy and Pillow only.

    Args:
        ymir_cfg: the merged config (``util.get_merged_config()``), or None for the current one.
        max_sample_num: most images to look at (>= 1).

    Returns:
        True when a sampled image has a blank pixel; False when every sampled image is fully
        labeled (or the split is empty).

    Raises:
        AnnotationError: the COCO json is missing, not JSON, or has a malformed segmentation.
        ImageError: an image without width / height in the json cannot be read.
    """
    cfg = _cfg_or_current(ymir_cfg)
    ymir = _ymir(cfg) if not hasattr(cfg, "input") else cfg
    items = list(dr.item_paths(DatasetType.TRAINING, ymir))
    if not items or max_sample_num < 1:
        return False
    step = max(1, len(items) // max_sample_num)
    sample = items[::step][:max_sample_num]
    loaded: dict[str, _CocoIndex] = {}
    for asset, ann_path in sample:
        if ann_path not in loaded:
            loaded[ann_path] = _load_coco_index(ann_path)
        if _has_blank_pixel(asset, ann_path, *loaded[ann_path]):
            return True
    return False


#: a COCO json by image: ``({file basename: image entry}, {image id: [annotation, ...]})``
_CocoIndex = tuple[dict[str, dict[str, Any]], dict[Any, list[dict[str, Any]]]]


def _load_coco_index(ann_path: str) -> _CocoIndex:
    """Read a ``seg-coco:raw`` json and index it by image.

    Raises:
        AnnotationError: the file is missing or is not a valid COCO json.
    """
    from ymir_exc.errors import AnnotationError

    try:
        with open(ann_path, encoding="utf-8") as f:
            data = json.load(f)
        images = {os.path.basename(im["file_name"]): im for im in data.get("images", [])}
        by_image: dict[Any, list[dict[str, Any]]] = {}
        for a in data.get("annotations", []):
            by_image.setdefault(a["image_id"], []).append(a)
    except FileNotFoundError:
        raise AnnotationError("COCO annotation file not found", path=ann_path) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise AnnotationError(f"not a valid COCO json: {e!r}", path=ann_path) from None
    return images, by_image


def _has_blank_pixel(
    asset: str, ann_path: str, images: dict[str, dict[str, Any]], by_image: dict[Any, list[dict[str, Any]]]
) -> bool:
    """Whether the image ``asset`` has a pixel no annotation of the indexed json covers (an image
    the json does not list, or one without annotations, is all blank).

    Raises:
        AnnotationError: a malformed segmentation.
        ImageError: the json gives no width / height and the image cannot be read.
    """
    from ymir_exc.errors import AnnotationError

    im = images.get(os.path.basename(asset))
    if im is None:
        return True  # an image the json does not list has no label at all
    w, h = im.get("width"), im.get("height")
    if not w or not h:
        w, h = image_size(asset)
    anns = by_image.get(im.get("id"), [])
    if not anns:
        return True
    try:
        mask = coco_union_mask(anns, int(w), int(h))
    except ValueError as e:
        raise AnnotationError(f"image {im.get('file_name')!r}: {e}", path=ann_path) from None
    return not mask.all()
