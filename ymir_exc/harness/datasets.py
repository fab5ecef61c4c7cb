"""Datasets the harness can prepare ``in/`` from, read into one in-memory form.

A :class:`Dataset` holds class names and three splits of :class:`Item` (image path + boxes in
integer pixels). Sources:

- the bundled sample ``trees`` (``ymir_exc/samples/trees``: JPEG tiles + VOC xml);
- a YMIR ``in/`` folder in the documents' voc_dog layout (``in/train-index.tsv``, ...), whose
  index lines may name ``/in/...`` paths: they are resolved against that folder.

Boxes use the YMIR convention: ``x, y`` top-left, ``w, h`` pixels (VOC / ark xmax inclusive).

Hostile or careless datasets: images are taken only from inside the dataset's root (the given
folder for VOC and a YMIR ``in/``; the resolved ``path:`` for YOLO; the json's folder and its
parent for COCO, or ``--image-root``), after following links, and only when Pillow recognises
them as images. Every problem is a named error of :mod:`ymir_exc.errors` (file, line, key).
The same image bytes under several names (:func:`resolve_duplicates`): identical label sets are
merged; a labeled copy wins over an unlabeled one; different label sets are an error listing the
names, unless ``duplicates="first"`` (the first copy's labels) or ``"merge"`` (the union).
"""

from __future__ import annotations

import codecs
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

from ymir_exc.dataset_reader import (
    BBox,
    coco_boxes_lookup,
    load_coco_annotations,
    parse_ark_annotation,
    parse_voc_annotation,
)
from ymir_exc.errors import AnnotationError, ConfigFileError, ImageError, IndexFileError, YmirExcError
from ymir_exc.formats.annotations import oriented_size
from ymir_exc.harness.item_store import Item as Item  # re-exported: importable from here as before
from ymir_exc.harness.item_store import ItemStore, KeySet, n_boxes, same_kind, sorted_paths

DUPLICATE_POLICIES = ("error", "first", "merge")

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples"
SAMPLE_NAMES = ("trees",)


@dataclass
class Dataset:
    """A detection dataset: class names and train / val / candidate splits."""

    name: str
    class_names: list[str]
    #: lists, or :class:`~ymir_exc.harness.item_store.ItemStore` (on disk) for the folder
    #: sources read a line or an image at a time (YMIR in/, YOLO, --source)
    train: Sequence[Item]
    val: Sequence[Item]
    candidate: Sequence[Item]
    #: what reading it skipped, merged or assumed, in words (shown in the summary)
    notes: list[str] = field(default_factory=list)

    def split(self, name: str) -> Sequence[Item]:
        return {"train": self.train, "val": self.val, "candidate": self.candidate}[name]

    def summary(self) -> str:
        return (
            f"{self.name}: classes {self.class_names}; train {len(self.train)} images / {n_boxes(self.train)} boxes, "
            f"val {len(self.val)} / {n_boxes(self.val)}, candidate {len(self.candidate)} images"
            + "".join(f"; {n}" for n in self.notes)
        )


def read_text_lines(path: Path, error: type[YmirExcError] = IndexFileError) -> list[tuple[int, str]]:
    """``(1-based line number, line)`` of a UTF-8 text file, without line ends (all of
    :func:`iter_text_lines` at once).

    Raises:
        ``error``: see :func:`iter_text_lines`.
    """
    return list(iter_text_lines(path, error))


def iter_text_lines(path: Path, error: type[YmirExcError] = IndexFileError) -> Iterator[tuple[int, str]]:
    """``(1-based line number, line)`` of a UTF-8 text file, without line ends (``\\n`` or
    ``\\r\\n``), read a line at a time.

    Raises:
        ``error``: unreadable, a byte order mark, a NUL byte, or a line that is not UTF-8 (line named).
    """
    try:
        f = open(path, "rb")
    except OSError as e:
        raise error(f"cannot read: {e.strerror}", path=str(path)) from None
    with f:
        for n, raw in enumerate(f, 1):
            yield n, _text_line(raw, path, n, error)


def _text_line(raw: bytes, path: Path, n: int, error: type[YmirExcError]) -> str:
    """Line ``n`` of ``path`` decoded, its line end removed.

    Raises:
        ``error``: a byte order mark, a NUL byte, or bytes that are not UTF-8.
    """
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if raw.startswith(codecs.BOM_UTF8) or "\ufeff".encode("utf-8") in raw:
        raise error("byte order mark (U+FEFF) in the line: save the file as UTF-8 without BOM", path=str(path), line=n)
    if b"\x00" in raw:
        raise error(f"NUL byte at column {raw.index(0) + 1}", path=str(path), line=n)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"not UTF-8 ({e.reason} at byte {e.start + 1} of the line)", path=str(path), line=n) from None


def first_few(things: Sequence[str], limit: int = 10) -> str:
    """``things`` joined by ``"; "``, at most ``limit`` of them, ``" ..."`` when some were left out
    (for an error that lists offending files)."""
    return "; ".join(things[:limit]) + (" ..." if len(things) > limit else "")


