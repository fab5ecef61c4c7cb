"""Hostile and careless datasets: images from outside the dataset, files that are not images,
broken structure, duplicate image bytes, and the weak messages (BOM, NUL, non-UTF-8, absurd
boxes, orphan xml, missing YOLO labels). Each: the named error, exit 2 through the CLI (a dry
run: nothing is prepared), nothing outside the work dir changed."""

import json
import os
import re
import shutil

import pytest
from hostile_util import REPO, SAMPLE, Host

from ymir_exc.cli import main
from ymir_exc.errors import AnnotationError, ConfigFileError, ImageError, IndexFileError
from ymir_exc.harness.datasets import load_dataset
from ymir_exc.harness.workspace import image_size, write_sample

DEMO = str(REPO / "det-demo-tmi")


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path / "host")


def _cli(tmp_path, spec, *extra):
    """``run --dry-run`` on ``spec``: the dataset is read, nothing runs."""
    return main(
        ["run", DEMO, "--dataset", str(spec), "--work-dir", str(tmp_path / "w"), "--dry-run", "--quiet", *extra]
    )


def _assert_refused(tmp_path, capsys, host, spec, exc, pattern, *extra):
    with pytest.raises(exc, match=pattern):
        load_dataset(str(spec), **({"image_root": extra[1]} if extra else {}))
    assert _cli(tmp_path, spec, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("ymir-exc: error: ") and "Traceback" not in err
    assert not (tmp_path / "w").exists()
    host.assert_unchanged()
    return err


def _in_dir(tmp_path):
    root = write_sample("trees", str(tmp_path / "ymir"))
    return root, root / "in"


# ---------------------------------------------------------------- only images from inside the root


def test_index_naming_a_host_file_is_refused_and_nothing_linked(tmp_path, capsys, host):
    root, in_dir = _in_dir(tmp_path)
    idx = in_dir / "train-index.tsv"
    first, rest = idx.read_text().split("\n", 1)
    idx.write_text(f"{host.secret}\t{first.split(chr(9))[1]}\n{rest}")
    nlink = host.secret.stat().st_nlink
    _assert_refused(tmp_path, capsys, host, root, ImageError, r"train-index.tsv:1: .*outside the dataset's folder")
    assert host.secret.stat().st_nlink == nlink


def test_index_naming_a_host_image_is_refused(tmp_path, capsys, host):
    root, in_dir = _in_dir(tmp_path)
    idx = in_dir / "candidate-index.tsv"
    idx.write_text(f"{host.photo}\n" + idx.read_text())
    _assert_refused(tmp_path, capsys, host, root, ImageError, r"candidate-index.tsv:1: .*outside")


def test_asset_link_leaving_the_folder_is_refused(tmp_path, capsys, host):
    root, in_dir = _in_dir(tmp_path)
    line = (in_dir / "candidate-index.tsv").read_text().splitlines()[0]
    asset = in_dir / line.replace("/in/", "", 1)
    asset.unlink()
    asset.symlink_to(host.photo)
    _assert_refused(tmp_path, capsys, host, root, ImageError, r"outside the dataset's folder")


def test_a_file_that_is_not_an_image_is_refused(tmp_path, capsys, host):
    root, in_dir = _in_dir(tmp_path)
    line = (in_dir / "candidate-index.tsv").read_text().splitlines()[0]
    asset = in_dir / line.replace("/in/", "", 1)
    asset.unlink()
    asset.write_text("#!/bin/sh\necho not an image\n")
    _assert_refused(tmp_path, capsys, host, root, ImageError, r"not an image Pillow can read")


def _coco(tmp_path, file_name):
    d = tmp_path / "data" / "coco"  # images may come from data/coco and data/, not from tmp_path/host
    (d / "images").mkdir(parents=True)
    shutil.copy(SAMPLE.train[1].image_path, d / "images" / "a.jpg")  # host.photo is train[0]
    w, h = image_size(SAMPLE.train[1].image_path)
    data = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": w, "height": h},
            {"id": 2, "file_name": file_name, "width": w, "height": h},
        ],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "tree"}],
    }
    (d / "instances.json").write_text(json.dumps(data))
    return d / "instances.json"


def test_coco_absolute_file_name_outside_is_refused_unless_image_root_says_so(tmp_path, capsys, host):
    spec = _coco(tmp_path, str(host.photo))
    _assert_refused(tmp_path, capsys, host, spec, ImageError, r"outside the dataset's folder")
    # --image-root is the user's explicit choice: images under it are taken (and only those)
    shutil.copy(spec.parent / "images" / "a.jpg", host.root.parent / "a.jpg")
    ds = load_dataset(str(spec), image_root=str(host.root.parent))
    assert len(ds.train) + len(ds.val) == 2
    host.assert_unchanged()


