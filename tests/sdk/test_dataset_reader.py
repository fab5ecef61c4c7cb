import pytest

from ymir_exc import dataset_reader as dr
from ymir_exc.env import DatasetType
from ymir_exc.errors import AnnotationError, ConfigFileError, ImageError, IndexFileError


def _index(ws, name, text):
    p = ws.in_dir / name
    p.write_text(text)
    return p


def test_item_paths_yields_image_and_annotation(ws):
    _index(ws, "train-index.tsv", "/in/a b.jpg\t/in/a b.txt\n/in/c.jpg\t/in/c.txt\n")
    assert list(dr.item_paths(DatasetType.TRAINING)) == [("/in/a b.jpg", "/in/a b.txt"), ("/in/c.jpg", "/in/c.txt")]
    assert dr.items_count(DatasetType.TRAINING) == 2


def test_candidate_items_have_empty_annotation(ws):
    _index(ws, "candidate-index.tsv", "/in/a.jpg\n/in/b.jpg\n")
    assert list(dr.item_paths(DatasetType.CANDIDATE)) == [("/in/a.jpg", ""), ("/in/b.jpg", "")]


def test_blank_index_line_is_an_error_with_its_line(ws):
    _index(ws, "train-index.tsv", "/in/a.jpg\t/in/a.txt\n\n/in/c.jpg\t/in/c.txt\n")
    with pytest.raises(IndexFileError) as e:
        list(dr.item_paths(DatasetType.TRAINING))
    assert e.value.line == 2 and e.value.path.endswith("train-index.tsv")


def test_one_column_training_line_is_an_error(ws):
    _index(ws, "val-index.tsv", "/in/a.jpg\t/in/a.txt\n/in/b.jpg\n")
    with pytest.raises(IndexFileError) as e:
        list(dr.item_paths(DatasetType.VALIDATION))
    assert e.value.line == 2


def test_missing_index_file_names_it(ws):
    with pytest.raises(IndexFileError) as e:
        list(dr.item_paths(DatasetType.TRAINING))
    assert e.value.path == f"{ws.in_dir}/train-index.tsv"


def test_index_file_not_set_for_the_task(ws):
    ws.write_env(input={"candidate_index_file": ""})
    with pytest.raises(IndexFileError, match="no index file"):
        list(dr.item_paths(DatasetType.CANDIDATE))


def test_unreadable_index_file(ws):
    d = _index(ws, "train-index.tsv", "")
    d.unlink()
    d.mkdir()
    with pytest.raises(IndexFileError, match="cannot read"):
        list(dr.item_paths(DatasetType.TRAINING))


def _ark(tmp_path, text):
    p = tmp_path / "a.txt"
    p.write_text(text)
    return str(p)


def test_ark_annotation_parses_inclusive_corners(tmp_path):
    boxes = dr.parse_ark_annotation(_ark(tmp_path, "1, 10, 20, 39, 59\n0,0,0,0,0, 0.5, 30\n"), ["cat", "dog"])
    assert (boxes[0].class_name, boxes[0].x, boxes[0].y, boxes[0].w, boxes[0].h) == ("dog", 10, 20, 30, 40)
    assert boxes[1].w == 1 and boxes[1].quality == 0.5 and boxes[1].angle == 30.0


def test_empty_ark_file_means_no_boxes(tmp_path):
    assert dr.parse_ark_annotation(_ark(tmp_path, ""), ["cat"]) == []


@pytest.mark.parametrize(
    "line,key,match",
    [
        ("0, 1, 2, 3", None, "4 field"),
        ("0, 1, x, 3, 4", "ymin", "not a number"),
        ("2, 1, 2, 3, 4", "class_idx", "outside"),
        ("-1, 1, 2, 3, 4", "class_idx", "outside"),
        ("0, -5, 2, 3, 4", "xmin", "negative"),
        ("0, 10, 2, 3, 4", "xmax", "inverted"),
        ("0, 1, 20, 3, 4", "ymax", "inverted"),
        ("0, 1, 2, nan, 4", "xmax", "finite"),
    ],
)
def test_bad_ark_lines_name_file_line_and_key(tmp_path, line, key, match):
    path = _ark(tmp_path, "0, 1, 1, 5, 5\n" + line + "\n")
    with pytest.raises(AnnotationError, match=match) as e:
        dr.parse_ark_annotation(path, ["cat", "dog"])
    assert e.value.path == path and e.value.line == 2 and e.value.key == key


