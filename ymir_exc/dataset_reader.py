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
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from ymir_exc import _fast, env
from ymir_exc.env import DatasetType
from ymir_exc.errors import ConfigFileError, IndexFileError

# the annotation formats (readers beside their writers); re-exported: importable from here as before
from ymir_exc.formats.annotations import (
    DEFAULT_EXPORT_FORMAT as DEFAULT_EXPORT_FORMAT,
)
from ymir_exc.formats.annotations import (
    EXPORT_FORMATS as EXPORT_FORMATS,
)
from ymir_exc.formats.annotations import (
    BBox as BBox,
)
from ymir_exc.formats.annotations import (
    annotation_format as annotation_format,
)
from ymir_exc.formats.annotations import (
    coco_boxes_lookup as coco_boxes_lookup,
)
from ymir_exc.formats.annotations import (
    load_coco_annotations as load_coco_annotations,
)
from ymir_exc.formats.annotations import (
    oriented_size,
)
from ymir_exc.formats.annotations import (
    parse_ark_annotation as parse_ark_annotation,
)
from ymir_exc.formats.annotations import (
    parse_voc_annotation as parse_voc_annotation,
)


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
    """Open an image with Pillow and verify it; returns ``(width, height)`` in pixels, EXIF
    orientation applied (the annotation pixel frame, docs/contract.md).

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
            im.verify()  # before anything else reads the file (Pillow's rule)
        with Image.open(path) as im:
            size = oriented_size(im)
            im.load()
    except FileNotFoundError:
        raise ImageError("image not found", path=path) from None
    except Exception as e:
        raise ImageError(f"not a readable image: {e}", path=path) from None
    return int(size[0]), int(size[1])
