"""ymir_exc.dataset_convert: YMIR index files -> Ultralytics YOLO layout and COCO json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ymir_exc.dataset_convert import convert_ymir_to_coco, convert_ymir_to_yolov5, image_size, yolo_label_lines
from ymir_exc.dataset_reader import BBox
from ymir_exc.errors import AnnotationError, ConfigFileError, ImageError, IndexFileError
from ymir_exc.util import get_merged_config

PIL = pytest.importorskip("PIL.Image")


def _image(path: Path, size=(64, 32), exif_orientation=None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = PIL.new("RGB", size, (10, 200, 30))
    if exif_orientation:
        exif = PIL.Exif()
        exif[0x0112] = exif_orientation
        im.save(path, exif=exif.tobytes())
    else:
        im.save(path)
    return str(path)


def _voc(path: Path, boxes) -> str:
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
        f"<ymax>{d}</ymax></bndbox></object>"
        for n, a, b, c, d in boxes
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation>{objs}</annotation>", encoding="utf-8")
    return str(path)


@pytest.fixture
def tiny(ws):
    """2 train images (one without boxes) and 1 val image, VOC annotations, classes cat/dog."""
    a = ws.in_dir / "assets"
    n = ws.in_dir / "annotations"
    train = [
        (_image(a / "aa" / "img1.jpg"), _voc(n / "aa" / "img1.xml", [("cat", 0, 0, 31, 15), ("dog", 10, 4, 19, 9)])),
        (_image(a / "bb" / "img2.png", (40, 40)), _voc(n / "bb" / "img2.xml", [])),
    ]
    val = [(_image(a / "cc" / "img3.jpg"), _voc(n / "cc" / "img3.xml", [("dog", 32, 16, 63, 31)]))]
    (ws.in_dir / "train-index.tsv").write_text("".join(f"{i}\t{x}\n" for i, x in train))
    (ws.in_dir / "val-index.tsv").write_text("".join(f"{i}\t{x}\n" for i, x in val))
    ws.write_config(class_names=["cat", "dog"], export_format="det-voc:raw")
    return ws


def _labels(path: str):
    return [[float(v) for v in line.split()] for line in Path(path).read_text().splitlines()]


def test_yolo_labels_are_class_then_normalised_centre_and_size(tiny):
    data_yaml = convert_ymir_to_yolov5(get_merged_config())
    data = yaml.safe_load(Path(data_yaml).read_text())
    root = Path(data["path"])
    assert root == tiny.out_dir / "yolo_dataset"
    assert data["nc"] == 2 and data["names"] == {0: "cat", 1: "dog"}
    train = Path(data["train"]).read_text().splitlines()
    assert [Path(p).name for p in train] == ["img1.jpg", "img2.png"]
    lab = _labels(str(root / "labels" / "train" / "img1.txt"))
    # cat: xmin 0..31 inclusive -> 32 px wide on a 64 px image; centre 16 / 64
    assert lab[0] == pytest.approx([0, 16 / 64, 8 / 32, 32 / 64, 16 / 32])
    assert lab[1] == pytest.approx([1, 15 / 64, 7 / 32, 10 / 64, 6 / 32])
    assert (root / "labels" / "train" / "img2.txt").read_text() == ""
    assert _labels(str(root / "labels" / "val" / "img3.txt"))[0] == pytest.approx([1, 0.75, 0.75, 0.5, 0.5])


def test_yolo_images_are_links_never_copies_and_nothing_is_written_under_in(tiny):
    before = sorted(str(p) for p in tiny.in_dir.rglob("*"))
    data = yaml.safe_load(Path(convert_ymir_to_yolov5()).read_text())
    for split in ("train", "val"):
        for p in Path(data[split]).read_text().splitlines():
            assert os.path.islink(p)
            assert os.path.realpath(p).startswith(str(tiny.in_dir))
            assert "/images/" in p  # Ultralytics derives the label path from it
    assert sorted(str(p) for p in tiny.in_dir.rglob("*")) == before


def test_yolo_out_dir_under_the_input_root_is_refused(tiny):
    with pytest.raises(ConfigFileError, match="input root"):
        convert_ymir_to_yolov5(get_merged_config(), out_dir=str(tiny.in_dir / "yolo"))


def test_yolo_custom_out_dir_and_ark_annotations(tiny, tmp_path):
    ark = tiny.in_dir / "annotations" / "aa" / "img1.txt"
    ark.write_text("1, 0, 0, 63, 31\n")
    img = tiny.in_dir / "assets" / "aa" / "img1.jpg"
    (tiny.in_dir / "train-index.tsv").write_text(f"{img}\t{ark}\n")
    (tiny.in_dir / "val-index.tsv").write_text(f"{img}\t{ark}\n")
    tiny.write_config(class_names=["cat", "dog"], export_format="ark:raw")
    out = tmp_path / "elsewhere"
    data_yaml = convert_ymir_to_yolov5(out_dir=str(out))
    assert data_yaml == str(out / "data.yaml")
    assert _labels(str(out / "labels" / "train" / "img1.txt")) == [pytest.approx([1, 0.5, 0.5, 1.0, 1.0])]


def test_yolo_boxes_outside_the_image_are_clipped_or_dropped():
    boxes = [BBox(0, "cat", 50, 20, 30, 30), BBox(0, "cat", 70, 40, 5, 5), BBox(1, "dog", 0, 0, 10, 10)]
    lines, clipped, dropped = yolo_label_lines(boxes, 64, 32)
    assert (clipped, dropped) == (1, 1)
    assert [float(v) for v in lines[0].split()] == pytest.approx([0, 57 / 64, 26 / 32, 14 / 64, 12 / 32])
    assert len(lines) == 2


def test_yolo_missing_image_is_an_image_error_naming_it(tiny):
    img = tiny.in_dir / "assets" / "aa" / "img1.jpg"
    img.unlink()
    with pytest.raises(ImageError) as e:
        convert_ymir_to_yolov5()
    assert e.value.path == str(img) and e.value.return_code == 300003


def test_yolo_bad_annotation_names_file(tiny):
    bad = tiny.in_dir / "annotations" / "aa" / "img1.xml"
    bad.write_text("<annotation><object><name>horse</name></object></annotation>")
    with pytest.raises(AnnotationError) as e:
        convert_ymir_to_yolov5()
    assert e.value.path == str(bad)


def test_yolo_empty_val_set_is_an_index_error(tiny):
    (tiny.in_dir / "val-index.tsv").write_text("")
    with pytest.raises(IndexFileError, match="val set is empty"):
        convert_ymir_to_yolov5()


def test_yolo_rerun_replaces_links_and_labels(tiny):
    first = convert_ymir_to_yolov5()
    assert convert_ymir_to_yolov5() == first


def test_image_size_applies_exif_rotation(tmp_path):
    assert image_size(_image(tmp_path / "r.jpg", (64, 32), exif_orientation=6)) == (32, 64)
    assert image_size(_image(tmp_path / "n.jpg", (64, 32))) == (64, 32)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageError, match="not a readable image"):
        image_size(str(tmp_path / "bad.jpg"))


def test_coco_json_holds_train_and_val_with_pixel_boxes(tiny):
    info = convert_ymir_to_coco()
    assert set(info) == {"train", "val"}
    assert info["train"]["img_prefix"] == str(tiny.in_dir / "assets")
    train = json.loads(Path(info["train"]["ann_file"]).read_text())
    assert [c["id"] for c in train["categories"]] == [1, 2]
    assert [os.path.basename(i["file_name"]) for i in train["images"]] == ["img1.jpg", "img2.png"]
    assert train["images"][0]["width"] == 64 and train["images"][0]["height"] == 32
    anns = train["annotations"]
    assert [a["id"] for a in anns] == [1, 2]  # never 0 (pycocotools)
    assert anns[0]["bbox"] == [0, 0, 32, 16] and anns[0]["category_id"] == 1 and anns[0]["area"] == 512
    assert anns[1]["bbox"] == [10, 4, 10, 6] and anns[1]["category_id"] == 2
    val = json.loads(Path(info["val"]["ann_file"]).read_text())
    assert val["annotations"][0]["bbox"] == [32, 16, 32, 16]
    assert Path(info["val"]["ann_file"]).parent == tiny.out_dir / "coco_dataset"


def test_coco_category_ids_from_zero(tiny):
    info = convert_ymir_to_coco(cat_id_from_zero=True)
    train = json.loads(Path(info["train"]["ann_file"]).read_text())
    assert [c["id"] for c in train["categories"]] == [0, 1]
    assert [a["category_id"] for a in train["annotations"]] == [0, 1]


def test_coco_reads_seg_coco_export(tiny):
    a = tiny.in_dir / "assets"
    coco = {
        "images": [{"id": 7, "file_name": "img1.jpg", "width": 64, "height": 32}],
        "categories": [{"id": 3, "name": "dog"}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [2, 3, 10, 5]}],
    }
    ann = tiny.in_dir / "annotations" / "coco-annotations.json"
    ann.write_text(json.dumps(coco))
    (tiny.in_dir / "train-index.tsv").write_text(f"{a / 'aa' / 'img1.jpg'}\t{ann}\n")
    (tiny.in_dir / "val-index.tsv").write_text(f"{a / 'aa' / 'img1.jpg'}\t{ann}\n")
    tiny.write_config(class_names=["cat", "dog"], export_format="seg-coco:raw")
    out = json.loads(Path(convert_ymir_to_coco()["train"]["ann_file"]).read_text())
    assert out["annotations"][0]["bbox"] == [2, 3, 10, 5] and out["annotations"][0]["category_id"] == 2


def test_dataset_convert_imports_neither_torch_nor_ultralytics():
    code = (
        "import sys, ymir_exc.dataset_convert; print([m for m in ('torch', 'ultralytics', 'cv2') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
