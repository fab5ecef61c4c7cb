"""Helpers of the hostile tests: a "host" folder (files outside any work dir, a model store with a
previous good package) whose every file must survive unchanged, and throw-away executors."""

from __future__ import annotations

import hashlib
import os
import shutil
import textwrap
from pathlib import Path

from ymir_exc.formats import ModelStage
from ymir_exc.harness.datasets import load_sample
from ymir_exc.harness.models import ModelStore, build_info, stage_entries
from ymir_exc.harness.workspace import image_size, voc_xml

REPO = Path(__file__).resolve().parents[2]
SAMPLE = load_sample("trees")


def tree_state(root: Path) -> dict[str, tuple[str, int, str]]:
    """{relative path: (kind, size, sha1 or link target)} of everything under ``root`` (no link followed)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if p.is_symlink():
                out[str(p.relative_to(root))] = ("link", 0, os.readlink(p))
            elif p.is_dir():
                out[str(p.relative_to(root))] = ("dir", 0, "")
            else:
                out[str(p.relative_to(root))] = ("file", st.st_size, hashlib.sha1(p.read_bytes()).hexdigest())
    return out


class Host:
    """Files a hostile input must not touch: ``secret.txt``, ``photo.jpg`` (an image outside every
    dataset), a VOC dataset and a model store holding one good package."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True)
        self.secret = root / "secret.txt"
        self.secret.write_text("host secret: must never be read into a package or changed\n")
        self.photo = root / "photo.jpg"
        shutil.copy(SAMPLE.train[0].image_path, self.photo)
        self.voc = make_voc(root / "voc")
        self.store = ModelStore(root / "models")
        st = ModelStage(stage_name="s1", files=["w.pt"], timestamp=1, mAP=0.5)
        info = build_info({"class_names": ["tree"]}, {"executor": "good"}, stage_entries({"s1": st}), "s1")
        self.good_hash = self.store.pack([("s1/w.pt", b"good weights")], info)
        self.before = tree_state(root)

    def assert_unchanged(self) -> None:
        """Nothing under the host folder changed, and the previous good package is intact."""
        assert tree_state(self.root) == self.before
        assert self.store.get(self.good_hash).info.best_stage_name == "s1"


def make_voc(root: Path, n_train: int = 6, n_val: int = 2) -> Path:
    """A small VOC folder from the bundled sample (ImageSets/Main train / val)."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for split, items in (("train", SAMPLE.train[:n_train]), ("val", SAMPLE.val[:n_val])):
        stems = []
        for i, it in enumerate(items):
            stem = f"{split}{i}"
            shutil.copy(it.image_path, root / "JPEGImages" / f"{stem}.jpg")
            (root / "Annotations" / f"{stem}.xml").write_text(
                voc_xml(f"{stem}.jpg", image_size(it.image_path), it.boxes)
            )
            stems.append(stem)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    return root


PRELUDE = """
import os, sys, time, yaml
ENV = yaml.safe_load(open(os.environ["DEFAULT_ENV_FILE_PATH"]))
OUT = ENV["output"]["root_dir"]
IN = ENV["input"]["root_dir"]
TASK = ENV["task_id"]
def monitor(state=3, percent=1.0, rc=0):
    with open(OUT + "/monitor.txt.tmp", "w") as f:
        f.write(f"{TASK}\\t{time.time()}\\t{percent:.2f}\\t{state}\\t{rc}\\n")
    os.replace(OUT + "/monitor.txt.tmp", OUT + "/monitor.txt")
def good_training(files=("w.pt",)):
    os.makedirs(OUT + "/models", exist_ok=True)
    for f in files:
        if not os.path.lexists(OUT + "/models/" + f):
            open(OUT + "/models/" + f, "wb").write(b"weights")
    yaml.safe_dump({"best_stage_name": "s1", "mAP": 0.5, "model_stages": {"s1": {
        "stage_name": "s1", "files": list(files), "timestamp": 1, "mAP": 0.5}}}, open(OUT + "/models/result.yaml", "w"))
"""


def make_executor(root: Path, body: str) -> Path:
    """An executor folder whose ``app/start.py`` is :data:`PRELUDE` + ``body`` (dedented)."""
    (root / "img-man").mkdir(parents=True)
    (root / "app").mkdir()
    (root / "img-man" / "manifest.yaml").write_text("object_type: 2\n")
    for t in ("training", "mining", "infer"):
        (root / "img-man" / f"{t}-template.yaml").write_text("epochs: 1\n")
    (root / "app" / "start.py").write_text(PRELUDE + textwrap.dedent(body))
    return root
