"""Problems people found using the ``ymir-exc`` command from outside the repository, each checked
end to end through the command in a temp folder: closed pipes, SIGTERM, COCO images with the same
base name, non-images given to --source, verify of an unknown executor, --dataset on a folder of
images, and the --json / message details."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from PIL import Image

SCRIPT = Path(sys.executable).with_name("ymir-exc")

SAMPLE_IMAGES = sorted((REPO / "ymir_exc" / "samples" / "trees" / "images").glob("*.jpg"))
SLOW = REPO / "tests" / "fixtures" / "executors" / "slow"


def argv0() -> list[str]:
    return [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "ymir_exc.cli"]


def env_for(cwd: Path) -> dict:
    (cwd / ".tmp").mkdir(exist_ok=True)
    return dict(os.environ, TMPDIR=str(cwd / ".tmp"))


def ymir_exc(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    """Run the installed ``ymir-exc`` in ``cwd`` with a private TMPDIR."""
    return subprocess.run(argv0() + list(args), cwd=cwd, env=env_for(cwd), capture_output=True, text=True, **kw)


def photos(folder: Path, n: int = 4) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, src in enumerate(SAMPLE_IMAGES[:n]):
        dst = folder / f"photo {i}.jpg"
        shutil.copyfile(src, dst)
        out.append(dst)
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A model store holding one det-demo-tmi package trained on the sample."""
    d = tmp_path_factory.mktemp("store")
    proc = ymir_exc("run", "det-demo-tmi", "--task", "training", "--model-location", "models", "--quiet", cwd=d)
    assert proc.returncode == 0, proc.stderr
    return d / "models"


# ------------------------------------------------------------------ 1. closed pipes


def run_into_closed_pipe(args: list[str], cwd: Path, which: str = "stdout") -> int:
    """Run ``ymir-exc`` with ``which`` (stdout or stderr) writing into a pipe whose reader has
    already gone: every write to it fails with EPIPE. Returns the exit status."""
    r, w = os.pipe()
    os.close(r)
    streams = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, which: w}
    try:
        return subprocess.run(argv0() + args, cwd=cwd, env=env_for(cwd), timeout=600, **streams).returncode
    finally:
        os.close(w)


@pytest.mark.parametrize("which", ["stdout", "stderr"])
def test_training_into_a_closed_pipe_still_trains_and_says_so(tmp_path, which):
    code = run_into_closed_pipe(
        ["run", "det-demo-tmi", "--task", "training", "--work-dir", "w", "--model-location", "models"], tmp_path, which
    )
    assert code == 0
    summary = json.loads((tmp_path / "w" / "ymir-exc-run.json").read_text())
    assert summary["exit_status"] == 0 and summary["model_hash"]
    assert (tmp_path / "models" / summary["model_hash"]).exists()  # the package, in the store


