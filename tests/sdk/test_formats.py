"""ymir_exc.formats: one model per file, shared by the writers, the harness checks and the
schema command; the fast checkers beside the models give the models' verdicts."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from ymir_exc import formats
from ymir_exc import monitor as sdk_monitor
from ymir_exc import result_writer as rw
from ymir_exc.cli import main
from ymir_exc.formats.monitor import MonitorState, format_monitor_line, parse_monitor
from ymir_exc.formats.results import (
    InferAnnotation,
    MiningLine,
    MiningLineError,
    format_mining_line,
    infer_box_problem,
    parse_mining_line,
)
from ymir_exc.harness import collect, models, predictions, runtime


def test_schema_command_and_the_checks_use_the_same_classes(capsys):
    files = formats.file_models()
    assert main(["schema"]) == 0
    schemas = json.loads(capsys.readouterr().out)
    assert set(schemas) == {"env.yaml", *files}
    for name, model in files.items():
        assert schemas[name] == model.model_json_schema(), name
    # the writers and the harness's checks hold these very classes and checkers
    assert collect.TrainingResult is rw.TrainingResult is files["result.yaml"]
    assert collect.LegacyTrainingResult is rw.LegacyTrainingResult is files["result.yaml (legacy, protocol < 1.0.0)"]
    assert models.ModelPackageInfo is files["ymir-info.yaml"]
    assert collect.parse_mining_line is formats.parse_mining_line
    assert rw.format_mining_line is formats.format_mining_line
    assert files["result.tsv line"] is MiningLine
    # (the writer: every box that is not plain str / float / int goes through infer_box_problem, see below)
    assert collect.infer_box_problem is predictions.infer_box_problem is infer_box_problem
    assert files["infer-result.json box"] is InferAnnotation
    assert files["infer-result.json (detection)"] is formats.InferResult
    assert collect.parse_monitor is runtime.parse_monitor is formats.parse_monitor
    assert sdk_monitor.format_monitor_line is runtime.format_monitor_line is format_monitor_line
    assert files["monitor.txt"] is MonitorState is runtime.MonitorState


def test_the_docs_list_exactly_what_the_schema_command_prints(capsys):
    assert main(["schema"]) == 0
    printed = set(json.loads(capsys.readouterr().out))
    root = Path(__file__).resolve().parents[2]
    harness = (root / "docs" / "harness.md").read_text()
    section = harness.split("## ymir-exc schema", 1)[1].split("```", 1)[0]
    readme = (root / "README.md").read_text()
    readme = readme.split("`ymir-exc schema` prints", 1)[1].split("### ", 1)[0]
    for text in (section, readme):
        assert set(re.findall(r"`([^`]+)`", text.split(":", 1)[1].split(". ", 1)[0])) == printed


def test_the_schema_holds_the_models_simple_rules():
    # jsonschema is not a dependency: the rules are asserted on the schema dict, and the model
    # is checked to refuse each value the schema refuses
    schema = formats.TrainingResult.model_json_schema()
    stage = schema["$defs"]["ModelStage"]
    good = {
        "best_stage_name": "a_b",
        "mAP": 0.5,
        "model_stages": {"a_b": {"stage_name": "a_b", "files": ["m.pt"], "timestamp": 1, "mAP": 0.5, "mAR": -1}},
    }
    formats.TrainingResult.model_validate(good)
    # stage mAP 1.5: out of the schema's range, and refused by the model
    assert {"type": "number", "minimum": 0, "maximum": 1} in stage["properties"]["mAP"]["anyOf"]
    assert {"const": -1} in stage["properties"]["mAP"]["anyOf"]  # -1: when mAP is not the primary metric
    # extra metrics: a fraction or -1; counts: integers >= 0
    assert stage["additionalProperties"]["anyOf"] == [{"type": "number", "minimum": 0, "maximum": 1}, {"const": -1}]
    assert list(stage["patternProperties"].values()) == [{"type": "integer", "minimum": 0}]
    # stage names: identifiers
    ident = re.compile(stage["properties"]["stage_name"]["pattern"])
    assert ident.match("a_b") and not ident.match("a-b") and not ident.match("1a")
    assert schema["properties"]["model_stages"]["propertyNames"]["pattern"] == ident.pattern
    assert schema["properties"]["best_stage_name"]["pattern"] == ident.pattern
    assert schema["properties"]["model_stages"]["maxProperties"] == formats.MAX_MODEL_STAGES
    files = re.compile(stage["properties"]["files"]["items"]["pattern"])
    assert files.match("m.pt") and files.match("a/..b") and not files.match("/m.pt") and not files.match("a/../m")
    # top-level mAP: a number in [0, 1]
    assert schema["properties"]["mAP"] == {"type": "number", "minimum": 0, "maximum": 1}
    for path, bad in (
        (["model_stages", "a_b", "mAP"], 1.5),
        (["model_stages", "a_b", "mAR"], 2),
        (["mAP"], "high"),
    ):
        doc = json.loads(json.dumps(good))
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = bad
        with pytest.raises(ValidationError):
            formats.TrainingResult.model_validate(doc)
    renamed = {"stage_name": "a-b", "files": ["m.pt"], "timestamp": 1, "mAP": 0.5}
    with pytest.raises(ValidationError):
        formats.TrainingResult.model_validate({"best_stage_name": "a-b", "model_stages": {"a-b": renamed}})
    # the whole infer-result.json (detection) document
    infer = formats.InferResult.model_json_schema()
    assert infer["required"] == ["detection"]
    assert infer["$defs"]["InferImageResult"]["required"] == ["boxes"]
    with pytest.raises(ValidationError):
        formats.InferResult.model_validate({"detection": {"a.jpg": {"boxes": [{"class_name": "x"}]}}})


def test_every_name_formats_exported_before_still_imports():
    from ymir_exc.formats import (
        MAX_MODEL_STAGES,
        InferAnnotation,
        InferBox,
        LegacyTrainingResult,
        ModelPackageInfo,
        ModelStage,
        TrainingResult,
        best_stage,
        check_coco_result,
        decode_rle,
        primary_metric_key,
        rle_counts,
        to_builtin,
    )

    imported = (MAX_MODEL_STAGES, InferAnnotation, InferBox, LegacyTrainingResult, ModelPackageInfo, ModelStage)
    imported += (TrainingResult, best_stage, check_coco_result, decode_rle, primary_metric_key, rle_counts, to_builtin)
    assert all(x is not None for x in imported)
    for name in formats.__all__:
        assert getattr(formats, name) is not None
    missing = "not_a_format"
    with pytest.raises(AttributeError):
        getattr(formats, missing)


_VALUES = [0, 1, -1, 3, 10**20, 0.0, 0.5, 1.0, 1.5, -0.1, math.nan, math.inf, True, False, None, "3", "tree", [], {}]


def _random_box(rnd: random.Random) -> object:
    def value() -> object:
        return rnd.choice(_VALUES) if rnd.random() < 0.3 else rnd.randrange(-3, 50)

    box = {k: value() for k in "xywh" if rnd.random() < 0.97}
    b: dict[str, object] = {
        "class_name": rnd.choice(["tree", "cat", "horse", 3, None]) if rnd.random() < 0.2 else "tree",
        "score": rnd.choice(_VALUES) if rnd.random() < 0.3 else rnd.random(),
        "box": box if rnd.random() < 0.95 else rnd.choice(_VALUES),
    }
    for k in list(b):
        if rnd.random() < 0.03:
            del b[k]
    return b if rnd.random() < 0.97 else rnd.choice(_VALUES)


def test_infer_box_checker_gives_the_models_verdict():
    rnd = random.Random(21)
    names = ["tree", "cat"]
    seen = set()
    for _ in range(20000):
        b = _random_box(rnd)
        try:
            InferAnnotation.model_validate(b)
            model_ok = True
        except ValidationError:
            model_ok = False
        why = infer_box_problem(b, names)
        seen.add(why)
        assert (why is None) == (model_ok and b["class_name"] in names), (b, why)
        assert (infer_box_problem(b, None) is None) == model_ok, b
    assert len(seen) == 7  # every reason (and None) came up


def test_writers_write_what_the_models_accept(ws):
    rw.write_infer_result(
        {
            "/in/a/1.jpg": [rw.Annotation(class_name="cat", score=0.5, box=rw.Box(x=1, y=2, w=3, h=4))],
            "/in/a/2.jpg": [rw.Annotation(class_name="cat", score="1", box=rw.Box(x=1.7, y=2, w="3", h=4))],
        }
    )
    data = json.loads((ws.out_dir / "infer-result.json").read_text())
    boxes = [b for entry in data["detection"].values() for b in entry["boxes"]]
    assert len(boxes) == 2
    for b in boxes:
        InferAnnotation.model_validate(b)
        assert infer_box_problem(b, ["cat"]) is None
    assert formats.InferResult.model_validate(data).detection["2.jpg"].boxes[0].box.x == 1
    rw.write_mining_result([("/in/a/1.jpg", 0.25), ("/in/a/2.jpg", 1e-7)])
    for line in (ws.out_dir / "result.tsv").read_text().splitlines():
        path, score = parse_mining_line(line)
        assert MiningLine(path=path, score=score).path == path


def test_a_box_broken_after_validation_is_refused_naming_the_key(ws):
    a = rw.Annotation(class_name="cat", score=0.5, box=rw.Box(x=1, y=2, w=3, h=4))
    a.box.x = 1.5
    with pytest.raises(rw.ResultError) as e:
        rw.write_infer_result({"/in/a/1.jpg": [a]})
    assert e.value.key == "1.jpg[0].box" and "coordinate not an integer" in str(e.value)
    assert not (ws.out_dir / "infer-result.json").exists()


def test_mining_line_round_trip_and_errors():
    for path, score in [("/in/a.jpg", 0.1), ("b c.png", -3.0), ("é", 1e17)]:
        line = format_mining_line(path, score)
        assert line.endswith("\n") and parse_mining_line(line[:-1]) == (path, score)
    for line, kind in [("a", "columns"), ("a\tb\tc", "columns"), ("a\tx", "number"), ("a\tnan", "finite")]:
        with pytest.raises(MiningLineError) as e:
            parse_mining_line(line)
        assert e.value.kind == kind
    with pytest.raises(ValidationError):
        MiningLine(path="a\tb", score=0.1)
    with pytest.raises(ValidationError):
        MiningLine(path="a", score=math.inf)


def test_monitor_line_round_trip_and_errors():
    line = format_monitor_line("t1", 1700000000.25, 0.5, 4, 160004)
    st = parse_monitor(line + "\nboom\ntrace\n")
    assert (st.task_id, st.timestamp, st.percent, st.state, st.return_code) == ("t1", 1700000000.25, 0.5, 4, 160004)
    assert st.message == "boom\ntrace" and st.raw.startswith(line)
    for text, says in [("", "empty"), ("a\tb", "2 tab-separated fields"), ("t\tx\t0.5\t2\t0", "timestamp 'x'")]:
        with pytest.raises(ValueError, match=says):
            parse_monitor(text)
    with pytest.raises(ValueError, match="state '2.5' is not an integer"):
        parse_monitor("t\t1\t0.5\t2.5\t0")
