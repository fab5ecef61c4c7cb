"""Datasets the harness can prepare ``in/`` from, read into one in-memory form.

A :class:`Dataset` holds class names and three splits of :class:`Item` (image path + boxes in
integer pixels). Sources:

- the bundled sample ``trees`` (``ymir_exc/samples/trees``: JPEG tiles + VOC xml);
- a YMIR ``in/`` folder in the documents' voc_dog layout (``in/train-index.tsv``, ...), whose
  index lines may name ``/in/...`` paths: they are resolved against that folder.

Boxes use the YMIR convention: ``x, y`` top-left, ``w, h`` pixels (VOC / ark xmax inclusive).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from ymir_exc.dataset_reader import BBox, load_coco_annotations, parse_ark_annotation, parse_voc_annotation
from ymir_exc.errors import AnnotationError, IndexFileError

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples"
SAMPLE_NAMES = ("trees",)


@dataclass
class Item:
    """One image and its ground truth (empty for candidates / unlabeled images)."""

    image_path: str
    boxes: List[BBox] = field(default_factory=list)


@dataclass
class Dataset:
    """A detection dataset: class names and train / val / candidate splits."""

    name: str
    class_names: List[str]
    train: List[Item]
    val: List[Item]
    candidate: List[Item]

    def split(self, name: str) -> List[Item]:
        return {"train": self.train, "val": self.val, "candidate": self.candidate}[name]

    def summary(self) -> str:
        nb = lambda items: sum(len(i.boxes) for i in items)  # noqa: E731
        return (f"{self.name}: classes {self.class_names}; train {len(self.train)} images / {nb(self.train)} boxes, "
                f"val {len(self.val)} / {nb(self.val)}, candidate {len(self.candidate)} images")


def _read_lines(path: Path) -> List[str]:
    return [s.strip() for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]


def load_sample(name: str = "trees") -> Dataset:
    """The bundled sample ``name`` (see ``ymir_exc/samples/<name>/README.md``).

    Raises:
        ValueError: unknown sample name.
    """
    if name not in SAMPLE_NAMES:
        raise ValueError(f"unknown sample {name!r}; bundled samples: {', '.join(SAMPLE_NAMES)}")
    root = SAMPLES_DIR / name
    class_names = _read_lines(root / "classes.txt")

    def items(split: str, labeled: bool) -> List[Item]:
        out = []
        for stem in _read_lines(root / f"{split}.txt"):
            image = root / "images" / f"{stem}.jpg"
            xml = root / "annotations" / f"{stem}.xml"
            boxes = parse_voc_annotation(str(xml), class_names) if labeled else []
            out.append(Item(str(image), boxes))
        return out

    return Dataset(name, class_names, items("train", True), items("val", True), items("candidate", False))


def write_sample(name: str, out_dir: str) -> Path:
    """Write sample ``name`` to ``out_dir`` in the documents' voc_dog layout.

    ``out_dir/in/assets/<h[-2:]>/<h>.jpg``, ``in/annotations/<h[-2:]>/<h>.xml`` (VOC),
    ``in/{train,val}-index.tsv`` (``/in/...`` paths), ``in/candidate-index.tsv``, ``in/env.yaml``
    and ``in/config.yaml`` for a training task, and an empty ``out/``: mountable as ``/in`` and
    ``/out`` as it is, and readable by ``--dataset out_dir``.

    Returns:
        the folder written.
    """
    from ymir_exc.harness.workspace import write_in_dir

    ds = load_sample(name)
    root = Path(out_dir).resolve()
    write_in_dir(ds, root / "in", export_format="det-voc:raw", path_prefix="/in", mode="copy")
    (root / "out").mkdir(parents=True, exist_ok=True)
    env = {
        "protocol_version": "1.1.0", "task_id": f"sample-{name}", "run_training": True, "run_mining": False,
        "run_infer": False, "manifest_file": "/img-man/manifest.yaml",
        "input": {"root_dir": "/in", "assets_dir": "/in/assets", "annotations_dir": "/in/annotations",
                  "models_dir": "/in/models", "config_file": "/in/config.yaml",
                  "training_index_file": "/in/train-index.tsv", "val_index_file": "/in/val-index.tsv",
                  "candidate_index_file": ""},
        "output": {"root_dir": "/out", "models_dir": "/out/models", "tensorboard_dir": "/out/tensorboard",
                   "training_result_file": "/out/models/result.yaml", "mining_result_file": "/out/result.tsv",
                   "infer_result_file": "/out/infer-result.json", "monitor_file": "/out/monitor.txt",
                   "executor_log_file": "/out/ymir-executor-out.log"},
    }
    (root / "in" / "env.yaml").write_text(yaml.safe_dump(env, sort_keys=False), encoding="utf-8")
    cfg = {"class_names": ds.class_names, "gpu_id": "", "gpu_count": 0, "task_id": f"sample-{name}",
           "export_format": "det-voc:raw"}
    (root / "in" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return root


def _resolve_in_path(p: str, in_dir: Path) -> str:
    if p == "/in" or p.startswith("/in/"):
        return str(in_dir / p[len("/in/"):]) if p != "/in" else str(in_dir)
    if not os.path.isabs(p):
        return str(in_dir / p)
    return p


def load_in_dir(path: str, class_names: Optional[Sequence[str]] = None) -> Dataset:
    """A YMIR ``in/`` folder (or its parent holding ``in/``) in the voc_dog layout.

    Annotations are read by extension: ``.xml`` VOC, ``.txt`` ark (class indices into
    ``class_names``: the argument, else ``in/config.yaml``'s, else an error), ``.json`` COCO.

    Raises:
        IndexFileError: no index file, or a malformed line (file and line named).
        AnnotationError: an annotation that does not parse.
    """
    root = Path(path).resolve()
    in_dir = root / "in" if (root / "in").is_dir() else root
    index = {s: in_dir / f"{s}-index.tsv" for s in ("train", "val", "candidate")}
    if not any(p.is_file() for p in index.values()):
        raise IndexFileError("no train-index.tsv, val-index.tsv or candidate-index.tsv here", path=str(in_dir))
    if class_names is None:
        cfg_path = in_dir / "config.yaml"
        if cfg_path.is_file():
            cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
            class_names = cfg.get("class_names") if isinstance(cfg, dict) else None
    names: List[str] = list(class_names or [])

    def boxes_of(annotation: str, image: str, src: Path, n: int) -> List[BBox]:
        if annotation.endswith(".xml"):
            # names found in the xml are appended, so an unknown class is reported (or dropped)
            # by remap_classes with the whole list instead of failing on the first file
            _discover_voc_names(annotation, names)
            return parse_voc_annotation(annotation, names)
        if annotation.endswith(".json"):
            return load_coco_annotations(annotation, names).get(os.path.basename(image), [])
        if not names:
            raise AnnotationError("ark annotations need class names: pass --class-names or put class_names "
                                  "in in/config.yaml", path=annotation)
        return parse_ark_annotation(annotation, names)

    splits: Dict[str, List[Item]] = {"train": [], "val": [], "candidate": []}
    for split, idx in index.items():
        if not idx.is_file():
            continue
        for n, line in enumerate(idx.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                raise IndexFileError("blank line", path=str(idx), line=n)
            parts = line.split("\t")
            image = _resolve_in_path(parts[0], in_dir)
            if not os.path.isfile(image):
                raise IndexFileError(f"image not found: {image}", path=str(idx), line=n)
            if split == "candidate":
                splits[split].append(Item(image))
                continue
            if len(parts) < 2 or not parts[1]:
                raise IndexFileError("expected '<image>\\t<annotation>'", path=str(idx), line=n)
            annotation = _resolve_in_path(parts[1], in_dir)
            splits[split].append(Item(image, boxes_of(annotation, image, idx, n)))
    if not names:
        raise AnnotationError("no class names found: pass --class-names", path=str(in_dir))
    return Dataset(root.name, names, splits["train"], splits["val"], splits["candidate"])


def _discover_voc_names(path: str, names: List[str]) -> None:
    import xml.etree.ElementTree as ET

    try:
        for obj in ET.parse(path).getroot().iter("object"):
            n = (obj.findtext("name") or "").strip()
            if n and n not in names:
                names.append(n)
    except (ET.ParseError, OSError):
        pass  # parse_voc_annotation reports it with the file and line


def _split_val(items: List[Item], every: int = 5) -> Tuple[List[Item], List[Item]]:
    """Deterministic split: every ``every``-th item (in sorted order) goes to val (20 %)."""
    items = sorted(items, key=lambda i: i.image_path)
    val = items[every - 1::every]
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
    xmls = {p.stem: p for p in sorted((root / "Annotations").glob("*.xml"))}
    found: List[str] = []
    for x in xmls.values():
        _discover_voc_names(str(x), found)
    names = sorted(found)
    labeled = {stem: Item(str(images[stem]), parse_voc_annotation(str(x), names))
               for stem, x in xmls.items() if stem in images}
    sets = root / "ImageSets" / "Main"
    if (sets / "train.txt").is_file() and (sets / "val.txt").is_file():
        train = [labeled[s] for s in _read_lines(sets / "train.txt") if s in labeled]
        val = [labeled[s] for s in _read_lines(sets / "val.txt") if s in labeled]
    else:
        train, val = _split_val(list(labeled.values()))
    if (sets / "test.txt").is_file():
        candidate = [Item(str(images[s])) for s in _read_lines(sets / "test.txt") if s in images]
    else:
        candidate = [Item(str(p)) for stem, p in images.items() if stem not in xmls] or [Item(i.image_path) for i in val]
    return Dataset(root.name, names, train, val, candidate)


def _find_image(root: Path, file_name: str) -> Optional[Path]:
    for base in (root, root / "images", root.parent / "images", root.parent):
        for cand in (base / file_name, base / os.path.basename(file_name)):
            if cand.is_file():
                return cand
    return None


def load_coco(path: str) -> Dataset:
    """A COCO detection json; images are looked up beside it, in ``images/`` or ``../images/``.

    Split: every 5th image (by file name) to val; candidates = the val images. Class names:
    the categories in id order.

    Raises:
        AnnotationError: bad json / bbox (file and key named); an image that cannot be found.
    """
    import json

    p = Path(path).resolve()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:
        raise AnnotationError(f"not valid JSON: {e}", path=str(p)) from None
    cats = sorted(data.get("categories", []), key=lambda c: c["id"])
    names = [c["name"] for c in cats]
    boxes = load_coco_annotations(str(p), names)
    items = []
    for im in data.get("images", []):
        img = _find_image(p.parent, im["file_name"])
        if img is None:
            raise AnnotationError(f"image {im['file_name']!r} not found beside the json, in images/ or ../images/",
                                  path=str(p), key=f"images[id={im['id']}]")
        items.append(Item(str(img), boxes.get(os.path.basename(im["file_name"]), [])))
    train, val = _split_val(items)
    return Dataset(p.stem, names, train, val, [Item(i.image_path) for i in val])


def _yolo_images(base: Path, entry: Any) -> List[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    out: List[Path] = []
    for e in entries:
        p = (base / str(e)).resolve()
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTS)
        elif p.is_file() and p.suffix == ".txt":
            out += [(p.parent / line).resolve() if not os.path.isabs(line) else Path(line)
                    for line in _read_lines(p)]
        else:
            raise IndexFileError(f"YOLO split {e!r} is neither a folder of images nor a .txt list", path=str(p))
    return out


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
    ``images/`` folder and converted to pixels with the image's size. Candidates: ``test`` when
    given, else the val images.

    Raises:
        AnnotationError: a label line that does not parse or a class id outside ``names``.
    """
    from ymir_exc.harness.workspace import image_size

    p = Path(path).resolve()
    cfg = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    base = Path(cfg.get("path") or p.parent)
    base = base if base.is_absolute() else (p.parent / base)
    raw_names = cfg.get("names") or []
    data_names = [raw_names[k] for k in sorted(raw_names)] if isinstance(raw_names, dict) else list(raw_names)

    def items(entry: Any) -> List[Item]:
        out = []
        for img in _yolo_images(base, entry):
            label = _yolo_label_path(img)
            boxes: List[BBox] = []
            if label.is_file():
                w, h = image_size(str(img))
                for n, line in enumerate(label.read_text(encoding="utf-8").splitlines(), 1):
                    if not line.strip():
                        continue
                    f = line.split()
                    try:
                        cid, xc, yc, bw, bh = int(f[0]), *(float(v) for v in f[1:5])
                    except (ValueError, IndexError):
                        raise AnnotationError("expected 'class x_center y_center width height'", path=str(label),
                                              line=n) from None
                    if not 0 <= cid < len(data_names):
                        raise AnnotationError(f"class id {cid} outside names {data_names}", path=str(label), line=n)
                    x0 = max(0, int(round((xc - bw / 2) * w)))
                    y0 = max(0, int(round((yc - bh / 2) * h)))
                    x1 = min(w, int(round((xc + bw / 2) * w)))
                    y1 = min(h, int(round((yc + bh / 2) * h)))
                    if x1 > x0 and y1 > y0:
                        boxes.append(BBox(cid, data_names[cid], x0, y0, x1 - x0, y1 - y0))
            out.append(Item(str(img), boxes))
        return out

    train, val = items(cfg.get("train")), items(cfg.get("val"))
    candidate = [Item(i.image_path) for i in (items(cfg["test"]) if cfg.get("test") else val)]
    return Dataset(p.parent.name, data_names, train, val, candidate)


def remap_classes(ds: Dataset, class_names: Optional[Sequence[str]] = None,
                  aliases: Optional[Dict[str, str]] = None, unknown: str = "stop") -> Dataset:
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
    missing: Dict[str, int] = {}

    def fix(items: List[Item]) -> List[Item]:
        out = []
        for it in items:
            boxes = []
            for b in it.boxes:
                n = aliases.get(b.class_name, b.class_name)
                if n not in index:
                    missing[n] = missing.get(n, 0) + 1
                    continue
                boxes.append(BBox(index[n], n, b.x, b.y, b.w, b.h, b.quality, b.angle))
            out.append(Item(it.image_path, boxes))
        return out

    new = Dataset(ds.name, list(class_names), fix(ds.train), fix(ds.val), list(ds.candidate))
    if missing and unknown == "stop":
        listing = ", ".join(f"{n} ({k} boxes)" for n, k in sorted(missing.items()))
        raise AnnotationError(f"classes not in class_names {list(class_names)}: {listing}; map them with "
                              f"--class-alias NAME=CLASS or drop them with --unknown-classes ignore",
                              key="class_names")
    return new


def load_dataset(spec: Optional[str], class_names: Optional[Sequence[str]] = None,
                 aliases: Optional[Dict[str, str]] = None, unknown: str = "stop") -> Dataset:
    """Read ``--dataset``: a bundled sample name (default ``trees``), a YMIR ``in/`` folder, a
    VOC folder, a COCO json or a YOLO data.yaml; then map classes (:func:`remap_classes`).

    Raises:
        FileNotFoundError: the path does not exist or is not a recognised dataset.
    """
    if spec is None or spec in SAMPLE_NAMES:
        ds = load_sample(spec or "trees")
    elif not os.path.exists(spec):
        raise FileNotFoundError(f"--dataset {spec}: no such sample or path (bundled samples: {', '.join(SAMPLE_NAMES)})")
    elif os.path.isdir(spec) and (Path(spec) / "JPEGImages").is_dir():
        ds = load_voc(spec)
    elif spec.endswith(".json"):
        ds = load_coco(spec)
    elif spec.endswith((".yaml", ".yml")):
        ds = load_yolo(spec)
    elif os.path.isdir(spec):
        ds = load_in_dir(spec, class_names)
    else:
        raise FileNotFoundError(f"--dataset {spec}: not a sample, a YMIR in/ folder, a VOC folder (JPEGImages/), "
                                f"a COCO .json or a YOLO data.yaml")
    if class_names or aliases or unknown != "stop":
        ds = remap_classes(ds, class_names, aliases, unknown)
    return ds
