"""$name: a minimal YMIR executor on the typed API (written by `ymir-exc init`).

The model is the "mean box" of each class: training learns, per class, the average box
(centre and size relative to the image) and how often the class occurs; inference predicts
that box on every image, scored by the class frequency; mining ranks images by the entropy of
their grey-level histogram (busy images first). Replace the three functions with your model.
"""
import json
import math
import os

from PIL import Image

from ymir_exc.executor import Executor
from ymir_exc.monitor import write_tensorboard_scalars
from ymir_exc.task import Detection, Task

MODEL_FILE = "model.json"


def mean_boxes(items, class_names):
    """{class: [cx, cy, w, h] relative to the image} and {class: share of the boxes}."""
    sums, counts = {c: [0.0] * 4 for c in class_names}, {c: 0 for c in class_names}
    for it in items:
        with Image.open(it.image_path) as im:
            iw, ih = im.size
        for b in it.boxes:
            s = sums[b.class_name]
            for i, v in enumerate(((b.x + b.w / 2) / iw, (b.y + b.h / 2) / ih, b.w / iw, b.h / ih)):
                s[i] += v
            counts[b.class_name] += 1
    total = sum(counts.values()) or 1
    return ({c: [v / counts[c] for v in sums[c]] for c in class_names if counts[c]},
            {c: counts[c] / total for c in class_names if counts[c]})


def predict(model, image_path):
    """One Detection per learnt class, in integer pixels inside the image."""
    with Image.open(image_path) as im:
        iw, ih = im.size
    out = []
    for c, (cx, cy, w, h) in model["boxes"].items():
        bw, bh = max(1, round(w * iw)), max(1, round(h * ih))
        x, y = min(max(0, round(cx * iw - bw / 2)), iw - bw), min(max(0, round(cy * ih - bh / 2)), ih - bh)
        out.append(Detection(c, round(model["share"][c], 6), x, y, bw, bh))
    return out


def ap50(model, items, class_name):
    """Average precision at IoU 0.5 of one class on labeled items (all-point interpolation)."""
    def iou(a, b):
        iw = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
        ih = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
        inter = max(0, iw) * max(0, ih)
        return inter / (a.w * a.h + b.w * b.h - inter) if inter else 0.0
    gts = [[b for b in it.boxes if b.class_name == class_name] for it in items]
    n_gt = sum(map(len, gts))
    dets = sorted(((d.score, i, d) for i, it in enumerate(items) for d in predict(model, it.image_path)
                   if d.class_name == class_name), key=lambda t: -t[0])
    tp, used = [], set()
    for _, i, d in dets:
        best = max(((iou(d, g), j) for j, g in enumerate(gts[i]) if (i, j) not in used), default=(0.0, -1))
        tp.append(best[0] >= 0.5)
        if best[0] >= 0.5:
            used.add((i, best[1]))
    hits, precision = 0, []
    for k, hit in enumerate(tp, 1):
        hits += hit
        precision.append(hits / k)
    for k in range(len(precision) - 2, -1, -1):  # interpolated: the best precision at this recall or more
        precision[k] = max(precision[k], precision[k + 1])
    return sum(p for p, hit in zip(precision, tp) if hit) / n_gt if n_gt else 0.0


def train(cfg):
    task = Task.current()
    boxes, share = mean_boxes(list(task.items("train")), task.class_names)
    model = {"class_names": task.class_names, "boxes": boxes, "share": share}
    task.progress(0.5)
    val = list(task.items("val"))
    aps = [ap50(model, val, c) for c in boxes if any(b.class_name == c for it in val for b in it.boxes)]
    mAP = sum(aps) / len(aps) if aps else 0.0
    os.makedirs(task.env.output.models_dir, exist_ok=True)
    with open(os.path.join(task.env.output.models_dir, MODEL_FILE), "w") as f:
        json.dump(model, f)
    write_tensorboard_scalars({"val/mAP50": mAP}, step=1)
    task.save_stage("mean_box", [MODEL_FILE], mAP=mAP)


def load_model(task):
    with open(task.weights(".json")[0]) as f:
        return json.load(f)


def mine(cfg):
    task = Task.current()
    scores = {}
    for it in task.items("candidate"):
        with Image.open(it.image_path) as im:
            hist = im.convert("L").histogram()
        n = sum(hist)
        scores[it.image_path] = -sum(h / n * math.log2(h / n) for h in hist if h) / 8  # in [0, 1]
    task.save_mining(scores)


def infer(cfg):
    task = Task.current()
    model = load_model(task)
    task.save_infer({it.image_path: predict(model, it.image_path) for it in task.items("candidate")})


if __name__ == "__main__":
    Executor(training=train, mining=mine, infer=infer).main()