VOC = """<annotation><size><width>100</width><height>80</height></size>
<object><name>dog</name><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>39.6</xmax><ymax>59</ymax></bndbox></object>
</annotation>"""


def test_voc_annotation(tmp_path):
    p = tmp_path / "a.xml"
    p.write_text(VOC)
    [b] = dr.parse_voc_annotation(str(p), ["cat", "dog"])
    assert (b.class_id, b.x, b.y, b.w, b.h) == (1, 10, 20, 31, 40)


def test_voc_unknown_class_and_bad_xml(tmp_path):
    p = tmp_path / "a.xml"
    p.write_text(VOC)
    with pytest.raises(AnnotationError, match="not in class_names") as e:
        dr.parse_voc_annotation(str(p), ["cat"])
    assert e.value.key == "object[1].name"
    p.write_text("<annotation><object>")
    with pytest.raises(AnnotationError, match="not valid XML"):
        dr.parse_voc_annotation(str(p), ["cat"])


def test_read_items_uses_export_format_from_config(ws):
    a = ws.in_dir / "a.txt"
    a.write_text("1, 0, 0, 9, 9\n")
    v = ws.in_dir / "a.xml"
    v.write_text(VOC)
    _index(ws, "train-index.tsv", f"/img.jpg\t{a}\n")
    ws.write_config(class_names=["cat", "dog"], export_format="det-ark:raw")
    [item] = list(dr.read_items(DatasetType.TRAINING))
    assert item.boxes[0].class_name == "dog" and item.boxes[0].w == 10
    _index(ws, "train-index.tsv", f"/img.jpg\t{v}\n")
    ws.write_config(class_names=["cat", "dog"], export_format="voc:raw")
    assert dr.bboxes_count(None, "train") == 1


@pytest.mark.parametrize("fmt", ["det-ark", "yolo:raw", "voc"])
def test_unknown_export_format_is_an_error(fmt):
    with pytest.raises(ConfigFileError) as e:
        dr.annotation_format(fmt)
    assert e.value.key == "export_format"


def test_coco_annotations(tmp_path):
    import json

    p = tmp_path / "coco.json"
    p.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "x/a.jpg"}],
                "categories": [{"id": 7, "name": "dog"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 2, 3, 4]}],
            }
        )
    )
    boxes = dr.load_coco_annotations(str(p), ["cat", "dog"])
    assert [(b.class_name, b.x, b.y, b.w, b.h) for b in boxes["x/a.jpg"]] == [("dog", 1, 2, 3, 4)]
    lookup = dr.coco_boxes_lookup(boxes, str(p))
    # the image's folder need not be the json's: a unique base name still finds its boxes
    assert [(b.class_name, b.x) for b in lookup("/in/assets/x/a.jpg")] == [("dog", 1)]
    assert [(b.class_name, b.x) for b in lookup("/elsewhere/a.jpg")] == [("dog", 1)]
    assert lookup("/in/assets/x/b.jpg") == []


def test_filter_broken_images_reports_and_drops(tmp_path, capsys):
    from PIL import Image

    good = tmp_path / "good.png"
    Image.new("RGB", (4, 4)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert dr.filter_broken_images([str(good), str(bad), str(tmp_path / "missing.jpg")]) == [str(good)]
    assert "bad.jpg" in capsys.readouterr().err
    with pytest.raises(ImageError):
        dr.check_image(str(bad))


@pytest.mark.parametrize("names", ["tree", [1, 2], ["a", ""]])
def test_class_names_of_the_wrong_type_are_a_config_error(ws, names):
    (ws.in_dir / "train-index.tsv").write_text("/a.jpg\t/a.txt\n")
    ws.write_config(class_names=names)
    with pytest.raises(ConfigFileError) as e:
        list(dr.read_items("train"))
    assert e.value.key == "class_names"
