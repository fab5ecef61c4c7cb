"""Unit tests of det-demo-tmi's colour-window detector (det-demo-tmi/app/demo_model.py), plus one
end-to-end run of det-demo-tmi/app/start.py on a synthetic workspace."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "det-demo-tmi" / "app"
sys.path.insert(0, str(APP))

import demo_model as dm  # noqa: E402

from ymir_exc.errors import AnnotationError, ConfigFileError, ImageError, ModelError  # noqa: E402

BROWN = (120, 80, 40)
GREEN = (40, 160, 50)
BLUE = (40, 60, 200)


def make_image(path: Path, seed: int, size=(128, 128), colours=(GREEN,), n=3):
    """Brown noisy background with ``n`` non-overlapping squares per colour; returns the boxes
    ``(class_id, x, y, w, h)`` (class_id = index into ``colours``)."""
    rng = np.random.default_rng(seed)
    w, h = size
    a = np.empty((h, w, 3), dtype=np.float64)
    a[:] = BROWN
    a += rng.normal(0, 8, a.shape)
    boxes, taken = [], np.zeros((h, w), bool)
    for cid, colour in enumerate(colours):
        placed = 0
        while placed < n:
            s = int(rng.integers(18, 30))
            x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
            if taken[max(0, y - 4) : y + s + 4, max(0, x - 4) : x + s + 4].any():
                continue
            taken[y : y + s, x : x + s] = True
            a[y : y + s, x : x + s] = colour + rng.normal(0, 8, (s, s, 3))
            boxes.append((cid, x, y, s, s))
            placed += 1
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path)
    return boxes


def make_items(tmp_path: Path, n_images: int, seed0: int, **kw):
    items = []
    for i in range(n_images):
        p = tmp_path / f"img_{seed0}_{i}.png"
        items.append((str(p), make_image(p, seed0 + i, **kw)))
    return items


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("squares")
    train = make_items(tmp, 6, 100)
    val = make_items(tmp, 3, 200)
    trainer = dm.Trainer(train, val, ["tree"], dm.HyperParams(epochs=5, iters_per_epoch=10))
    history = []
    for _ in range(5):
        loss = trainer.run_epoch()
        history.append((loss, trainer.evaluate(conf_threshold=0.01)))
    return trainer, history, val


# ----------------------------------------------------------------------------- training


def test_training_loss_falls_and_finds_the_squares(trained):
    trainer, history, _ = trained
    losses = [h[0] for h in history]
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    assert losses[0] < math.log(2)  # below the loss of w = 0
    assert history[-1][1]["mAP"] >= 0.8, history[-1][1]
    assert trainer.class_data[0].n_pos > 0


def test_training_is_deterministic(tmp_path, trained):
    trainer, _, _ = trained
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    trainer.model().save(str(a))
    again = dm.Trainer(*_same_data(trained), ["tree"], dm.HyperParams(epochs=5, iters_per_epoch=10))
    for _ in range(5):
        again.run_epoch()
    again.model().save(str(b))
    assert a.read_bytes() == b.read_bytes()


def _same_data(trained):
    trainer, _, _ = trained
    train = [(img.path, gts) for img, gts in zip(trainer.train_imgs, trainer.train_gts, strict=False)]
    val = [(img.path, gts) for img, gts in zip(trainer.val_imgs, trainer.val_gts, strict=False)]
    return train, val


def test_training_without_boxes_is_an_error(tmp_path):
    p = tmp_path / "empty.png"
    make_image(p, 1, n=0)
    with pytest.raises(AnnotationError, match="no box"):
        dm.Trainer([(str(p), [])], [], ["tree"], dm.HyperParams(epochs=1))


def test_multi_class(tmp_path):
    train = make_items(tmp_path, 6, 300, colours=(GREEN, BLUE), n=2)
    val = make_items(tmp_path, 3, 400, colours=(GREEN, BLUE), n=2)
    trainer = dm.Trainer(train, val, ["green", "blue"], dm.HyperParams(epochs=3, iters_per_epoch=10))
    for _ in range(3):
        trainer.run_epoch()
    m = trainer.evaluate(conf_threshold=0.01)
    assert len(m["ap"]) == 2 and all(a is not None and a >= 0.8 for a in m["ap"]), m
    model = trainer.model()
    dets = model.detect(val[0][0], conf_threshold=0.2, nms_iou=0.3, max_det=100)
    assert {d[0] for d in dets} == {0, 1}
    # the green model scores the green squares higher than the blue ones, and vice versa
    gt = val[0][1]
    for c in (0, 1):
        mine = [g for g in gt if g[0] == c]
        best = max((d for d in dets if d[0] == c), key=lambda d: d[1])
        assert max(dm.iou_matrix(np.array(best[2:], float), np.array([g[1:] for g in mine], float))[0]) > 0.3


# ----------------------------------------------------------------------------- inference


def test_inference_boxes_are_ints_inside_the_image(tmp_path, trained):
    trainer, _, _ = trained
    model = trainer.model()
    p = tmp_path / "odd.png"
    boxes = make_image(p, 7, size=(130, 97))
    dets = model.detect(str(p), conf_threshold=0.0, nms_iou=0.3, max_det=100)
    assert 0 < len(dets) <= 100
    scores = [d[1] for d in dets]
    assert scores == sorted(scores, reverse=True)
    for c, s, x, y, w, h in dets:
        assert c == 0 and 0.0 <= s <= 1.0
        assert all(type(v) is int for v in (x, y, w, h))
        assert 0 <= x and 0 <= y and w >= 1 and h >= 1 and x + w <= 130 and y + h <= 97
    # the best detection is on a square
    gt = np.array([b[1:] for b in boxes], float)
    assert dm.iou_matrix(np.array(dets[0][2:], float), gt).max() >= 0.5


def test_save_load_round_trip(tmp_path, trained):
    trainer, _, val = trained
    model = trainer.model()
    path = tmp_path / "m.json"
    model.save(str(path))
    loaded = dm.DemoModel.load(str(path))
    assert loaded.class_names == ["tree"]
    a = model.detect(val[0][0], 0.05, 0.3, 50)
    b = loaded.detect(val[0][0], 0.05, 0.3, 50)
    assert a == b
    d = json.loads(path.read_text())
    assert d["format"] == dm.MODEL_FORMAT and len(d["classes"][0]["llr"]) == dm.NUM_BINS


def test_load_bad_model(tmp_path):
    with pytest.raises(ModelError):
        dm.DemoModel.load(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(ModelError):
        dm.DemoModel.load(str(bad))
    bad.write_text("not json")
    with pytest.raises(ModelError):
        dm.DemoModel.load(str(bad))


def test_unreadable_image_is_an_image_error(tmp_path):
    p = tmp_path / "broken.jpg"
    p.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(ImageError) as e:
        dm.load_image(str(p), 4)
    assert e.value.path == str(p)
    with pytest.raises(ImageError):
        dm.load_image(str(tmp_path / "missing.jpg"), 4)


# ----------------------------------------------------------------------------- evaluation

GT2 = [[(0, 0, 0, 10, 10), (0, 50, 50, 10, 10)]]


def test_ap_perfect_detections():
    dets = [[(0, 0.9, 0, 0, 10, 10), (0, 0.8, 50, 50, 10, 10)]]
    m = dm.evaluate(dets, GT2, 1)
    assert m["mAP"] == 1.0 and m["mAR"] == 1.0 and (m["tp"], m["fp"], m["fn"]) == (2, 0, 0)


def test_ap_no_detections():
    m = dm.evaluate([[]], GT2, 1)
    assert m["mAP"] == 0.0 and (m["tp"], m["fp"], m["fn"]) == (0, 0, 2)


def test_ap_one_of_two_found_after_a_false_positive():
    # ranked: FP (0.9) -> precision 0, recall 0; TP (0.8) -> precision 1/2, recall 1/2.
    # all-point AP = (0.5 - 0) * max precision at recall >= 0.5 = 0.5 * 0.5 = 0.25
    dets = [[(0, 0.9, 100, 100, 10, 10), (0, 0.8, 0, 0, 10, 10)]]
    m = dm.evaluate(dets, GT2, 1)
    assert m["mAP"] == pytest.approx(0.25)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 1) and m["mAR"] == 0.5


def test_ap_interpolation_and_duplicates():
    # TP (0.9), duplicate of the same box (0.8, FP), TP (0.7): recall .5 .5 1, precision 1 .5 2/3
    # AP = 0.5 * 1 + 0.5 * 2/3
    dets = [[(0, 0.9, 0, 0, 10, 10), (0, 0.8, 1, 1, 10, 10), (0, 0.7, 50, 50, 10, 10)]]
    m = dm.evaluate(dets, GT2, 1)
    assert m["mAP"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    # IoU below 0.5 is a miss; a detection of another class does not count
    assert dm.evaluate([[(0, 0.9, 5, 5, 10, 10)]], GT2, 1)["tp"] == 0
    two = dm.evaluate([[(1, 0.9, 0, 0, 10, 10)]], GT2, 2)
    assert two["ap"] == [0.0, None] and two["mAP"] == 0.0 and two["fp"] == 1


# ----------------------------------------------------------------------------- geometry


def test_nms_removes_the_overlapping_lower_score_box():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [30, 30, 10, 10]], float)
    keep = dm.nms(boxes, np.array([0.5, 0.9, 0.7]), iou_thr=0.3)
    assert keep.tolist() == [1, 2]
    assert dm.nms(boxes, np.array([0.5, 0.9, 0.7]), iou_thr=0.3, max_keep=1).tolist() == [1]
    # IoU(0, 1) = 81 / 119 = 0.68: kept when the threshold is above it
    assert dm.nms(boxes, np.array([0.5, 0.9, 0.7]), iou_thr=0.7).tolist() == [1, 2, 0]


def test_iou_matrix():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 10, 10], [20, 20, 5, 5], [0, 0, 10, 10]], float)
    assert dm.iou_matrix(a, b)[0].tolist() == pytest.approx([50 / 150, 0.0, 1.0])


def test_kmeans_anchors_deterministic_and_sorted():
    rng = np.random.default_rng(0)
    wh = np.concatenate([rng.normal(5, 0.5, (50, 2)), rng.normal(12, 1, (50, 2)), rng.normal(25, 2, (50, 2))])
    a = dm.kmeans_anchors(wh, 3)
    assert a.shape == (3, 2)
    assert np.allclose(a[:, 0], [5, 12, 25], atol=1.0)
    assert np.array_equal(a, dm.kmeans_anchors(wh, 3))
    assert dm.kmeans_anchors(np.array([[4.0, 6.0]]), 3).tolist() == [[4.0, 6.0]]
    # shapes come out sorted by area (not by width), duplicates removed
    a = dm.kmeans_anchors(np.array([[10.0, 10.0]] * 5 + [[12.0, 3.0]] * 5), 2)
    assert a.tolist() == [[12.0, 3.0], [10.0, 10.0]]
    assert dm.kmeans_anchors(np.array([[5.0, 5.0]] * 4), 3).tolist() == [[5.0, 5.0]]


def test_window_grid():
    win = dm.window_grid(10, 8, np.array([[4.2, 3.8], [3.9, 4.1], [20.0, 2.0]]), stride=2)
    sizes = sorted({(int(w), int(h)) for w, h in win[:, 2:]})
    assert sizes == [(4, 4), (10, 2)]  # (4, 4) once; the wide shape shrunk to the image width
    assert (win[:, 0] + win[:, 2] <= 10).all() and (win[:, 1] + win[:, 3] <= 8).all()
    assert len(win) == 4 * 3 + 1 * 4


def test_window_features_on_a_flat_square():
    llr = np.zeros((20, 20))
    llr[5:10, 5:10] = 1.0
    bright = np.full((20, 20), 0.5)
    f = dm.window_features(llr, bright, np.array([[5, 5, 5, 5], [0, 0, 5, 5]]))
    assert f.shape == (2, len(dm.FEATURE_NAMES))
    assert f[0, 0] == 1.0 and f[0, 1] == 0.0 and f[0, 2] == 1.0  # inside, ring, centre
    assert f[0, 3] == pytest.approx(0.0, abs=1e-7) and f[0, 4] == pytest.approx(0.5)
    assert f[1, 0] == 0.0 and f[1, 1] > 0.0  # the square is in the ring of the corner window
    assert f[0, 6] == pytest.approx(math.log(25))


def test_colour_llr():
    fg = np.zeros(dm.NUM_BINS)
    bg = np.zeros(dm.NUM_BINS)
    fg[3] = 10
    bg[7] = 10
    llr = dm.colour_llr(fg, bg)
    assert llr[3] == pytest.approx(math.log(11 / 522) - math.log(1 / 522))
    assert llr[7] == pytest.approx(-llr[3]) and llr[0] == 0.0


# ----------------------------------------------------------------------------- mining


def test_entropy_score():
    assert dm.entropy_score([]) == 0.0
    assert dm.entropy_score([(0, 0.5, 0, 0, 1, 1)]) == pytest.approx(math.log(2))
    p = 0.2
    h = -p * math.log(p) - (1 - p) * math.log(1 - p)
    assert dm.entropy_score([(0, 0.5, 0, 0, 1, 1), (0, p, 0, 0, 1, 1)]) == pytest.approx((math.log(2) + h) / 2)


def test_random_score(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    sa = dm.random_score(str(a))
    assert 0.0 <= sa < 1.0 and sa == dm.random_score(str(a))
    assert sa != dm.random_score(str(b)) and sa != dm.random_score(str(a), seed=1)
    with pytest.raises(ImageError):
        dm.random_score(str(tmp_path / "missing"))


# ----------------------------------------------------------------------------- hyper-parameters


def test_hyper_params():
    p = dm.MiningParams.from_config(
        {"downscale": "2", "learning_rate": 0.1, "mining_algorithm": "Random", "class_names": ["x"]}
    )
    assert (p.downscale, p.learning_rate, p.mining_algorithm, p.conf_threshold) == (2, 0.1, "random", 0.05)
    for key, bad in (
        ("downscale", 0),
        ("stride", 1.5),
        ("epochs", "many"),
        ("nms_iou", 2.0),
        ("mining_algorithm", "greedy"),
        ("max_det", True),
    ):
        with pytest.raises(ConfigFileError) as e:
            dm.HyperParams.from_config({key: bad})
        assert e.value.key == key


# ----------------------------------------------------------------------------- end to end


def _workspace(root: Path, task: str, train, val, cand, model=None):
    inp, out = root / "in", root / "out"
    for d in ("assets", "annotations", "models"):
        (inp / d).mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    def write_ark(items, name):
        lines = []
        for k, (img, boxes) in enumerate(items):
            ann = inp / "annotations" / f"{name}_{k}.txt"
            ann.write_text("".join(f"{c}, {x}, {y}, {x + w - 1}, {y + h - 1}\n" for c, x, y, w, h in boxes))
            lines.append(f"{img}\t{ann}\n")
        (inp / f"{name}-index.tsv").write_text("".join(lines))

    write_ark(train, "train")
    write_ark(val, "val")
    (inp / "candidate-index.tsv").write_text("".join(f"{p}\n" for p in cand))
    training = task == "training"
    env = {
        "protocol_version": "1.1.0",
        "task_id": "t1",
        "run_training": training,
        "run_mining": not training,
        "run_infer": not training,
        "input": {
            "root_dir": str(inp),
            "assets_dir": str(inp / "assets"),
            "annotations_dir": str(inp / "annotations"),
            "models_dir": str(inp / "models"),
            "config_file": str(inp / "config.yaml"),
            "training_index_file": str(inp / "train-index.tsv") if training else "",
            "val_index_file": str(inp / "val-index.tsv") if training else "",
            "candidate_index_file": "" if training else str(inp / "candidate-index.tsv"),
        },
        "output": {
            "root_dir": str(out),
            "models_dir": str(out / "models"),
            "tensorboard_dir": str(out / "tensorboard"),
            "training_result_file": str(out / "models" / "result.yaml"),
            "mining_result_file": str(out / "result.tsv"),
            "infer_result_file": str(out / "infer-result.json"),
            "monitor_file": str(out / "monitor.txt"),
            "executor_log_file": str(out / "ymir-executor-out.log"),
        },
    }
    (inp / "env.yaml").write_text(yaml.safe_dump(env))
    tpl = ROOT / "det-demo-tmi" / "img-man"
    cfg = {}
    for name in ["training"] if training else ["mining", "infer"]:
        cfg.update(yaml.safe_load((tpl / f"{name}-template.yaml").read_text()))
    cfg.update(
        {
            "class_names": ["tree"],
            "gpu_id": "",
            "gpu_count": 0,
            "task_id": "t1",
            "export_format": "det-ark:raw",
            "epochs": 3,
        }
    )
    if model:
        cfg["model_params_path"] = [model]
    (inp / "config.yaml").write_text(yaml.safe_dump(cfg))
    envvars = dict(
        os.environ, DEFAULT_ENV_FILE_PATH=str(inp / "env.yaml"), DEFAULT_CONFIG_FILE_PATH=str(inp / "config.yaml")
    )
    return out, envvars


def _run(envvars):
    return subprocess.run(
        [sys.executable, str(APP / "start.py")], env=envvars, capture_output=True, text=True, timeout=120
    )


def test_start_py_end_to_end(tmp_path):
    train = make_items(tmp_path, 5, 500)
    val = make_items(tmp_path, 2, 600)
    cand = [p for p, _ in val] + [p for p, _ in make_items(tmp_path, 1, 700)]
    out, envvars = _workspace(tmp_path / "t", "training", train, val, cand)
    r = _run(envvars)
    assert r.returncode == 0, r.stderr
    result = yaml.safe_load((out / "models" / "result.yaml").read_text())
    assert set(result["model_stages"]) == {"epoch_1", "epoch_2", "epoch_3"}
    best = result["best_stage_name"]
    assert result["mAP"] == result["model_stages"][best]["mAP"] > 0.3
    assert result["evaluate_config"] == {"iou_thr": 0.5, "conf_thr": 0.01}
    model = out / "models" / best / "demo_model.json"
    assert model.is_file()
    assert (out / "monitor.txt").read_text().split("\t")[2:] == ["1.00", "3", "0\n"]
    assert any((out / "tensorboard").iterdir())

    out2, envvars2 = _workspace(tmp_path / "mi", "mining+infer", train, val, cand, model=str(model))
    r = _run(envvars2)
    assert r.returncode == 0, r.stderr
    lines = (out2 / "result.tsv").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in lines) == sorted(cand)
    infer = json.loads((out2 / "infer-result.json").read_text())["detection"]
    assert set(infer) == {os.path.basename(p) for p in cand}
    for entry in infer.values():
        for b in entry["boxes"]:
            assert b["class_name"] == "tree" and all(isinstance(v, int) for v in b["box"].values())

    # no model: state 4 with the model error code, exit status 1
    out3, envvars3 = _workspace(tmp_path / "nomodel", "mining+infer", train, val, cand)
    r = _run(envvars3)
    assert r.returncode == 1
    first = (out3 / "monitor.txt").read_text().splitlines()[0].split("\t")
    assert first[3:] == ["4", "300004"]


def test_training_seed_picks_which_negatives_are_kept(tmp_path):
    """``seed`` shifts the every-n-th negative subsample when there are more than max_negatives."""
    train = make_items(tmp_path, 3, 300)
    w = {}
    for seed in (0, 1, 2):
        t = dm.Trainer(train, [], ["tree"], dm.HyperParams(epochs=1, iters_per_epoch=3, max_negatives=500, seed=seed))
        t.run_epoch()
        w[seed] = t.class_models[0].weights.copy()
    assert not np.allclose(w[0], w[1])
    same = dm.Trainer(train, [], ["tree"], dm.HyperParams(epochs=1, iters_per_epoch=3, max_negatives=500, seed=1))
    same.run_epoch()
    assert np.array_equal(same.class_models[0].weights, w[1])  # reproducible
    with pytest.raises(ConfigFileError, match="seed"):
        dm.HyperParams.from_config({"seed": -1})