def test_yolo_list_naming_images_outside_path_is_refused(tmp_path, capsys, host):
    d = tmp_path / "yolo"
    (d / "images").mkdir(parents=True)
    shutil.copy(SAMPLE.train[0].image_path, d / "images" / "a.jpg")
    (d / "train.txt").write_text(f"images/a.jpg\n{host.photo}\n")
    (d / "data.yaml").write_text(f"path: {d}\ntrain: train.txt\nval: train.txt\nnames: [tree]\n")
    _assert_refused(tmp_path, capsys, host, d / "data.yaml", ImageError, r"outside the dataset's folder")


# ---------------------------------------------------------------- duplicate image bytes


def _voc_with_copy(tmp_path, same_labels: bool, label_copy: bool = True):
    voc = tmp_path / "voc"
    shutil.copytree(Host.__init__.__globals__["make_voc"](tmp_path / "src"), voc)
    shutil.copy(voc / "JPEGImages" / "train0.jpg", voc / "JPEGImages" / "copy0.jpg")
    xml = (voc / "Annotations" / "train0.xml").read_text()
    if label_copy:
        if not same_labels:
            xml = re.sub(r"<xmin>(\d+)</xmin>", lambda m: f"<xmin>{int(m.group(1)) + 1}</xmin>", xml, count=1)
        (voc / "Annotations" / "copy0.xml").write_text(xml)
    with open(voc / "ImageSets" / "Main" / "train.txt", "a") as f:
        f.write("copy0\n")
    return voc


def test_duplicates_with_different_labels_stop_listing_both_names(tmp_path, capsys, host):
    voc = _voc_with_copy(tmp_path, same_labels=False)
    err = _assert_refused(tmp_path, capsys, host, voc, AnnotationError, r"different labels")
    assert "train0.jpg" in err and "copy0.jpg" in err and "--duplicates first|merge" in err


def test_duplicates_with_identical_labels_are_merged_and_counted(tmp_path):
    ds = load_dataset(str(_voc_with_copy(tmp_path, same_labels=True)))
    assert len(ds.train) == 6 and "1 duplicate image(s) merged" in ds.summary()


def test_labeled_copy_wins_over_an_unlabeled_one(tmp_path):
    voc = _voc_with_copy(tmp_path, same_labels=True)
    (voc / "Annotations" / "copy0.xml").write_text(
        (voc / "Annotations" / "copy0.xml").read_text().split("<object>")[0] + "</annotation>\n"
    )
    ds = load_dataset(str(voc))
    kept = [i for i in ds.train if i.image_path.endswith(("train0.jpg", "copy0.jpg"))]
    assert len(kept) == 1 and kept[0].boxes


@pytest.mark.parametrize("policy", ["first", "merge"])
def test_duplicates_policy_first_or_merge(tmp_path, policy):
    voc = _voc_with_copy(tmp_path, same_labels=False)
    ds = load_dataset(str(voc), duplicates=policy)
    kept = [i for i in ds.train if i.image_path.endswith(("train0.jpg", "copy0.jpg"))]
    n0 = len(SAMPLE.train[0].boxes)
    assert len(kept) == 1 and len(kept[0].boxes) == (n0 if policy == "first" else n0 + 1)


# ---------------------------------------------------------------- no tracebacks for bad data


