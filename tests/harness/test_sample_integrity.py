"""Integrity checks for the bundled "trees" sample (stdlib only)."""

from __future__ import annotations

import hashlib
import json
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import REPO

SAMPLE = REPO / "ymir_exc/samples/trees"

# SOF markers that carry the frame size (all SOFn except DHT/JPG/DAC).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(path: Path) -> tuple[int, int]:
    """Return (width, height) read from the JPEG's SOF header."""
    data = path.read_bytes()
    assert data[:2] == b"\xff\xd8", f"{path.name}: not a JPEG"
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise AssertionError(f"{path.name}: bad marker at {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        if marker == 0xDA:  # start of scan before any SOF
            break
        i += 2 + length
    raise AssertionError(f"{path.name}: no SOF marker")


def read_list(name: str) -> list[str]:
    return [line.strip() for line in (SAMPLE / name).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def splits() -> dict[str, list[str]]:
    return {name: read_list(f"{name}.txt") for name in ("train", "val", "candidate")}


def test_layout():
    for name in (
        "train.txt",
        "val.txt",
        "candidate.txt",
        "classes.txt",
        "manifest.json",
        "README.md",
        "LICENSE-deepforest.txt",
    ):
        assert (SAMPLE / name).is_file(), name
    assert read_list("classes.txt") == ["tree"]
    assert "MIT License" in (SAMPLE / "LICENSE-deepforest.txt").read_text()


def test_split_sizes_and_disjoint(splits):
    train, val, cand = set(splits["train"]), set(splits["val"]), set(splits["candidate"])
    assert len(train) == len(splits["train"]) and len(val) == len(splits["val"])
    assert train and len(val) >= 10 and cand
    assert not train & val
    assert val <= cand
    assert not train & cand
    for name, stems in splits.items():
        assert stems == sorted(stems), f"{name}.txt not sorted"


def test_every_stem_has_image(splits):
    for stems in splits.values():
        for stem in stems:
            assert (SAMPLE / "images" / f"{stem}.jpg").is_file(), stem


def test_annotations(splits):
    n_boxes = 0
    for stem in splits["train"] + splits["val"]:
        xml_path = SAMPLE / "annotations" / f"{stem}.xml"
        assert xml_path.is_file(), stem
        root = ET.parse(xml_path).getroot()
        assert root.findtext("filename") == f"{stem}.jpg"
        width = int(root.findtext("size/width"))
        height = int(root.findtext("size/height"))
        assert int(root.findtext("size/depth")) == 3
        assert jpeg_size(SAMPLE / "images" / f"{stem}.jpg") == (width, height), stem
        objects = root.findall("object")
        assert objects, f"{stem}: no boxes"
        for obj in objects:
            assert obj.findtext("name") == "tree"
            assert obj.findtext("difficult") == "0"
            bb = obj.find("bndbox")
            xmin, ymin, xmax, ymax = (int(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            assert 0 <= xmin < xmax < width, (stem, xmin, xmax)
            assert 0 <= ymin < ymax < height, (stem, ymin, ymax)
        n_boxes += len(objects)
    assert n_boxes > 0


def test_manifest_sha1(splits):
    manifest = json.loads((SAMPLE / "manifest.json").read_text())
    images = manifest["images"]
    on_disk = {f"images/{p.name}" for p in (SAMPLE / "images").iterdir()}
    assert set(images) == on_disk
    entries = dict(images)
    entries.update(manifest.get("annotations", {}))
    for rel, sha1 in entries.items():
        assert hashlib.sha1((SAMPLE / rel).read_bytes()).hexdigest() == sha1, rel
    counts = manifest["counts"]["tiles"]
    assert counts["train"] == len(splits["train"])
    assert counts["val"] == len(splits["val"])
    assert counts["candidate"] == len(splits["candidate"])
