import json
import os

import pytest
import yaml

from ymir_exc.dataset_reader import parse_ark_annotation, parse_voc_annotation
from ymir_exc.harness.datasets import load_dataset, load_sample
from ymir_exc.harness.workspace import PrepareOptions, prepare, renumber_gpu_ids, write_sample

TEMPLATES = {
    "training": {"epochs": 2, "export_format": "det-ark:raw", "class_names": ["bad"]},
    "mining": {"conf": 0.1, "batch": 4},
    "infer": {"conf": 0.3, "iou": 0.5},
}


def _index_lines(path):
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_prepare_training_writes_assets_by_sha1_annotations_and_reserved_keys(tmp_path):
    ds = load_sample("trees")
    p = prepare(
        tmp_path / "w",
        ds,
        ["training"],
        TEMPLATES,
        PrepareOptions(gpu_id="3,5"),
        user_config={"epochs": 5, "gpu_count": 9},
        task_id="t1",
    )
    cfg = yaml.safe_load(p.config_file.read_text())
    assert cfg["epochs"] == 5 and cfg["class_names"] == ["tree"] and cfg["gpu_id"] == "0,1" and cfg["gpu_count"] == 2
    assert cfg["task_id"] == "t1" and "pretrained_model_params" not in cfg
    assert any("class_names" in w for w in p.warnings) and any("gpu_count" in w for w in p.warnings)
    env = yaml.safe_load(p.env_file.read_text())
    assert env["run_training"] and env["input"]["candidate_index_file"] == ""
    lines = _index_lines(p.in_dir / "train-index.tsv")
    assert len(lines) == len(ds.train)
    import hashlib

    for image, anno in lines:
        h = os.path.splitext(os.path.basename(image))[0]
        assert image == f"{p.in_dir}/assets/{h[-2:]}/{h}.jpg"
        assert hashlib.sha1(open(image, "rb").read()).hexdigest() == h
        parse_ark_annotation(anno, ["tree"])
    assert p.stats.methods.get("link", 0) + p.stats.methods.get("copy", 0) == p.stats.assets
    boxes = sum(len(parse_ark_annotation(a, ["tree"])) for _, a in lines)
    assert boxes == sum(len(i.boxes) for i in ds.train)


def test_prepare_voc_and_coco_export_formats(tmp_path):
    ds = load_sample("trees")
    p = prepare(tmp_path / "v", ds, ["training"], {"training": {"export_format": "voc:raw"}}, task_id="t")
    image, anno = _index_lines(p.in_dir / "val-index.tsv")[0]
    assert anno.endswith(".xml") and parse_voc_annotation(anno, ["tree"])
    p = prepare(tmp_path / "c", ds, ["training"], {"training": {"export_format": "seg-coco:raw"}}, task_id="t")
    lines = _index_lines(p.in_dir / "train-index.tsv")
    assert {a for _, a in lines} == {f"{p.in_dir}/annotations/coco-annotations.json"}
    coco = json.loads(open(lines[0][1]).read())
    assert len(coco["annotations"]) == sum(len(i.boxes) for i in ds.train) + sum(len(i.boxes) for i in ds.val)


def test_unknown_export_format_is_refused(tmp_path):
    from ymir_exc.errors import ConfigFileError

    with pytest.raises(ConfigFileError, match="export_format"):
        prepare(tmp_path / "w", load_sample("trees"), ["training"], {"training": {"export_format": "yolo"}})


def test_prepare_mining_and_infer_with_a_model_in_container_paths(tmp_path):
    model = {"class_names": ["tree", "bush"], "stage_name": "s1", "files": ["s1/w.pt"]}
    p = prepare(
        tmp_path / "w",
        load_sample("trees"),
        ["infer", "mining"],
        TEMPLATES,
        PrepareOptions(container=True),
        model=model,
    )
    cfg = yaml.safe_load(p.config_file.read_text())
    assert cfg["class_names"] == ["tree", "bush"] and cfg["model_params_path"] == ["/in/models/s1/w.pt"]
    assert cfg["conf"] == 0.1 and cfg["batch"] == 4 and cfg["iou"] == 0.5  # mining wins, infer adds
    env = yaml.safe_load(p.env_file.read_text())
    assert env["run_mining"] and env["run_infer"] and env["input"]["candidate_index_file"] == "/in/candidate-index.tsv"
    assert all(row[0].startswith("/in/assets/") for row in _index_lines(p.in_dir / "candidate-index.tsv"))