def test_mining_piped_into_head_writes_mining_tsv_and_the_run_summary(tmp_path, store):
    photos(tmp_path / "photos")
    cmd = (
        f"{' '.join(map(str, argv0()))} run det-demo-tmi --task mining --source photos --model latest "
        f"--model-location {store} --work-dir w | head -2; exit ${{PIPESTATUS[0]}}"
    )
    proc = subprocess.run(
        ["bash", "-c", cmd], cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 2
    rows = (tmp_path / "w" / "mining.tsv").read_text().splitlines()
    assert len(rows) == 4 and "photo 0.jpg" in "\n".join(rows)  # one line per image
    assert json.loads((tmp_path / "w" / "ymir-exc-run.json").read_text())["exit_status"] == 0


def test_a_failing_executor_into_a_closed_pipe_exits_1(tmp_path):
    crash = REPO / "tests" / "fixtures" / "executors" / "crash"
    code = run_into_closed_pipe(["run", str(crash), "--work-dir", "w", "--model-location", "m"], tmp_path)
    assert code == 1
    assert json.loads((tmp_path / "w" / "ymir-exc-run.json").read_text())["exit_status"] == 1
    first = (tmp_path / "w" / "out" / "monitor.txt").read_text().splitlines()[0].split("\t")
    assert first[3] == "4"


# ------------------------------------------------------------------ 3. SIGTERM


def wait_for_running(root: Path, proc: subprocess.Popen, timeout: float = 120) -> Path:
    """The first out/monitor.txt under ``root`` once an executor has written progress to it."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for p in root.rglob("out/monitor.txt"):
            try:
                fields = p.read_text().splitlines()[0].split("\t")
            except (OSError, IndexError):
                continue
            if len(fields) == 5 and fields[3] == "2":
                return p
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("the executor never reported progress")


def terminate(args: list[str], cwd: Path) -> tuple:
    """Start ``ymir-exc args``, SIGTERM it once its executor runs; (exit status, stdout, stderr, monitor.txt)."""
    proc = subprocess.Popen(
        argv0() + args, cwd=cwd, env=env_for(cwd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    monitor = wait_for_running(cwd, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err, monitor


def test_sigterm_to_run_stops_the_executor_writes_state_4_and_exits_143(tmp_path):
    code, _, err, monitor = terminate(["run", str(SLOW), "--work-dir", "w", "--model-location", "m"], tmp_path)
    assert code == 143, err
    first, *rest = monitor.read_text().splitlines()
    assert first.split("\t")[3] == "4" and "SIGTERM" in "\n".join(rest)
    assert "terminated (SIGTERM)" in err


def test_sigterm_to_verify_removes_its_temp_dirs(tmp_path):
    code, _, err, monitor = terminate(["verify", str(SLOW), "--no-crash"], tmp_path)
    assert code == 143, err
    assert str(monitor).startswith(str(tmp_path / ".tmp" / "ymir-exc-verify-"))
    assert not list((tmp_path / ".tmp").glob("ymir-exc-verify-*"))  # removed, monitor.txt with it


def test_sigterm_to_loop_keeps_loop_json_and_json_prints_the_partial_document(tmp_path):
    code, out, err, monitor = terminate(
        [
            "loop",
            str(SLOW),
            "--initial",
            "8",
            "--rounds",
            "1",
            "--topk",
            "5",
            "--mining-algorithm",
            "entropy",
            "--out",
            "lp",
            "--json",
        ],
        tmp_path,
    )
    assert code == 143, err
    assert monitor.read_text().splitlines()[0].split("\t")[3] == "4"
    doc = json.loads(out)
    assert doc["complete"] is False and doc["rounds"] == [] and doc["meta"]["initial"] == 8
    assert json.loads((tmp_path / "lp" / "loop.json").read_text())["complete"] is False


# ------------------------------------------------------------------ 2. COCO: same base name, different folders


def coco_with_same_base_names(root: Path) -> Path:
    """images/a/0001.jpg with one box, images/b/0001.jpg with two, images/c/0001.jpg with none."""
    images, anns = [], []
    for k, (folder, boxes) in enumerate([("a", 1), ("b", 2), ("c", 0)] + [(f"x{j}", 1) for j in range(3)]):
        p = root / "images" / folder / "0001.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLE_IMAGES[k], p)
        w, h = Image.open(p).size
        images.append({"id": k + 1, "file_name": f"images/{folder}/0001.jpg", "width": w, "height": h})
        for j in range(boxes):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": k + 1,
                    "category_id": 1,
                    "bbox": [10 + 20 * j, 10 + k, 15, 15],
                    "area": 225,
                    "iscrowd": 0,
                }
            )
    path = root / "coco.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "tree"}]}))
    return path


def test_coco_images_with_the_same_base_name_keep_their_own_boxes(tmp_path):
    from ymir_exc.harness.datasets import load_dataset

    ds = load_dataset(str(coco_with_same_base_names(tmp_path)))
    boxes = {Path(i.image_path).parent.name: [(b.x, b.y) for b in i.boxes] for i in ds.train + ds.val}
    assert boxes["a"] == [(10, 10)]
    assert boxes["b"] == [(10, 11), (30, 11)]
    assert boxes["c"] == []


def test_executor_side_reader_matches_coco_boxes_by_folder_too(tmp_path):
    from ymir_exc.dataset_reader import coco_boxes_lookup, load_coco_annotations

    path = coco_with_same_base_names(tmp_path)
    lookup = coco_boxes_lookup(load_coco_annotations(str(path), ["tree"]), str(path))
    assert len(lookup(str(tmp_path / "images" / "b" / "0001.jpg"))) == 2
    assert len(lookup(str(tmp_path / "images" / "c" / "0001.jpg"))) == 0
    from ymir_exc.errors import AnnotationError

    with pytest.raises(AnnotationError, match="none names its folder"):
        lookup(str(tmp_path / "elsewhere" / "0001.jpg"))  # ambiguous: refused, not guessed


def test_two_coco_images_with_the_same_file_name_are_a_named_error(tmp_path):
    path = coco_with_same_base_names(tmp_path)
    data = json.loads(path.read_text())
    data["images"][2]["file_name"] = data["images"][0]["file_name"]
    path.write_text(json.dumps(data))
    proc = ymir_exc("run", "det-demo-tmi", "--dataset", str(path), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2
    assert "images[2].file_name" in proc.stderr and "images/a/0001.jpg" in proc.stderr
    assert "is also images[0]'s" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------ 4. --source content check, asset map


def test_source_refuses_a_file_that_is_not_an_image_naming_it(tmp_path, store):
    photos(tmp_path / "photos", 2)
    fake = tmp_path / "photos" / "sub" / "fake.jpg"
    fake.parent.mkdir()
    fake.write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 100)
    proc = ymir_exc(
        "run",
        "det-demo-tmi",
        "--task",
        "infer",
        "--source",
        "photos",
        "--model",
        "latest",
        "--model-location",
        str(store),
        "--work-dir",
        "w",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert "photos/sub/fake.jpg" in proc.stderr and "not an image Pillow can read" in proc.stderr
    assert not (tmp_path / "w").exists()  # refused before anything was prepared


FAILING_START = """
import os, sys, yaml
env = yaml.safe_load(open(os.environ["DEFAULT_ENV_FILE_PATH"]))
first = open(env["input"]["training_index_file"]).readline().split("\\t")[0]
print(f"OSError: cannot identify image file {first!r}", flush=True)
sys.exit(1)
"""


def test_a_failure_naming_an_asset_maps_it_back_to_the_users_file(tmp_path):
    ex = tmp_path / "fails-on-asset"
    (ex / "img-man").mkdir(parents=True)
    (ex / "app").mkdir()
    (ex / "img-man" / "manifest.yaml").write_text("object_type: 2\n")
    (ex / "img-man" / "training-template.yaml").write_text("epochs: 1\n")
    (ex / "app" / "start.py").write_text(FAILING_START)
    voc = tmp_path / "voc"
    shutil.copytree(REPO / "ymir_exc" / "samples" / "trees" / "images", voc / "JPEGImages")
    shutil.copytree(REPO / "ymir_exc" / "samples" / "trees" / "annotations", voc / "Annotations")
    proc = ymir_exc("run", str(ex), "--dataset", str(voc), "--work-dir", "w", "--model-location", "m", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    mapping = dict(line.split("\t") for line in (tmp_path / "w" / "assets.tsv").read_text().splitlines())
    first = (tmp_path / "w" / "in" / "train-index.tsv").read_text().split("\t")[0]
    asset = os.path.basename(first)
    assert mapping[asset].startswith(str(voc / "JPEGImages"))
    assert f"{asset} -> {mapping[asset]}" in proc.stderr
    assert str(tmp_path / "w" / "assets.tsv") in proc.stderr


def test_a_failure_unrelated_to_assets_does_not_point_at_assets_tsv(tmp_path):
    """A bad hyper-parameter names no image: no "every asset's source image" line (the file is still written)."""
    ex = tmp_path / "bad-param"
    (ex / "img-man").mkdir(parents=True)
    (ex / "img-man" / "manifest.yaml").write_text("object_type: 2\n")
    (ex / "img-man" / "training-template.yaml").write_text("epochs: 1\n")
    (ex / "start.py").write_text("import sys\nprint('config.yaml: key epochs: must be >= 1, got 0')\nsys.exit(1)\n")
    proc = ymir_exc("run", str(ex), "--work-dir", "w", "--model-location", "m", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "key epochs" in proc.stderr and "every asset's source image" not in proc.stderr
    assert (tmp_path / "w" / "assets.tsv").is_file()


# ------------------------------------------------------------------ 5. verify resolves like run


@pytest.mark.parametrize("name", ["nosuch", "det-demo-tmx", "./no/such/folder"])
def test_verify_refuses_an_unknown_executor_like_run(tmp_path, name):
    run = ymir_exc("run", name, cwd=tmp_path)
    verify = ymir_exc("verify", name, "--quiet", cwd=tmp_path)
    assert run.returncode == verify.returncode == 2
    assert verify.stderr == run.stderr and "no such executor folder" in verify.stderr
    assert "FAIL" not in verify.stdout + verify.stderr and "passed" not in verify.stdout
    if name == "det-demo-tmx":
        assert "did you mean 'det-demo-tmi'?" in verify.stderr


# ------------------------------------------------------------------ 6. --dataset on a folder of images


def test_dataset_on_a_folder_of_images_lists_the_layouts_and_suggests_source(tmp_path):
    photos(tmp_path / "pics", 2)
    proc = ymir_exc("run", "det-demo-tmi", "--dataset", "pics", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2
    for layout in ("YMIR in/", "VOC", "COCO", "YOLO data.yaml", "sample name"):
        assert layout in proc.stderr
    assert f"use --source {tmp_path / 'pics'} instead" in proc.stderr


def test_dataset_on_a_voc_jpegimages_folder_points_at_its_parent(tmp_path):
    voc = tmp_path / "voc"
    photos(voc / "JPEGImages", 2)
    (voc / "Annotations").mkdir()
    proc = ymir_exc("run", "det-demo-tmi", "--dataset", "voc/JPEGImages", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2 and f"--dataset {voc}" in proc.stderr


# ------------------------------------------------------------------ 7. nits


def test_run_json_with_bad_arguments_prints_an_error_document(tmp_path):
    usage = ymir_exc("run", "det-demo-tmi", "--task", "bogus", "--json", cwd=tmp_path)
    assert usage.returncode == 2
    doc = json.loads(usage.stdout)
    assert doc["exit_status"] == 2 and "invalid choice: 'bogus'" in doc["error"]
    named = ymir_exc("run", "det-demo-tmi", "--dataset", "nowhere", "--json", cwd=tmp_path)
    assert named.returncode == 2 and json.loads(named.stdout) == {
        "error": named.stderr.strip().removeprefix("ymir-exc: error: "),
        "exit_status": 2,
    }


def test_a_reserved_key_in_set_is_blamed_on_set(tmp_path):
    proc = ymir_exc("run", "det-demo-tmi", "--set", "class_names=[a]", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--set class_names=... sets the reserved key 'class_names'" in proc.stderr
    assert "--config" not in proc.stderr
    (tmp_path / "c.yaml").write_text("task_id: x\n")
    proc = ymir_exc("run", "det-demo-tmi", "--config", "c.yaml", "--dry-run", cwd=tmp_path)
    assert "--config c.yaml sets the reserved key 'task_id'" in proc.stderr


def test_an_unknown_stage_lists_the_stages_in_natural_order(tmp_path, store):
    proc = ymir_exc(
        "run",
        "det-demo-tmi",
        "--task",
        "infer",
        "--model",
        "latest@epoch_99",
        "--model-location",
        str(store),
        "--dry-run",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    listed = proc.stderr.split("(stages: ")[1].split(")")[0]
    names = [n.strip(" '[]") for n in listed.split(",")]
    numbers = [int(n.split("_")[1]) for n in names if n.startswith("epoch_")]
    assert len(numbers) >= 10 and numbers == sorted(numbers)


@pytest.mark.parametrize("order", [["--json", "list"], ["list", "--json"]])
def test_models_accepts_json_before_or_after_the_sub_command(tmp_path, store, order):
    proc = ymir_exc("models", "--model-location", str(store), *order, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["models"]) == 1


TINY_MINER = """
from ymir_exc import dataset_reader as dr, env, monitor, result_writer as rw
from ymir_exc.executor import Executor


def mine(cfg):
    paths = [a for a, _ in dr.item_paths(env.DatasetType.CANDIDATE)]
    rw.write_mining_result([(p, 8.9e-08 * (k + 1)) for k, p in enumerate(paths)])
    monitor.write_monitor_logger(1.0)


if __name__ == "__main__":
    Executor(mining=mine).main()
"""


def test_mining_top_k_keeps_the_significant_digits_of_tiny_scores(tmp_path, store):
    ex = tmp_path / "tiny"
    (ex / "img-man").mkdir(parents=True)
    (ex / "app").mkdir()
    (ex / "img-man" / "manifest.yaml").write_text("object_type: 2\n")
    (ex / "img-man" / "mining-template.yaml").write_text("epochs: 1\n")
    (ex / "app" / "start.py").write_text(TINY_MINER)
    photos(tmp_path / "photos", 3)
    proc = ymir_exc(
        "run",
        str(ex),
        "--task",
        "mining",
        "--source",
        "photos",
        "--model",
        "latest",
        "--model-location",
        str(store),
        "--work-dir",
        "w",
        "--quiet",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln.split() for ln in proc.stdout.splitlines() if ln.strip()[:1] in "123" and "photo" in ln]
    assert [ln[1] for ln in lines] == ["2.67e-07", "1.78e-07", "8.9e-08"]
