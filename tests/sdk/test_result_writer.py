import json

import numpy as np
import pytest

from ymir_exc import result_writer as rw
from ymir_exc.errors import ResultError
from ymir_exc.formats import TrainingResult


def test_model_stage_written_with_best_stage_and_top_level_metric(ws):
    ws.model_file("a.pt", "epoch_1")
    ws.model_file("b.pt", "epoch_2")
    rw.write_model_stage("epoch_1", ["a.pt"], mAP=0.3, timestamp=100)
    rw.write_model_stage("epoch_2", ["b.pt"], evaluation_result={"mAP": 0.5, "mAR": 0.6, "tp": 3}, timestamp=200)
    r = ws.result()
    assert r["best_stage_name"] == "epoch_2" and r["mAP"] == 0.5
    assert r["model_stages"]["epoch_2"] == {
        "stage_name": "epoch_2",
        "files": ["b.pt"],
        "timestamp": 200,
        "mAP": 0.5,
        "mAR": 0.6,
        "tp": 3,
    }
    TrainingResult.model_validate(r)


def test_best_stage_ties_go_to_the_latest_timestamp(ws):
    ws.model_file("w.pt")
    rw.write_model_stage("s1", ["w.pt"], mAP=0.4, timestamp=10)
    rw.write_model_stage("s2", ["w.pt"], mAP=0.4, timestamp=20)
    rw.write_model_stage("s3", ["w.pt"], mAP=0.2, timestamp=30)
    assert ws.result()["best_stage_name"] == "s2"


def test_zero_map_is_a_metric_not_missing(ws):
    ws.model_file("w.pt")
    rw.write_model_stage("s1", ["w.pt"], mAP=0.0, timestamp=10)
    assert ws.result()["mAP"] == 0.0 and ws.result()["model_stages"]["s1"]["mAP"] == 0.0


def test_at_most_11_stages_and_the_best_is_never_evicted(ws):
    ws.model_file("w.pt")
    rw.write_model_stage("epoch_0", ["w.pt"], mAP=0.9, timestamp=0)
    for i in range(1, 15):
        rw.write_model_stage(f"epoch_{i}", ["w.pt"], mAP=0.1 + i / 100, timestamp=i)
    stages = ws.result()["model_stages"]
    assert len(stages) == 11 and "epoch_0" in stages
    assert "epoch_1" not in stages and "epoch_14" in stages


def test_dash_becomes_underscore_and_bad_names_fail(ws):
    ws.model_file("w.pt")
    rw.write_model_stage("epoch-3", ["w.pt"], mAP=0.1)
    assert "epoch_3" in ws.result()["model_stages"]
    for bad in ["3epoch", "a b", "", "x.y"]:
        with pytest.raises(ResultError) as e:
            rw.write_model_stage(bad, ["w.pt"], mAP=0.1)
        assert e.value.key == "stage_name"


def test_missing_stage_file_is_an_error_and_nothing_is_written(ws):
    with pytest.raises(ResultError, match="found neither"):
        rw.write_model_stage("s1", ["nope.pt"], mAP=0.1)
    assert not (ws.out_dir / "models" / "result.yaml").exists()


def test_absolute_paths_are_stored_relative_and_outside_files_copied(ws, tmp_path):
    inside = ws.model_file("best.pt", "s1")
    outside = tmp_path / "dir with space" / "last.pt"
    outside.parent.mkdir()
    outside.write_bytes(b"x")
    rw.write_model_stage("s1", [str(inside), str(outside)], mAP=0.2)
    assert ws.result()["model_stages"]["s1"]["files"] == ["best.pt", "last.pt"]
    assert (ws.out_dir / "models" / "s1" / "last.pt").read_bytes() == b"x"


@pytest.mark.parametrize(
    "ev,match",
    [
        ({"stage_name": "x", "mAP": 0.1}, "may not set"),
        ({"files": [], "mAP": 0.1}, "may not set"),
        ({"mAP": 1.5}, r"\[0, 1\]"),
        ({"mAP": float("nan")}, r"\[0, 1\]"),
        ({"mAP": 0.5, "tp": -1}, ">= 0"),
        ({"mAR": 0.5}, "no primary metric"),
    ],
)
def test_bad_evaluation_results(ws, ev, match):
    ws.model_file("w.pt")
    with pytest.raises(ResultError, match=match):
        rw.write_model_stage("s1", ["w.pt"], evaluation_result=ev)


def test_numpy_numbers_are_converted(ws):
    ws.model_file("w.pt")
    rw.write_model_stage(
        "s1", ["w.pt"], evaluation_result={"mAP": np.float32(0.25), "tp": np.int64(4)}, timestamp=np.int64(5)
    )
    text = (ws.out_dir / "models" / "result.yaml").read_text()
    assert "numpy" not in text and ws.result()["model_stages"]["s1"]["tp"] == 4


def test_primary_metric_prefers_maskap_and_no_stale_top_level_key(ws):
    ws.model_file("w.pt")
    rw.write_model_stage("s1", ["w.pt"], mAP=0.3, timestamp=1)
    rw.write_model_stage("s2", ["w.pt"], evaluation_result={"mAP": 0.1, "maskAP": 0.6}, timestamp=2)
    r = ws.result()
    assert r["best_stage_name"] == "s2" and r["maskAP"] == 0.6 and "mAP" not in r


def test_empty_existing_result_yaml_starts_fresh(ws):
    ws.model_file("w.pt")
    (ws.out_dir / "models" / "result.yaml").write_text("")
    rw.write_model_stage("s1", ["w.pt"], mAP=0.1)
    assert ws.result()["best_stage_name"] == "s1"