def test_corrupt_jpeg_in_voc(tmp_path, capsys, host):
    voc = tmp_path / "voc"
    shutil.copytree(host.voc, voc)
    (voc / "JPEGImages" / "train1.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    _assert_refused(tmp_path, capsys, host, voc, ImageError, r"train1.jpg.*not an image")


@pytest.mark.parametrize(
    "text,pattern",
    [
        ("train: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "mapping"),
        ("train: images\nval: images\nnames: 3\n", "key 'names'"),
    ],
)
def test_yolo_data_yaml_not_yaml_or_not_a_mapping(tmp_path, capsys, host, text, pattern):
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "data.yaml").write_text(text)
    _assert_refused(tmp_path, capsys, host, tmp_path / "y" / "data.yaml", ConfigFileError, pattern)


@pytest.mark.parametrize(
    "mutate,pattern",
    [
        (lambda d: [d], r"top level must be an object"),
        (lambda d: {**d, "categories": [{"name": "tree"}]}, r"key 'categories\[0\].id'"),
        (lambda d: {**d, "annotations": [{**d["annotations"][0], "image_id": 99}]}, r"image_id 99 names no image"),
    ],
)
def test_coco_structure_errors_are_named(tmp_path, capsys, host, mutate, pattern):
    spec = _coco(tmp_path, "a.jpg")
    spec.write_text(json.dumps(mutate(json.loads(spec.read_text()))))
    _assert_refused(tmp_path, capsys, host, spec, AnnotationError, pattern)


# ---------------------------------------------------------------- weak messages


@pytest.mark.parametrize(
    "damage,pattern",
    [
        (lambda b: b"\xef\xbb\xbf" + b, r"train-index.tsv:1: byte order mark"),
        (lambda b: b.replace(b"\n", b"\x00\n", 2), r"train-index.tsv:1: NUL byte"),
        (lambda b: b.replace(b"\n", b"\n\xff", 1), r"train-index.tsv:2: not UTF-8"),
    ],
)
def test_index_bom_nul_and_non_utf8_name_the_line(tmp_path, capsys, host, damage, pattern):
    root, in_dir = _in_dir(tmp_path)
    idx = in_dir / "train-index.tsv"
    idx.write_bytes(damage(idx.read_bytes()))
    _assert_refused(tmp_path, capsys, host, root, IndexFileError, pattern)


def test_ark_box_at_absurd_coordinates_is_refused(tmp_path, capsys, host):
    from ymir_exc.harness.workspace import write_in_dir

    root = tmp_path / "ark"
    write_in_dir(SAMPLE, root / "in", export_format="det-ark:raw", path_prefix="/in", mode="copy")
    (root / "in" / "config.yaml").write_text("class_names: [tree]\n")
    anno = (root / "in" / "train-index.tsv").read_text().splitlines()[0].split("\t")[1].replace("/in/", "", 1)
    (root / "in" / anno).unlink()
    (root / "in" / anno).write_text("0, 1e300, 1, 1e300, 20\n")
    _assert_refused(tmp_path, capsys, host, root, AnnotationError, r"far outside its \d+x\d+ image")


def test_voc_xml_without_images_are_counted(tmp_path, capsys, host):
    voc = tmp_path / "voc"
    shutil.copytree(host.voc, voc)
    for stem in ("train0", "train1"):
        (voc / "JPEGImages" / f"{stem}.jpg").unlink()
    ds = load_dataset(str(voc))
    assert "2 xml file(s) in Annotations/ without an image in JPEGImages/ skipped" in ds.summary()
    assert _cli(tmp_path, voc) == 0
    assert "2 xml file(s)" in capsys.readouterr().out
    host.assert_unchanged()


def test_yolo_images_without_labels_are_said(tmp_path, host):
    d = tmp_path / "yolo"
    (d / "images").mkdir(parents=True)
    (d / "labels").mkdir()
    for i in range(3):
        shutil.copy(SAMPLE.train[i].image_path, d / "images" / f"{i}.jpg")
    (d / "labels" / "0.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (d / "data.yaml").write_text(f"path: {d}\ntrain: images\nval: images\nnames: [tree]\n")
    ds = load_dataset(str(d / "data.yaml"))
    assert "without a label file, taken as background" in ds.summary()
    host.assert_unchanged()


def test_yolo_label_not_utf8_names_the_line(tmp_path, capsys, host):
    d = tmp_path / "yolo"
    (d / "images").mkdir(parents=True)
    (d / "labels").mkdir()
    shutil.copy(SAMPLE.train[0].image_path, d / "images" / "0.jpg")
    (d / "labels" / "0.txt").write_bytes(b"0 0.5 0.5 0.2 0.2\n0 \xff 0.5 0.2 0.2\n")
    (d / "data.yaml").write_text(f"path: {d}\ntrain: images\nval: images\nnames: [tree]\n")
    _assert_refused(tmp_path, capsys, host, d / "data.yaml", AnnotationError, r"0.txt:2: not UTF-8")


def test_ymir_annotation_that_is_a_link_to_a_host_file_says_so(tmp_path, capsys, host):
    root, in_dir = _in_dir(tmp_path)
    annotation = (in_dir / "train-index.tsv").read_text().split("\n", 1)[0].split("\t")[1]
    ann = in_dir / os.path.relpath(annotation, "/in") if annotation.startswith("/in/") else in_dir / annotation
    ann.unlink()
    ann.symlink_to(host.secret)
    err = _assert_refused(
        tmp_path,
        capsys,
        host,
        root,
        IndexFileError,
        rf"train-index.tsv:1: annotation .* is a link to {host.secret}, outside the dataset's folder",
    )
    assert "lies outside" not in err


def test_coco_json_nested_too_deeply_names_the_file(tmp_path, capsys, host):
    spec = _coco(tmp_path, "a.jpg")
    spec.write_text('{"images": ' + "[" * 30000 + "]" * 30000 + "}")
    err = _assert_refused(tmp_path, capsys, host, spec, AnnotationError, "nested too deeply")
    assert str(spec) in err and "recursion" not in err
