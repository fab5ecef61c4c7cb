"""Property tests of the readers: any input either round-trips or raises one of
``ymir_exc.errors`` (never another exception)."""

import json
import shutil
import tempfile
from pathlib import Path

from hostile_util import SAMPLE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ymir_exc.dataset_reader import BBox, load_coco_annotations, parse_ark_annotation, parse_voc_annotation
from ymir_exc.errors import YmirExcError
from ymir_exc.harness.datasets import load_dataset, load_in_dir, read_text_lines
from ymir_exc.harness.workspace import ark_text, voc_xml, write_sample

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMES = ["tree", "car", "dog"]

boxes_st = st.lists(
    st.builds(
        lambda c, x, y, w, h: BBox(c, NAMES[c], x, y, w, h),
        st.integers(0, 2),
        st.integers(0, 5000),
        st.integers(0, 5000),
        st.integers(1, 5000),
        st.integers(1, 5000),
    ),
    max_size=8,
)
junk_bytes = st.one_of(
    st.binary(max_size=300),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200).map(str.encode),
    st.lists(
        st.sampled_from(
            [
                b"0",
                b",",
                b" ",
                b"1e300",
                b"-1",
                b"nan",
                b"\t",
                b"\n",
                b"3",
                b"<",
                b">",
                b"object",
                b"bndbox",
                b"xmin",
                b"\xef\xbb\xbf",
                b"\x00",
                b"{",
                b"}",
                b"[",
                b"]",
                b'"',
                b":",
                b"1.5",
            ]
        ),
        max_size=60,
    ).map(b"".join),
)


def _key(boxes):
    return [(b.class_id, b.x, b.y, b.w, b.h) for b in boxes]


def _expect_named(fn, *args):
    """fn(*args), or None when it raised one of ymir_exc.errors; anything else fails the test."""
    try:
        return fn(*args)
    except YmirExcError:
        return None


@SETTINGS
@given(boxes_st)
def test_ark_round_trips(boxes):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "a.txt"
        p.write_text(ark_text(boxes))
        assert _key(parse_ark_annotation(str(p), NAMES)) == _key(boxes)


@SETTINGS
@given(junk_bytes)
def test_ark_junk_parses_or_raises_a_named_error(data):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "a.txt"
        p.write_bytes(data)
        _expect_named(parse_ark_annotation, str(p), NAMES)


@SETTINGS
@given(boxes_st)
def test_voc_round_trips(boxes):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "a.xml"
        p.write_text(voc_xml("a.jpg", (6000, 6000), boxes))
        assert _key(parse_voc_annotation(str(p), NAMES)) == _key(boxes)


@SETTINGS
@given(junk_bytes)
def test_voc_junk_parses_or_raises_a_named_error(data):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "a.xml"
        p.write_bytes(b"<annotation><object><name>tree</name><bndbox>" + data + b"</bndbox></object></annotation>")
        _expect_named(parse_voc_annotation, str(p), NAMES)
        p.write_bytes(data)
        _expect_named(parse_voc_annotation, str(p), NAMES)


@SETTINGS
@given(st.lists(boxes_st, min_size=1, max_size=4))
def test_coco_round_trips(per_image):
    images = [{"id": i + 1, "file_name": f"{i}.jpg", "width": 6000, "height": 6000} for i in range(len(per_image))]
    anns = [
        {
            "id": k,
            "image_id": i + 1,
            "category_id": b.class_id + 1,
            "bbox": [b.x, b.y, b.w, b.h],
            "area": b.w * b.h,
            "iscrowd": 0,
        }
        for i, bs in enumerate(per_image)
        for k, b in enumerate(bs)
    ]
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.json"
        p.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
        got = load_coco_annotations(str(p), NAMES)
        for i, bs in enumerate(per_image):
            assert sorted(_key(got.get(f"{i}.jpg", []))) == sorted(_key(bs))


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True), st.text(max_size=5)),
    lambda c: st.one_of(
        st.lists(c, max_size=3),
        st.dictionaries(
            st.sampled_from(
                ["id", "name", "images", "annotations", "categories", "image_id", "category_id", "bbox", "file_name"]
            ),
            c,
            max_size=4,
        ),
    ),
    max_leaves=12,
)


@SETTINGS
@given(json_values)
def test_coco_junk_loads_or_raises_a_named_error(data):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.json"
        p.write_text(json.dumps(data))
        _expect_named(load_coco_annotations, str(p), NAMES)
        _expect_named(load_dataset, str(p))


@SETTINGS
@given(junk_bytes)
def test_index_lines_read_or_raise_a_named_error(data):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "i.tsv"
        p.write_bytes(data)
        lines = _expect_named(read_text_lines, p)
        if lines is not None:  # what was read is what was written, line by line
            want = data.decode("utf-8").split("\n")
            if want[-1] == "":
                want.pop()
            assert [line for _, line in lines] == [w[:-1] if w.endswith("\r") else w for w in want]
            assert [n for n, _ in lines] == list(range(1, len(want) + 1))


_SAMPLE_DIR = Path(tempfile.mkdtemp(prefix="ymir-prop-")) / "s"
write_sample("trees", str(_SAMPLE_DIR))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk_bytes, st.integers(0, 3))
def test_in_dir_with_a_junk_index_or_annotation_loads_or_raises_a_named_error(data, where):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "s"
        shutil.copytree(_SAMPLE_DIR, root)
        idx = root / "in" / "train-index.tsv"
        lines = idx.read_text().splitlines()
        if where == 0:
            idx.write_bytes(data)
        elif where == 1:
            idx.write_bytes("\n".join(lines[:3]).encode() + b"\n" + data)
        else:
            anno = root / "in" / lines[0].split("\t")[1].replace("/in/", "", 1)
            anno.unlink()
            anno.write_bytes(data)
        _expect_named(load_in_dir, str(root))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk_bytes)
def test_yolo_junk_labels_load_or_raise_a_named_error(data):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "images").mkdir()
        (root / "labels").mkdir()
        shutil.copy(SAMPLE.train[0].image_path, root / "images" / "0.jpg")
        (root / "labels" / "0.txt").write_bytes(data)
        (root / "data.yaml").write_text(f"path: {root}\ntrain: images\nval: images\nnames: [tree, car]\n")
        ds = _expect_named(load_dataset, str(root / "data.yaml"))
        if ds is not None:
            assert all(b.w > 0 and b.h > 0 and b.class_name in ("tree", "car") for b in ds.train[0].boxes)