def _read_lines(path: Path) -> list[str]:
    return [s.strip() for _, s in read_text_lines(path) if s.strip()]


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def check_image(path: str, roots: Sequence[Path], where: str | None = None, line: int | None = None) -> tuple[int, int]:
    """Check that ``path`` is an image inside one of ``roots`` (links followed first) and return
    its ``(width, height)`` from the header (Pillow), in the annotation pixel frame (EXIF
    orientation applied, as :func:`ymir_exc.harness.files.image_size`).

    Raises:
        ImageError: outside the roots, not a regular file, or not an image Pillow recognises
            (``where`` / ``line``: the file and line that named it, when known).
    """
    from PIL import Image

    real = os.path.realpath(path)
    real_roots = [os.path.realpath(r) for r in roots]
    if not any(_inside(real, r) for r in real_roots):
        raise ImageError(
            f"image {path} lies outside the dataset's folder ({', '.join(real_roots)}): refused",
            path=where or path,
            line=line,
        )
    if not os.path.isfile(real):
        raise ImageError(f"image not found: {path}", path=where or path, line=line)
    try:
        with Image.open(real) as im:
            return oriented_size(im)
    except Image.DecompressionBombError as e:
        raise ImageError(f"image {path}: {e}", path=where or path, line=line) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(
            f"not an image Pillow can read: {path} ({type(e).__name__}: {e})", path=where or path, line=line
        ) from None


def _check_box_range(boxes: Sequence[BBox], size: tuple[int, int], annotation: str) -> None:
    """A box far outside its image (beyond twice the image's size) is a broken annotation."""
    w, h = size
    for k, b in enumerate(boxes):
        if not (-w <= b.x <= 2 * w and -h <= b.y <= 2 * h and 0 < b.w <= 3 * w and 0 < b.h <= 3 * h):
            raise AnnotationError(
                f"box {k + 1} ({b.class_name}: x {b.x}, y {b.y}, w {b.w}, h {b.h}) lies far outside its {w}x{h} image",
                path=annotation,
                key=f"box[{k + 1}]",
            )


def load_sample(name: str = "trees") -> Dataset:
    """The bundled sample ``name`` (see ``ymir_exc/samples/<name>/README.md``).

    Raises:
        ValueError: unknown sample name.
    """
    if name not in SAMPLE_NAMES:
        raise ValueError(f"unknown sample {name!r}; bundled samples: {', '.join(SAMPLE_NAMES)}")
    root = SAMPLES_DIR / name
    class_names = _read_lines(root / "classes.txt")

    def items(split: str, labeled: bool) -> list[Item]:
        out = []
        for stem in _read_lines(root / f"{split}.txt"):
            image = root / "images" / f"{stem}.jpg"
            xml = root / "annotations" / f"{stem}.xml"
            boxes = parse_voc_annotation(str(xml), class_names) if labeled else []
            out.append(Item(str(image), boxes))
        return out

    return Dataset(name, class_names, items("train", True), items("val", True), items("candidate", False))


def _resolve_in_path(p: str, in_dir: Path) -> str:
    if p == "/in" or p.startswith("/in/"):
        return str(in_dir / p[len("/in/") :]) if p != "/in" else str(in_dir)
    if not os.path.isabs(p):
        return str(in_dir / p)
    return p


def load_in_dir(path: str, class_names: Sequence[str] | None = None) -> Dataset:
    """A YMIR ``in/`` folder (or its parent holding ``in/``) in the voc_dog layout.

    Annotations are read by extension: ``.xml`` VOC, ``.txt`` ark (class indices into
    ``class_names``: the argument, else ``in/config.yaml``'s, else an error), ``.json`` COCO.
    Read a line at a time into on-disk splits (:class:`ItemStore`): memory does not grow with
    the number of images.

    Raises:
        IndexFileError: no index file, or a malformed line (file and line named).
        AnnotationError: an annotation that does not parse.
    """
    root = Path(path).resolve()
    in_dir = root / "in" if (root / "in").is_dir() else root
    index = {s: in_dir / f"{s}-index.tsv" for s in ("train", "val", "candidate")}
    if not any(p.is_file() for p in index.values()):
        raise IndexFileError(_not_a_dataset(in_dir), path=str(in_dir))
    if class_names is None:
        class_names = _config_class_names(in_dir)
    names: list[str] = list(class_names or [])
    boxes_of = _in_dir_annotations(in_dir, names)
    splits = {
        split: ItemStore(_in_dir_items(split, idx, in_dir, boxes_of) if idx.is_file() else ())
        for split, idx in index.items()
    }
    if not names:
        raise AnnotationError("no class names found: pass --class-names", path=str(in_dir))
    return Dataset(root.name, names, splits["train"], splits["val"], splits["candidate"])


def _config_class_names(in_dir: Path) -> list[str] | None:
    """``class_names`` of ``in_dir/config.yaml``, None when there is no such file or key.

    Raises:
        ConfigFileError: config.yaml does not parse, or class_names is not a list of strings.
    """
    cfg_path = in_dir / "config.yaml"
    if not cfg_path.is_file():
        return None
    from ymir_exc.env import load_yaml_mapping

    class_names = load_yaml_mapping(str(cfg_path), what="config.yaml").get("class_names")
    if class_names is not None and (
        not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names)
    ):
        raise ConfigFileError("class_names must be a list of strings", path=str(cfg_path), key="class_names")
    return class_names


