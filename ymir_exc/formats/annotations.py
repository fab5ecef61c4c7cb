"""Annotation files of a YMIR dataset, read AND written: ark txt, Pascal VOC xml, COCO json.

One module per file family: the readers the executor-side SDK calls (re-exported by
:mod:`ymir_exc.dataset_reader`) and the writers the harness calls when it prepares ``in/``
(re-exported by :mod:`ymir_exc.harness.workspace`) sit side by side, so the two cannot drift::

    from ymir_exc.formats.annotations import BBox, ark_text, parse_ark_annotation
    box = BBox(0, "tree", x=10, y=20, w=30, h=40)
    ark_text([box])                          # '0, 10, 20, 39, 59\n' (xmax, ymax inclusive)

Boxes are integer pixels ``x, y, w, h`` with ``(x, y)`` the top-left corner, in the pixel frame
of the image as displayed: after its EXIF orientation is applied (docs/contract.md, "Pixel frame
and EXIF orientation"); :func:`image_size` gives that frame's size. Nothing here imports more
than the standard library at import time (Pillow is imported when a size is read).
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ymir_exc.errors import AnnotationError, ConfigFileError, ImageError

#: the EXIF tag holding the orientation (1 = as stored; 5-8 = rotated by 90 / 270 degrees)
EXIF_ORIENTATION = 0x0112

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


# ---------------------------------------------------------------- readers


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
    try:
        images = _coco_images(data, path)
        result: dict[str, list[BBox]] = {name: [] for name in images.values()}
        cats = {c["id"]: c["name"] for c in data.get("categories", [])}
        index = {name: i for i, name in enumerate(class_names)}
        for k, ann in enumerate(data.get("annotations", [])):
            box = _coco_box(ann, f"annotations[{k}]", cats, index, class_names, path)
            if ann["image_id"] not in images:
                raise AnnotationError(
                    f"image_id {ann['image_id']!r} names no image in 'images'",
                    path=path,
                    key=f"annotations[{k}].image_id",
                )
            result[images[ann["image_id"]]].append(box)
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # AttributeError: null / a list for an object
        if isinstance(e, AnnotationError):
            raise
        raise AnnotationError(f"malformed COCO structure: {e!r}", path=path) from None
    return result


def _coco_images(data: Any, path: str) -> dict[Any, str]:
    """``{image id: file_name}`` of a COCO json's ``images``; each id and file_name used once."""
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
    return images


def _coco_box(
    ann: Any, key: str, cats: dict[Any, str], index: dict[str, int], class_names: Sequence[str], path: str
) -> BBox:
    """One COCO annotation's ``bbox`` ``[x, y, w, h]`` (pixels) as a :class:`BBox` of ``class_names``."""
    name = cats.get(ann["category_id"])
    if name not in index:
        raise AnnotationError(
            f"category {name or ann['category_id']!r} not in class_names", path=path, key=f"{key}.category_id"
        )
    x, y, w, h = (float(v) for v in ann["bbox"])
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise AnnotationError(f"bad bbox {ann['bbox']}", path=path, key=f"{key}.bbox")
    return _box_from_corners(index[name], class_names, (x, y, x + w - 1, y + h - 1), path, None)


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


# ---------------------------------------------------------------- writers


def voc_xml(filename: str, size: tuple[int, int], boxes: Sequence[BBox]) -> str:
    """A Pascal VOC annotation; ``bndbox`` is inclusive (xmax = x + w - 1), as YMIR writes it."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = filename
    s = ET.SubElement(root, "size")
    ET.SubElement(s, "width").text = str(size[0])
    ET.SubElement(s, "height").text = str(size[1])
    ET.SubElement(s, "depth").text = "3"
    for b in boxes:
        o = ET.SubElement(root, "object")
        ET.SubElement(o, "name").text = b.class_name
        ET.SubElement(o, "difficult").text = "0"
        bb = ET.SubElement(o, "bndbox")
        for tag, v in (("xmin", b.x), ("ymin", b.y), ("xmax", b.x + b.w - 1), ("ymax", b.y + b.h - 1)):
            ET.SubElement(bb, tag).text = str(v)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def ark_text(boxes: Sequence[BBox]) -> str:
    """ark lines ``class_idx, xmin, ymin, xmax, ymax`` (inclusive corners)."""
    return "".join(f"{b.class_id}, {b.x}, {b.y}, {b.x + b.w - 1}, {b.y + b.h - 1}\n" for b in boxes)


class CocoWriter:
    """Builds the ``seg-coco:raw`` json (``coco-annotations.json``) one image at a time: category
    ids are 1-based positions in ``class_names``; ``bbox`` is ``[x, y, w, h]`` in pixels, the
    image ``width`` / ``height`` those of :func:`image_size`. Holds the document in memory
    (about 200 bytes per image and per box).

    Example::

        w = CocoWriter(["tree"])
        w.add_image("ab.jpg", (320, 240), [BBox(0, "tree", 1, 2, 3, 4)])   # -> image id 1
        json.loads(w.to_json())["annotations"][0]["bbox"]                  # [1, 2, 3, 4]
    """

    def __init__(self, class_names: Sequence[str]) -> None:
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.categories = [{"id": i + 1, "name": n} for i, n in enumerate(class_names)]

    def add_image(self, file_name: str, size: tuple[int, int], boxes: Sequence[BBox]) -> int:
        """Add one image and its boxes; returns its id (1, 2, ...)."""
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "width": size[0], "height": size[1]})
        for b in boxes:
            self.annotations.append(
                {
                    "id": len(self.annotations) + 1,
                    "image_id": image_id,
                    "category_id": b.class_id + 1,
                    "bbox": [b.x, b.y, b.w, b.h],
                    "area": b.w * b.h,
                    "iscrowd": 0,
                }
            )
        return image_id

    def to_json(self) -> str:
        """The document: ``{"images", "annotations", "categories"}``."""
        return json.dumps({"images": self.images, "annotations": self.annotations, "categories": self.categories})


# ---------------------------------------------------------------- the pixel frame


def oriented_size(im: Any) -> tuple[int, int]:
    """``(width, height)`` in pixels of an open Pillow image as displayed: its stored size, with
    width and height swapped when the EXIF orientation is 5-8 (a 90 or 270 degree rotation).
    An unreadable EXIF block counts as orientation 1 (as stored)."""
    w, h = im.size
    try:
        orientation = im.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:
        orientation = 1
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return int(w), int(h)


def image_size(path: str) -> tuple[int, int]:
    """``(width, height)`` in pixels of an image in the annotation pixel frame: as displayed, EXIF
    orientation applied (the frame Ultralytics, browsers and the YOLO / VOC / COCO writers here
    use; docs/contract.md, "Pixel frame and EXIF orientation"). Reads the header only.

    Raises:
        ImageError: the file is missing or is not an image Pillow can identify.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            return oriented_size(im)
    except FileNotFoundError:
        raise ImageError("image not found", path=path) from None
    except Exception as e:
        raise ImageError(f"not a readable image: {e}", path=path) from None
