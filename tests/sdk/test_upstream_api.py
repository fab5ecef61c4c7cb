"""The upstream ymir_exc 2.x surface, name by name: each behaviour with its expected value worked
out from upstream's rule (stated beside it). The SDK-side robustness that is ours (result.yaml
lock, atomic copies, stale temp files, stage-name length) is tested here too."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

from ymir_exc import _io, env, monitor, settings, util
from ymir_exc import result_writer as rw
from ymir_exc.code import ExecutorReturnCode as RC
from ymir_exc.code import ExecutorState
from ymir_exc.errors import MonitorError, NotSupportedError, ResultError

# ------------------------------------------------------------------ code


def test_every_upstream_return_code_name_exists_with_its_value():
    upstream = {
        "RC_EXEC_NO_ERROR": 0,
        "RC_EXEC_CONFIG_ERROR": 300001,
        "RC_EXEC_DATASET_ERROR": 300002,
        "RC_EXEC_UNKNOWN_IMAGE_FORMAT": 300003,
        "RC_EXEC_MODEL_ERROR": 300004,
        "RC_EXEC_CUDA_GPU_ERROR": 300101,
        "RC_EXEC_NO_GPU": 300102,
        "RC_EXEC_OOM": 300103,
        "RC_EXEC_NAN_ERROR": 300201,
        "RC_EXEC_NETWORK_ERROR": 300301,
        "RC_CMD_CONTAINER_ERROR": 160004,
    }
    assert {k: int(getattr(RC, k)) for k in upstream} == upstream
    assert (ExecutorState.ES_RUNNING, ExecutorState.ES_ERROR) == (2, 4)


# ------------------------------------------------------------------ env


def test_get_current_env_hands_out_a_new_object_parsed_once_per_change(ws, monkeypatch):
    calls = []
    real = env.parse_env_file
    monkeypatch.setattr(env, "parse_env_file", lambda p: calls.append(p) or real(p))
    env._env_cache.clear()
    a = env.get_current_env()
    a.run_infer = True
    a.output.models_dir = "/elsewhere"
    b = env.get_current_env()
    assert (b.run_infer, b.output.models_dir) == (False, f"{ws.out_dir}/models") and b is not a
    assert len(calls) == 1
    ws.write_env(task_id="t-changed-file")
    assert env.get_current_env().task_id == "t-changed-file" and len(calls) == 2


def test_get_executor_config_reads_the_file_env_yaml_names(ws, monkeypatch, tmp_path):
    other = tmp_path / "named-by-env.yaml"
    other.write_text("class_names: [a]\nlr: 0.5\n")
    ws.write_env(input={"config_file": str(other)})
    monkeypatch.setattr(settings, "DEFAULT_CONFIG_FILE_PATH", "/nonexistent.yaml")
    assert env.get_executor_config() == {"class_names": ["a"], "lr": 0.5}


# ------------------------------------------------------------------ monitor


def test_monitor_line_and_the_state_given(ws):
    monitor.write_monitor_logger(0.456, state=ExecutorState.ES_RUNNING)
    f = ws.monitor_text().splitlines()[0].split("\t")
    assert f[0] == "t-test" and float(f[1]) > 1e9 and f[2:] == ["0.46", "2", "0"]
    monitor.write_monitor_logger(1.0)  # upstream never turns running into done
    assert ws.monitor_text().split("\t")[2:5] == ["1.00", "2", "0\n"]


@pytest.mark.parametrize("order,mining,infer", [("tmi", "0.20", "0.70"), ("tim", "0.70", "0.20")])
def test_multiple_tasks_map_by_order(ws, order, mining, infer):
    ws.write_env(run_training=False, run_mining=True, run_infer=True)
    cfg = util.get_merged_config()
    # the first of mining / infer in `order` maps to [0, 0.5], the other to [0.5, 1]
    monitor.write_monitor_logger_for_multiple_tasks(cfg, "mining", 0.4, order=order)
    got_m = ws.monitor_text().split("\t")[2]
    monitor._last_percent.clear()
    monitor.write_monitor_logger_for_multiple_tasks(cfg, monitor.YmirTask.INFER, 0.4, order=order)
    got_i = ws.monitor_text().split("\t")[2]
    assert (got_m, got_i) == (mining, infer)


def test_multiple_tasks_single_task_and_not_enabled_write_percent_as_is(ws):
    cfg = util.get_merged_config()  # training only
    monitor.write_monitor_logger_for_multiple_tasks(cfg, "infer", 0.33)
    assert ws.monitor_text().split("\t")[2] == "0.33"
    util.write_ymir_monitor_process(cfg, task="mining", naive_stage_percent=0.5, stage="task")
    assert ws.monitor_text().split("\t")[2] == "0.50"  # 0.00001 + 0.99998 * 0.5


# ------------------------------------------------------------------ util: progress


def test_stage_weights_defaults_env_vars_and_mapping(monkeypatch):
    assert util.YmirStageWeight().weights == [0.00001, 0.99998, 0.00001]
    monkeypatch.setenv("PREPROCESS_WEIGHT", "0.2")
    monkeypatch.setenv("TASK_WEIGHT", "0.7")
    monkeypatch.setenv("POSTPROCESS_WEIGHT", "0.1")
    w = util.YmirStageWeight()
    assert w.weights == [0.2, 0.7, 0.1]
    # w0 * p, w0 + w1 * p, w0 + w1 + w2 * p; stages as YmirStage or strings
    assert w.get_stage_process(util.YmirStage.PREPROCESS, 0.5) == pytest.approx(0.1)
    assert w.get_stage_process("task", 0.5) == pytest.approx(0.2 + 0.35)
    assert w.get_stage_process("postprocess", 0.5) == pytest.approx(0.9 + 0.05)
    with pytest.raises(ValueError):
        util.YmirStageWeight([0.5, 0.6, 0.1])


def test_get_ymir_process_equals_upstreams_formula(monkeypatch):
    for v in ("PREPROCESS_WEIGHT", "TASK_WEIGHT", "POSTPROCESS_WEIGHT"):
        monkeypatch.delenv(v, raising=False)
    # task_idx / task_num + (1 / task_num) * weights.get_stage_process(stage, p)
    assert util.get_ymir_process(util.YmirStage.TASK, 0.5) == pytest.approx(0.00001 + 0.99998 * 0.5)
    assert util.get_ymir_process("preprocess", 1.0, task_idx=1, task_num=2) == pytest.approx(0.5 + 0.5 * 0.00001)
    w = util.YmirStageWeight([0.1, 0.8, 0.1])
    assert util.get_ymir_process(util.YmirStage.POSTPROCESS, 0.5, 0, 1, w) == pytest.approx(0.95)
    with pytest.raises(ValueError):
        util.get_ymir_process(util.YmirStage.TASK, 1.5)


def test_find_free_port_can_be_bound():
    import socket

    port = util.find_free_port()
    with socket.socket() as s:
        s.bind(("", port))


# ------------------------------------------------------------------ util: saved files


def _make(ws, *names):
    for n in names:
        p = ws.out_dir / "models" / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(n)


def test_filter_saved_files_empty_list_means_every_file_in_the_models_dir(ws):
    _make(ws, "a.pt", "b.onnx", "sub/c.pt", ".hidden", "result.yaml")
    (ws.out_dir / "models" / ".result.yaml.lock").write_text("")
    (ws.out_dir / "models" / f".result.yaml.{os.getpid()}.1.tmp").write_text("")
    cfg = util.get_merged_config()
    # upstream's glob lists files directly in models_dir (no dot files); result.yaml is left out
    assert sorted(util.filter_saved_files(cfg, [])) == ["a.pt", "b.onnx"]


def test_filter_saved_files_makes_absolute_paths_relative_then_filters(ws, tmp_path, caplog):
    ws.write_config(ymir_saved_file_patterns="best, [unclosed, \\.onnx$")
    cfg = util.get_merged_config()
    models = ws.out_dir / "models"
    outside = tmp_path / "o" / "best.pt"
    with caplog.at_level(logging.WARNING, logger="ymir_exc"):
        kept = util.filter_saved_files(
            cfg, [str(models / "w" / "best.pt"), str(models / "last.pt"), "m.onnx", str(outside)]
        )
    assert kept == ["w/best.pt", "m.onnx", os.path.relpath(outside, models)]
    assert "[unclosed" in caplog.text


def test_format_saved_files_copies_sub_folder_outside_and_linked_files_under_their_basename(ws, tmp_path):
    _make(ws, "top.pt", "weights/best.pt")
    outside = tmp_path / "elsewhere" / "x.pth"
    outside.parent.mkdir()
    outside.write_text("x")
    real = tmp_path / "elsewhere" / "real.pt"
    real.write_text("real")
    os.symlink(real, ws.out_dir / "models" / "link.pt")
    cfg = util.get_merged_config()
    names = util.format_saved_files(
        cfg, ["top.pt", str(ws.out_dir / "models/weights/best.pt"), str(outside), "link.pt"]
    )
    assert names == ["top.pt", "best.pt", "x.pth", "real.pt"]
    m = ws.out_dir / "models"
    assert (m / "best.pt").read_text() == "weights/best.pt" and (m / "x.pth").read_text() == "x"
    assert (m / "real.pt").read_text() == "real" and not (m / "real.pt").is_symlink()
    with pytest.raises(ResultError):
        util.format_saved_files(cfg, ["missing.pt"])


def test_write_ymir_training_result_ids_and_legacy_protocol(ws):
    _make(ws, "best.pt")
    cfg = util.get_merged_config()
    util.write_ymir_training_result(cfg, files=["best.pt"], id=7, map50=0.25)
    util.write_ymir_training_result(cfg, files=["best.pt"], id="epoch-8", evaluation_result={"mAP": 0.3})
    r = ws.result()
    assert set(r["model_stages"]) == {"stage_7", "epoch_8"} and r["best_stage_name"] == "epoch_8"
    ws.write_env(protocol_version=None)
    (ws.out_dir / "models" / "result.yaml").unlink()
    util.write_ymir_training_result(util.get_merged_config(), files=["best.pt"], id="1", map50=0.4)
    assert {k: v for k, v in ws.result().items() if k != "timestamp"} == {"model": ["best.pt"], "map": 0.4}


# ------------------------------------------------------------------ result_writer


def test_box_and_annotation_accept_what_pydantic_1_did():
    assert rw.Box(x=10.7, y=-2.5, w="30", h=np.int32(4)).model_dump() == {"x": 10, "y": -2, "w": 30, "h": 4}
    assert rw.Box(x=0, y=0, w=0, h=-1).w == 0  # any int constructs
    assert rw.Annotation(class_name="a", score="0.25", box=rw.Box(x=1, y=1, w=1, h=1)).score == 0.25


def test_multiple_model_stages_supportable_protocol_then_ymir_version(ws, monkeypatch):
    assert rw.multiple_model_stages_supportable() is True
    ws.write_env(protocol_version=None)
    monkeypatch.delenv("YMIR_VERSION", raising=False)
    assert rw.multiple_model_stages_supportable() is False  # default "1.1.0"
    monkeypatch.setenv("YMIR_VERSION", "1.2.0")
    assert rw.multiple_model_stages_supportable() is True


def test_write_model_stage_rules(ws):
    ws.model_file("w.pt")
    for bad_name, bad_files in (("", ["w.pt"]), ("s", []), ("1abc", ["w.pt"]), ("a b", ["w.pt"])):
        with pytest.raises(ValueError):
            rw.write_model_stage(bad_name, bad_files, mAP=0.1)
    rw.write_model_stage("epoch-1", ["w.pt"], mAP=0, timestamp=10)  # '-' -> '_'; 0 is a metric
    assert ws.result()["model_stages"]["epoch_1"]["mAP"] == 0.0
    # primary metric maskAP > mIoU > mAP: the best and the top-level key follow it
    rw.write_model_stage("a", ["w.pt"], evaluation_result={"mAP": 0.9, "mIoU": 0.2}, timestamp=11)
    rw.write_model_stage("b", ["w.pt"], evaluation_result={"mAP": 0.1, "mIoU": 0.6}, timestamp=12)
    r = ws.result()
    assert r["best_stage_name"] == "b" and r["mIoU"] == 0.6 and "mAP" not in r


def test_best_stage_tie_goes_to_the_later_stage(ws):
    ws.model_file("w.pt")
    rw.write_model_stage("first", ["w.pt"], mAP=0.5, timestamp=100)
    rw.write_model_stage("second", ["w.pt"], mAP=0.5, timestamp=100)
    assert ws.result()["best_stage_name"] == "second"


def test_at_most_11_stages_evicting_the_oldest_but_the_best(ws):
    ws.model_file("w.pt")
    rw.write_model_stage("s0", ["w.pt"], mAP=0.9, timestamp=0)
    for i in range(1, 13):
        rw.write_model_stage(f"s{i}", ["w.pt"], mAP=0.1, timestamp=i)
    r = ws.result()
    assert sorted(r["model_stages"], key=lambda k: int(k[1:])) == ["s0"] + [f"s{i}" for i in range(3, 13)]
    assert r["best_stage_name"] == "s0"


def test_attachments_and_evaluate_config_replace_the_stored_ones(ws, tmp_path):
    ws.model_file("w.pt")
    plot = tmp_path / "pr.png"
    plot.write_bytes(b"png")
    rw.write_model_stage("s1", ["w.pt"], mAP=0.2, attachments={"images": [str(plot)]}, evaluate_config={"iou": 0.5})
    rw.write_model_stage("s2", ["w.pt"], mAP=0.3)
    r = ws.result()
    assert r["attachments"] == {"images": ["pr.png"]} and r["evaluate_config"] == {"iou": 0.5}
    rw.write_model_stage("s3", ["w.pt"], mAP=0.3, evaluate_config={"iou": 0.7}, attachments={})
    r = ws.result()
    assert r["attachments"] == {} and r["evaluate_config"] == {"iou": 0.7}


def test_mining_result_sorted_descending(ws):
    rw.write_mining_result([("/a.jpg", 0.1), ("/b.jpg", 0.9), ("/c.jpg", 0.5)])
    assert (ws.out_dir / "result.tsv").read_text().split() == ["/b.jpg", "0.9", "/c.jpg", "0.5", "/a.jpg", "0.1"]


def test_classification_is_not_supported(ws):
    with pytest.raises(NotImplementedError) as e:
        rw.write_infer_result({}, algorithm="classification")
    assert isinstance(e.value, NotSupportedError) and "classification" in str(e.value)


def test_degenerate_boxes_are_dropped_with_a_count(ws, caplog):
    good = rw.Annotation(class_name="cat", score=0.5, box=rw.Box(x=1, y=1, w=2, h=2))
    flat = rw.Annotation(class_name="cat", score=0.5, box=rw.Box(x=1, y=1, w=0, h=2))
    neg = {"class_name": "dog", "score": 0.5, "box": {"x": 1, "y": 1, "w": 3, "h": -1}}
    with caplog.at_level(logging.WARNING, logger="ymir_exc"):
        rw.write_infer_result({"/x/a.jpg": [good, flat, neg]})
    boxes = json.loads((ws.out_dir / "infer-result.json").read_text())["detection"]["a.jpg"]["boxes"]
    assert [b["box"]["w"] for b in boxes] == [2] and "dropped 2 box(es)" in caplog.text


# ------------------------------------------------------------------ segmentation results


def _coco_rle_string(counts):
    """COCO's rleToString (maskApi.c), written from its definition: a delta against the run two
    before (from the fourth run on), 5 bits per character plus a continuation bit, offset 48."""
    chars = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            chars.append(chr((c | 0x20 if more else c) + 48))
    return "".join(chars)


def test_rle_counts_and_decode_without_pycocotools():
    from ymir_exc.formats import decode_rle, rle_counts

    assert rle_counts({"size": [2, 2], "counts": "04"}) == [0, 4]  # '0' -> 0, '4' -> 4
    runs = [3, 40, 1, 17, 2, 33, 4]
    assert rle_counts({"size": [10, 10], "counts": _coco_rle_string(runs)}) == runs
    # runs alternate 0 / 1 from 0, column-major: [1, 2, 3] over 2x3 is columns [0,1], [1,0], [0,0]
    assert decode_rle({"size": [2, 3], "counts": [1, 2, 3]}).tolist() == [[0, 1, 0], [1, 0, 0]]
    for bad in (
        {"size": [2, 2], "counts": [1, 2]},
        {"size": [2, 2], "counts": "0~"},
        {"size": [2], "counts": []},
        {"size": [2, 2], "counts": "0" + chr(48 + 0x20)},
        {"counts": [4]},
    ):
        with pytest.raises(ValueError):
            rle_counts(bad)
    assert "pycocotools" not in sys.modules


def _coco(**ann):
    a = {"id": 1, "image_id": 1, "category_id": 1, "segmentation": {"size": [2, 2], "counts": [1, 3]}}
    a.update(ann)
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 2, "width": 2}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [a],
    }


@pytest.mark.parametrize(
    "ann,key",
    [
        ({"image_id": 9}, "annotations[0].image_id"),
        ({"category_id": 2}, "annotations[0].category_id"),
        ({"score": 1.5}, "annotations[0].score"),
        ({"segmentation": {"size": [2, 2], "counts": [1, 2]}}, "annotations[0].segmentation"),
        ({"segmentation": {"size": [3, 2], "counts": [6]}}, "annotations[0].segmentation"),
        ({"segmentation": [[0, 0, 1]]}, "annotations[0].segmentation"),
        ({"bbox": [0, 0, -1, 2]}, "annotations[0].bbox"),
    ],
)
def test_segmentation_result_is_validated_before_writing(ws, ann, key):
    with pytest.raises(ResultError) as e:
        rw.write_infer_result(_coco(**ann), algorithm="segmentation")
    assert e.value.key == key
    assert not (ws.out_dir / "infer-result.json").exists()


def test_instance_segmentation_polygons_with_bbox_and_score_are_written_as_given(ws):
    data = _coco(segmentation=[[0, 0, 1, 0, 1, 1]], bbox=[0, 0, 1, 1], score=np.float32(0.5))
    rw.write_infer_result(data, algorithm="segmentation")
    got = json.loads((ws.out_dir / "infer-result.json").read_text())
    assert got["annotations"][0]["score"] == 0.5 and got["annotations"][0]["segmentation"] == [[0, 0, 1, 0, 1, 1]]


def test_unknown_category_name_is_refused(ws):
    data = _coco()
    data["categories"][0]["name"] = "horse"
    with pytest.raises(ResultError, match="class_names"):
        rw.write_infer_result(data, algorithm="segmentation")


# ------------------------------------------------------------------ executor, sysinfo, dataset_convert


def test_executor_apps_start_runs_the_enabled_commands(ws, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "ran.txt"
    from ymir_exc.executor import Executor

    apps = {k: f"echo {k} >> {log}" for k in ("training", "mining", "infer")}
    ws.write_env(run_training=False, run_mining=True, run_infer=True)
    Executor(apps=apps).start()
    assert log.read_text().split() == ["mining", "infer"]
    ws.write_env(run_training=True)
    ws.write_config(ymir_debug=True)
    with pytest.raises(RuntimeError, match="ymir_debug"):
        Executor(apps).start()  # upstream's positional apps
    assert log.read_text().split() == ["mining", "infer", "training"]
    assert Executor().apps["training"] == "python3 ymir/ymir_training.py"


def test_get_gpu_memory_imports_torch_only_when_called(monkeypatch):
    code = "import sys, ymir_exc.sysinfo; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    fake = types.ModuleType("torch")
    fake.cuda = types.SimpleNamespace(mem_get_info=lambda d: (3 * 2**30, 8 * 2**30))
    monkeypatch.setitem(sys.modules, "torch", fake)
    from ymir_exc.sysinfo import get_gpu_memory

    assert get_gpu_memory("cuda:0") == (8.0, 3.0)


def _seg_dataset(ws, tmp_path, full: bool):
    from PIL import Image

    assets = tmp_path / "assets"
    assets.mkdir()
    lines, images, anns = [], [], []
    coco_path = tmp_path / "coco-annotations.json"
    for i in range(3):
        p = assets / f"im{i}.png"
        Image.new("RGB", (4, 2)).save(p)
        lines.append(f"{p}\t{coco_path}\n")
        images.append({"id": i + 1, "file_name": p.name, "width": 4, "height": 2})
        # left half as a polygon, right half as an RLE (columns 2 and 3: runs [4, 4])
        anns.append({"id": 2 * i + 1, "image_id": i + 1, "category_id": 1, "segmentation": [[0, 0, 1, 0, 1, 1, 0, 1]]})
        right = [4, 4] if (full or i < 2) else [4, 2, 2]
        anns.append(
            {"id": 2 * i + 2, "image_id": i + 1, "category_id": 1, "segmentation": {"size": [2, 4], "counts": right}}
        )
    coco_path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cat"}]}))
    (ws.in_dir / "train-index.tsv").write_text("".join(lines))


@pytest.mark.parametrize("full", [True, False])
def test_find_blank_area_in_dataset(ws, tmp_path, full):
    from ymir_exc.dataset_convert import find_blank_area_in_dataset

    _seg_dataset(ws, tmp_path, full)
    # polygon (0,0)-(1,1) fills columns 0-1 of both rows (Pillow fills the outline too); the RLE
    # [4, 4] fills columns 2-3; [4, 2, 2] leaves column 3 blank in the third image
    assert find_blank_area_in_dataset(util.get_merged_config()) is (not full)
    assert find_blank_area_in_dataset(util.get_merged_config(), max_sample_num=2) is False


# ------------------------------------------------------------------ robustness of the writes


def test_two_processes_writing_stages_at_once_lose_none(ws):
    ws.model_file("w.pt")
    # two writers x 5 stages (under the 11 kept, so nothing may be evicted), started together
    script = textwrap.dedent("""
        import sys, time
        from ymir_exc import result_writer as rw
        tag, start = sys.argv[1], float(sys.argv[2])
        time.sleep(max(0.0, start - time.time()))
        for i in range(5):
            rw.write_model_stage(f"{tag}_{i}", ["w.pt"], mAP=0.5, timestamp=1000 + i)
    """)
    env_vars = dict(os.environ, DEFAULT_ENV_FILE_PATH=str(ws.env_file), DEFAULT_CONFIG_FILE_PATH=str(ws.config_file))
    import time

    start = str(time.time() + 1.5)
    procs = [subprocess.Popen([sys.executable, "-c", script, t, start], env=env_vars) for t in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert set(ws.result()["model_stages"]) == {f"{t}_{i}" for t in "ab" for i in range(5)}
    assert (ws.out_dir / "models" / ".result.yaml.lock").exists()


def test_a_failing_copy_leaves_no_partial_stage_file(ws, tmp_path, monkeypatch):
    src = tmp_path / "big.pt"
    src.write_bytes(b"x" * 100000)

    def failing_copyfile(a, b, *args, **kwargs):
        with open(b, "wb") as f:
            f.write(b"x" * 100)  # a partial copy, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", b)

    monkeypatch.setattr(shutil, "copyfile", failing_copyfile)
    models = ws.out_dir / "models"
    with pytest.raises(OSError) as e:
        rw.write_model_stage("s", [str(src)], mAP=0.5)
    assert str(models / "s" / "big.pt") in str(e.value) and ".tmp" not in str(e.value)
    with pytest.raises(OSError):
        util.format_saved_files(util.get_merged_config(), [str(src)])
    ws.model_file("w.pt")
    with pytest.raises(OSError):
        rw.write_model_stage("t", ["w.pt"], mAP=0.5, attachments={"images": [str(src)]})
    # no partial file under any target name, no temp file left, no result.yaml written
    left = sorted(str(p.relative_to(models)) for p in models.rglob("*") if p.is_file())
    assert left == [".result.yaml.lock", "w.pt"]


def test_stage_names_at_most_100_bytes(ws):
    ws.model_file("w.pt")
    rw.write_model_stage("s" * 100, ["w.pt"], mAP=0.5)
    with pytest.raises(ResultError, match="100") as e:
        rw.write_model_stage("é" * 51, ["w.pt"], mAP=0.5)  # 102 bytes of UTF-8
    assert e.value.key == "stage_name"


def test_stale_temp_files_of_dead_writers_are_removed_by_the_next_write(ws, monkeypatch):
    monkeypatch.setattr(_io, "_swept", set())
    target = ws.out_dir / "result.tsv"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = ws.out_dir / f".result.tsv.{dead.pid}.7.tmp"
    alive = ws.out_dir / f".result.tsv.{os.getppid()}.7.tmp"
    other = ws.out_dir / f".infer-result.json.{dead.pid}.7.tmp"
    for p in (stale, alive, other):
        p.write_text("junk")
    rw.write_mining_result([("/a.jpg", 0.5)])
    assert target.read_text() == "/a.jpg\t0.5\n"
    assert not stale.exists() and alive.exists() and other.exists()
    stale.write_text("junk")  # once per process and target
    rw.write_mining_result([("/a.jpg", 0.5)])
    assert stale.exists()


def test_write_errors_name_the_target_not_the_temp_file(ws, monkeypatch):
    real_open = os.open

    def refuse(path, *a, **k):
        if str(path).endswith(".tmp"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(PermissionError) as e:
        rw.write_mining_result([("/a.jpg", 0.5)])
    assert e.value.filename == str(ws.out_dir / "result.tsv") and ".tmp" not in str(e.value)


# ------------------------------------------------------------------ the harness reads segmentation results


def test_collect_checks_a_segmentation_infer_result(ws):
    from ymir_exc.harness.collect import check_infer

    e = env.get_current_env()
    path = ws.out_dir / "infer-result.json"
    path.write_text(json.dumps(_coco()))
    rep = check_infer(e, ["cat"], candidates=["/in/assets/a.jpg"], keep_results=True)
    assert rep.problems == [] and rep.boxes == 1 and list(rep.results) == ["a.jpg"]
    assert rep.results["a.jpg"][0]["class_name"] == "cat"
    rep = check_infer(e, ["cat"], candidates=["/in/assets/a.jpg", "/in/assets/b.jpg"])
    assert rep.missing == 1 and any("without an image entry, e.g. b.jpg" in p for p in rep.problems)
    path.write_text(json.dumps(_coco(score=2)))
    rep = check_infer(e, ["cat"], candidates=["/in/assets/a.jpg"])
    assert any("annotations[0].score" in p for p in rep.problems)


def test_executor_module_also_offers_the_util_names():
    from ymir_exc.executor import YmirStage, get_bool, get_merged_config  # noqa: F401

    assert YmirStage is util.YmirStage and get_bool is util.get_bool


# ------------------------------------------------------------------ dataset_reader


def test_item_paths_and_counts_by_split_name(ws):
    from ymir_exc import dataset_reader as dr

    ann = ws.in_dir / "a.txt"
    ann.write_text("0, 1, 2, 10, 20\n1,3,4,5,6\n")
    (ws.in_dir / "train-index.tsv").write_text(f"/in/a.jpg\t{ann}\n/in/b.jpg\t{ann}\n")
    (ws.in_dir / "candidate-index.tsv").write_text("/in/c.jpg\n")
    ws.write_config(export_format="ark:raw")
    cfg = util.get_merged_config()
    assert list(dr.item_paths(env.DatasetType.CANDIDATE)) == [("/in/c.jpg", "")]
    assert dr.items_count(env.DatasetType.TRAINING) == 2
    for split, n in (("train", 2), ("training", 2), ("candidate", 1), ("test", 1), ("infer", 1)):
        assert dr.images_count(cfg, split) == n
    with pytest.raises(ValueError):
        dr.images_count(cfg, "everything")
    assert dr.bboxes_count(cfg, "train") == 4  # annotation lines of the ark files


def test_a_full_disk_names_the_target_and_keeps_the_old_file(ws, monkeypatch):
    rw.write_mining_result([("/a.jpg", 0.5)])

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError) as e:
        rw.write_mining_result([("/b.jpg", 0.7)])
    monkeypatch.undo()
    target = ws.out_dir / "result.tsv"
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target) and str(target) in str(e.value)
    assert target.read_text() == "/a.jpg\t0.5\n"
    assert [p.name for p in ws.out_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_annotation_class_name_coerced_as_pydantic_1():
    box = rw.Box(x=1, y=1, w=1, h=1)
    assert [rw.Annotation(class_name=v, score=0.5, box=box).class_name for v in (3, 1.5, b"cat", "dog")] == [
        "3",
        "1.5",
        "cat",
        "dog",
    ]
    with pytest.raises(ValueError):
        rw.Annotation(class_name=None, score=0.5, box=box)


# ------------------------------------------------------------------ values upstream accepts


def test_upstream_module_constants_exist_with_their_values():
    # upstream monitor.py: TASK_STATE_RUNNING = 2; result_writer.py: _MAX_MODEL_STAGES_COUNT_ = 11
    # (10 latest stages + the best); util.py imports YmirTask and write_monitor_logger_for_multiple_tasks
    from ymir_exc.formats import MAX_MODEL_STAGES

    assert monitor.TASK_STATE_RUNNING == 2 and type(monitor.TASK_STATE_RUNNING) is int
    assert rw._MAX_MODEL_STAGES_COUNT_ == 11 == MAX_MODEL_STAGES
    assert util.YmirTask is monitor.YmirTask
    assert util.write_monitor_logger_for_multiple_tasks is monitor.write_monitor_logger_for_multiple_tasks


@pytest.mark.parametrize(
    "percent,written",
    [(1.0000000000000002, "1.00"), (1 + 1e-7, "1.00"), (-1e-9, "0.00"), (np.float64(1.0) + np.float64(2e-16), "1.00")],
)
def test_percent_float_rounding_is_clamped(ws, percent, written):
    monitor.write_monitor_logger(percent=percent)
    assert ws.monitor_text().split("\t")[2:4] == [written, "2"]


@pytest.mark.parametrize("bad", [1.01, 1 + 2e-6, -0.001, float("inf")])
def test_percent_clearly_outside_0_1_is_still_refused(ws, bad):
    with pytest.raises(MonitorError):
        monitor.write_monitor_logger(percent=bad)
    with pytest.raises(MonitorError):
        monitor.write_monitor_logger_for_multiple_tasks(None, "training", bad)
    assert not (ws.out_dir / "monitor.txt").exists()


def test_box_and_annotation_accept_what_pydantic_1_accepted():
    # pydantic 1: int fields int(v), float fields float(v), str fields str / bytes / numbers; no range
    box = rw.Box(x=np.int32(3), y=np.uint8(4), w=np.float64(5.9), h=np.float32(6.2))
    assert box.model_dump() == {"x": 3, "y": 4, "w": 5, "h": 6}
    ann = rw.Annotation(class_name=np.str_("dog"), score=np.float32(1.0000001), box=box)
    assert ann.class_name == "dog" and ann.score == float(np.float32(1.0000001)) and ann.score > 1
    assert rw.Annotation(class_name="dog", score=np.float16(0.5), box={"x": 1, "y": 2, "w": 3, "h": 4}).score == 0.5
    assert rw.Annotation(class_name="dog", score=-0.2, box=box).score == -0.2
    assert np.isnan(rw.Annotation(class_name="dog", score=float("nan"), box=box).score)


def test_annotation_score_range_is_checked_when_written(ws):
    ann = rw.Annotation(class_name="dog", score=np.float32(1.0000001), box=rw.Box(x=1, y=2, w=3, h=4))
    ok = rw.Annotation(class_name="dog", score=np.float32(0.5), box=rw.Box(x=1, y=2, w=3, h=4))
    with pytest.raises(ResultError) as e:
        rw.write_infer_result({"/in/assets/a.jpg": [ok], "/in/assets/b.jpg": [ok, ann]})
    assert e.value.key == "b.jpg[1].score"
    assert not (ws.out_dir / "infer-result.json").exists()


def test_zero_d_arrays_are_mining_scores(ws):
    # upstream: f"{path}\t{score}" after sorting by score; str(np.array(0.7)) is "0.7"
    rw.write_mining_result([("/in/a.jpg", np.array(0.3)), ("/in/b.jpg", np.array(0.7)), ("/in/c.jpg", 0.5)])
    lines = (ws.out_dir / "result.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["/in/b.jpg", "/in/c.jpg", "/in/a.jpg"]
    assert [float(line.split("\t")[1]) for line in lines] == [0.7, 0.5, 0.3]
    with pytest.raises(ResultError):  # a shape-(1,) score: upstream wrote "[0.3]", which the platform misreads
        rw.write_mining_result([("/in/a.jpg", np.array([0.3]))])


def test_size_1_arrays_are_metrics(ws):
    ws.model_file("w.pt")
    rw.write_model_stage("s1", ["w.pt"], mAP=np.array([0.4]), evaluation_result={"mAR": np.array(0.5)})
    stage = ws.result()["model_stages"]["s1"]
    assert (stage["mAP"], stage["mAR"]) == (0.4, 0.5)
    with pytest.raises(ResultError, match="must be a number"):
        rw.write_model_stage("s2", ["w.pt"], mAP=np.array([0.4, 0.5]))