#: ``boxes_of(annotation, image, index file, line)``: the boxes of one index line
BoxReader = Callable[[str, str, Path, int], list[BBox]]


def _in_dir_annotations(in_dir: Path, names: list[str]) -> BoxReader:
    """The reader of a YMIR ``in/`` folder's annotation files (VOC, ark, COCO by extension);
    class names found in VOC files are appended to ``names``. Each COCO json is parsed once.

    The reader raises IndexFileError for an annotation outside ``in_dir`` (links followed),
    AnnotationError for one that does not parse or ark files without class names.
    """
    coco_cache: dict[str, Callable[[str], list[BBox]]] = {}  # json -> image path -> boxes (coco_boxes_lookup)

    def boxes_of(annotation: str, image: str, src: Path, n: int) -> list[BBox]:
        real = os.path.realpath(annotation)
        if not _inside(real, os.path.realpath(in_dir)):
            where = (
                f"is a link to {real}, outside the dataset's folder {in_dir}"
                if _inside(os.path.abspath(annotation), os.path.abspath(in_dir))
                else f"lies outside the dataset's folder {in_dir}"
            )
            raise IndexFileError(f"annotation {annotation} {where}: refused", path=str(src), line=n)
        if annotation.endswith(".xml"):
            # names found in the xml are appended, so an unknown class is reported (or dropped)
            # by remap_classes with the whole list instead of failing on the first file
            _discover_voc_names(annotation, names)
            return parse_voc_annotation(annotation, names)
        if annotation.endswith(".json"):
            if annotation not in coco_cache:
                coco_cache[annotation] = coco_boxes_lookup(load_coco_annotations(annotation, names), annotation)
            return coco_cache[annotation](image)
        if not names:
            raise AnnotationError(
                "ark annotations need class names: pass --class-names or put class_names in in/config.yaml",
                path=annotation,
            )
        return parse_ark_annotation(annotation, names)

    return boxes_of


def _in_dir_items(split: str, idx: Path, in_dir: Path, boxes_of: BoxReader) -> Iterator[Item]:
    """The items of one index file of a YMIR ``in/`` folder, a line at a time, each image
    checked (inside ``in_dir``, readable) and each box in range.

    Raises:
        IndexFileError: a blank or malformed line, a missing image (file and line named).
        ImageError / AnnotationError: see :func:`check_image` and ``boxes_of``.
    """
    for n, line in iter_text_lines(idx):
        if not line.strip():
            raise IndexFileError("blank line", path=str(idx), line=n)
        parts = line.split("\t")
        image = _resolve_in_path(parts[0], in_dir)
        if not os.path.lexists(image):
            raise IndexFileError(f"image not found: {image}", path=str(idx), line=n)
        size = check_image(image, [in_dir], str(idx), n)
        if split == "candidate":
            yield Item(image)
            continue
        if len(parts) < 2 or not parts[1]:
            raise IndexFileError("expected '<image>\\t<annotation>'", path=str(idx), line=n)
        annotation = _resolve_in_path(parts[1], in_dir)
        boxes = boxes_of(annotation, image, idx, n)
        _check_box_range(boxes, size, annotation)
        yield Item(image, boxes)


def _not_a_dataset(folder: Path) -> str:
    """Why a folder given as ``--dataset`` is none: the layouts accepted, and ``--source`` for a
    folder of images without labels (a VOC ``JPEGImages/`` folder: its parent is the dataset)."""
    msg = (
        "not a dataset: no train-index.tsv, val-index.tsv or candidate-index.tsv here. --dataset takes a YMIR "
        "in/ folder (train/val/candidate-index.tsv), a VOC folder (JPEGImages/ + Annotations/), a COCO .json, "
        "a YOLO data.yaml or a sample name (" + ", ".join(SAMPLE_NAMES) + ")"
    )
    if folder.name == "JPEGImages" and (folder.parent / "Annotations").is_dir():
        return msg + f"; for this VOC dataset give its parent: --dataset {folder.parent}"
    try:
        has_images = any(q.suffix.lower() in IMAGE_EXTS for q in folder.iterdir() if q.is_file())
    except OSError:
        has_images = False
    if has_images:
        msg += f"; for images without labels (mining / infer) use --source {folder} instead (training needs labels)"
    return msg


def _discover_voc_names(path: str, names: list[str]) -> None:
    import xml.etree.ElementTree as ET

    try:
        for obj in ET.parse(path).getroot().iter("object"):
            n = (obj.findtext("name") or "").strip()
            if n and n not in names:
                names.append(n)
    except (ET.ParseError, OSError):
        pass  # parse_voc_annotation reports it with the file and line


def _split_val(items: list[Item], every: int = 5) -> tuple[list[Item], list[Item]]:
    """Deterministic split: every ``every``-th item (in sorted order) goes to val (20 %)."""
    items = sorted(items, key=lambda i: i.image_path)
    val = items[every - 1 :: every]
    val_set = {id(i) for i in val}
    return [i for i in items if id(i) not in val_set], val


IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def load_voc(path: str) -> Dataset:
    """A Pascal VOC folder: ``JPEGImages/`` + ``Annotations/*.xml`` (+ ``ImageSets/Main/*.txt``).

    Splits: ``ImageSets/Main/{train,val}.txt`` when present, else every 5th annotated image to
    val. Candidates: ``ImageSets/Main/test.txt`` when present, else the images without an xml,
    else the val images. Class names: every ``<name>`` found, sorted.

    Raises:
        AnnotationError: an xml that does not parse (file named).
    """
    root = Path(path).resolve()
    images = {p.stem: p for p in sorted((root / "JPEGImages").iterdir()) if p.suffix.lower() in IMAGE_EXTS}
    xmls = {p.stem: p for p in sorted((root / "Annotations").glob("*.xml"))} if (root / "Annotations").is_dir() else {}
    for p in images.values():
        check_image(str(p), [root])
    found: list[str] = []
    for stem, x in xmls.items():
        if stem in images:
            _discover_voc_names(str(x), found)
    names = sorted(found)
    labeled = {}
    for stem, x in xmls.items():
        if stem in images:
            if os.path.islink(x) and not _inside(os.path.realpath(x), str(root)):
                raise AnnotationError(
                    f"annotation is a link to {os.path.realpath(x)}, outside the dataset's folder {root}: refused",
                    path=str(x),
                )
            labeled[stem] = Item(str(images[stem]), parse_voc_annotation(str(x), names))
    orphans = [stem for stem in xmls if stem not in images]
    notes = (
        [f"{len(orphans)} xml file(s) in Annotations/ without an image in JPEGImages/ skipped (e.g. {orphans[0]}.xml)"]
        if orphans
        else []
    )
    sets = root / "ImageSets" / "Main"
    if (sets / "train.txt").is_file() and (sets / "val.txt").is_file():
        train = [labeled[s] for s in _read_lines(sets / "train.txt") if s in labeled]
        val = [labeled[s] for s in _read_lines(sets / "val.txt") if s in labeled]
    else:
        train, val = _split_val(list(labeled.values()))
    if (sets / "test.txt").is_file():
        candidate = [Item(str(images[s])) for s in _read_lines(sets / "test.txt") if s in images]
    else:
        candidate = [Item(str(p)) for stem, p in images.items() if stem not in xmls] or [
            Item(i.image_path) for i in val
        ]
    return Dataset(root.name, names, train, val, candidate, notes)


def _find_image(root: Path, file_name: str, image_root: Path | None = None) -> Path | None:
    bases = [image_root] if image_root else [root, root / "images", root.parent / "images", root.parent]
    for base in bases:
        for cand in (base / file_name, base / os.path.basename(file_name)):
            if cand.is_file():
                return cand
    return None


def _validate_coco(data: Any, where: str) -> None:
    """The structure :func:`load_coco` relies on; names the key at fault.

    Raises:
        AnnotationError: not an object; images / annotations / categories not lists of objects;
            a category without an integer ``id`` or a string ``name``; an image without ``id`` or
            ``file_name``; an annotation whose ``image_id`` names no image.
    """
    if not isinstance(data, dict):
        raise AnnotationError(f"the top level must be an object, not {type(data).__name__}", path=where)
    for key in ("images", "annotations", "categories"):
        v = data.get(key, [])
        if not isinstance(v, list) or not all(isinstance(e, dict) for e in v):
            raise AnnotationError("must be a list of objects", path=where, key=key)
    for i, c in enumerate(data.get("categories", [])):
        if isinstance(c.get("id"), bool) or not isinstance(c.get("id"), int):
            raise AnnotationError("category without an integer 'id'", path=where, key=f"categories[{i}].id")
        if not isinstance(c.get("name"), str):
            raise AnnotationError("category without a string 'name'", path=where, key=f"categories[{i}].name")
    ids = set()
    for i, im in enumerate(data.get("images", [])):
        if "id" not in im or not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise AnnotationError("image without 'id' or 'file_name'", path=where, key=f"images[{i}]")
        try:
            ids.add(im["id"])
        except TypeError:
            raise AnnotationError("image 'id' is not a number or string", path=where, key=f"images[{i}].id") from None
    for i, ann in enumerate(data.get("annotations", [])):
        try:
            known = ann.get("image_id") in ids
        except TypeError:
            known = False
        if not known:
            raise AnnotationError(
                f"image_id {ann.get('image_id')!r} names no image in 'images'",
                path=where,
                key=f"annotations[{i}].image_id",
            )


