"""The calls real executor images make to the upstream ymir_exc 2.x SDK, replayed in fresh
processes against a prepared work dir; the files they leave are compared with what the upstream
SDK writes for the same calls.

Every expected value below is worked out from the upstream rules (stated next to it), not taken
from this SDK's output. Timestamps are left out of the comparisons.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ENV_YAML = """\
protocol_version: 1.1.0
task_id: t0000001
run_training: {training}
run_mining: {mining}
run_infer: {infer}
manifest_file: /img-man/manifest.yaml
input:
  root_dir: {w}/in
  assets_dir: {w}/in/assets
  annotations_dir: {w}/in/annotations
  models_dir: {w}/in/models
  config_file: {w}/in/config.yaml
  training_index_file: {w}/in/train-index.tsv
  val_index_file: {w}/in/val-index.tsv
  candidate_index_file: {w}/in/candidate-index.tsv
output:
  root_dir: {w}/out
  models_dir: {w}/out/models
  tensorboard_dir: {w}/out/tensorboard
  training_result_file: {w}/out/models/result.yaml
  mining_result_file: {w}/out/result.tsv
  infer_result_file: {w}/out/infer-result.json
  monitor_file: {w}/out/monitor.txt
  executor_log_file: {w}/out/ymir-executor-out.log
"""

CONFIG_YAML = """\
class_names: [person, cat]
gpu_id: '0'
gpu_count: 1
task_id: t0000001
epochs: 3
batch_size_per_gpu: 4
sync_bn: {sync_bn}
ymir_saved_file_patterns: '{patterns}'
"""


def _work_dir(
    tmp_path: Path,
    *,
    training: bool = True,
    mining: bool = False,
    infer: bool = False,
    sync_bn: str = "true",
    patterns: str = "",
) -> Path:
    w = tmp_path / "w"
    (w / "in").mkdir(parents=True)
    (w / "out" / "models").mkdir(parents=True)
    (w / "in" / "env.yaml").write_text(
        ENV_YAML.format(w=w, training=str(training).lower(), mining=str(mining).lower(), infer=str(infer).lower())
    )
    (w / "in" / "config.yaml").write_text(CONFIG_YAML.format(sync_bn=sync_bn, patterns=patterns))
    return w


def _run(w: Path, code: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {
        "DEFAULT_ENV_FILE_PATH": str(w / "in" / "env.yaml"),
        "DEFAULT_CONFIG_FILE_PATH": "/nonexistent/config.yaml",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(w),
    }
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, cwd=str(w), timeout=120
    )


def _result(w: Path) -> dict:
    return yaml.safe_load((w / "out" / "models" / "result.yaml").read_text())


def _without_timestamps(result: dict) -> dict:
    out = dict(result)
    out["model_stages"] = {
        k: {kk: (sorted(vv) if kk == "files" else vv) for kk, vv in v.items() if kk != "timestamp"}
        for k, v in result["model_stages"].items()
    }
    return out


def _monitor_fields(w: Path):
    return (w / "out" / "monitor.txt").read_text().splitlines()[0].split("\t")


YOLOV5_TRAINING = """
import os
from ymir_exc.util import (YmirStage, find_free_port, get_bool, get_merged_config, write_ymir_monitor_process,
                           write_ymir_training_result)

cfg = get_merged_config()
port = find_free_port()
sync_bn = get_bool(cfg, key="sync_bn", default_value=False)
print("port", port, "sync_bn", sync_bn, "epochs", cfg.param.epochs, cfg.param.get("missing", "dflt"))
models_dir = cfg.ymir.output.models_dir
os.makedirs(os.path.join(models_dir, "weights"), exist_ok=True)
for f in ("opt.yaml", "results.csv"):
    open(os.path.join(models_dir, f), "w").write(f)
for epoch in range(cfg.param.epochs):
    for i in range(30):
        write_ymir_monitor_process(cfg, task="training", naive_stage_percent=(epoch * 30 + i + 1) / 90,
                                   stage=YmirStage.TASK)
    for f in ("best.pt", "last.pt"):
        open(os.path.join(models_dir, "weights", f), "w").write(f"{f} {epoch}")
    write_ymir_training_result(cfg, map50=[0.2, 0.5, 0.4][epoch], id=str(epoch),
                               files=[os.path.join(models_dir, "weights", "best.pt")])
