"""Which images a mining / inference task runs on: ``--source`` (your own images, no labels) or
a dataset's split chosen with ``--split``.

Example::

    ds = source_dataset("photos/*.jpg")                  # a folder, a glob or one image file
    ds, note = select_candidates(load_dataset("coco.json"), "all")
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from ymir_exc.errors import ImageError
from ymir_exc.harness.datasets import IMAGE_EXTS, Dataset, Item, check_image, first_few

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
    p = Path(spec).expanduser()
    if p.is_dir():
        found = [q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTS]
        where = f"folder {spec}"
    elif p.is_file():
        if p.suffix.lower() not in IMAGE_EXTS:
            raise FileNotFoundError(f"--source {spec}: not an image file (extensions: {', '.join(IMAGE_EXTS)})")
        found = [p]
        where = spec
    else:
        matches = [Path(m) for m in glob.glob(os.path.expanduser(spec), recursive=True)]
        if not matches:
            raise FileNotFoundError(f"--source {spec}: no such file or folder, and no file matches it as a glob")
        found = [q for q in matches if q.is_file() and q.suffix.lower() in IMAGE_EXTS]
        where = f"glob {spec}"
    if not found:
        raise FileNotFoundError(f"--source {spec}: the {where} holds no image ({', '.join(IMAGE_EXTS)})")
    bad = []
    for q in sorted(set(found)):
        try:
            check_image(str(q), [Path(os.path.realpath(q)).parent])
        except ImageError as e:
            bad.append(e.message)
    if bad:
        raise ImageError(
            f"{len(bad)} file(s) with an image extension are no image: " + first_few(bad) + "; remove or fix them",
            path=f"--source {spec}",
        )
    return sorted({str(q.resolve()) for q in found})


def source_dataset(spec: str, class_names: Sequence[str] | None = None) -> Dataset:
    """A dataset whose candidates are ``--source``'s images (no train / val, no labels).

    Raises:
        FileNotFoundError: see :func:`source_images`.
    """
    images = source_images(spec)
    name = Path(spec).name or "source"
    return Dataset(name, list(class_names or []), [], [], [Item(p) for p in images])


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
    labeled = {i.image_path for i in ds.train} | {i.image_path for i in ds.val}
    note = None
    if split == "val":
        paths = [i.image_path for i in ds.val]
    elif split == "unlabeled":
        paths = [i.image_path for i in ds.candidate if i.image_path not in labeled]
        if not paths:
            note = "the dataset has no unlabeled image: running on all its images (--split all)"
            split = "all"
    if split == "all":
        paths = [i.image_path for i in ds.train + ds.val + ds.candidate]
    paths = list(dict.fromkeys(paths))
    return Dataset(ds.name, ds.class_names, ds.train, ds.val, [Item(p) for p in paths]), note


__all__ = ["SPLITS", "source_images", "source_dataset", "select_candidates"]