def load_coco(path: str, image_root: str | None = None) -> Dataset:
    """A COCO detection json; images are looked up beside it, in ``images/``, ``../images/`` or
    ``..``, or only under ``image_root`` when given; an image elsewhere is refused.

    Split: every 5th image (by file name) to val; candidates = the val images. Class names:
    the categories in id order.

    Raises:
        AnnotationError: bad json / structure / bbox (file and key named); an image that cannot be found.
        ImageError: an image outside the allowed folders, or not an image.
    """
    import json

    p = Path(path).resolve()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise AnnotationError(f"not UTF-8: {e.reason} at byte {e.start}", path=str(p)) from None
    except ValueError as e:
        raise AnnotationError(f"not valid JSON: {e}", path=str(p)) from None
    except RecursionError:
        raise AnnotationError("not valid JSON: nested too deeply to parse (refused)", path=str(p)) from None
    _validate_coco(data, str(p))
    roots = [Path(image_root).resolve()] if image_root else [p.parent, p.parent.parent]
    cats = sorted(data.get("categories", []), key=lambda c: c["id"])
    names = [c["name"] for c in cats]
    boxes = load_coco_annotations(str(p), names)
    items = []
    for im in data.get("images", []):
        img = _find_image(p.parent, im["file_name"], roots[0] if image_root else None)
        if img is None:
            where = f"under --image-root {image_root}" if image_root else "beside the json, in images/ or ../images/"
            raise AnnotationError(
                f"image {im['file_name']!r} not found {where}", path=str(p), key=f"images[id={im['id']}]"
            )
        size = check_image(str(img), roots, str(p))
        item_boxes = boxes[im["file_name"]]  # by the image's own entry (file_names are unique)
        _check_box_range(item_boxes, size, str(p))
        items.append(Item(str(img), item_boxes))
    train, val = _split_val(items)
    return Dataset(p.stem, names, train, val, [Item(i.image_path) for i in val])


def walk(root: Path) -> Iterator[Path]:
    """Every entry below ``root`` (files, folders, links), as ``Path(root).rglob("*")`` finds
    them (links to folders listed, not entered; unreadable folders skipped), in no particular
    order, read lazily: memory does not grow with the number of entries (``rglob`` keeps a set
    of every path it yielded)."""
    try:
        it = os.scandir(root)
    except (PermissionError, FileNotFoundError, NotADirectoryError):
        return
    with it:
        for entry in it:
            path = root / entry.name
            yield path
            try:
                is_dir = entry.is_dir() and not entry.is_symlink()
            except OSError:
                is_dir = False
            if is_dir:
                yield from walk(path)


def _yolo_images(base: Path, entry: Any) -> Iterator[Path]:
    """The images of a YOLO split entry (a folder, recursively, sorted; a .txt list; or a list
    of those), streamed (a folder's listing is sorted on disk).

    Raises:
        IndexFileError: an entry that is neither a folder nor a .txt list.
    """
    entries = entry if isinstance(entry, list) else [entry]
    for e in entries:
        p = (base / str(e)).resolve()
        if p.is_dir():
            found = (str(q) for q in walk(p) if q.suffix.lower() in IMAGE_EXTS)
            yield from map(Path, sorted_paths(found, by_parts=True))
        elif p.is_file() and p.suffix == ".txt":
            for _, line in iter_text_lines(p):
                if line.strip():
                    yield (p.parent / line.strip()).resolve()
        else:
            raise IndexFileError(f"YOLO split {e!r} is neither a folder of images nor a .txt list", path=str(p))


def _yolo_label_path(image: Path) -> Path:
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def load_yolo(path: str) -> Dataset:
    """An Ultralytics YOLO ``data.yaml`` (``path``, ``train``, ``val``, optional ``test``, ``names``).

    Labels ``cid xc yc w h`` (normalised 0-1) are read from the ``labels/`` folder beside each
    ``images/`` folder and converted to pixels with the image's size as displayed (EXIF
    orientation applied, the frame Ultralytics reads labels in). Candidates: ``test`` when
    given, else the val images. Read an image at a time into on-disk splits (:class:`ItemStore`).

    Raises:
        ConfigFileError: data.yaml is not a mapping, or a key has the wrong type.
        AnnotationError: a label line that does not parse or a class id outside ``names``.
    """
    p = Path(path).resolve()
    cfg, base, data_names = _yolo_config(p)
    unlabeled: list[Path] = []  # the first image without a label file, then a count
    n_unlabeled = 0

    def items(entry: Any) -> Iterator[Item]:
        nonlocal n_unlabeled
        for img in _yolo_images(base, entry):
            size = check_image(str(img), [base], str(p))
            label = _yolo_label_path(img)
            if not label.is_file():
                n_unlabeled += 1
                unlabeled[:] = unlabeled or [img]
                yield Item(str(img))
            else:
                yield Item(str(img), _yolo_boxes(label, size, base, data_names))

    train, val = ItemStore(items(cfg.get("train"))), ItemStore(items(cfg.get("val")))
    notes = (
        [f"{n_unlabeled} training / val image(s) without a label file, taken as background (e.g. {unlabeled[0]})"]
        if n_unlabeled
        else []
    )
    candidate = ItemStore(Item(i.image_path) for i in (items(cfg["test"]) if cfg.get("test") else val))
    return Dataset(p.parent.name, data_names, train, val, candidate, notes)


