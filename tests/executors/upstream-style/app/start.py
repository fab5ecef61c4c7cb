"""An executor written only against the upstream ymir_exc 2.x API, in the style of its documents'
det-demo-tmi (module-level calls, EasyDict config, percent=1.0 at the end of each task).

It is a drop-in test: ours must run it unchanged. Its numbers are computed from the data (box
statistics), not random: a "model" that predicts the mean training box at the image centre.
"""

import json
import logging
import os
import sys

from easydict import EasyDict as edict
from tensorboardX import SummaryWriter

from ymir_exc import dataset_reader as dr
from ymir_exc import env, monitor
from ymir_exc import result_writer as rw
from ymir_exc.util import get_merged_config


def start(cfg: edict) -> int:
    logging.info(f"merged config: {cfg.param}")
    if cfg.ymir.run_training:
        _run_training(cfg)
    else:
        if cfg.ymir.run_mining:
            _run_mining(cfg)
        if cfg.ymir.run_infer:
            _run_infer(cfg)
    return 0


def _box_sizes(dataset_type) -> list[list[int]]:
    sizes = []
    for _asset_path, ann_path in dr.item_paths(dataset_type=dataset_type):
        with open(ann_path) as f:
            for line in f:
                if line.strip():
                    c, x1, y1, x2, y2 = (int(v) for v in line.split(",")[:5])
                    sizes.append([x2 - x1 + 1, y2 - y1 + 1])
    return sizes


def _run_training(cfg: edict) -> None:
    class_names: list[str] = cfg.param.get("class_names")
    N = dr.items_count(env.DatasetType.TRAINING)
    monitor_gap = max(1, N // 10)
    for idx, _ in enumerate(dr.item_paths(dataset_type=env.DatasetType.TRAINING)):
        if idx % monitor_gap == 0:
            monitor.write_monitor_logger(percent=0.2 * idx / N)
    train = _box_sizes(env.DatasetType.TRAINING)
    val = _box_sizes(env.DatasetType.VALIDATION)
    mean_w = sum(s[0] for s in train) / len(train)
    mean_h = sum(s[1] for s in train) / len(train)
    # "mAP": fraction of val boxes whose size is within 50 % of the learned mean size
    close = sum(1 for w, h in val if abs(w - mean_w) <= 0.5 * mean_w and abs(h - mean_h) <= 0.5 * mean_h)
    writer = SummaryWriter(log_dir=cfg.ymir.output.tensorboard_dir)
    writer.add_scalar("mean_w", mean_w, 0)
    writer.close()
    monitor.write_monitor_logger(percent=0.5)
    models_dir = cfg.ymir.output.models_dir
    os.makedirs(models_dir, exist_ok=True)
    with open(os.path.join(models_dir, "model.json"), "w") as f:
        json.dump({"mean_w": mean_w, "mean_h": mean_h, "class_names": class_names}, f)
    rw.write_model_stage(stage_name="epoch10", files=["model.json"], evaluation_result=dict(mAP=close / len(val) / 2))
    rw.write_model_stage(stage_name="epoch-20", files=["model.json"], evaluation_result=dict(mAP=close / len(val)))
    monitor.write_monitor_logger(percent=1.0)


def _load_model(cfg: edict) -> dict:
    paths = cfg.param.model_params_path
    with open(paths[0]) as f:
        return json.load(f)


def _run_mining(cfg: edict) -> None:
    model = _load_model(cfg)
    asset_paths = [a for a, _ in dr.item_paths(dataset_type=env.DatasetType.CANDIDATE)]
    # score: file size relative to the largest (a stand-in for "information")
    sizes = [os.path.getsize(a) for a in asset_paths]
    mining_result = [(a, s / max(sizes)) for a, s in zip(asset_paths, sizes, strict=True)]
    rw.write_mining_result(mining_result=mining_result)
    monitor.write_monitor_logger_for_multiple_tasks(cfg, "mining", percent=1.0)
    logging.info(f"mined with {model}")


def _run_infer(cfg: edict) -> None:
    from PIL import Image

    model = _load_model(cfg)
    class_names = cfg.param.get("class_names")
    infer_result = {}
    for asset_path, _ in dr.item_paths(dataset_type=env.DatasetType.CANDIDATE):
        w, h = Image.open(asset_path).size
        box = rw.Box(x=(w - model["mean_w"]) / 2, y=(h - model["mean_h"]) / 2, w=model["mean_w"], h=model["mean_h"])
        infer_result[asset_path] = [rw.Annotation(class_name=class_names[0], score=0.5, box=box)]
    rw.write_infer_result(infer_result=infer_result)
    monitor.write_monitor_logger_for_multiple_tasks(cfg, "infer", percent=1.0)


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stdout, format="%(levelname)-8s: [%(asctime)s] %(message)s", level=logging.INFO)
    sys.exit(start(get_merged_config()))
