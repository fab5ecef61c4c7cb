"""The annotation pixel frame: EXIF orientation applied, on the way in (harness) and out (SDK)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ymir_exc import settings
from ymir_exc.dataset_convert import convert_ymir_to_yolov5
from ymir_exc.dataset_reader import check_image
from ymir_exc.harness.datasets import load_dataset
from ymir_exc.harness.files import image_size
from ymir_exc.harness.workspace import prepare

PIL = pytest.importorskip("PIL.Image")

#: stored 80 x 40; EXIF orientation 6 (rotate 90 degrees clockwise to display): shown 40 x 80
STORED, SHOWN = (80, 40), (40, 80)
#: ``cid xc yc w h`` in the displayed frame: x 10..30, y 10..30 of a 40 x 80 image
LABELS = {"rot_a": "0 0.5 0.25 0.5 0.25", "rot_b": "0 0.25 0.75 0.5 0.25"}


def _rotated_jpeg(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = PIL.Exif()
    exif[0x0112] = 6
    PIL.new("RGB", STORED, (shade, 90, 30)).save(path, quality=90, exif=exif.tobytes())


def _yolo_dataset(root: Path) -> Path:
    for split, stem, shade in (("train", "rot_a", 10), ("val", "rot_b", 200)):
        _rotated_jpeg(root / "images" / split / f"{stem}.jpg", shade)
        label = root / "labels" / split / f"{stem}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text(LABELS[stem] + "\n", encoding="utf-8")
    data = root / "data.yaml"
    data.write_text(
        yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val", "names": ["tree"]})
    )
    return data


def test_every_image_size_reads_the_displayed_frame(tmp_path):
    img = tmp_path / "r.jpg"
    _rotated_jpeg(img, 50)
    with PIL.open(img) as im:
        assert im.size == STORED
    assert image_size(str(img)) == SHOWN
    assert check_image(str(img)) == SHOWN


@pytest.mark.parametrize("export_format", ["det-ark:raw", "det-voc:raw"])
def test_exif_rotated_yolo_labels_survive_prepare_and_convert_unchanged(tmp_path, monkeypatch, export_format):
    ds = load_dataset(str(_yolo_dataset(tmp_path / "yolo")))
    box = ds.train[0].boxes[0]
    assert (box.x, box.y, box.w, box.h) == (10, 10, 20, 20)  # pixels of the displayed 40 x 80 image

    task = prepare(tmp_path / "w", ds, ["training"], {"training": {"export_format": export_format}})
    monkeypatch.setattr(settings, "DEFAULT_ENV_FILE_PATH", str(task.env_file))
    monkeypatch.setattr(settings, "DEFAULT_CONFIG_FILE_PATH", str(task.config_file))
    data_yaml = Path(convert_ymir_to_yolov5(out_dir=str(tmp_path / "out-yolo")))

    for split, stem in (("train", "rot_a"), ("val", "rot_b")):
        (label,) = (data_yaml.parent / "labels" / split).glob("*.txt")
        got = [float(v) for v in label.read_text(encoding="utf-8").split()]
        want = [float(v) for v in LABELS[stem].split()]
        assert got[0] == want[0]
        # the pixel boxes are whole pixels: the same normalised box, to well under half a pixel
        assert got[1:] == pytest.approx(want[1:], abs=0.5 / 80), (split, got, want)