def _yolo_config(p: Path) -> tuple[dict[str, Any], Path, list[str]]:
    """``(data.yaml, the dataset's base folder, class names)`` of a YOLO data.yaml, checked.

    Raises:
        ConfigFileError: not a mapping, ``path`` not a string, ``names`` not a list / index
            mapping of strings, ``train`` / ``val`` missing or of the wrong type.
    """
    from ymir_exc.env import load_yaml_mapping

    cfg = load_yaml_mapping(str(p), what="YOLO data.yaml")
    if not isinstance(cfg, dict):
        raise ConfigFileError("must be a mapping with path, train, val and names", path=str(p))
    if cfg.get("path") is not None and not isinstance(cfg.get("path"), str):
        raise ConfigFileError("must be a folder path", path=str(p), key="path")
    base = Path(cfg.get("path") or p.parent)
    base = (base if base.is_absolute() else (p.parent / base)).resolve()
    raw_names = cfg.get("names") or []
    if isinstance(raw_names, dict) and all(isinstance(k, int) for k in raw_names):
        data_names = [raw_names[k] for k in sorted(raw_names)]
    elif isinstance(raw_names, list):
        data_names = list(raw_names)
    else:
        raise ConfigFileError("must be a list of class names or a mapping {index: name}", path=str(p), key="names")
    if not all(isinstance(n, str) for n in data_names):
        raise ConfigFileError("class names must be strings", path=str(p), key="names")
    for key in ("train", "val"):
        if not isinstance(cfg.get(key), (str, list)):
            raise ConfigFileError("must be a folder or .txt list (or a list of them)", path=str(p), key=key)
    return cfg, base, data_names


def _yolo_boxes(label: Path, size: tuple[int, int], base: Path, data_names: Sequence[str]) -> list[BBox]:
    """The boxes of a YOLO label file in integer pixels of an image of ``size`` (w, h),
    clipped to the image; boxes empty after clipping are dropped.

    Raises:
        AnnotationError: the label file lies outside ``base``, a line does not parse, or a class
            id outside ``data_names`` (file and line named).
    """
    if not _inside(os.path.realpath(label), str(base)):
        raise AnnotationError(f"label file lies outside the dataset's folder {base}: refused", path=str(label))
    w, h = size
    boxes: list[BBox] = []
    for n, line in iter_text_lines(label, AnnotationError):
        if not line.strip():
            continue
        f = line.split()
        try:
            cid, xc, yc, bw, bh = int(f[0]), *(float(v) for v in f[1:5])
        except (ValueError, IndexError):
            raise AnnotationError("expected 'class x_center y_center width height'", path=str(label), line=n) from None
        if not 0 <= cid < len(data_names):
            raise AnnotationError(f"class id {cid} outside names {list(data_names)}", path=str(label), line=n)
        x0 = max(0, int(round((xc - bw / 2) * w)))
        y0 = max(0, int(round((yc - bh / 2) * h)))
        x1 = min(w, int(round((xc + bw / 2) * w)))
        y1 = min(h, int(round((yc + bh / 2) * h)))
        if x1 > x0 and y1 > y0:
            boxes.append(BBox(cid, data_names[cid], x0, y0, x1 - x0, y1 - y0))
    return boxes


def remap_classes(
    ds: Dataset, class_names: Sequence[str] | None = None, aliases: dict[str, str] | None = None, unknown: str = "stop"
) -> Dataset:
    """Re-index every box onto ``class_names`` after mapping ``aliases`` (data name -> name).

    Args:
        class_names: the task's classes (default: the dataset's, after aliasing, in order).
        unknown: ``stop`` raises on a class not in class_names (listing them all); ``ignore``
            drops those boxes.

    Raises:
        AnnotationError: unknown classes with ``unknown='stop'``.
    """
    aliases = dict(aliases or {})
    if not class_names:
        class_names = []
        for n in ds.class_names:
            n = aliases.get(n, n)
            if n not in class_names:
                class_names.append(n)
    index = {n: i for i, n in enumerate(class_names)}
    missing: dict[str, int] = {}

    def fix(it: Item) -> Item:
        boxes = []
        for b in it.boxes:
            n = aliases.get(b.class_name, b.class_name)
            if n not in index:
                missing[n] = missing.get(n, 0) + 1
                continue
            boxes.append(BBox(index[n], n, b.x, b.y, b.w, b.h, b.quality, b.angle))
        return Item(it.image_path, boxes, it.sha1)

    train, val = same_kind(ds.train, map(fix, ds.train)), same_kind(ds.val, map(fix, ds.val))
    candidate = ds.candidate if isinstance(ds.candidate, ItemStore) else list(ds.candidate)
    new = Dataset(ds.name, list(class_names), train, val, candidate, list(ds.notes))
    if missing and unknown == "stop":
        listing = ", ".join(f"{n} ({k} boxes)" for n, k in sorted(missing.items()))
        raise AnnotationError(
            f"classes not in class_names {list(class_names)}: {listing}; map them with "
            f"--class-alias NAME=CLASS or drop them with --unknown-classes ignore",
            key="class_names",
        )
    return new


