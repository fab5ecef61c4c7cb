"""The harness reads VOC folders, COCO json, YOLO data.yaml and YMIR in/ folders, maps classes, and
trains det-demo-tmi on each."""

import json
import shutil

import pytest
from conftest import REPO

from ymir_exc.cli import main
from ymir_exc.errors import AnnotationError
from ymir_exc.harness.datasets import load_dataset, load_sample
from ymir_exc.harness.workspace import image_size

SAMPLE = load_sample("trees")
TRAIN, VAL = SAMPLE.train[:8], SAMPLE.val[:3]


def _all_boxes(ds):
    return sorted((b.class_name, b.x, b.y, b.w, b.h) for it in ds.train + ds.val for b in it.boxes)


def make_voc(root, names=("tree",)):
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    from ymir_exc.harness.workspace import voc_xml

    for split, items in (("train", TRAIN), ("val", VAL)):
        stems = []
        for i, it in enumerate(items):
            stem = f"{split}{i}"
            shutil.copy(it.image_path, root / "JPEGImages" / f"{stem}.jpg")
            boxes = [b.__class__(0, names[k % len(names)], b.x, b.y, b.w, b.h) for k, b in enumerate(it.boxes)]
            (root / "Annotations" / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", image_size(it.image_path), boxes))
            stems.append(stem)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    return root


def make_coco(root):
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i, it in enumerate(TRAIN + VAL):
        name = f"img{i:02d}.jpg"
        shutil.copy(it.image_path, root / "images" / name)
        w, h = image_size(it.image_path)
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        for b in it.boxes:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": 5,
                    "bbox": [b.x, b.y, b.w, b.h],
                    "area": b.w * b.h,
                    "iscrowd": 0,
                }
            )
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 5, "name": "tree"}]}))
    return path


def make_yolo(root):
    for split, items in (("train", TRAIN), ("val", VAL)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i, it in enumerate(items):
            shutil.copy(it.image_path, root / "images" / split / f"{i}.jpg")
            w, h = image_size(it.image_path)
            (root / "labels" / split / f"{i}.txt").write_text(
                "".join(
                    f"0 {(b.x + b.w / 2) / w:.6f} {(b.y + b.h / 2) / h:.6f} {b.w / w:.6f} {b.h / h:.6f}\n"
                    for b in it.boxes
                )
            )
    path = root / "data.yaml"
    path.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: {{0: tree}}\n")
    return path


def test_voc_folder_reads_the_same_boxes(tmp_path):
    ds = load_dataset(str(make_voc(tmp_path / "voc")))
    assert ds.class_names == ["tree"] and len(ds.train) == 8 and len(ds.val) == 3
    ref = sorted((b.class_name, b.x, b.y, b.w, b.h) for it in TRAIN + VAL for b in it.boxes)
    assert _all_boxes(ds) == ref


def test_coco_json_reads_the_same_boxes(tmp_path):
    ds = load_dataset(str(make_coco(tmp_path / "coco")))
    ref = sorted((b.class_name, b.x, b.y, b.w, b.h) for it in TRAIN + VAL for b in it.boxes)
    assert ds.class_names == ["tree"] and _all_boxes(ds) == ref and len(ds.train) + len(ds.val) == 11


def test_yolo_data_yaml_reads_boxes_within_a_pixel(tmp_path):
    ds = load_dataset(str(make_yolo(tmp_path / "yolo")))
    got, ref = _all_boxes(ds), sorted((b.class_name, b.x, b.y, b.w, b.h) for it in TRAIN + VAL for b in it.boxes)
    assert len(got) == len(ref)
    assert all(abs(a - b) <= 1 for g, r in zip(got, ref, strict=True) for a, b in zip(g[1:], r[1:], strict=True))


def test_unknown_classes_stop_with_the_list_or_are_ignored_or_aliased(tmp_path):
    root = make_voc(tmp_path / "voc", names=("tree", "shrub"))
    with pytest.raises(AnnotationError, match=r"shrub \(\d+ boxes\)"):
        load_dataset(str(root), class_names=["tree"])
    only = load_dataset(str(root), class_names=["tree"], unknown="ignore")
    assert {b.class_name for it in only.train for b in it.boxes} == {"tree"}
    merged = load_dataset(str(root), aliases={"shrub": "tree"})
    assert merged.class_names == ["tree"]
    assert sum(len(i.boxes) for i in merged.train) == sum(len(i.boxes) for i in TRAIN)


@pytest.mark.parametrize("maker", [make_voc, make_coco, make_yolo])
def test_demo_trains_on_each_dataset_format(tmp_path, capsys, maker):
    spec = maker(tmp_path / "data")
    rc = main(
        [
            "run",
            str(REPO / "det-demo-tmi"),
            "--dataset",
            str(spec),
            "--work-dir",
            str(tmp_path / "w"),
            "--model-location",
            str(tmp_path / "m"),
            "--quiet",
            "--config",
            str(_epochs(tmp_path)),
        ]
    )
    assert rc == 0, capsys.readouterr()
    assert "pack success, model hash:" in capsys.readouterr().out


def _epochs(tmp_path):
    p = tmp_path / "cfg.yaml"
    p.write_text("epochs: 2\n")
    return p
