"""A minimal semantic segmentation executor, written only against the upstream ymir_exc 2.x API
(the calls the platform's segmentation demos make), to show that ours runs it unchanged.

The "model" is learnt from the data, not random: for each class, the mean box of the training
set in image-relative coordinates. Its mask for an image is that rectangle (the union of the
class's rectangles); mIoU on the validation set compares it with the union of the true boxes.
Inference writes a COCO-style result with one compressed-RLE semantic mask per class and image.
"""

import json
import os
import sys

import numpy as np
from PIL import Image

from ymir_exc import dataset_reader as dr
from ymir_exc import env, monitor
from ymir_exc import result_writer as rw
from ymir_exc.util import YmirStage, get_bool, get_merged_config, write_ymir_monitor_process, write_ymir_training_result


def _boxes(ann_path):
    """ark lines: class_idx, xmin, ymin, xmax, ymax (inclusive pixels)."""
    out = []
    with open(ann_path) as f:
        for line in f:
            if line.strip():
                c, x1, y1, x2, y2 = (int(float(v)) for v in line.split(",")[:5])
                out.append((c, x1, y1, x2, y2))
    return out


def _rect_mask(h, w, box):
    m = np.zeros((h, w), dtype=np.uint8)
    x1, y1, x2, y2 = box
    m[max(0, y1) : max(0, y2 + 1), max(0, x1) : max(0, x2 + 1)] = 1
    return m


def _predict(model, h, w):
    """{class index: mask} of the model's rectangles for an image of h x w pixels."""
    masks = {}
    for c, (rx1, ry1, rx2, ry2) in model["rects"].items():
        masks[int(c)] = _rect_mask(h, w, (int(rx1 * w), int(ry1 * h), int(rx2 * w), int(ry2 * h)))
    return masks


def _rle_string(mask):
    """COCO's compressed RLE of a mask (column-major runs, starting with 0s), as pycocotools."""
    flat = mask.T.reshape(-1)
    counts, prev, run = [], 0, 0
    for v in flat.tolist():
        if v != prev:
            counts.append(run)
            prev, run = v, 0
        run += 1
    counts.append(run)
    chars = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return "".join(chars)


def _train(cfg):
    class_names = cfg.param.class_names
    write_ymir_monitor_process(cfg, task="training", naive_stage_percent=0.0, stage=YmirStage.PREPROCESS)
    sums, n = {}, {}
    items = list(dr.item_paths(dataset_type=env.DatasetType.TRAINING))
    for i, (asset, ann) in enumerate(items):
        w, h = Image.open(asset).size
        for c, x1, y1, x2, y2 in _boxes(ann):
            s = sums.setdefault(c, [0.0, 0.0, 0.0, 0.0])
            for k, v in enumerate((x1 / w, y1 / h, x2 / w, y2 / h)):
                s[k] += v
            n[c] = n.get(c, 0) + 1
        write_ymir_monitor_process(cfg, task="training", naive_stage_percent=(i + 1) / len(items), stage=YmirStage.TASK)
    model = {"class_names": list(class_names), "rects": {str(c): [v / n[c] for v in s] for c, s in sums.items()}}
    models_dir = cfg.ymir.output.models_dir
    os.makedirs(models_dir, exist_ok=True)
    path = os.path.join(models_dir, "model.json")
    with open(path, "w") as f:
        json.dump(model, f)
    ious = []
    for asset, ann in dr.item_paths(dataset_type=env.DatasetType.VALIDATION):
        w, h = Image.open(asset).size
        pred = _predict(model, h, w)
        for c in range(len(class_names)):
            true = np.zeros((h, w), dtype=np.uint8)
            for bc, x1, y1, x2, y2 in _boxes(ann):
                if bc == c:
                    true |= _rect_mask(h, w, (x1, y1, x2, y2))
            p = pred.get(c, np.zeros((h, w), dtype=np.uint8))
            union = int((p | true).sum())
            if union:
                ious.append(int((p & true).sum()) / union)
    miou = float(np.mean(ious)) if ious else 0.0
    monitor.write_tensorboard_text(f"mIoU {miou:.4f}")
    # per "epoch": the absolute path of the weights; at the end: files=[] (everything in /out/models)
    write_ymir_training_result(cfg, evaluation_result={"mIoU": miou / 2}, id="epoch_1", files=[path])
    write_ymir_training_result(cfg, evaluation_result={"mIoU": miou}, id="last", files=[])
    monitor.write_monitor_logger(percent=1.0)


def _load_model(cfg):
    with open(cfg.param.model_params_path[0]) as f:
        return json.load(f)


def _mine(cfg):
    model = _load_model(cfg)
    result = []
    for asset, _ in dr.item_paths(dataset_type=env.DatasetType.CANDIDATE):
        w, h = Image.open(asset).size
        covered = sum(int(m.sum()) for m in _predict(model, h, w).values())
        result.append((asset, 1.0 - min(1.0, covered / (w * h))))  # least covered first
    rw.write_mining_result(mining_result=result)
    monitor.write_monitor_logger_for_multiple_tasks(cfg, "mining", percent=1.0)


def _infer(cfg):
    model = _load_model(cfg)
    class_names = cfg.param.class_names
    coco = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(class_names)],
    }
    for i, (asset, _) in enumerate(dr.item_paths(dataset_type=env.DatasetType.CANDIDATE)):
        w, h = Image.open(asset).size
        coco["images"].append({"id": i + 1, "file_name": os.path.basename(asset), "width": w, "height": h})
        for c, mask in _predict(model, h, w).items():
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": i + 1,
                    "category_id": c + 1,
                    "segmentation": {"size": [h, w], "counts": _rle_string(mask)},
                    "area": int(mask.sum()),
                    "iscrowd": 0,
                }
            )
    rw.write_infer_result(infer_result=coco, algorithm="segmentation")
    monitor.write_monitor_logger_for_multiple_tasks(cfg, "infer", percent=1.0)


def main():
    cfg = get_merged_config()
    if get_bool(cfg, key="debug_no_run", default_value=False):
        return 0
    if cfg.ymir.run_training:
        _train(cfg)
    else:
        if cfg.ymir.run_mining:
            _mine(cfg)
        if cfg.ymir.run_infer:
            _infer(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