write_ymir_training_result(cfg, map50=0, id="last", files=[])
"""


def test_yolov5_style_training_writes_what_upstream_writes(tmp_path):
    w = _work_dir(tmp_path, sync_bn="true")
    proc = _run(w, YOLOV5_TRAINING)
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.split()
    assert words[0] == "port" and 0 < int(words[1]) < 65536
    # config.yaml comes from env.yaml's input.config_file (DEFAULT_CONFIG_FILE_PATH points nowhere)
    assert words[2:] == ["sync_bn", "True", "epochs", "3", "dflt"]
    # upstream: a numeric id names the stage stage_<id>; weights/best.pt (a sub folder) is copied
    # to the models dir under its basename; files=[] is every file directly in the models dir
    # (here: the copied best.pt, opt.yaml, results.csv; result.yaml is not a stage file);
    # map50=0 is a metric; best = max of (mAP, timestamp) -> stage_1; top-level mAP = the best's
    expected = {
        "best_stage_name": "stage_1",
        "mAP": 0.5,
        "model_stages": {
            "stage_0": {"stage_name": "stage_0", "files": ["best.pt"], "mAP": 0.2},
            "stage_1": {"stage_name": "stage_1", "files": ["best.pt"], "mAP": 0.5},
            "stage_2": {"stage_name": "stage_2", "files": ["best.pt"], "mAP": 0.4},
            "last": {"stage_name": "last", "files": ["best.pt", "opt.yaml", "results.csv"], "mAP": 0.0},
        },
    }
    assert _without_timestamps(_result(w)) == expected
    assert (w / "out" / "models" / "best.pt").read_text() == "best.pt 2"  # the last epoch's copy
    # progress: task stage at p = 1 -> 0.00001 + 0.99998 * 1 = 1.00 (running, code 0)
    assert _monitor_fields(w)[2:] == ["1.00", "2", "0"]


def test_mmdet_style_training_with_saved_file_patterns(tmp_path):
    # users keep only some files: ymir_saved_file_patterns (comma-separated re.search patterns)
    w = _work_dir(tmp_path, sync_bn="False", patterns="best_, \\.py$")
    code = """
    import os
    from ymir_exc.util import get_bool, get_merged_config, write_ymir_training_result
    cfg = get_merged_config()
    assert get_bool(cfg, key="sync_bn", default_value=True) is False
    d = cfg.ymir.output.models_dir
    for f in ("best_bbox_mAP_epoch_2.pth", "epoch_2.pth", "latest.pth", "cfg.py", "20221101.log.json"):
        open(os.path.join(d, f), "w").write(f)
    write_ymir_training_result(cfg, map50=0.31, id="epoch_2", files=[os.path.join(d, "epoch_2.pth")])
    write_ymir_training_result(cfg, map50=0.31, id="last", files=[])
    """
    proc = _run(w, code)
    assert proc.returncode == 0, proc.stderr
    # epoch_2.pth matches no pattern: no stage epoch_2 (and a warning says so); "last" keeps the
    # files directly in the models dir that match: best_bbox_mAP_epoch_2.pth and cfg.py
    assert "epoch_2" in proc.stderr and "no file left" in proc.stderr
    assert _without_timestamps(_result(w)) == {
        "best_stage_name": "last",
        "mAP": 0.31,
        "model_stages": {"last": {"stage_name": "last", "files": ["best_bbox_mAP_epoch_2.pth", "cfg.py"], "mAP": 0.31}},
    }


def test_segmentation_demo_infer_result_is_written_as_given(tmp_path):
    w = _work_dir(tmp_path, training=False, infer=True)
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 2}],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "cat"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "iscrowd": 0,
                "area": 3,
                "segmentation": {"size": [2, 4], "counts": [1, 3, 4]},
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 2,
                "iscrowd": 0,
                "area": 2,
                "segmentation": {"size": [2, 4], "counts": "0240"},
            },
        ],
    }
    code = f"""
    from ymir_exc import result_writer as rw
    rw.write_infer_result(infer_result={coco!r}, algorithm="segmentation")
    """
    proc = _run(w, code)
    assert proc.returncode == 0, proc.stderr
    # upstream: json.dump(infer_result) as it is
    assert json.loads((w / "out" / "infer-result.json").read_text()) == coco


def test_detection_infer_as_the_demos_write_it(tmp_path):
    w = _work_dir(tmp_path, training=False, infer=True)
    code = """
    from ymir_exc import result_writer as rw
    x1, y1, x2, y2 = 10.2, 20.9, 40.7, 60.1
    ann = rw.Annotation(class_name="cat", score=0.8, box=rw.Box(x=round(x1), y=round(y1), w=round(x2 - x1),
                                                                h=round(y2 - y1)))
    trunc = rw.Annotation(class_name="person", score="0.5", box=rw.Box(x=1.9, y=2.9, w=3.9, h="4"))
    flat = rw.Annotation(class_name="person", score=0.1, box=rw.Box(x=0, y=0, w=0, h=5))
    rw.write_infer_result(infer_result={"/in/assets/ab/a.jpg": [ann, trunc, flat], "/in/assets/cd/b.jpg": []})
    """
    proc = _run(w, code)
    assert proc.returncode == 0, proc.stderr
    # upstream: {"detection": {basename: {"boxes": [...]}}}, pydantic 1 int(): 1.9 -> 1; the
    # zero-width box is dropped at write time (an allowed difference), with a warning
    assert json.loads((w / "out" / "infer-result.json").read_text()) == {
        "detection": {
            "a.jpg": {
                "boxes": [
                    {"class_name": "cat", "score": 0.8, "box": {"x": 10, "y": 21, "w": 31, "h": 39}},
                    {"class_name": "person", "score": 0.5, "box": {"x": 1, "y": 2, "w": 3, "h": 4}},
                ]
            },
            "b.jpg": {"boxes": []},
        }
    }
    assert "dropped 1 box" in proc.stderr


@pytest.mark.parametrize("code", [300002, 300103])
def test_sample_app_error_code_is_what_monitor_ends_with(tmp_path, code):
    w = _work_dir(tmp_path)
    proc = _run(
        w,
        f"""
    from ymir_exc import monitor
    from ymir_exc.code import ExecutorReturnCode, ExecutorState
    monitor.write_monitor_logger(percent=0.3)
    try:
        raise ValueError("bad dataset")
    except ValueError:
        monitor.write_monitor_logger(percent=0.3, state=ExecutorState.ES_ERROR, return_code={code})
        raise
    """,
    )
    assert proc.returncode != 0 and "bad dataset" in proc.stderr
    assert _monitor_fields(w)[2:] == ["0.30", "4", str(code)]


def test_sample_app_error_code_survives_the_typed_executor_wrapper(tmp_path):
    w = _work_dir(tmp_path)
    proc = _run(
        w,
        """
    from ymir_exc import monitor
    from ymir_exc.code import ExecutorReturnCode, ExecutorState
    from ymir_exc.executor import Executor
    def train(cfg):
        monitor.write_monitor_logger(0.4, ExecutorState.ES_ERROR, ExecutorReturnCode.RC_EXEC_NO_GPU)
        raise RuntimeError("boom")
    Executor(training=train).main()
    """,
    )
    assert proc.returncode == 1
    assert _monitor_fields(w)[2:] == ["0.40", "4", "300102"]


def test_progress_dozens_of_times_per_epoch_maps_as_upstream(tmp_path):
    w = _work_dir(tmp_path)
    proc = _run(
        w,
        """
    from ymir_exc.util import YmirStage, get_merged_config, write_ymir_monitor_process
    cfg = get_merged_config()
    for i in range(60):
        write_ymir_monitor_process(cfg, task="training", naive_stage_percent=i / 100, stage=YmirStage.TASK)
    """,
    )
    assert proc.returncode == 0, proc.stderr
    # last call p = 0.59: 0.00001 + 0.99998 * 0.59 = 0.58999... -> "0.59", running, code 0
    assert _monitor_fields(w)[:1] == ["t0000001"] and _monitor_fields(w)[2:] == ["0.59", "2", "0"]


def test_mining_then_infer_progress_halves(tmp_path):
    w = _work_dir(tmp_path, training=False, mining=True, infer=True)
    proc = _run(
        w,
        """
    from ymir_exc import monitor
    from ymir_exc.util import YmirStage, get_merged_config, write_ymir_monitor_process
    cfg = get_merged_config()
    write_ymir_monitor_process(cfg, task="mining", naive_stage_percent=1.0, stage=YmirStage.POSTPROCESS)
    print(open(cfg.ymir.output.monitor_file).read().split()[2])
    monitor.write_monitor_logger_for_multiple_tasks(cfg, "infer", percent=0.5)
    """,
    )
    assert proc.returncode == 0, proc.stderr
    # mining (first of "tmi") maps to [0, 0.5]: 1.0 -> 0.50; infer to [0.5, 1]: 0.5 -> 0.75
    assert proc.stdout.split() == ["0.50"]
    assert _monitor_fields(w)[2:] == ["0.75", "2", "0"]


def test_config_access_and_mutation_as_executors_do(tmp_path):
    w = _work_dir(tmp_path, training=False, mining=True)
    proc = _run(
        w,
        """
    from ymir_exc import env
    from ymir_exc.util import get_merged_config
    cfg = get_merged_config()
    print(cfg.param.class_names, cfg.param.get("batch_size_per_gpu"), cfg.param.get("nothing", 7))
    print(cfg.ymir.input.models_dir.endswith("/in/models"), cfg.ymir.output.root_dir.endswith("/out"))
    cfg.param.batch_size_per_gpu = 1          # mutation of cfg (EasyDict attribute)
    cfg.ymir.run_infer = True                 # and of the env object
    e = env.get_current_env()
    e.run_mining = False
    cur = env.get_current_env()
    print(cur.run_infer, cur.run_mining, get_merged_config().param.batch_size_per_gpu)
    """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["['person', 'cat'] 4 7", "True True", "False True 4"]


# ------------------------------------------------------------------ the harness runs upstream executors


def test_ymir_exc_run_accepts_an_upstream_executor_ending_running_at_1(tmp_path, capsys):
    # every upstream start.py ends with monitor.write_monitor_logger(percent=1.0): state 2 at 1.00,
    # then exit 0, which the platform marks done; `ymir-exc run` must agree with `verify`
    from conftest import REPO

    from ymir_exc.cli import main
    from ymir_exc.harness.runtime import parse_monitor

    rc = main(
        [
            "run",
            str(REPO / "tests/fixtures/executors/upstream-style"),
            "--work-dir",
            str(tmp_path / "w"),
            "--model-location",
            str(tmp_path / "store"),
            "--quiet",
        ]
    )
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    mon = parse_monitor((tmp_path / "w" / "out" / "monitor.txt").read_text())
    assert (mon.state, mon.percent, mon.return_code) == (2, 1.0, 0)
    assert "pack success" in out.out


@pytest.mark.parametrize(
    "line,exit_code,problem",
    [
        ("t1\t{t}\t1.00\t3\t0\n", 0, None),  # done
        ("t1\t{t}\t0.40\t3\t0\n", 0, None),  # done (the state says so) at any percent
        ("t1\t{t}\t1.00\t2\t0\n", 0, None),  # upstream's end: running at 1.00, exit 0
        ("t1\t{t}\t0.50\t2\t0\n", 0, "state 2 at percent 0.50"),
        ("t1\t{t}\t1.00\t2\t0\n", 1, "after exit status 1"),
        ("t1\t{t}\t1.00\t4\t300001\n", 0, "state 4"),
        ("garbage", 0, "not a monitor file"),
    ],
)
def test_collect_monitor_check_accepts_running_at_1_and_exit_0_only(tmp_path, line, exit_code, problem):
    import time

    from ymir_exc.env import EnvConfig
    from ymir_exc.harness import collect
    from ymir_exc.harness.workspace import env_yaml

    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    env = EnvConfig.model_validate(env_yaml(["training"], "t1", "1.1.0", str(tmp_path / "in"), str(tmp_path / "out")))
    (tmp_path / "out" / "monitor.txt").write_text(line.replace("{t}", str(time.time())))
    problems = collect.check_monitor(env, "t1", exit_code)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems


# ------------------------------------------------------------------ calls real executors make that upstream accepts

MMDET_HOOK = """
import os
from ymir_exc.util import get_merged_config, write_ymir_training_result
cfg = get_merged_config()
d = cfg.ymir.output.models_dir
open(os.path.join(d, "best_bbox_mAP_epoch_3.pth"), "w").write("w")
# every COCO metric of mmdet's evaluation, passed through; -1.0 = no object of that size
write_ymir_training_result(cfg, files=[os.path.join(d, "best_bbox_mAP_epoch_3.pth")], id="best",
                           evaluation_result={"mAP": 0.201, "mAP_50": 0.45, "mAP_75": 0.18, "mAP_s": -1.0,
                                              "mAP_m": 0.25, "mAP_l": -1.0})
