"""Results keyed back to the user's own image paths: ``predictions.json``, ``mining.tsv`` and
pictures of the boxes (``--save-vis``).

The executor sees each image as ``/in/assets/<h[-2:]>/<sha1>.<ext>``; the platform's files
(``infer-result.json``, ``result.tsv``) are keyed by those names. These files map them back:

- ``predictions.json``: ``{"images": [{id, file_name (the user's path), width, height}],
  "categories": [{id, name}], "annotations": [{image_id, category_id, bbox: [x, y, w, h]
  (pixels), score}]}``; ``annotations`` alone is a valid COCO results list.
- ``mining.tsv``: ``<user's path>\\t<score>\\t<rank>`` per image, best first (rank 1).

Example::

    sources = asset_sources(prepared.stats.sources, [i.image_path for i in ds.candidate])
    write_predictions(work / "predictions.json", env.output.infer_result_file, sources, class_names)
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from ymir_exc._io import atomic_file, atomic_write
from ymir_exc.formats.results import infer_box_problem


def asset_sources(stats_sources: Mapping[str, str], candidates: Sequence[str]) -> dict[str, list[str]]:
    """``{asset file name: [user paths]}`` for ``candidates``.

    Args:
        stats_sources: ``InDirStats.sources`` (asset name -> the first image with those bytes).
        candidates: every candidate image path, in order; images with identical bytes share one
            asset, and each of their paths is listed.
    """
    from ymir_exc.harness.files import sha1_file

    out: dict[str, list[str]] = {}
    first = {src: name for name, src in stats_sources.items()}
    for path in candidates:
        name = first.get(path)
        if name is None:  # the same bytes as an earlier image: same asset name
            name = sha1_file(path) + (os.path.splitext(path)[1].lower() or ".jpg")
        out.setdefault(name, []).append(path)
    return out


def build_predictions(
    results: Mapping[str, list[dict[str, Any]]], sources: Mapping[str, list[str]], class_names: Sequence[str]
) -> dict[str, Any]:
    """The ``predictions.json`` document (see the module docstring).

    Args:
        results: ``InferReport.results``: asset file name -> valid boxes
            (``{"class_name", "score", "box": {"x", "y", "w", "h"}}``), or for a segmentation
            executor ``{"class_name", "score", "segmentation"[, "bbox"]}``.
        sources: from :func:`asset_sources`; every user path gets an image entry, with or
            without boxes.
        class_names: the model's classes; category ids are 1-based positions in it.
    """
    from ymir_exc.harness.files import image_size

    cat = {n: i + 1 for i, n in enumerate(class_names)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for asset, paths in sources.items():
        for path in paths:
            w, h = image_size(path)
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": path, "width": w, "height": h})
            for b in results.get(asset, []):
                annotations.append(_annotation(image_id, b, cat))
    return {"images": images, "categories": [{"id": i, "name": n} for n, i in cat.items()], "annotations": annotations}


def _item_text(obj: dict[str, Any]) -> str:
    """``obj`` as ``json.dumps(doc, indent=1)`` writes it two levels deep (an item of a top-level list)."""
    return "  " + json.dumps(obj, indent=1).replace("\n", "\n  ")


class _StreamedResults:
    """Kept boxes of infer-result.json's ``detection``, streamed (ijson) in the file's order and
    looked up by asset name in the sources' order. Entries read ahead of their turn (the file's
    order differs) are spooled to a temp file, with only their offset kept in memory; in the usual
    case (the executor wrote the candidates in order) nothing is spooled."""

    def __init__(self, f: Any, class_names: Sequence[str]) -> None:
        import ijson

        self._problem = infer_box_problem
        self._names = list(class_names)
        self._it = ijson.kvitems(f, "detection", use_float=True)
        self._spool = tempfile.TemporaryFile()
        self._offsets: dict[str, tuple[int, int]] = {}
        self._end = 0

    def _kept(self, entry: Any) -> list[dict[str, Any]]:
        boxes = entry.get("boxes", entry.get("annotations")) if isinstance(entry, dict) else None
        if not isinstance(boxes, list):
            return []
        return [b for b in boxes if self._problem(b, self._names) is None]

    def get(self, key: str) -> list[dict[str, Any]]:
        """The kept boxes of ``key`` ([] when the file has no entry for it); each key once."""
        where = self._offsets.pop(key, None)
        if where is not None:
            self._spool.seek(where[0])
            boxes: list[dict[str, Any]] = json.loads(self._spool.read(where[1]))
            return boxes
        for k, entry in self._it:
            kept = self._kept(entry)
            if k == key:
                return kept
            data = json.dumps(kept).encode("utf-8")
            self._spool.seek(self._end)
            self._spool.write(data)
            self._offsets[k] = (self._end, len(data))
            self._end += len(data)
        return []

    def close(self) -> None:
        self._spool.close()


def write_predictions(
    path: Path,
    results: str | os.PathLike[str] | Mapping[str, list[dict[str, Any]]],
    sources: Mapping[str, list[str]],
    class_names: Sequence[str],
) -> dict[str, int]:
    """Write ``predictions.json`` atomically, the same bytes as
    ``json.dumps(build_predictions(...), indent=1)``, one image at a time.

    Args:
        path: the target.
        results: the executor's infer-result.json (a path: streamed, its valid boxes kept as
            :func:`ymir_exc.harness.collect.check_infer` keeps them; a segmentation result is read
            whole), or ``{asset name: kept boxes}`` as :func:`build_predictions` takes.
        sources: from :func:`asset_sources`.
        class_names: the model's classes; category ids are 1-based positions in it.

    Returns:
        ``{"images": n, "annotations": m}``: how many of each were written.

    Raises:
        OSError: the file cannot be written (the previous one is left).
        ValueError: an infer-result.json that is not valid JSON (ijson's error).
    """
    cat = {n: i + 1 for i, n in enumerate(class_names)}
    with contextlib.ExitStack() as stack:
        lookup = _result_lookup(stack, results, class_names)
        anns = stack.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8"))
        with atomic_file(path) as write:
            n_images, n_anns = _write_images(write, anns, sources, lookup, cat)
            categories = [{"id": i, "name": n} for n, i in cat.items()]
            write(
                ' "categories": ['
                + ",".join("\n" + _item_text(c) for c in categories)
                + ("\n ],\n" if categories else "],\n")
            )
            write(' "annotations": [')
            anns.seek(0)
            while True:
                chunk = anns.read(1 << 20)
                if not chunk:
                    break
                write(chunk)
            write("\n ]\n}" if n_anns else "]\n}")
    return {"images": n_images, "annotations": n_anns}


def _result_lookup(
    stack: contextlib.ExitStack,
    results: str | os.PathLike[str] | Mapping[str, list[dict[str, Any]]],
    class_names: Sequence[str],
) -> Callable[[str], list[dict[str, Any]]]:
    """``asset name -> kept boxes`` over ``results`` (see :func:`write_predictions`); a file it
    opens is closed when ``stack`` closes.

    Raises:
        OSError: the infer-result.json cannot be opened.
        ValueError: it is not valid JSON.
    """
    if isinstance(results, Mapping):
        return lambda asset: results.get(asset, [])
    from ymir_exc.harness.collect import _json_has_top_key

    f = stack.enter_context(open(results, "rb"))
    if _json_has_top_key(f, "detection"):
        f.seek(0)
        streamed = _StreamedResults(f, class_names)
        stack.callback(streamed.close)
        return streamed.get
    # a COCO-style segmentation result has no per-image key to stream by
    seg = _segmentation_results(f, class_names)
    return lambda asset: seg.get(asset, [])


def _write_images(
    write: Callable[[str], Any],
    anns: IO[str],
    sources: Mapping[str, list[str]],
    lookup: Callable[[str], list[dict[str, Any]]],
    cat: Mapping[str, int],
) -> tuple[int, int]:
    """Write the ``"images"`` list through ``write`` and each image's annotations (comma-separated
    items, without the brackets) to ``anns``; returns ``(images, annotations)`` written.

    Raises:
        ImageError: an image that is missing or that Pillow cannot identify (its size is read from
            the header, EXIF orientation applied).
    """
    from ymir_exc.harness.files import image_size

    n_images = n_anns = 0
    write('{\n "images": [')
    for asset, paths in sources.items():
        boxes = lookup(asset)
        for p in paths:
            w, h = image_size(p)
            n_images += 1
            write(
                ("\n" if n_images == 1 else ",\n")
                + _item_text({"id": n_images, "file_name": p, "width": w, "height": h})
            )
            for b in boxes:
                n_anns += 1
                anns.write(("\n" if n_anns == 1 else ",\n") + _item_text(_annotation(n_images, b, cat)))
    write("\n ],\n" if n_images else "],\n")
    return n_images, n_anns


def _annotation(image_id: int, b: dict[str, Any], cat: Mapping[str, int]) -> dict[str, Any]:
    ann: dict[str, Any] = {"image_id": image_id, "category_id": cat[b["class_name"]]}
    if "box" in b:  # detection
        box = b["box"]
        ann["bbox"] = [box["x"], box["y"], box["w"], box["h"]]
    else:  # segmentation: the executor's COCO mask (RLE or polygons) and its bbox, if any
        ann["segmentation"] = b["segmentation"]
        if b.get("bbox") is not None:
            ann["bbox"] = list(b["bbox"])
    ann["score"] = float(b["score"])
    return ann


def _segmentation_results(f: Any, class_names: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """``{basename: [{"class_name", "score", "segmentation"[, "bbox"]}]}`` of a COCO-style result,
    as :func:`ymir_exc.harness.collect.check_infer` keeps them."""
    from ymir_exc.harness.collect import InferReport, _Candidates, _check_segmentation

    f.seek(0)
    rep = _check_segmentation(
        InferReport(results={}), f, getattr(f, "name", "infer-result.json"), list(class_names), _Candidates([], None)
    )
    return rep.results or {}


def mining_rows(ranked: Sequence[tuple[str, float]], sources: Mapping[str, list[str]]) -> list[tuple[str, float, int]]:
    """``(user path, score, rank)`` best first; images sharing bytes share the score and rank.

    Args:
        ranked: ``MiningReport.ranked``: (path the executor wrote, score), best first.
    """
    rows = []
    for rank, (asset, score) in enumerate(ranked, 1):
        for path in sources.get(os.path.basename(asset), [asset]):
            rows.append((path, score, rank))
    return rows


def write_mining_tsv(path: Path, rows: Sequence[tuple[str, float, int]]) -> None:
    """Write ``mining.tsv`` (``<path>\\t<score>\\t<rank>`` lines, no header) atomically."""
    atomic_write(path, "".join(f"{p}\t{s:.6f}\t{r}\n" for p, s, r in rows))


def save_vis(out_dir: Path, doc: dict[str, Any]) -> list[Path]:
    """Draw each image's boxes (class, score) onto a copy in ``out_dir``; returns the files.

    Copies are named after the user's file (``<stem>.jpg``, ``<stem>-2.jpg`` when two share a
    stem) and saved as JPEG (PNG for images with transparency).
    """
    from PIL import Image, ImageDraw

    out_dir.mkdir(parents=True, exist_ok=True)
    names = {c["id"]: c["name"] for c in doc["categories"]}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in doc["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    palette = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]
    written: list[Path] = []
    used: dict[str, int] = {}
    for im in doc["images"]:
        stem = Path(im["file_name"]).stem
        used[stem] = used.get(stem, 0) + 1
        with Image.open(im["file_name"]) as src:
            alpha = src.mode in ("RGBA", "LA", "P") and "transparency" in src.info or src.mode in ("RGBA", "LA")
            pic = src.convert("RGBA" if alpha else "RGB")
        draw = ImageDraw.Draw(pic)
        width = max(1, round(max(pic.size) / 300))
        for a in sorted(by_image.get(im["id"], []), key=lambda a: a["score"]):
            if "bbox" not in a:  # a segmentation mask without a box: nothing to draw here
                continue
            x, y, w, h = a["bbox"]
            color = palette[(a["category_id"] - 1) % len(palette)]
            draw.rectangle([x, y, x + w - 1, y + h - 1], outline=color, width=width)
            label = f"{names.get(a['category_id'], '?')} {a['score']:.2f}"
            tx, ty = x, max(0, y - 11)
            draw.rectangle(draw.textbbox((tx, ty), label), fill=color)
            draw.text((tx, ty), label, fill="white")
        suffix = "" if used[stem] == 1 else f"-{used[stem]}"
        target = out_dir / f"{stem}{suffix}.{'png' if alpha else 'jpg'}"
        pic.save(target)
        written.append(target)
    return written


__all__ = ["asset_sources", "build_predictions", "write_predictions", "mining_rows", "write_mining_tsv", "save_vis"]
