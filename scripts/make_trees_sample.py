#!/usr/bin/env python3
"""Regenerate the bundled "trees" detection sample from the deepforest 2.1.0 wheel.

The deepforest wheel (MIT license) ships real aerial RGB images with Pascal VOC
tree-crown boxes under ``deepforest/data/``. This script reads them straight out
of the wheel (no install), cuts them into 320x320 tiles, and writes a small
Pascal VOC dataset with train / val / candidate splits.

Usage::

    python3 scripts/make_trees_sample.py                      # pip-downloads the wheel
    python3 scripts/make_trees_sample.py --wheel deepforest-2.1.0-py3-none-any.whl \
        --out ymir_exc/samples/trees

Dependencies: Pillow and numpy. The output is deterministic for a given Pillow
(libjpeg) version: running it twice gives byte-identical files.

Tile rule: a fixed non-overlapping grid anchored at the top-left corner; tile
(row, col) covers x in [col*320, col*320+320) and y in [row*320, row*320+320).
Partial tiles at the right / bottom edges are skipped (no overlap between tiles,
so no box is shared between a train tile and a val tile).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

WHEEL_REQ = "deepforest==2.1.0"
WHEEL_NAME = "deepforest-2.1.0-py3-none-any.whl"
WHEEL_SHA256 = "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54"
DATA_DIR = "deepforest/data/"
LICENSE_MEMBER = "deepforest-2.1.0.dist-info/licenses/LICENSE"

LABELED = [
    "2019_YELL_2_528000_4978000_image_crop2",
    "2019_YELL_2_541000_4977000_image_crop",
    "OSBS_029",
    "SOAP_061",
]
UNLABELED_PNG = ["SOAP_031"]
DRONE_SUFFIX = ".JPG"  # the single drone photo in data/ ("AWPE Pigeon Lake 2020 DJI_0005.JPG")

CLASS_NAME = "tree"
TILE = 320
MIN_VISIBLE = 0.5  # keep a box if >= 50% of its area lies inside the tile
MIN_SIDE = 4  # ... and its clipped box is >= 4 px wide and high
JPEG_QUALITY = 85
SEED = 20190101
VAL_FRACTION = 0.2
MIN_VAL = 10
DRONE_SHORT_SIDE = 640  # the drone photo is downscaled so its shorter side is this (-> 2x2 tiles)


def sha1_bytes(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def safe_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def download_wheel(dest: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", WHEEL_REQ, "-d", str(dest)],
        check=True,
    )
    wheels = sorted(dest.glob("deepforest-2.1.0-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download did not produce a deepforest 2.1.0 wheel in {dest}")
    return wheels[0]


def load_image(zf: zipfile.ZipFile, member: str) -> Image.Image:
    im = Image.open(io.BytesIO(zf.read(member)))
    im = ImageOps.exif_transpose(im)
    return im.convert("RGB")


def load_boxes(zf: zipfile.ZipFile, member: str) -> tuple[int, int, np.ndarray]:
    """Return (width, height, boxes[N,4] as float xmin,ymin,xmax,ymax); every class -> tree."""
    root = ET.fromstring(zf.read(member))
    width = int(root.findtext("size/width"))
    height = int(root.findtext("size/height"))
    boxes = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        boxes.append([float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
    return width, height, np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def tile_origins(width: int, height: int):
    """Full tiles only: a fixed grid from (0, 0); partial right/bottom tiles are skipped."""
    for row in range(height // TILE):
        for col in range(width // TILE):
            yield row, col, col * TILE, row * TILE


def boxes_in_tile(boxes: np.ndarray, x0: int, y0: int) -> list[tuple[int, int, int, int]]:
    if len(boxes) == 0:
        return []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    cx1 = np.clip(boxes[:, 0], x0, x0 + TILE)
    cy1 = np.clip(boxes[:, 1], y0, y0 + TILE)
    cx2 = np.clip(boxes[:, 2], x0, x0 + TILE)
    cy2 = np.clip(boxes[:, 3], y0, y0 + TILE)
    cw = cx2 - cx1
    ch = cy2 - cy1
    keep = (cw >= MIN_SIDE) & (ch >= MIN_SIDE) & (cw * ch >= MIN_VISIBLE * area) & (area > 0)
    out = []
    for i in np.flatnonzero(keep):
        xmin = int(round(cx1[i] - x0))
        ymin = int(round(cy1[i] - y0))
        # the YMIR / VOC convention: xmax, ymax inclusive (= x + w - 1)
        xmax = int(round(cx2[i] - x0)) - 1
        ymax = int(round(cy2[i] - y0)) - 1
        out.append((xmin, ymin, xmax, ymax))
    out.sort()
    return out


def jpeg_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    # No exif / icc / comment passed -> no metadata besides the JFIF header.
    im.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False, subsampling="4:2:0")
    return buf.getvalue()


def voc_xml(stem: str, width: int, height: int, boxes) -> bytes:
    lines = [
        "<annotation>",
        "    <folder>images</folder>",
        f"    <filename>{stem}.jpg</filename>",
        "    <size>",
        f"        <width>{width}</width>",
        f"        <height>{height}</height>",
        "        <depth>3</depth>",
        "    </size>",
        "    <segmented>0</segmented>",
    ]
    for xmin, ymin, xmax, ymax in boxes:
        lines += [
            "    <object>",
            f"        <name>{CLASS_NAME}</name>",
            "        <pose>Unspecified</pose>",
            "        <truncated>0</truncated>",
            "        <difficult>0</difficult>",
            "        <bndbox>",
            f"            <xmin>{xmin}</xmin>",
            f"            <ymin>{ymin}</ymin>",
            f"            <xmax>{xmax}</xmax>",
            f"            <ymax>{ymax}</ymax>",
            "        </bndbox>",
            "    </object>",
        ]
    lines.append("</annotation>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def split_tiles(tiles: list[dict]) -> tuple[list[str], list[str]]:
    """Seeded shuffle -> ~20% val (>= MIN_VAL), never taking a source's last train tile."""
    stems = sorted(t["stem"] for t in tiles)
    source_of = {t["stem"]: t["source"] for t in tiles}
    n_val = max(MIN_VAL, int(round(VAL_FRACTION * len(stems))))
    order = np.random.default_rng(SEED).permutation(len(stems))
    remaining = {}
    for s in stems:
        remaining[source_of[s]] = remaining.get(source_of[s], 0) + 1
    val = []
    for i in order:
        s = stems[int(i)]
        if len(val) >= n_val:
            break
        if remaining[source_of[s]] > 1:
            val.append(s)
            remaining[source_of[s]] -= 1
    if len(val) < MIN_VAL:
        raise SystemExit(f"could not put {MIN_VAL} tiles in val")
    val_set = set(val)
    train = [s for s in stems if s not in val_set]
    return sorted(train), sorted(val)


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def build(wheel: Path, out: Path) -> dict:
    wheel_bytes = wheel.read_bytes()
    wheel_sha256 = hashlib.sha256(wheel_bytes).hexdigest()
    if wheel_sha256 != WHEEL_SHA256:
        print(f"warning: wheel sha256 {wheel_sha256} != expected {WHEEL_SHA256}", file=sys.stderr)

    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    (out / "annotations").mkdir(parents=True)

    zf = zipfile.ZipFile(io.BytesIO(wheel_bytes))
    names = set(zf.namelist())

    labeled_tiles: list[dict] = []
    for src in LABELED:
        im = load_image(zf, DATA_DIR + src + ".png")
        w, h, boxes = load_boxes(zf, DATA_DIR + src + ".xml")
        if im.size != (w, h):
            raise SystemExit(f"{src}: image size {im.size} != xml size {(w, h)}")
        for row, col, x0, y0 in tile_origins(w, h):
            tboxes = boxes_in_tile(boxes, x0, y0)
            if not tboxes:
                continue
            stem = f"{src}_{row}_{col}"
            tile = im.crop((x0, y0, x0 + TILE, y0 + TILE))
            write(out / "images" / f"{stem}.jpg", jpeg_bytes(tile))
            write(out / "annotations" / f"{stem}.xml", voc_xml(stem, TILE, TILE, tboxes))
            labeled_tiles.append({"stem": stem, "source": src, "boxes": len(tboxes)})

    unlabeled: list[str] = []
    sources_unlabeled = [(s, DATA_DIR + s + ".png", None) for s in UNLABELED_PNG]
    drones = sorted(n for n in names if n.startswith(DATA_DIR) and n.endswith(DRONE_SUFFIX))
    for member in drones:
        stem = safe_stem(Path(member).stem)
        sources_unlabeled.append((stem, member, DRONE_SHORT_SIDE))
    for src, member, short_side in sources_unlabeled:
        im = load_image(zf, member)
        if short_side is not None and min(im.size) > short_side:
            scale = short_side / min(im.size)
            size = (int(round(im.size[0] * scale)), int(round(im.size[1] * scale)))
            im = im.resize(size, Image.LANCZOS)
        for row, col, x0, y0 in tile_origins(*im.size):
            stem = f"{src}_{row}_{col}"
            tile = im.crop((x0, y0, x0 + TILE, y0 + TILE))
            write(out / "images" / f"{stem}.jpg", jpeg_bytes(tile))
            unlabeled.append(stem)

    train, val = split_tiles(labeled_tiles)
    candidate = sorted(set(unlabeled) | set(val))
    for name, stems in (("train", train), ("val", val), ("candidate", candidate)):
        write(out / f"{name}.txt", "".join(s + "\n" for s in stems).encode())
    write(out / "classes.txt", f"{CLASS_NAME}\n".encode())

    license_text = zf.read(LICENSE_MEMBER).decode("utf-8")
    if not license_text.endswith("\n"):
        license_text += "\n"
    license_text += (
        "\n---\nThe images and annotations in this folder come from the deepforest 2.1.0 "
        "wheel (deepforest/data/, https://pypi.org/project/deepforest/2.1.0/); they were "
        f"tiled to {TILE}x{TILE} JPEG tiles and all classes were renamed to '{CLASS_NAME}' "
        "by scripts/make_trees_sample.py.\n"
    )
    write(out / "LICENSE-deepforest.txt", license_text.encode("utf-8"))

    boxes_of = {t["stem"]: t["boxes"] for t in labeled_tiles}
    per_source: dict[str, dict] = {}
    for t in labeled_tiles:
        d = per_source.setdefault(t["source"], {"train": 0, "val": 0, "boxes": 0})
        d["train" if t["stem"] in train else "val"] += 1
        d["boxes"] += t["boxes"]
    images = {}
    for p in sorted((out / "images").iterdir()):
        images[f"images/{p.name}"] = sha1_bytes(p.read_bytes())
    annotations = {}
    for p in sorted((out / "annotations").iterdir()):
        annotations[f"annotations/{p.name}"] = sha1_bytes(p.read_bytes())
    image_bytes = sum((out / k).stat().st_size for k in images)
    ann_bytes = sum((out / k).stat().st_size for k in annotations)
    counts = {
        "tiles": {
            "train": len(train),
            "val": len(val),
            "candidate": len(candidate),
            "unlabeled": len(unlabeled),
            "images": len(images),
        },
        "boxes": {
            "train": sum(boxes_of[s] for s in train),
            "val": sum(boxes_of[s] for s in val),
            "candidate": sum(boxes_of.get(s, 0) for s in candidate),
        },
        "per_source": per_source,
        "image_bytes": image_bytes,
        "annotation_bytes": ann_bytes,
    }
    manifest = {
        "name": "trees",
        "source": {
            "package": WHEEL_REQ,
            "wheel": WHEEL_NAME,
            "wheel_sha256": wheel_sha256,
            "license": "MIT (see LICENSE-deepforest.txt)",
        },
        "classes": [CLASS_NAME],
        "tile_size": TILE,
        "tile_rule": "non-overlapping grid from (0,0); partial edge tiles skipped",
        "box_rule": {"min_visible_fraction": MIN_VISIBLE, "min_side_px": MIN_SIDE},
        "jpeg_quality": JPEG_QUALITY,
        "split_seed": SEED,
        "drone_short_side": DRONE_SHORT_SIDE,
        "counts": counts,
        "images": images,
        "annotations": annotations,
    }
    write(out / "manifest.json", (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    write(out / "README.md", readme(counts, unlabeled).encode("utf-8"))
    return manifest


def readme(counts: dict, unlabeled: list[str]) -> str:
    t, b = counts["tiles"], counts["boxes"]
    mb = (counts["image_bytes"] + counts["annotation_bytes"]) / 1e6
    rows = "\n".join(
        f"| `{src}` | {d['train']} | {d['val']} | {d['boxes']} |" for src, d in counts["per_source"].items()
    )
    unl_src = sorted({s.rsplit("_", 2)[0] for s in unlabeled})
    return f"""# trees: a small real tree-crown detection sample

Real aerial RGB images with tree-crown boxes, tiled from the data that ships in the
`deepforest` 2.1.0 wheel (`deepforest/data/`, MIT license, see `LICENSE-deepforest.txt`).
Pascal VOC layout, a single class `{CLASS_NAME}`.

## Layout

- `images/<stem>.jpg`: {TILE}x{TILE} RGB JPEG tiles (quality {JPEG_QUALITY}, no EXIF).
- `annotations/<stem>.xml`: Pascal VOC boxes for every train / val tile.
- `train.txt`, `val.txt`, `candidate.txt`: one stem per line, sorted.
- `classes.txt`: `{CLASS_NAME}`.
- `manifest.json`: sha1 of every image and annotation file, counts, generation parameters.

Stems are `<source-stem>_<row>_<col>` (0-based tile row / column in the source image).

## How it was made

- Labeled sources: {", ".join(f"`{s}.png`" for s in LABELED)}. Every class in their
  XML (`Tree`, `Alive`, `Dead`) is mapped to `{CLASS_NAME}`.
- Tiling: a fixed, non-overlapping grid of {TILE}x{TILE} tiles anchored at the top-left
  corner; tile (row, col) covers x in [col*{TILE}, col*{TILE}+{TILE}) and
  y in [row*{TILE}, row*{TILE}+{TILE}). Partial tiles at the right / bottom edges are
  **skipped** (so tiles never overlap and no crown is shared between train and val).
- Boxes are clipped to the tile; a box is kept only if at least {int(MIN_VISIBLE * 100)}% of its
  area lies inside the tile and the clipped box is at least {MIN_SIDE} px wide and high.
  Labeled tiles with no box are dropped.
- Split: seeded shuffle (numpy PCG64, seed {SEED}) of the labeled tiles, ~{int(VAL_FRACTION * 100)}%
  to val (at least {MIN_VAL}); a tile goes to val only if its source keeps at least one
  train tile, so every source image appears in train.
- Candidates (`candidate.txt`) = the unlabeled tiles (from {", ".join(f"`{s}`" for s in unl_src)};
  the drone photo is first downscaled (Lanczos) so its shorter side is {DRONE_SHORT_SIDE} px) **plus all
  val tiles**, so inference on candidates can be scored against the val ground truth.
  Unlabeled tiles have no XML.

## Box convention

`<bndbox>` values are integer pixels, 0-based and inclusive, as YMIR writes them:
`xmax = xmin + w - 1` and `ymax = ymin + h - 1` (w, h = box width / height in pixels): the box
covers columns xmin .. xmax. Hence `0 <= xmin < xmax < width` and `0 <= ymin < ymax < height`. The source deepforest XML
coordinates are read with the same convention. All objects have `difficult` = 0.

## Counts

| split | tiles | boxes |
|---|---|---|
| train | {t["train"]} | {b["train"]} |
| val | {t["val"]} | {b["val"]} |
| candidate | {t["candidate"]} ({t["unlabeled"]} unlabeled + {t["val"]} val) | {b["candidate"]} (val tiles only) |

| source | train tiles | val tiles | boxes |
|---|---|---|---|
{rows}

Images + annotations: {mb:.2f} MB ({t["images"]} JPEG files).

## Regenerate

```
pip download --no-deps deepforest==2.1.0 -d /tmp/df
python3 scripts/make_trees_sample.py --wheel /tmp/df/{WHEEL_NAME} --out ymir_exc/samples/trees
```

(`--wheel` may be omitted: the script then runs `pip download` into a temp dir.) Needs
Pillow and numpy. The output is deterministic; JPEG bytes can differ across Pillow /
libjpeg versions, in which case `manifest.json` sha1s change but boxes and splits do not.
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--wheel", type=Path, default=None, help=f"path to {WHEEL_NAME} (default: pip download into a temp dir)"
    )
    ap.add_argument("--out", type=Path, default=Path("ymir_exc/samples/trees"))
    args = ap.parse_args(argv)
    if args.wheel is None:
        with tempfile.TemporaryDirectory() as tmp:
            manifest = build(download_wheel(Path(tmp)), args.out)
    else:
        manifest = build(args.wheel, args.out)
    print(json.dumps({k: manifest["counts"][k] for k in ("tiles", "boxes")}, sort_keys=True))
    total = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"total size: {total / 1e6:.2f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
