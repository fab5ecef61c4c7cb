"""predictions.json built by streaming infer-result.json: the same bytes as the in-memory
document (json.dumps(build_predictions(kept boxes), indent=1)), whatever the file's key order."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from ymir_exc.harness import collect
from ymir_exc.harness.predictions import build_predictions, write_predictions


@pytest.fixture
def images(tmp_path):
    paths = []
    for i, size in enumerate([(40, 30), (20, 50), (64, 64), (8, 8)]):
        p = tmp_path / f"im{i}.png"
        Image.new("RGB", size).save(p)
        paths.append(str(p))
    return paths


def _box(name, score, x=1, y=2, w=3, h=4):
    return {"class_name": name, "score": score, "box": {"x": x, "y": y, "w": w, "h": h}}


DETECTION = {
    "b.png": {"boxes": [_box("dog", 0.5), _box("cat", 0.25, w=0), _box("horse", 0.9)]},  # two dropped
    "a.png": {"boxes": [_box("cat", 0.125), _box("cat", 1)]},
    "z.png": {"boxes": [_box("dog", 0.75)]},  # no source: ignored
    "c.png": {"boxes": []},
}


@pytest.mark.parametrize("order", [["a.png", "b.png", "c.png", "z.png"], ["z.png", "c.png", "b.png", "a.png"]])
def test_streamed_predictions_are_the_in_memory_document_s_bytes(ws, tmp_path, images, order):
    ws.write_env(run_training=False, run_infer=True)
    infer = ws.out_dir / "infer-result.json"
    infer.write_text(json.dumps({"detection": {k: DETECTION[k] for k in order}}))
    from ymir_exc.env import parse_env_file

    env = parse_env_file(str(ws.env_file))
    kept = collect.check_infer(
        env, ["cat", "dog"], candidates=["/x/a.png", "/x/b.png", "/x/c.png", "/x/z.png"], keep_results=True
    ).results
    sources = {"a.png": [images[0], images[3]], "b.png": [images[1]], "c.png": [images[2]], "missing.png": []}
    expected = json.dumps(build_predictions(kept, sources, ["cat", "dog"]), indent=1)
    out = tmp_path / "predictions.json"
    counts = write_predictions(out, str(infer), sources, ["cat", "dog"])
    assert out.read_text() == expected
    doc = json.loads(expected)
    assert counts == {"images": 4, "annotations": 5} == {k: len(doc[k]) for k in ("images", "annotations")}
    # from the kept mapping too
    write_predictions(out, kept, sources, ["cat", "dog"])
    assert out.read_text() == expected


def test_no_images_and_no_classes_match_json_dumps(tmp_path):
    infer = tmp_path / "infer-result.json"
    infer.write_text('{"detection": {}}')
    out = tmp_path / "p.json"
    assert write_predictions(out, str(infer), {}, []) == {"images": 0, "annotations": 0}
    assert out.read_text() == json.dumps(build_predictions({}, {}, []), indent=1)


def test_segmentation_results_are_keyed_back_too(tmp_path, images):
    infer = tmp_path / "infer-result.json"
    infer.write_text(
        json.dumps(
            {
                "images": [{"id": 7, "file_name": "a.png"}],
                "annotations": [
                    {
                        "image_id": 7,
                        "category_id": 0,
                        "segmentation": [[1, 1, 5, 1, 5, 5]],
                        "score": 0.5,
                        "bbox": [1, 1, 4, 4],
                    }
                ],
                "categories": [{"id": 0, "name": "cat"}],
            }
        )
    )
    out = tmp_path / "p.json"
    counts = write_predictions(out, str(infer), {"a.png": [images[0]]}, ["cat"])
    doc = json.loads(out.read_text())
    assert counts == {"images": 1, "annotations": 1}
    assert doc["annotations"] == [
        {"image_id": 1, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]], "bbox": [1, 1, 4, 4], "score": 0.5}
    ]
