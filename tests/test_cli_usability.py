"""The harness as people use it, end to end through the ``ymir-exc`` command, run from folders
outside the repository: bundled executors by name, your own images (--source), predictions keyed
by your paths, init + verify, model packages packed by the platform, config checks, --json,
exit codes, temp dirs, and the loop's loop.json / --resume / --seeds / Ctrl-C."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from PIL import Image, ImageChops

from ymir_exc.harness.datasets import load_sample

SCRIPT = Path(sys.executable).with_name("ymir-exc")
SAMPLE_IMAGES = sorted(
    (Path(__file__).resolve().parents[1] / "ymir_exc" / "samples" / "trees" / "images").glob("*.jpg")
)


def ymir_exc(*args: str, cwd: Path, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """Run the installed ``ymir-exc`` command in ``cwd`` with a private TMPDIR."""
    argv = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "ymir_exc.cli"]
    full_env = dict(os.environ, TMPDIR=str(cwd / ".tmp"), **(env or {}))
    (cwd / ".tmp").mkdir(exist_ok=True)
    return subprocess.run(argv + list(args), cwd=cwd, env=full_env, capture_output=True, text=True, **kw)


def photos(folder: Path, n: int = 5) -> list[Path]:
    """``n`` real JPEGs from the sample under user-style names."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, src in enumerate(SAMPLE_IMAGES[40 : 40 + n]):
        dst = folder / f"holiday {i:02d}.jpg"
        shutil.copyfile(src, dst)
        out.append(dst)
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A folder outside the repo with a model of det-demo-tmi trained there (by name)."""
    root = tmp_path_factory.mktemp("user")
    proc = ymir_exc("run", "det-demo-tmi", "--set", "epochs=2", "--model-location", "models", "--quiet", cwd=root)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "pack success, model hash:" in proc.stdout
    return root


# ------------------------------------------------------------------ bundled executors, init


def test_bundled_executor_runs_by_name_outside_the_repo(home):
    assert not (home / "det-demo-tmi").exists()
    assert len([p for p in (home / "models").iterdir() if not p.name.startswith(".")]) == 1


def test_a_path_given_by_its_repo_location_runs_the_bundled_copy(tmp_path):
    proc = ymir_exc("run", "templates/det-yolo-tmi", "--dry-run", "--runtime", "local", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "det-yolo-tmi" in proc.stdout and "app/start.py" in proc.stdout


def test_a_wrong_executor_path_says_so_and_lists_the_bundled_names(tmp_path):
    for ref in ("./det-demo-tm", "det-demo-tm"):
        proc = ymir_exc("run", ref, cwd=tmp_path)
        assert proc.returncode == 2
        assert "no such executor folder" in proc.stderr and "did you mean 'det-demo-tmi'?" in proc.stderr
        assert "det-yolo-tmi" in proc.stderr and "docker" not in proc.stderr.split("bundled")[0]


def test_init_writes_an_executor_that_passes_verify(tmp_path):
    proc = ymir_exc("init", "my-exec", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    root = tmp_path / "my-exec"
    for rel in (
        "app/start.py",
        "img-man/manifest.yaml",
        "img-man/training-template.yaml",
        "img-man/mining-template.yaml",
        "img-man/infer-template.yaml",
        "Dockerfile",
    ):
        assert (root / rel).is_file(), rel
    # examples/minimal-tmi, byte for byte but for its name
    example = Path(__file__).resolve().parents[1] / "examples" / "minimal-tmi"
    for rel in ("app/start.py", "img-man/manifest.yaml", "img-man/training-template.yaml", "Dockerfile"):
        assert (root / rel).read_bytes() == (example / rel).read_bytes().replace(b"minimal-tmi", b"my-exec"), rel
    assert "Executor(MeanColour)" in (root / "app/start.py").read_text()
    assert (root / "README.md").read_text().startswith("# my-exec\n")
    dockerfile = (root / "Dockerfile").read_text()
    assert "FROM ${BASE_IMAGE}" in dockerfile and "ymir-exc-base" in dockerfile and "my-exec" in dockerfile
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    lint = subprocess.run([hadolint, str(root / "Dockerfile")], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    verify = ymir_exc("verify", "my-exec", "--quiet", "--json", cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    doc = json.loads(verify.stdout)
    assert doc["failed"] == 0 and doc["passed"] >= 30
    trained = [c for c in doc["checks"] if c["check"] == "result.yaml follows the contract"]
    assert trained and trained[0]["ok"]
    # the verify work dirs are gone from the temp dir
    assert not list((tmp_path / ".tmp").glob("ymir-exc-verify-*"))
    again = ymir_exc("init", "my-exec", cwd=tmp_path)
    assert again.returncode == 2 and "not empty" in again.stderr


def test_verify_keep_prints_and_keeps_its_work_dirs_and_failures_exit_3(tmp_path):
    ymir_exc("init", "broken", cwd=tmp_path)
    start = tmp_path / "broken" / "app" / "start.py"
    # inference that writes no infer-result.json: the contract is broken
    text = start.read_text()
    assert text.count("        task.save_infer(") == 1
    start.write_text(text.replace("        task.save_infer(", "        return\n        task.save_infer("))
    proc = ymir_exc("verify", "broken", "--keep", "--no-crash", "--quiet", cwd=tmp_path)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    kept = list((tmp_path / ".tmp").glob("ymir-exc-verify-*"))
    assert len(kept) == 1 and str(kept[0]) in proc.stderr


# ------------------------------------------------------------------ your own images


def test_infer_on_a_folder_of_your_images_writes_predictions_and_pictures(home):
    mine = photos(home / "my photos")
    proc = ymir_exc(
        "run",
        "det-demo-tmi",
        "--task",
        "infer",
        "--source",
        "my photos",
        "--model",
        "latest",
        "--model-location",
        "models",
        "--save-vis",
        "vis",
        "--quiet",
        cwd=home,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    pred_path = Path(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("predictions.json:")))
    assert pred_path.parent.parent == home / "ymir-work"
    doc = json.loads(pred_path.read_text())
    assert sorted(im["file_name"] for im in doc["images"]) == sorted(str(p.resolve()) for p in mine)
    assert doc["categories"] == [{"id": 1, "name": "tree"}]
    sizes = {im["id"]: (im["width"], im["height"]) for im in doc["images"]}
    assert all(sizes[i] == Image.open(p).size for i, p in ((im["id"], im["file_name"]) for im in doc["images"]))
    assert doc["annotations"], "the demo model finds trees on sample tiles"
    for a in doc["annotations"]:  # a valid COCO results list: image_id, category_id, bbox, score
        assert set(a) == {"image_id", "category_id", "bbox", "score"}
        x, y, w, h = a["bbox"]
        W, H = sizes[a["image_id"]]
        assert all(isinstance(v, int) for v in a["bbox"]) and w > 0 and h > 0 and x + w <= W and y + h <= H
        assert 0 <= a["score"] <= 1 and a["category_id"] == 1
    # the same boxes as the executor's infer-result.json, keyed back by sha1
    infer = json.loads((pred_path.parent / "out" / "infer-result.json").read_text())["detection"]
    assert sum(len(v["boxes"]) for v in infer.values()) == len(doc["annotations"])
    run_json = json.loads((pred_path.parent / "ymir-exc-run.json").read_text())
    assert run_json["predictions_json"] == str(pred_path) and run_json["exit_status"] == 0
    vis = sorted((home / "vis").iterdir())
    assert [p.name for p in vis] == sorted(p.name for p in mine)
    with_boxes = {Path(doc["images"][a["image_id"] - 1]["file_name"]).name for a in doc["annotations"]}
    for p in vis:
        changed = ImageChops.difference(
            Image.open(p).convert("RGB"), Image.open(home / "my photos" / p.name).convert("RGB")
        ).getbbox()
        # boxes drawn where there are detections (JPEG re-encoding alone changes little)
        if p.name in with_boxes:
            assert changed is not None


def test_mining_on_a_glob_writes_mining_tsv_ranked_by_score(home):
    mine = photos(home / "glob", 4)
    proc = ymir_exc(
        "run",
        "det-demo-tmi",
        "--task",
        "mining",
        "--source",
        "glob/*.jpg",
        "--model",
        "latest",
        "--model-location",
        "models",
        "--quiet",
        "--json",
        cwd=home,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # stdout: one JSON document
    rows = [line.split("\t") for line in Path(summary["mining_tsv"]).read_text().splitlines()]
    assert sorted(r[0] for r in rows) == sorted(str(p.resolve()) for p in mine)
    assert [int(r[2]) for r in rows] == [1, 2, 3, 4]
    scores = [float(r[1]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert "mining.tsv:" in proc.stderr  # human lines went to stderr


def test_one_image_file_and_an_empty_glob(home):
    one = photos(home / "single", 1)[0]
    proc = ymir_exc(
        "run",
        "det-demo-tmi",
        "--task",
        "infer",
        "--source",
        str(one),
        "--model",
        "latest",
        "--model-location",
        "models",
        "--quiet",
        cwd=home,
    )
    assert proc.returncode == 0, proc.stderr
    pred = Path(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("predictions.json:")))
    assert [im["file_name"] for im in json.loads(pred.read_text())["images"]] == [str(one.resolve())]
    none = ymir_exc(
        "run",
        "det-demo-tmi",
        "--task",
        "infer",
        "--source",
        "nothing/*.png",
        "--model",
        "latest",
        "--model-location",
        "models",
        cwd=home,
    )
    assert none.returncode == 2 and "no file matches" in none.stderr
    training = ymir_exc("run", "det-demo-tmi", "--source", "single", cwd=home)
    assert training.returncode == 2 and "--source" in training.stderr


def test_split_chooses_the_candidates_of_a_dataset(home, tmp_path):
    # a fully labeled COCO json with one image: infer runs on it (default --split all), mining
    # falls back from unlabeled to all with a note
    img = tmp_path / "only.jpg"
    shutil.copyfile(SAMPLE_IMAGES[0], img)
    (tmp_path / "coco.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "only.jpg", "width": 320, "height": 320}],
                "categories": [{"id": 1, "name": "tree"}],
                "annotations": [
                    {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 40], "area": 2000, "iscrowd": 0}
                ],
            }
        )
    )
    infer = ymir_exc(
        "run",
        "det-demo-tmi",
        "--task",
        "infer",
        "--dataset",
        str(tmp_path / "coco.json"),
        "--model",
        "latest",
        "--model-location",
        "models",
        "--quiet",
        cwd=home,
    )
    assert infer.returncode == 0, infer.stderr
    assert "candidate 1 images" in infer.stdout
    mining = ymir_exc(
        "run",
        "det-demo-tmi",
        "--task",
        "mining",
        "--dataset",
        str(tmp_path / "coco.json"),
        "--model",
        "latest",
        "--model-location",
        "models",
        "--quiet",
        cwd=home,
    )
    assert mining.returncode == 0, mining.stderr
    assert "no unlabeled image" in mining.stderr and "mining: 1 candidates scored" in mining.stdout
    val = ymir_exc(
        "run",
        "det-demo-tmi",
        "--task",
        "infer",
        "--split",
        "val",
        "--model",
        "latest",
        "--model-location",
        "models",
        "--quiet",
        cwd=home,
    )
    assert val.returncode == 0 and f"infer: {len(load_sample().val)} images" in val.stdout


# ------------------------------------------------------------------ model packages


def _platform_package(path: Path, object_type: int, metrics: dict) -> Path:
    """A package as the platform's ymir-cmd 2.x packs it: plain tarfile (mtimes, no sorting),
    package_version 2.0.0, object_type at the top, every metric key in the stage."""
    info = {
        "executor_config": {"class_names": ["person", "cat"], "epochs": 10},
        "task_context": {
            "executor": "youdaoyzbx/ymir-executor:ymir2.1.0-yolov5-cu111-tmi",
            "producer": "ymir",
            "mAP": metrics.get("mAP", 0.0),
        },
        "stages": {"epoch_10": {"stage_name": "epoch_10", "files": ["best.pt"], "timestamp": 1663840020, **metrics}},
        "best_stage_name": "epoch_10",
        "model_hash": "",
        "object_type": object_type,
        "package_version": "2.0.0",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("ymir-info.yaml", yaml.safe_dump(info).encode()), ("epoch_10/best.pt", b"weights")):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return path


ALL_METRICS = {"mAP": 0.5, "boxAP": 0.0, "maskAP": 0.0, "mIoU": 0.0, "mAR": 0.6, "tp": 60, "fp": 30, "fn": 30}


def test_a_platform_packed_detection_package_imports_with_its_mAP(tmp_path):
    pkg = _platform_package(tmp_path / "model.tar.gz", 2, ALL_METRICS)
    # the group's option after the sub command
    proc = ymir_exc("models", "import", "--package-path", str(pkg), "--model-location", "store", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("best_stage_name: epoch_10, mAP: 0.5")
    show = ymir_exc("models", "show", "latest", "--model-location", "store", cwd=tmp_path)
    assert "mAP: 0.5  (object_type 2)" in show.stdout
    stage_line = next(line for line in show.stdout.splitlines() if "stage epoch_10" in line)
    for key in ("mAP 0.5", "boxAP 0.0", "maskAP 0.0", "mIoU 0.0", "mAR 0.6"):
        assert key in stage_line
    listed = json.loads(ymir_exc("models", "list", "--json", "--model-location", "store", cwd=tmp_path).stdout)
    (m,) = listed["models"]
    assert (m["metric"], m["value"], m["object_type"]) == ("mAP", 0.5, 2)
    assert m["stages"]["epoch_10"]["metrics"]["maskAP"] == 0.0


@pytest.mark.parametrize("object_type, metric", [(3, "mIoU"), (4, "maskAP")])
def test_segmentation_packages_use_their_metric(tmp_path, object_type, metric):
    metrics = dict(ALL_METRICS, **{metric: 0.42})
    pkg = _platform_package(tmp_path / "m.tar.gz", object_type, metrics)
    proc = ymir_exc("models", "--model-location", "store", "import", "--package-path", str(pkg), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(f"{metric}: 0.42")


def test_models_rm_prune_prefixes_and_umask(tmp_path):
    hashes = []
    for i in range(3):
        pkg = _platform_package(tmp_path / f"m{i}.tar.gz", 2, dict(ALL_METRICS, mAP=0.1 * (i + 1)))
        proc = ymir_exc(
            "models",
            "import",
            "--package-path",
            str(pkg),
            "--model-location",
            "store",
            cwd=tmp_path,
            preexec_fn=lambda: os.umask(0o022),
        )
        hashes.append(proc.stdout.split("model hash: ")[1].split(",")[0])
    for h in hashes:
        assert stat.S_IMODE((tmp_path / "store" / h).stat().st_mode) == 0o644
    short = ymir_exc("models", "show", hashes[0][:4], "--model-location", "store", cwd=tmp_path)
    assert short.returncode == 2 and "too short (min 6" in short.stderr
    rm = ymir_exc("models", "rm", hashes[0][:8], "--model-location", "store", cwd=tmp_path)
    assert rm.returncode == 0 and f"removed {hashes[0]}" in rm.stdout
    assert not (tmp_path / "store" / hashes[0]).exists()
    prune = ymir_exc("models", "prune", "--keep", "1", "--model-location", "store", cwd=tmp_path)
    assert prune.returncode == 0, prune.stderr
    assert [p.name for p in (tmp_path / "store").iterdir()] == [hashes[2]]  # the newest stays


# ------------------------------------------------------------------ config, options, temp dirs


def test_config_keys_are_checked_and_set_overrides(tmp_path):
    typo = ymir_exc("run", "det-demo-tmi", "--set", "epoch=2", "--dry-run", cwd=tmp_path)
    assert typo.returncode == 2 and "did you mean 'epochs'?" in typo.stderr
    (tmp_path / "typo.yaml").write_text("epoch: 2\n")
    in_file = ymir_exc("run", "det-demo-tmi", "--config", "typo.yaml", cwd=tmp_path)
    assert in_file.returncode == 2 and "did you mean 'epochs'?" in in_file.stderr
    assert not (tmp_path / "ymir-work").exists()  # refused before anything was prepared or run
    (tmp_path / "cfg.yaml").write_text("epochs: 5\nlearning_rate: 0.1\n")
    ok = ymir_exc(
        "run",
        "det-demo-tmi",
        "--config",
        "cfg.yaml",
        "--set",
        "epochs=3",
        "--set",
        "ymir_debug=true",
        "--dry-run",
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    cfg = yaml.safe_load(ok.stdout.split("config.yaml:\n", 1)[1])
    assert cfg["epochs"] == 3 and cfg["learning_rate"] == 0.1 and cfg["ymir_debug"] is True
    passed = ymir_exc("run", "det-demo-tmi", "--set", "epoch=2", "--allow-unknown-keys", "--dry-run", cwd=tmp_path)
    assert passed.returncode == 0 and "epoch: 2" in passed.stdout
    algo = ymir_exc(
        "run",
        "det-demo-tmi",
        "--task",
        "mining",
        "--set",
        "mining_algorithm=entrpy",
        "--model",
        "latest",
        "--dry-run",
        cwd=tmp_path,
    )
    assert algo.returncode == 2 and "did you mean 'entropy'?" in algo.stderr


def test_dry_run_removes_its_temp_dir_unless_keep(tmp_path):
    proc = ymir_exc("run", "det-demo-tmi", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0 and not list((tmp_path / ".tmp").iterdir())
    # a closed pipe (`| head`) leaves nothing behind either
    argv = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "ymir_exc.cli"]
    head = subprocess.run(
        " ".join(argv) + " run det-demo-tmi --dry-run | head -1",
        shell=True,
        cwd=tmp_path,
        env=dict(os.environ, TMPDIR=str(tmp_path / ".tmp")),
        capture_output=True,
        text=True,
    )
    assert head.stdout.startswith("task ") and not list((tmp_path / ".tmp").iterdir())
    kept = ymir_exc("run", "det-demo-tmi", "--dry-run", "--keep", cwd=tmp_path)
    (left,) = list((tmp_path / ".tmp").iterdir())
    assert f"kept: {left}" in kept.stderr and (left / "in" / "config.yaml").is_file()


def test_sample_out_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("x")
    proc = ymir_exc("sample", "trees", "--out", "out", cwd=tmp_path)
    assert proc.returncode == 2 and "not an empty folder" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mine.txt"]


# ------------------------------------------------------------------ loop

LOOP = ["loop", "det-demo-tmi", "--initial", "8", "--topk", "5", "--set", "epochs=1", "--quiet"]


@pytest.mark.parametrize("executor", ["det-demo-tmi", "det-yolo-tmi"])
def test_loop_refuses_an_unknown_mining_algorithm_before_training(tmp_path, executor):
    proc = ymir_exc(
        "loop",
        executor,
        "--initial",
        "8",
        "--topk",
        "5",
        "--rounds",
        "1",
        "--mining-algorithm",
        "entrpy",
        "--out",
        "lp",
        "--runtime",
        "local",
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "did you mean 'entropy'?" in proc.stderr
    assert "training" not in proc.stdout and not (tmp_path / "lp" / "entrpy").exists()


def test_loop_with_seeds_plots_mean_and_spread_and_records_selections(tmp_path):
    proc = ymir_exc(
        *LOOP,
        "--rounds",
        "1",
        "--mining-algorithm",
        "entropy",
        "--baseline",
        "random-harness",
        "--seeds",
        "0,1",
        "--out",
        "lp",
        "--json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["complete"] is True  # a finished loop says so, as an interrupted one says False
    rounds = doc["rounds"]
    assert sorted((r["seed"], r["strategy"], r["round"]) for r in rounds) == sorted(
        (s, st, k) for s in (0, 1) for st in ("entropy", "random-harness") for k in (0, 1)
    )
    assert "loop: entropy seed 1 round 1/1" in proc.stderr  # the progress line names strategy, seed, round
    train = {p for p in (i.image_path for i in load_sample().train)}
    for r in rounds:
        assert len(r["selected"]) == (5 if r["round"] == 0 else 0) and set(r["selected"]) <= train
    data = json.loads((tmp_path / "lp" / "loop.json").read_text())
    assert data["complete"] is True and data["meta"]["seeds"] == [0, 1] and data["meta"]["val_images"] == 11
    assert (tmp_path / "lp" / "loop.png").stat().st_size > 1000
    assert "+-" in proc.stderr  # the table shows mean +- spread
    again = ymir_exc(*LOOP, "--rounds", "1", "--mining-algorithm", "entropy", "--out", "lp", cwd=tmp_path)
    assert again.returncode == 2 and "--resume" in again.stderr and "--work-dir" not in again.stderr


def test_loop_ctrl_c_keeps_finished_rounds_and_resume_finishes(tmp_path):
    argv = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "ymir_exc.cli"]
    proc = subprocess.Popen(
        argv + LOOP + ["--rounds", "3", "--mining-algorithm", "entropy", "--out", "lp"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # wait for round 0 to finish, then press Ctrl-C
        if "round 0  labeled" in line:
            proc.send_signal(signal.SIGINT)
            break
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    data = json.loads((tmp_path / "lp" / "loop.json").read_text())
    assert data["complete"] is False and 1 <= len(data["rounds"]) < 4
    first = data["rounds"][0]
    other = ymir_exc("loop", "det-demo-tmi", "--out", "lp", "--resume", "--set", "epochs=3", cwd=tmp_path)
    assert other.returncode == 2 and "ran with config {'epochs': 1}" in other.stderr
    resumed = ymir_exc("loop", "det-demo-tmi", "--out", "lp", "--resume", "--quiet", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    data = json.loads((tmp_path / "lp" / "loop.json").read_text())
    assert data["complete"] is True and [r["round"] for r in data["rounds"]] == [0, 1, 2, 3]
    assert data["meta"]["config"] == {"epochs": 1}  # the resumed rounds trained as the first ones did
    cfg = yaml.safe_load((tmp_path / "lp" / "entropy" / "round_3" / "train" / "in" / "config.yaml").read_text())
    assert cfg["epochs"] == 1
    assert data["rounds"][0] == first  # finished rounds are not run again
    assert [r["labeled"] for r in data["rounds"]] == [8, 13, 18, 23]
    picked = [p for r in data["rounds"] for p in r["selected"]]
    assert len(picked) == len(set(picked)) == 15


# ------------------------------------------------------------------ packaging


def test_the_wheel_ships_the_bundled_executors_and_the_init_template(tmp_path):
    """What `pip install ymir-exc` gets: the executors' and the template's files, as regular files."""
    import zipfile

    repo = Path(__file__).resolve().parents[1]
    import importlib.util

    import setuptools

    # building in this environment takes a second; an isolated build (fresh setuptools from the
    # index) about 25 s on 2 cores: only when this setuptools cannot build wheels by itself
    local = importlib.util.find_spec("wheel") is not None or tuple(
        int(x) for x in setuptools.__version__.split(".")[:2]
    ) >= (70, 1)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(repo)]
        + (["--no-build-isolation"] if local else []),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("ymir_exc-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"ymir_exc/executors/det-demo-tmi/{p.relative_to(repo / 'det-demo-tmi')}"
        for p in (repo / "det-demo-tmi").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    expected |= {
        f"ymir_exc/executors/det-yolo-tmi/{p.relative_to(repo / 'templates' / 'det-yolo-tmi')}"
        for p in (repo / "templates" / "det-yolo-tmi").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    expected |= {
        f"ymir_exc/examples/minimal-tmi/{rel}"
        for rel in (
            "app/start.py",
            "img-man/manifest.yaml",
            "img-man/training-template.yaml",
            "img-man/mining-template.yaml",
            "img-man/infer-template.yaml",
            "Dockerfile",
            "README.md",
        )
    }
    assert "ymir_exc/executors/det-demo-tmi/app/start.py" in expected
    assert expected <= names, sorted(expected - names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    with zipfile.ZipFile(wheel) as z:
        assert (
            z.read("ymir_exc/executors/det-demo-tmi/app/start.py") == (repo / "det-demo-tmi/app/start.py").read_bytes()
        )


def test_a_key_only_another_task_declares_is_warned_about(tmp_path):
    ex = tmp_path / "exe"
    (ex / "img-man").mkdir(parents=True)
    (ex / "img-man" / "manifest.yaml").write_text("object_type: 2\n")
    (ex / "img-man" / "training-template.yaml").write_text("epochs: 1\n")
    (ex / "img-man" / "infer-template.yaml").write_text("max_det: 100\n")
    (ex / "start.py").write_text("")
    proc = ymir_exc("run", str(ex), "--task", "training", "--set", "max_det=7", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "config key 'max_det' is not declared by the training template (only by infer)" in proc.stderr
    proc = ymir_exc("run", str(ex), "--task", "training", "--set", "epochs=2", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0 and "not declared" not in proc.stderr