"""


def test_mmdet_hook_passes_coco_minus_one_for_absent_sizes(tmp_path):
    w = _work_dir(tmp_path)
    proc = _run(w, MMDET_HOOK)
    assert proc.returncode == 0, proc.stderr
    # upstream: the stage is {stage_name, files, timestamp, **evaluation_result}; best = the only
    # stage; top-level mAP = its mAP; -1.0 is written as given
    assert _without_timestamps(_result(w)) == {
        "best_stage_name": "best",
        "mAP": 0.201,
        "model_stages": {
            "best": {
                "stage_name": "best",
                "files": ["best_bbox_mAP_epoch_3.pth"],
                "mAP": 0.201,
                "mAP_50": 0.45,
                "mAP_75": 0.18,
                "mAP_s": -1.0,
                "mAP_m": 0.25,
                "mAP_l": -1.0,
            }
        },
    }
    # and the harness's check of result.yaml (what `ymir-exc run` collects) agrees
    from ymir_exc.env import parse_env_file
    from ymir_exc.harness import collect
    from ymir_exc.harness.models import ModelStore

    store = ModelStore(tmp_path / "store")
    rep = collect.collect_training(
        parse_env_file(str(w / "in" / "env.yaml")), {"class_names": ["person", "cat"]}, "mmdet", store
    )
    assert rep.problems == [] and rep.best_stage_name == "best" and rep.mAP == 0.201
    # the model package keeps the -1 (ymir-info.yaml validates it the same way)
    stage = store.get(rep.model_hash).info.stages["best"].evaluation_result()
    assert (stage["mAP"], stage["mAP_s"], stage["mAP_l"]) == (0.201, -1.0, -1.0)


@pytest.mark.parametrize(
    "metrics,key",
    [
        ({"mAP": -1.0, "mAP_50": 0.4}, "mAP"),  # the primary metric
        ({"maskAP": -1.0, "mAP": 0.3}, "maskAP"),  # primary: maskAP
        ({"mAP": 0.2, "mAP_s": -0.5}, "mAP_s"),  # only exactly -1
        ({"mAP": 0.2, "mAP_s": 1.5}, "mAP_s"),
    ],
)
def test_minus_one_is_only_accepted_for_non_primary_metrics(tmp_path, metrics, key):
    w = _work_dir(tmp_path)
    proc = _run(
        w,
        f"""
    from ymir_exc import result_writer as rw
    from ymir_exc.errors import ResultError
    open({str(w / "out" / "models" / "m.pth")!r}, "w").write("w")
    try:
        rw.write_model_stage("best", ["m.pth"], evaluation_result={metrics!r})
    except ResultError as e:
        print("ResultError", e.key)
    """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ResultError", f"model_stages.best.{key}"]
    assert not (w / "out" / "models" / "result.yaml").exists()


def test_yolov5_passes_best_fitness_as_a_one_element_array(tmp_path):
    w = _work_dir(tmp_path)
    proc = _run(
        w,
        """
    import os
    import numpy as np
    from ymir_exc.util import get_merged_config, write_ymir_training_result
    cfg = get_merged_config()
    d = cfg.ymir.output.models_dir
    open(os.path.join(d, "best.pt"), "w").write("w")
    # YOLOv5 train.py: fi = fitness(np.array(results).reshape(1, -1)); best_fitness = fi (shape (1,))
    best_fitness = np.array([0.4, 0.5, 0.6, 0.3]).reshape(1, -1)[:, [2]].sum(1)
    assert best_fitness.shape == (1,)
    write_ymir_training_result(cfg, map50=best_fitness, id="best", files=[os.path.join(d, "best.pt")])
    write_ymir_training_result(cfg, map50=np.array(0.25), id="last", files=[os.path.join(d, "best.pt")])
    """,
    )
    assert proc.returncode == 0, proc.stderr
    # upstream (PyYAML of a size-1 array aside) means the number: mAP 0.6 and 0.25; best = 0.6
    assert _without_timestamps(_result(w)) == {
        "best_stage_name": "best",
        "mAP": 0.6,
        "model_stages": {
            "best": {"stage_name": "best", "files": ["best.pt"], "mAP": 0.6},
            "last": {"stage_name": "last", "files": ["best.pt"], "mAP": 0.25},
        },
    }


@pytest.mark.parametrize("weights", ["[0.1, 0.8, 0.1]", "(0.1, 0.8, 0.1)", "YmirStageWeight([0.1, 0.8, 0.1])"])
def test_stage_weights_given_as_a_list(tmp_path, weights):
    w = _work_dir(tmp_path)
    proc = _run(
        w,
        f"""
    from ymir_exc.util import (YmirStage, YmirStageWeight, get_merged_config, get_ymir_process,
                               write_ymir_monitor_process)
    cfg = get_merged_config()
    print(round(get_ymir_process(YmirStage.POSTPROCESS, 0.5, weights={weights}), 6))
    write_ymir_monitor_process(cfg, task="training", naive_stage_percent=0.5, stage=YmirStage.TASK,
                               stage_weights={weights})
    """,
    )
    assert proc.returncode == 0, proc.stderr
    # postprocess at 0.5: 0.1 + 0.8 + 0.1 * 0.5 = 0.95; task at 0.5: 0.1 + 0.8 * 0.5 = 0.50
    assert proc.stdout.split() == ["0.95"]
    assert _monitor_fields(w)[2:] == ["0.50", "2", "0"]


def test_bad_stage_weights_are_refused(tmp_path):
    w = _work_dir(tmp_path)
    proc = _run(
        w,
        """
    from ymir_exc.util import YmirStage, get_merged_config, write_ymir_monitor_process
    cfg = get_merged_config()
    for bad in ([0.5, 0.8, 0.1], [0.5, 0.5], "0.1,0.8,0.1"):
        try:
            write_ymir_monitor_process(cfg, task="training", naive_stage_percent=0.5, stage="task", stage_weights=bad)
        except ValueError as e:
            print("ValueError")
    """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ValueError"] * 3
    assert not (w / "out" / "monitor.txt").exists()


def test_unknown_infer_algorithm_is_a_named_error(tmp_path):
    w = _work_dir(tmp_path, training=False, infer=True)
    proc = _run(
        w,
        """
    from ymir_exc import result_writer as rw
    from ymir_exc.errors import ResultError
    try:
        rw.write_infer_result({"/in/a.jpg": []}, algorithm="foo")
    except ResultError as e:
        print(e.key, "|", e)
    """,
    )
    assert proc.returncode == 0, proc.stderr
    # upstream: assert algorithm in ['classification', 'detection', 'segmentation']
    key, _, msg = proc.stdout.partition(" | ")
    assert key == "algorithm" and "'foo'" in msg
    assert all(a in msg for a in ("classification", "detection", "segmentation"))
    assert not (w / "out" / "infer-result.json").exists()


# ------------------------------------------------------------------ harness: --model latest, verify's warnings


def _pack_foreign(store_dir: Path, executor: str, mtime: float) -> str:
    """A valid package produced by ``executor``, stored with modification time ``mtime``."""
    from ymir_exc.harness.models import ModelStore, build_info

    f = store_dir.parent / f"{executor}.bin"
    f.write_bytes(executor.encode())
    info = build_info(
        {"class_names": ["tree"]},
        {"executor": executor},
        {"s1": {"stage_name": "s1", "files": ["w.bin"], "timestamp": 1, "mAP": 0.5}},
        "s1",
    )
    h = ModelStore(store_dir).pack([("s1/w.bin", str(f))], info)
    os.utime(store_dir / h, (mtime, mtime))
    return h


def test_model_latest_prefers_the_executors_own_newest_package(tmp_path, capsys):
    from conftest import REPO

    from ymir_exc.cli import main
    from ymir_exc.harness.models import ModelStore

    store = tmp_path / "store"
    up = str(REPO / "tests/fixtures/executors/upstream-style")
    assert main(["run", up, "--work-dir", str(tmp_path / "train"), "--model-location", str(store), "--quiet"]) == 0
    own = ModelStore(store).resolve("latest").name
    foreign = _pack_foreign(store, "other-exec", (store / own).stat().st_mtime + 60)  # newer, another executor
    assert ModelStore(store).resolve("latest").name == foreign  # the newest overall
    assert ModelStore(store).resolve_latest("upstream-style") == (store / own, True)
    assert ModelStore(store).resolve_latest("nobody") == (store / foreign, False)
    capsys.readouterr()
    # mining with the foreign package would fail (it holds no model.json): latest must be the own one
    rc = main(
        [
            "run",
            up,
            "--task",
            "mining",
            "--model",
            "latest",
            "--work-dir",
            str(tmp_path / "mine"),
            "--model-location",
            str(store),
            "--quiet",
        ]
    )
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    assert "note:" not in out.err
    assert json.loads((tmp_path / "mine" / "ymir-exc-run.json").read_text())["exit_status"] == 0
    assert (tmp_path / "mine" / "in" / "models" / "epoch_20" / "model.json").is_file()


def test_model_latest_falls_back_to_the_newest_of_any_executor_with_a_note(tmp_path, capsys):
    from ymir_exc.cli import _latest_of
    from ymir_exc.harness.models import ModelStore

    store = tmp_path / "store"
    old = _pack_foreign(store, "exec-a", 1_000_000)
    new = _pack_foreign(store, "exec-b", 2_000_000)
    s = ModelStore(store)
    assert _latest_of(s, "latest@s1", "exec-a") == f"{old}@s1"  # its own, though older
    assert capsys.readouterr().err == ""
    assert _latest_of(s, "latest", "exec-c") == new  # none of its own: the newest
    err = capsys.readouterr().err
    assert "note:" in err and "exec-c" in err and new[:12] in err and "exec-b" in err
    assert _latest_of(s, old[:8], "exec-c") == old[:8]  # other refs pass through


def test_verify_reports_missing_tensorboard_logs_as_a_warning(tmp_path, capsys):
    import shutil

    from conftest import REPO

    from ymir_exc.cli import main

    ex = tmp_path / "no-tb"
    shutil.copytree(REPO / "tests/fixtures/executors/upstream-style", ex)
    start = ex / "app" / "start.py"
    text = start.read_text()
    assert "writer.add_scalar(" in text
    start.write_text(
        text.replace("    writer = SummaryWriter(log_dir=cfg.ymir.output.tensorboard_dir)\n", "")
        .replace('    writer.add_scalar("mean_w", mean_w, 0)\n', "")
        .replace("    writer.close()\n", "")
    )
    rc = main(["verify", str(ex), "--work-dir", str(tmp_path / "v"), "--quiet", "--no-crash", "--json"])
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert rc == 0 and doc["failed"] == 0 and doc["warnings"] == 1, doc
    # the table (on stderr with --json) shows it as a warning, and the summary line counts it
    row = next(line for line in out.err.splitlines() if "tensorboard logs present" in line)
    assert "WARN" in row and "FAIL" not in row
    assert f"{doc['passed']} passed, 0 failed, 1 warning(s)" in out.err
    tb = [c for c in doc["checks"] if c["check"] == "tensorboard logs present"]
    assert [(c["ok"], c["status"]) for c in tb] == [(False, "WARN")] and "0 file(s)" in tb[0]["detail"]
    assert all(c["status"] == "PASS" for c in doc["checks"] if c["check"] != "tensorboard logs present")