def test_mining_without_model_and_non_empty_out_are_refused(tmp_path):
    with pytest.raises(ValueError, match="need a model"):
        prepare(tmp_path / "w", load_sample("trees"), ["mining"], TEMPLATES)
    (tmp_path / "x" / "out").mkdir(parents=True)
    (tmp_path / "x" / "out" / "old.txt").write_text("x")
    with pytest.raises(FileExistsError):
        prepare(tmp_path / "x", load_sample("trees"), ["training"], TEMPLATES)


def test_legacy_protocol_env_has_no_protocol_version(tmp_path):
    p = prepare(tmp_path / "w", load_sample("trees"), ["training"], TEMPLATES, PrepareOptions(protocol_version="0.0.1"))
    assert "protocol_version" not in yaml.safe_load(p.env_file.read_text())


def test_gpu_renumbering():
    assert renumber_gpu_ids("") == ("", 0)
    assert renumber_gpu_ids("3, 5,7") == ("0,1,2", 3)


def test_sample_written_in_voc_dog_layout_reads_back_identically(tmp_path):
    root = write_sample("trees", tmp_path / "s")
    for f in ("train-index.tsv", "val-index.tsv", "candidate-index.tsv", "env.yaml", "config.yaml"):
        assert (root / "in" / f).is_file()
    assert (root / "out").is_dir()
    assert all(row[0].startswith("/in/assets/") for row in _index_lines(root / "in" / "train-index.tsv"))
    a, b = load_sample("trees"), load_dataset(str(root))
    for split in ("train", "val"):
        assert sorted(tuple(bb.xyxy for bb in x.boxes) for x in a.split(split)) == sorted(
            tuple(bb.xyxy for bb in x.boxes) for x in b.split(split)
        )
    assert len(b.candidate) == len(a.candidate)


def test_many_images_same_result_on_the_threaded_path(tmp_path):
    """Enough images for write_in_dir's thread pool: every image linked once, index lines in
    dataset order, and of two items with the same image bytes the first one's annotation wins
    (the plan is made in order; only the file writes run in parallel)."""
    from PIL import Image

    from ymir_exc.dataset_reader import BBox
    from ymir_exc.harness.datasets import Dataset, Item
    from ymir_exc.harness.workspace import write_in_dir

    src = tmp_path / "src"
    src.mkdir()
    items = []
    for i in range(150):
        p = src / f"im{i:03d}.png"
        Image.new("RGB", (20, 10), (i, 255 - i, 7)).save(p)
        items.append(Item(str(p), [BBox(0, "tree", i % 10, 1, 3, 4)]))
    copy = src / "copy-of-im005.png"
    copy.write_bytes((src / "im005.png").read_bytes())
    items.append(Item(str(copy), [BBox(0, "tree", 9, 2, 5, 5)]))  # same bytes, other box: ignored
    ds = Dataset("many", ["tree"], items[:120] + [items[-1]], items[120:150], [])
    stats = write_in_dir(ds, tmp_path / "in", export_format="det-ark:raw", splits=("train", "val"))

    train = _index_lines(tmp_path / "in" / "train-index.tsv")
    val = _index_lines(tmp_path / "in" / "val-index.tsv")
    assert len(train) == 120 and len(val) == 30 and stats.duplicates == 1 and stats.assets == 150
    import hashlib

    for (image, anno), item in zip(train + val, items[:150], strict=True):
        assert os.path.basename(image).split(".")[0] == hashlib.sha1(open(item.image_path, "rb").read()).hexdigest()
        assert os.path.samefile(image, item.image_path)
        (b,) = parse_ark_annotation(anno.strip(), ["tree"])
        assert (b.x, b.y, b.w, b.h) == (item.boxes[0].x, 1, 3, 4)


def test_changed_links_ignores_a_link_made_by_someone_else_but_not_new_bytes(tmp_path):
    """Another run linking the same image changes its ctime, not its bytes: not a change. Bytes
    rewritten with the mtime restored are (the asset's name is the sha1 of the original)."""
    import hashlib

    from ymir_exc.harness.workspace import changed_links, snapshot_links

    src = tmp_path / "img.jpg"
    src.write_bytes(b"original bytes")
    sha1 = hashlib.sha1(b"original bytes").hexdigest()
    asset = tmp_path / f"{sha1}.jpg"
    os.link(src, asset)
    snap = snapshot_links([(str(src), str(asset))])
    os.link(src, tmp_path / "someone-elses-link.jpg")  # ctime changes, bytes do not
    os.unlink(tmp_path / "someone-elses-link.jpg")
    assert changed_links(snap) == []
    st = os.stat(src)
    with open(asset, "r+b") as f:  # same size, other bytes, mtime put back
        f.write(b"X")
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert changed_links(snap) == [str(src)]
