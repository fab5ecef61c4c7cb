"""Entry point of det-demo-tmi: training, mining and inference with the colour-window detector.

Run by the image's CMD (``python app/start.py``); reads /in/env.yaml and /in/config.yaml (or the
files named by DEFAULT_ENV_FILE_PATH / DEFAULT_CONFIG_FILE_PATH) and writes under /out. The
model itself is in ``demo_model.py``; this file only talks to the platform through ymir_exc:

- read the dataset:     ymir_exc.dataset_reader.read_items
- report progress:      ymir_exc.util.write_ymir_monitor_process (training),
                        ymir_exc.monitor.write_monitor_logger_for_multiple_tasks (mining, infer)
- write results:        ymir_exc.result_writer.write_model_stage / write_mining_result /
                        write_infer_result, ymir_exc.monitor.write_tensorboard_scalars
- fail cleanly:         ymir_exc.executor.Executor (state 4 + return code in monitor.txt, exit 1)
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import demo_model as dm  # noqa: E402

from ymir_exc import dataset_reader, monitor, result_writer  # noqa: E402
from ymir_exc.env import DatasetType  # noqa: E402
from ymir_exc.errors import ConfigFileError, ModelError  # noqa: E402
from ymir_exc.executor import Executor  # noqa: E402
from ymir_exc.util import YmirStage, get_weight_files, write_ymir_monitor_process  # noqa: E402

MODEL_FILE = "demo_model.json"
IOU_THR = 0.5


def log(msg: str) -> None:
    """One line on stdout (the platform appends it to ymir-executor-out.log)."""
    print(f"det-demo-tmi: {msg}", flush=True)


def read_split(cfg: Any, split: DatasetType) -> List[dm.Item]:
    """(image path, [(class_id, x, y, w, h)]) for every line of a training / validation index."""
    return [(item.image_path, [(b.class_id, b.x, b.y, b.w, b.h) for b in item.boxes])
            for item in dataset_reader.read_items(split, cfg)]


def training(cfg: Any) -> None:
    params = dm.HyperParams.from_config(cfg.param, conf_threshold=0.01)
    class_names = cfg.param.get("class_names")
    if not isinstance(class_names, list) or not class_names:
        raise ConfigFileError("class_names must be a non-empty list", key="class_names")

    def progress(stage: YmirStage, p: float) -> None:
        write_ymir_monitor_process(cfg, task="training", naive_stage_percent=min(1.0, p), stage=stage)

    t0 = time.time()
    progress(YmirStage.PREPROCESS, 0.0)
    train_items = read_split(cfg, DatasetType.TRAINING)
    val_items = read_split(cfg, DatasetType.VALIDATION)
    if get_weight_files(cfg, suffix=(".json",)):
        log("pretrained_model_params is ignored: this model trains from scratch in seconds")
    log(f"{len(train_items)} training / {len(val_items)} validation images, classes {class_names}, {params}")
    trainer = dm.Trainer(train_items, val_items, class_names, params,
                         progress=lambda p: progress(YmirStage.PREPROCESS, p))
    for c, d in enumerate(trainer.class_data):
        if d is None:
            log(f"class {class_names[c]!r}: no positive window in the training set, it will never be detected")
    log(f"anchors (w, h in 1/{params.downscale} px): {[[round(v, 2) for v in a] for a in trainer.anchors.tolist()]}; "
        f"prepared in {time.time() - t0:.2f} s")

    models_dir = cfg.ymir.output.models_dir
    for epoch in range(1, params.epochs + 1):
        loss = trainer.run_epoch(
            progress=lambda p, e=epoch: progress(YmirStage.TASK, (e - 1 + p) / params.epochs))
        metrics = trainer.evaluate(conf_threshold=params.conf_threshold, iou_thr=IOU_THR)
        stage = f"epoch_{epoch}"
        stage_dir = os.path.join(models_dir, stage)
        os.makedirs(stage_dir, exist_ok=True)
        trainer.model().save(os.path.join(stage_dir, MODEL_FILE))
        result_writer.write_model_stage(
            stage_name=stage, files=[MODEL_FILE],
            evaluation_result={"mAP": metrics["mAP"], "mAR": metrics["mAR"],
                               "tp": metrics["tp"], "fp": metrics["fp"], "fn": metrics["fn"]},
            evaluate_config={"iou_thr": IOU_THR, "conf_thr": params.conf_threshold})
        monitor.write_tensorboard_scalars({"train/loss": loss, "val/mAP50": metrics["mAP"],
                                           "val/mAR50": metrics["mAR"]}, epoch)
        ap = ", ".join(f"{n}={a:.4f}" for n, a in zip(class_names, metrics["ap"]) if a is not None)
        log(f"epoch {epoch}/{params.epochs}: loss {loss:.5f}, val mAP50 {metrics['mAP']:.4f} ({ap}), "
            f"mAR {metrics['mAR']:.4f}, tp {metrics['tp']} fp {metrics['fp']} fn {metrics['fn']}")
        progress(YmirStage.TASK, epoch / params.epochs)
    progress(YmirStage.POSTPROCESS, 1.0)
    log(f"training done in {time.time() - t0:.2f} s")


def load_model(cfg: Any) -> dm.DemoModel:
    """The model named by model_params_path (the first .json file)."""
    files = get_weight_files(cfg, suffix=(".json",))
    if not files:
        raise ModelError(f"no .json model in model_params_path {cfg.param.get('model_params_path')!r}",
                         key="model_params_path")
    model = dm.DemoModel.load(files[0])
    log(f"model {files[0]}: classes {model.class_names}")
    return model


def candidates(cfg: Any) -> List[str]:
    return [item.image_path for item in dataset_reader.read_items(DatasetType.CANDIDATE, cfg)]


def mining(cfg: Any) -> None:
    params = dm.HyperParams.from_config(cfg.param, conf_threshold=0.05)
    t0 = time.time()
    monitor.write_monitor_logger_for_multiple_tasks(cfg, "mining", 0.0)
    paths = candidates(cfg)
    model = None if params.mining_algorithm == "random" else load_model(cfg)
    scores = []
    for i, path in enumerate(paths):
        if model is None:
            score = dm.random_score(path, params.random_seed)
        else:
            score = dm.entropy_score(model.detect(path, params.conf_threshold, params.nms_iou, params.max_det))
        scores.append((path, score))
        monitor.write_monitor_logger_for_multiple_tasks(cfg, "mining", 0.99 * (i + 1) / max(1, len(paths)))
    result_writer.write_mining_result(scores)
    monitor.write_monitor_logger_for_multiple_tasks(cfg, "mining", 1.0)
    log(f"mining ({params.mining_algorithm}) of {len(paths)} images done in {time.time() - t0:.2f} s")


def infer(cfg: Any) -> None:
    params = dm.HyperParams.from_config(cfg.param, conf_threshold=0.1)
    t0 = time.time()
    monitor.write_monitor_logger_for_multiple_tasks(cfg, "infer", 0.0)
    paths = candidates(cfg)
    model = load_model(cfg)
    result = {}
    n_boxes = 0
    for i, path in enumerate(paths):
        dets = model.detect(path, params.conf_threshold, params.nms_iou, params.max_det)
        result[path] = [result_writer.Annotation(class_name=model.class_names[c], score=s,
                                                 box=result_writer.Box(x=x, y=y, w=w, h=h))
                        for c, s, x, y, w, h in dets]
        n_boxes += len(dets)
        monitor.write_monitor_logger_for_multiple_tasks(cfg, "infer", 0.99 * (i + 1) / max(1, len(paths)))
    result_writer.write_infer_result(result)
    monitor.write_monitor_logger_for_multiple_tasks(cfg, "infer", 1.0)
    log(f"inference of {len(paths)} images ({n_boxes} boxes) done in {time.time() - t0:.2f} s")


if __name__ == "__main__":
    Executor(training=training, mining=mining, infer=infer).main()
