"""Which images a mining / inference task runs on: ``--source`` (your own images, no labels) or
a dataset's split chosen with ``--split``.

Example::

    ds = source_dataset("photos/*.jpg")                  # a folder, a glob or one image file
    ds, note = select_candidates(load_dataset("coco.json"), "all")
"""

from __future__ import annotations

import glob
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ymir_exc.errors import ImageError
from ymir_exc.harness.datasets import IMAGE_EXTS, Dataset, Item, check_image, first_few, walk
from ymir_exc.harness.item_store import ItemStore, KeySet, same_kind, sorted_paths

SPLITS = ("val", "unlabeled", "all")


def source_images(spec: str) -> list[str]:
    """The image files ``--source`` names, sorted, each once (absolute paths).

    Args:
        spec: a folder (its images, recursively), a glob (``photos/**/*.jpg``; ``**`` recurses)
            or one image file. Images are recognised by extension (jpg, jpeg, png, bmp, webp,
            tif, tiff; any case), then each is checked with Pillow (its header must parse).

    Raises:
        FileNotFoundError: nothing matches, or the folder / glob holds no image.
        ImageError: a file with an image's extension that Pillow cannot read (every such file
            named, as the user gave it, up to 10).
    """
    return list(_source_paths(spec))


def _source_paths(spec: str) -> Iterator[str]:
    """:func:`source_images`, streamed: the folder's or glob's listing is sorted on disk, each
    image checked once, and the resolved paths sorted (each once) on disk again: no list of
    all images in memory.

    Raises:
        FileNotFoundError, ImageError: see :func:`source_images` (before the first path).
    """
    p = Path(spec).expanduser()
    if p.is_dir():
        found: Iterable[str] = (str(q) for q in walk(p) if q.is_file() and q.suffix.lower() in IMAGE_EXTS)
        where = f"folder {spec}"
    elif p.is_file():
        if p.suffix.lower() not in IMAGE_EXTS:
            raise FileNotFoundError(f"--source {spec}: not an image file (extensions: {', '.join(IMAGE_EXTS)})")
        found, where = [str(p)], spec
    else:
        matches = glob.glob(os.path.expanduser(spec), recursive=True)
        if not matches:
            raise FileNotFoundError(f"--source {spec}: no such file or folder, and no file matches it as a glob")
        found = [str(Path(q)) for q in matches if os.path.isfile(q) and Path(q).suffix.lower() in IMAGE_EXTS]
        where = f"glob {spec}"
    bad: list[str] = []
    n_bad = 0

    def checked() -> Iterator[str]:
        nonlocal n_bad
        for q in sorted_paths(found, by_parts=True, unique=True):
            try:
                check_image(q, [Path(os.path.realpath(q)).parent])
            except ImageError as e:
                n_bad += 1
                bad[:] = bad if len(bad) > 10 else [*bad, e.message]
                continue
            yield str(Path(q).resolve())

    paths = sorted_paths(checked(), unique=True)
    first = next(paths, None)
    if n_bad:
        raise ImageError(
            f"{n_bad} file(s) with an image extension are no image: " + first_few(bad) + "; remove or fix them",
            path=f"--source {spec}",
        )
    if first is None:
        raise FileNotFoundError(f"--source {spec}: the {where} holds no image ({', '.join(IMAGE_EXTS)})")
    yield first
    yield from paths


def source_dataset(spec: str, class_names: Sequence[str] | None = None) -> Dataset:
    """A dataset whose candidates are ``--source``'s images (no train / val, no labels), kept
    on disk (:class:`~ymir_exc.harness.item_store.ItemStore`).

    Raises:
        FileNotFoundError: see :func:`source_images`.
    """
    name = Path(spec).name or "source"
    return Dataset(name, list(class_names or []), [], [], ItemStore(Item(p) for p in _source_paths(spec)))


def select_candidates(ds: Dataset, split: str) -> tuple[Dataset, str | None]:
    """``ds`` with its candidates replaced by the images of ``split``.

    Args:
        split: ``val`` (the validation images), ``unlabeled`` (images in neither train nor val)
            or ``all`` (every image of the dataset, each once).

    Returns:
        (the dataset, a note for the user or None): ``unlabeled`` with no unlabeled image
        falls back to ``all`` and says so.

    Raises:
        ValueError: an unknown split.
    """
    if split not in SPLITS:
        raise ValueError(f"--split {split!r}: one of {', '.join(SPLITS)}")
    note = None
    if split == "val":
        paths: Iterable[str] = (i.image_path for i in ds.val)
    elif split == "unlabeled":
        labeled = KeySet(i.image_path for i in itertools.chain(ds.train, ds.val))
        if not any(i.image_path not in labeled for i in ds.candidate):
            note = "the dataset has no unlabeled image: running on all its images (--split all)"
            split = "all"
        paths = (i.image_path for i in ds.candidate if i.image_path not in labeled)
    if split == "all":
        paths = (i.image_path for i in itertools.chain(ds.train, ds.val, ds.candidate))
    once = KeySet()
    candidate = same_kind(ds.candidate, (Item(p) for p in paths if once.add(p)))
    return Dataset(ds.name, ds.class_names, ds.train, ds.val, candidate), note


__all__ = ["SPLITS", "source_images", "source_dataset", "select_candidates"]
