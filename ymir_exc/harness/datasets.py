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
from typing import Dict, List, Optional, Sequence

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
    discovered = not names

    def boxes_of(annotation: str, image: str, src: Path, n: int) -> List[BBox]:
        if annotation.endswith(".xml"):
            if discovered:
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


def load_dataset(spec: Optional[str], class_names: Optional[Sequence[str]] = None) -> Dataset:
    """``None`` or a bundled sample name -> that sample; a folder -> :func:`load_in_dir`.

    Raises:
        FileNotFoundError: the path does not exist.
    """
    if spec is None or spec in SAMPLE_NAMES:
        return load_sample(spec or "trees")
    if not os.path.exists(spec):
        raise FileNotFoundError(f"--dataset {spec}: no such sample or folder (bundled samples: {', '.join(SAMPLE_NAMES)})")
    return load_in_dir(spec, class_names)
