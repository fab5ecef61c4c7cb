"""minimal-tmi: the smallest complete YMIR executor (training, mining, inference) on ymir_exc.

Model: per class, the mean box size and the mean colour inside its training boxes. Detections are
windows of that size on a half-overlapping grid, scored 1 - (colour distance / 255).
"""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ymir_exc import Detection, Executor, Task, evaluate_detections


def pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64)


def detect(model, path, max_det=100):
    img, found = pixels(path), []
    for name, (w, h, *colour) in model.items():
        w, h = min(max(1, round(w)), img.shape[1]), min(max(1, round(h)), img.shape[0])
        for y in range(0, img.shape[0] - h + 1, max(1, h // 2)):
            for x in range(0, img.shape[1] - w + 1, max(1, w // 2)):
                distance = np.abs(img[y : y + h, x : x + w].mean(axis=(0, 1)) - colour).mean() / 255
                found.append(Detection(name, float(1 - distance), x, y, w, h))
    return sorted(found, key=lambda d: -d.score)[:max_det]


class MeanColour:
    def setup(self, task: Task):  # once per run, before the tasks: mining + inference share the model
        weights = task.weights(".json")
        self.model = json.loads(Path(weights[0]).read_text()) if weights else {}

    def train(self, task: Task):
        rows = {}
        for item in task.items("train"):
            img = pixels(item.image_path)
            for b in item.boxes:
                crop = img[b.y : b.y + b.h, b.x : b.x + b.w]
                rows.setdefault(b.class_name, []).append([b.w, b.h, *crop.mean(axis=(0, 1))])
        model = {name: np.mean(r, axis=0).tolist() for name, r in rows.items()}
        Path(task.env.output.models_dir).mkdir(parents=True, exist_ok=True)
        Path(task.env.output.models_dir, "model.json").write_text(json.dumps(model))
        task.progress(0.5)
        val = {i.image_path: i.boxes for i in task.items("val")}
        m = evaluate_detections({p: detect(model, p) for p in val}, val, classes=task.class_names)
        task.log_scalars({"val/mAP50": m["mAP"]}, step=1)
        task.save_stage("last", ["model.json"], mAP=m["mAP"], mAR=m["mAR"])

    def mine(self, task: Task):  # least confidence: the images whose best detection is weakest first
        paths = [i.image_path for i in task.items("candidate")]
        task.save_mining({p: 1 - max([d.score for d in detect(self.model, p)], default=0.0) for p in paths})

    def infer(self, task: Task):
        task.save_infer({i.image_path: detect(self.model, i.image_path) for i in task.items("candidate")})


if __name__ == "__main__":
    Executor(MeanColour).main()