def load_dataset(
    spec: str | None,
    class_names: Sequence[str] | None = None,
    aliases: dict[str, str] | None = None,
    unknown: str = "stop",
    *,
    image_root: str | None = None,
    duplicates: str = "error",
    across_splits: str = "merge",
) -> Dataset:
    """Read ``--dataset``: a bundled sample name (default ``trees``), a YMIR ``in/`` folder, a
    VOC folder, a COCO json or a YOLO data.yaml; then map classes (:func:`remap_classes`) and
    resolve duplicate images (:func:`resolve_duplicates` with ``duplicates`` and
    ``across_splits``).

    Args:
        image_root: COCO only: the one folder images may come from.
        across_splits: ``merge`` (default) or ``error`` (``ymir-exc loop``: the same bytes in train
            and in val are refused).

    Raises:
        FileNotFoundError: the path does not exist or is not a recognised dataset.
        YmirExcError: (a subclass) anything wrong in the data, named.
    """
    if spec is None or spec in SAMPLE_NAMES:
        ds = load_sample(spec or "trees")
    elif not os.path.exists(spec):
        raise FileNotFoundError(
            f"--dataset {spec}: no such sample or path (bundled samples: {', '.join(SAMPLE_NAMES)})"
        )
    elif os.path.isdir(spec) and (Path(spec) / "JPEGImages").is_dir():
        ds = load_voc(spec)
    elif spec.endswith(".json"):
        ds = load_coco(spec, image_root)
    elif spec.endswith((".yaml", ".yml")):
        ds = load_yolo(spec)
    elif os.path.isdir(spec):
        ds = load_in_dir(spec, class_names)
    else:
        raise FileNotFoundError(
            f"--dataset {spec}: not a sample, a YMIR in/ folder, a VOC folder (JPEGImages/), "
            f"a COCO .json or a YOLO data.yaml"
        )
    if class_names or aliases or unknown != "stop":
        ds = remap_classes(ds, class_names, aliases, unknown)
    return resolve_duplicates(ds, duplicates, across_splits)


def _label_key(boxes: Sequence[BBox]) -> tuple[Any, ...]:
    return tuple(sorted((b.class_name, b.x, b.y, b.w, b.h) for b in boxes))


def split_clashes(where: Mapping[str, Sequence[tuple[str, str]]]) -> list[str]:
    """``"a.jpg (train) = b.jpg (val)"`` for each image content found in more than one split:
    ``where`` maps a sha1 to the ``(split, image path)`` pairs that hold it."""
    return [" = ".join(f"{p} ({n})" for n, p in v) for v in where.values() if len({n for n, _ in v}) > 1]


def _refuse_cross_split(groups: dict[str, list[Item]], splits_of: dict[str, list[str]]) -> None:
    """Raise when a group of same-bytes items has copies in both train and val (``splits_of``:
    each group member's split, ``train`` or ``val``, in the group's order).

    Raises:
        AnnotationError: naming each such image's files with their split (key ``splits``).
    """
    clashes = split_clashes(
        {
            h: [(split, i.image_path) for i, split in zip(items, splits_of[h], strict=True)]
            for h, items in groups.items()
        }
    )
    if clashes:
        raise AnnotationError(
            f"{len(clashes)} image(s) are in both train and val (same bytes): {first_few(clashes)}; an image "
            f"may be in one split only (copies inside one split are merged)",
            key="splits",
        )


def resolve_duplicates(ds: Dataset, policy: str = "error", across_splits: str = "merge") -> Dataset:
    """One item per image content (sha1 of the bytes) across train and val.

    ``across_splits="error"`` refuses the same bytes in train and in val (an experiment must not
    score on what it trained on) before anything is merged; duplicates inside one split are still
    merged as below. The default ``merge`` treats them as any duplicates.

    Copies with the same label set are merged into one (counted in ``notes``); a copy with
    boxes wins over copies without; copies with different label sets raise, unless ``policy``
    is ``first`` (the first copy's labels, in train-then-val order) or ``merge`` (the union of
    the boxes, each distinct box once). Candidates with the same bytes are kept once. The kept
    item stays where its first copy was. Sets ``Item.sha1``.

    Memory grows with the number of duplicated images only: digests seen are kept on disk
    (:class:`KeySet`), and a dataset on disk (:class:`ItemStore`) is resolved into a new one.

    Raises:
        AnnotationError: different label sets under ``policy="error"``, listing the file names;
            with ``across_splits="error"``, an image in both train and val, naming both files.
        ValueError: an unknown policy.
    """
    if policy not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicates policy must be one of {DUPLICATE_POLICIES}, not {policy!r}")
    if across_splits not in ("merge", "error"):
        raise ValueError(f"across_splits must be 'merge' or 'error', not {across_splits!r}")
    train, val, candidate = (_hashed(items) for items in (ds.train, ds.val, ds.candidate))
    groups, splits_of = _duplicate_groups(train, val)
    if across_splits == "error":
        _refuse_cross_split(groups, splits_of)
    winners, conflicts, clashes = _merge_groups(groups, policy)
    if clashes:
        raise AnnotationError(
            f"{len(clashes)} image(s) appear under several names with different labels: "
            + first_few(clashes)
            + " (choose with --duplicates first|merge)",
            key="duplicates",
        )
    placed: set[str] = set()
    cand_seen = KeySet()
    kept_candidates = same_kind(candidate, (it for it in candidate if cand_seen.add(it.sha1 or "")))
    notes = list(ds.notes)
    merged = sum(len(items) - 1 for items in groups.values() if items[0].sha1 in winners)
    if merged:
        notes.append(
            f"{merged} duplicate image(s) merged"
            + (f" ({conflicts} with different labels, by --duplicates {policy})" if conflicts else "")
        )
    if len(kept_candidates) < len(candidate):
        notes.append(f"{len(candidate) - len(kept_candidates)} duplicate candidate image(s) dropped")
    return Dataset(
        ds.name,
        list(ds.class_names),
        same_kind(train, _keep(train, winners, placed)),
        same_kind(val, _keep(val, winners, placed)),
        kept_candidates,
        notes,
    )