def test_corrupt_existing_result_yaml_is_kept_and_reported(ws):
    ws.model_file("w.pt")
    p = ws.out_dir / "models" / "result.yaml"
    p.write_text("model_stages: [unclosed\n")
    with pytest.raises(ResultError, match="not overwriting"):
        rw.write_model_stage("s1", ["w.pt"], mAP=0.1)
    assert p.read_text() == "model_stages: [unclosed\n"


def test_attachments_and_evaluate_config(ws):
    ws.model_file("w.pt")
    ws.model_file("pr.png", "attachments/images")
    rw.write_model_stage("s1", ["w.pt"], mAP=0.1, attachments={"images": ["pr.png"]}, evaluate_config={"iou_thr": 0.5})
    r = ws.result()
    assert r["attachments"] == {"images": ["pr.png"]} and r["evaluate_config"] == {"iou_thr": 0.5}


def test_legacy_protocol_writes_model_and_map_of_the_best(ws):
    ws.write_env(protocol_version=None)
    ws.model_file("a.pt")
    ws.model_file("b.pt")
    rw.write_model_stage("s1", ["a.pt"], mAP=0.5, timestamp=1)
    rw.write_model_stage("s2", ["b.pt"], mAP=0.4, timestamp=2)
    r = ws.result()
    assert r["model"] == ["a.pt"] and r["map"] == 0.5
    assert not rw.multiple_model_stages_supportable()


def test_mining_result_is_sorted_by_score_descending_and_stable(ws):
    rw.write_mining_result([("/in/a.jpg", 0.1), ("/in/b.jpg", np.float32(0.9)), ("/in/c.jpg", 0.1), ("/in/d e.jpg", 1)])
    lines = (ws.out_dir / "result.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["/in/d e.jpg", "/in/b.jpg", "/in/a.jpg", "/in/c.jpg"]
    assert all(float(line.split("\t")[1]) >= 0 for line in lines)


@pytest.mark.parametrize(
    "pairs,match",
    [
        ([("/a", float("nan"))], "not finite"),
        ([("/a", float("inf"))], "not finite"),
        ([("/a", "0.5")], "not a number"),
        ([("/a", 0.1), ("/a", 0.2)], "more than once"),
        ([("/a\tb", 0.1)], "tab"),
    ],
)
def test_bad_mining_results(ws, pairs, match):
    with pytest.raises(ResultError, match=match):
        rw.write_mining_result(pairs)
    assert not (ws.out_dir / "result.tsv").exists()


def _ann(name="dog", score=0.9, **box):
    b = {"x": 1, "y": 2, "w": 3, "h": 4}
    b.update(box)
    return rw.Annotation(class_name=name, score=score, box=rw.Box(**b))


def test_infer_result_keys_are_basenames_with_boxes(ws):
    rw.write_infer_result({"/in/assets/aa/x.jpg": [_ann()], "/in/assets/bb/y.jpg": []})
    data = json.loads((ws.out_dir / "infer-result.json").read_text())
    assert data == {
        "detection": {
            "x.jpg": {"boxes": [{"class_name": "dog", "score": 0.9, "box": {"x": 1, "y": 2, "w": 3, "h": 4}}]},
            "y.jpg": {"boxes": []},
        }
    }


def test_infer_result_legacy_key_is_annotations(ws):
    ws.write_env(protocol_version="0.1.0")
    rw.write_infer_result({"/in/x.jpg": [_ann()]})
    assert "annotations" in json.loads((ws.out_dir / "infer-result.json").read_text())["detection"]["x.jpg"]


def test_same_basename_in_two_folders_is_an_error_naming_both(ws):
    with pytest.raises(ResultError) as e:
        rw.write_infer_result({"/a/x.jpg": [], "/b/x.jpg": []})
    assert "/a/x.jpg" in str(e.value) and "/b/x.jpg" in str(e.value)


def test_float_boxes_are_truncated_as_upstream_and_degenerate_boxes_construct():
    # upstream's pydantic 1 int fields: int(v), toward zero
    b = rw.Box(x=1.4, y=np.float32(2.6), w=3.5, h=np.int64(4))
    assert (b.x, b.y, b.w, b.h) == (1, 2, 3, 4)
    assert rw.Box(x=-1.7, y="12", w=0, h=3).model_dump() == {"x": -1, "y": 12, "w": 0, "h": 3}
    with pytest.raises(ValueError):
        rw.Box(x=float("nan"), y=0, w=1, h=3)
    with pytest.raises(ValueError):
        rw.Box(x="1.5", y=0, w=1, h=3)  # int("1.5") fails in pydantic 1 too


def test_a_score_outside_0_1_constructs_and_is_refused_when_written(ws):
    # upstream's pydantic 1 Annotation has no range on score; the writer checks it
    b = rw.Box(x=1, y=2, w=3, h=4)
    ann = rw.Annotation(class_name="dog", score=1.2, box=b)
    assert ann.score == 1.2
    with pytest.raises(ResultError) as e:
        rw.write_infer_result({"/in/x.jpg": [_ann(), ann]})
    assert e.value.key == "x.jpg[1].score" and "1.2" in str(e.value)
    with pytest.raises(ResultError, match="x.jpg\\[0\\].score"):
        rw.write_infer_result({"/in/x.jpg": [rw.Annotation(class_name="dog", score=float("nan"), box=b)]})
    assert not (ws.out_dir / "infer-result.json").exists()


def test_infer_class_not_in_class_names(ws):
    with pytest.raises(ResultError, match="not in class_names"):
        rw.write_infer_result({"/in/x.jpg": [_ann(name="horse")]})


def test_legacy_result_names_stage_folder_files_relative_to_the_models_dir(ws):
    ws.write_env(protocol_version=None)
    ws.model_file("model.pt", "best")
    rw.write_model_stage("best", ["model.pt"], mAP=0.5)
    assert ws.result()["model"] == ["best/model.pt"]
