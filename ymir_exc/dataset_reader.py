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

import codecs
import itertools
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, cast

from ymir_exc import env
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


#: bytes read per block: a multiple of the text layer's 8192-byte chunks, so that a decoding
#: error is met at the same line as by line-by-line reading (see _item_path_lines)
_BLOCK_SIZE = 8 * 8192
#: ``bytes.translate`` with this deletes every byte but 0..32: what is left of a block is its tab
#: and newline structure, plus any space / control character (those blocks take the slow path)
_NOT_STRUCTURE = bytes(range(33, 256))
_PAIRS = b"\t\n" * (_BLOCK_SIZE // 2 + 1)
_LINES = b"\n" * (_BLOCK_SIZE + 1)


def _item_path_blocks(
    dataset_type: DatasetType | str, env_config: env.EnvConfig | None, live: list[Any]
) -> Generator[Iterable[tuple[str, str]], None, None]:
    """Blocks of ``(asset, annotation)`` pairs, whole lines at a time, for :func:`item_paths`.

    Fast path: a block of plain lines (training: exactly one tab per line, both columns
    non-empty; candidate: no tab, non-empty) is split in two C calls. Anything else (blank line,
    missing column, extra column, space, CR, control character, bad UTF-8, whitespace-only path)
    hands the rest of the file to :func:`_item_path_lines`, the line-by-line reader, which yields
    the same pairs and raises the same errors at the same line. ``live[0]`` is the block being
    iterated (for ``close()``).
    """
    dataset_type = _as_dataset_type(dataset_type)
    path = index_file_path(dataset_type, env_config)
    need_annotation = dataset_type != DatasetType.CANDIDATE
    done = 0  # lines yielded so far
    with _open_index(path, "rb") as f:
        for block in _line_blocks(f):
            if block is None:
                break
            fields, seps, is_ascii = block
            pairs = _block_pairs(fields, seps, is_ascii, need_annotation)
            if pairs is None:
                break
            live[0] = fields
            done += pairs[1]
            yield pairs[0]
        else:
            return
    live[0] = _item_path_lines(path, need_annotation, skip=done)
    yield live[0]


def _open_index(path: str, mode: str) -> IO[Any]:
    """``open(path, mode)`` of an index file (text modes as UTF-8).

    Raises:
        IndexFileError: missing or unreadable.
    """
    try:
        return open(path, mode, encoding=None if "b" in mode else "utf-8")
    except FileNotFoundError:
        raise IndexFileError("index file not found", path=path) from None
    except OSError as e:
        raise IndexFileError(f"cannot read index file: {e.strerror}", path=path) from None


def _line_blocks(f: IO[bytes]) -> Iterator[tuple[list[str], bytes, bool] | None]:
    """The complete lines of each :data:`_BLOCK_SIZE` block of ``f``: ``(fields, seps,
    is_ascii)`` with ``fields`` the lines split at tabs and newlines, ``seps`` the block's tab
    and newline bytes (plus any other byte below 33) in order, ``is_ascii`` whether those lines
    are ASCII. The partial line after a block's last newline is carried into the next block.
    Yields ``None`` (and stops) at bytes that are not UTF-8; ends after the last line."""
    decode = codecs.getincrementaldecoder("utf-8")().decode
    # the partial line after a block's last newline: its fields (split at tabs) and tab bytes
    carry: list[str] = [""]
    carry_seps = b""
    carry_ascii = True
    read = f.read
    while True:
        block = read(_BLOCK_SIZE)
        final = not block
        try:
            text = decode(block, final)
        except UnicodeDecodeError:
            yield None
            return
        # one split of the whole block at tabs and newlines; the block's bytes reduced to its
        # tabs and newlines tell, for the price of one more pass, whether that split is a
        # clean (asset, annotation) pairing
        fields = text.replace("\t", "\n").split("\n")
        seps = block.translate(None, _NOT_STRUCTURE)
        if carry_seps:
            seps = carry_seps + seps
        if len(carry) > 1 or carry[0]:
            fields[0] = carry[-1] + fields[0]
            if len(carry) > 1:
                fields[0:0] = carry[:-1]
        is_ascii = carry_ascii and text.isascii()
        if final:
            if len(fields) > 1 or fields[0]:  # else the file ended with a newline (or is empty)
                yield fields, seps, is_ascii
            return
        cut = seps.rfind(b"\n")
        if cut < 0:  # no line ends in this block
            carry, carry_seps, carry_ascii = fields, seps, is_ascii
            continue
        carry_seps = seps[cut + 1 :]
        m = len(carry_seps) + 1
        carry = fields[-m:]
        del fields[-m:]
        carry_ascii = text.isascii()
        yield fields, seps[:cut], is_ascii


def _block_pairs(
    fields: list[str], seps: bytes, is_ascii: bool, need_annotation: bool
) -> tuple[Iterable[tuple[str, str]], int] | None:
    """``(the pairs of a block's lines, how many)`` when the block is plain lines (see
    :func:`_item_path_blocks`), else None (the line-by-line reader takes over)."""
    k = len(seps)
    if need_annotation or seps != _LINES[:k]:
        if not (k & 1 and seps == _PAIRS[:k]):
            return None
        ok = all(fields) if need_annotation else all(fields[0::2])
        if ok and not is_ascii:
            ok = not any(map(str.isspace, fields[0::2]))
        if not ok:
            return None
        pairs = iter(fields)
        return zip(pairs, pairs, strict=True), len(fields) >> 1
    if not all(fields) or (not is_ascii and any(map(str.isspace, fields))):
        return None
    return zip(fields, itertools.repeat("")), len(fields)


def _item_path_lines(path: str, need_annotation: bool, skip: int = 0) -> Iterator[tuple[str, str]]:
    """The line-by-line reader (every check, exact line numbers), from line ``skip + 1`` on."""
    with _open_index(path, "r") as f:
        try:
            for n, line in enumerate(f, 1):
                if n <= skip:
                    continue
                asset, sep, annotation = line.rstrip("\r\n").partition("\t")
                if not asset or asset.isspace():
                    raise IndexFileError("blank line (expected an image path)", path=path, line=n)
                if need_annotation and not annotation:
                    raise IndexFileError("expected '<image path>\\t<annotation path>'", path=path, line=n)
                if "\t" in annotation:
                    annotation = annotation.partition("\t")[0]
                yield asset, annotation
        except UnicodeDecodeError:
            raise IndexFileError("index file is not UTF-8 text", path=path) from None


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