def _duplicate_groups(train: Sequence[Item], val: Sequence[Item]) -> tuple[dict[str, list[Item]], dict[str, list[str]]]:
    """``(groups, splits_of)``: the items of train and val (sha1 set) whose bytes occur more than
    once, grouped by sha1 in train-then-val order, and each group member's split (``train`` /
    ``val``, same order). Digests seen once stay on disk (:class:`KeySet`)."""
    seen, repeated = KeySet(), set()
    for it in itertools.chain(train, val):
        if not seen.add(it.sha1 or ""):
            repeated.add(it.sha1)
    groups: dict[str, list[Item]] = {}
    splits_of: dict[str, list[str]] = {}
    for split, items in (("train", train), ("val", val)):
        for it in items:
            if it.sha1 and it.sha1 in repeated:
                groups.setdefault(it.sha1, []).append(it)
                splits_of.setdefault(it.sha1, []).append(split)
    return groups, splits_of


def item_digests(pool: ThreadPoolExecutor, chunk: Sequence[Item]) -> dict[str, str]:
    """``{image path: hex sha1}`` for the items of ``chunk`` (``Item.sha1`` where known; the
    rest hashed on ``pool``: reads and hashing release the GIL)."""
    from ymir_exc.harness.files import _in_chunks, sha1_file

    known = {item.image_path: item.sha1 for item in chunk if item.sha1}
    todo = list(dict.fromkeys(item.image_path for item in chunk if item.image_path not in known))
    return dict(known, **dict(zip(todo, _in_chunks(pool, sha1_file, todo), strict=True)))


def _hashed(items: Sequence[Item]) -> Sequence[Item]:
    """``items`` with ``Item.sha1`` set: a list's items are updated in place; an
    :class:`ItemStore` is copied into a new one (hashing a chunk at a time, in parallel)."""
    from concurrent.futures import ThreadPoolExecutor

    from ymir_exc.harness.files import _io_workers

    def chunks() -> Iterator[list[Item]]:
        it = iter(items)
        while chunk := list(itertools.islice(it, 4096)):
            digests = item_digests(pool, chunk)
            for i in chunk:
                i.sha1 = digests[i.image_path]
            yield chunk

    with ThreadPoolExecutor(max_workers=_io_workers(min(len(items), 4096))) as pool:  # hashing releases the GIL
        if isinstance(items, ItemStore):
            return ItemStore(itertools.chain.from_iterable(chunks()))
        for _ in chunks():
            pass
        return items


def _merge_groups(groups: dict[str, list[Item]], policy: str) -> tuple[dict[str, Item], int, list[str]]:
    """``(winners, conflicts, clashes)`` for groups of items with the same bytes: the one item
    kept per digest (:func:`resolve_duplicates`'s rules), how many groups had different label
    sets, and (policy ``error``) those groups' file names, which get no winner."""
    winners: dict[str, Item] = {}
    clashes: list[str] = []
    conflicts = 0
    for h, items in groups.items():
        labeled = [i for i in items if i.boxes]
        keys = list(dict.fromkeys(_label_key(i.boxes) for i in labeled))
        if len(keys) > 1:
            conflicts += 1
            if policy == "error":
                clashes.append(" / ".join(i.image_path for i in items))
                continue
            if policy == "merge":
                seen: dict[tuple[Any, ...], BBox] = {}
                for i in labeled:
                    for b in i.boxes:
                        seen.setdefault((b.class_name, b.x, b.y, b.w, b.h), b)
                boxes = list(seen.values())
            else:
                boxes = list(labeled[0].boxes)
        else:
            boxes = list(labeled[0].boxes) if labeled else []
        winners[h] = Item(items[0].image_path, boxes, h)
    return winners, conflicts, clashes


def _keep(items: Iterable[Item], winners: dict[str, Item], placed: set[str]) -> Iterator[Item]:
    """``items`` with each duplicated image's winner in place of its first copy (``placed``:
    the digests already given their winner) and later copies left out."""
    for it in items:
        if it.sha1 in winners:
            if it.sha1 in placed:
                continue
            placed.add(it.sha1)
            yield winners[it.sha1]
        else:
            yield it
