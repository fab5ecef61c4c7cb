"""Entry point of det-demo-tmi: training, mining and inference with the colour-window detector.

Run by the image's CMD (``python app/start.py``); reads /in/env.yaml and /in/config.yaml (or the
files named by DEFAULT_ENV_FILE_PATH / DEFAULT_CONFIG_FILE_PATH) and writes under /out. The
model itself is in ``demo_model.py``; this file only talks to the platform, through the typed API
of ymir_exc (docs/sdk.md):

- dispatch and failures: ``Executor(DemoExecutor).main()`` creates one ``DemoExecutor``, calls its
  ``setup`` once (the model is loaded once for mining + inference), then ``train`` or ``mine`` /
  ``infer`` as env.yaml asks; any exception ends in state 4 with a return code, exit 1;
- inputs: ``task.items(split)``, ``task.param`` (config.yaml), ``task.class_names``,
  ``task.weights(".json")``;
- progress: ``task.progress(p)`` (each task's share of the run when mining and inference run
  together);
- outputs: ``task.save_stage`` (one model stage per epoch), ``task.log_scalars`` (TensorBoard),
  ``task.save_mining``, ``task.save_infer``.
"""

from __future__ import annotations

import os
import time

import demo_model as dm

from ymir_exc import ConfigFileError, Detection, Executor, ModelError, Task

MODEL_FILE = "demo_model.json"
IOU_THR = 0.5
#: training progress: preparing the features fills [0, PREPARE], the epochs [PREPARE, 1]
PREPARE = 0.1


def log(msg: str) -> None:
    """One line on stdout (the platform appends it to ymir-executor-out.log)."""
    print(f"det-demo-tmi: {msg}", flush=True)


def read_split(task: Task, split: str) -> list[dm.Item]:
    """(image path, [(class_id, x, y, w, h)]) for every line of a training / validation index."""
    return [(item.image_path, [(b.class_id, b.x, b.y, b.w, b.h) for b in item.boxes]) for item in task.items(split)]


class DemoExecutor:
    """The three tasks of det-demo-tmi; ``model`` is the loaded DemoModel (None for training and
    for random mining without a model)."""

    model: dm.DemoModel | None = None

    def setup(self, task: Task) -> None:
        """Load the model named by model_params_path (the first .json file), once per run."""
        if "training" in task.tasks:
            return
        files = task.weights(".json")
        if files:
            self.model = dm.DemoModel.load(files[0])
            log(f"model {files[0]}: classes {self.model.class_names}")

    def need_model(self, task: Task) -> dm.DemoModel:
        if self.model is None:
            raise ModelError(
                f"no .json model in model_params_path {task.param.get('model_params_path')!r}", key="model_params_path"
            )
        return self.model

    def train(self, task: Task) -> None:
        params = dm.TrainParams.from_config(task.param)
        class_names = task.param.get("class_names")
        if not isinstance(class_names, list) or not class_names:
            raise ConfigFileError("class_names must be a non-empty list", key="class_names")
        t0 = time.time()
        task.progress(0.0)
        train_items, val_items = read_split(task, "train"), read_split(task, "val")
        if task.weights(".json"):
            log("pretrained_model_params is ignored: this model trains from scratch in seconds")
        log(f"{len(train_items)} training / {len(val_items)} validation images, classes {class_names}, {params}")
        trainer = dm.Trainer(
            train_items, val_items, class_names, params, progress=lambda p: task.progress(PREPARE * min(1.0, p))
        )
        for c, d in enumerate(trainer.class_data):
            if d is None:
                log(f"class {class_names[c]!r}: no positive window in the training set, it will never be detected")
        log(
            f"anchors (w, h in 1/{params.downscale} px): "
            f"{[[round(v, 2) for v in a] for a in trainer.anchors.tolist()]}; prepared in {time.time() - t0:.2f} s"
        )

        def epoch_progress(done: float) -> None:  # done: epochs finished, fractional
            task.progress(PREPARE + (1 - PREPARE) * min(1.0, done / params.epochs))

        for epoch in range(1, params.epochs + 1):
            loss = trainer.run_epoch(progress=lambda p, e=epoch: epoch_progress(e - 1 + p))
            metrics = trainer.evaluate(conf_threshold=params.conf_threshold, iou_thr=IOU_THR)
            stage = f"epoch_{epoch}"
            os.makedirs(os.path.join(task.env.output.models_dir, stage), exist_ok=True)
            trainer.model().save(os.path.join(task.env.output.models_dir, stage, MODEL_FILE))
            task.save_stage(
                stage,
                [MODEL_FILE],
                mAP=metrics["mAP"],
                mAR=metrics["mAR"],
                tp=metrics["tp"],
                fp=metrics["fp"],
                fn=metrics["fn"],
                evaluate_config={"iou_thr": IOU_THR, "conf_thr": params.conf_threshold},
            )
            task.log_scalars({"train/loss": loss, "val/mAP50": metrics["mAP"], "val/mAR50": metrics["mAR"]}, epoch)
            ap = ", ".join(f"{n}={a:.4f}" for n, a in zip(class_names, metrics["ap"], strict=True) if a is not None)
            log(
                f"epoch {epoch}/{params.epochs}: loss {loss:.5f}, val mAP50 {metrics['mAP']:.4f} ({ap}), "
                f"mAR {metrics['mAR']:.4f}, tp {metrics['tp']} fp {metrics['fp']} fn {metrics['fn']}"
            )
            epoch_progress(epoch)
        log(f"training done in {time.time() - t0:.2f} s")

    def mine(self, task: Task) -> None:
        params = dm.MiningParams.from_config(task.param)
        t0 = time.time()
        task.progress(0.0)
        paths = [item.image_path for item in task.items("candidate")]
        model = None if params.mining_algorithm == "random" else self.need_model(task)
        scores = []
        for i, path in enumerate(paths):
            if model is None:
                score = dm.random_score(path, params.random_seed)
            else:
                score = dm.entropy_score(model.detect(path, params.conf_threshold, params.nms_iou, params.max_det))
            scores.append((path, score))
            task.progress(0.99 * (i + 1) / max(1, len(paths)))
        task.save_mining(scores)
        task.progress(1.0)
        log(f"mining ({params.mining_algorithm}) of {len(paths)} images done in {time.time() - t0:.2f} s")

    def infer(self, task: Task) -> None:
        params = dm.InferParams.from_config(task.param)
        t0 = time.time()
        task.progress(0.0)
        paths = [item.image_path for item in task.items("candidate")]
        model = self.need_model(task)
        result, n_boxes = {}, 0
        for i, path in enumerate(paths):
            dets = model.detect(path, params.conf_threshold, params.nms_iou, params.max_det)
            result[path] = [Detection(model.class_names[c], s, x, y, w, h) for c, s, x, y, w, h in dets]
            n_boxes += len(dets)
            task.progress(0.99 * (i + 1) / max(1, len(paths)))
        task.save_infer(result)
        task.progress(1.0)
        log(f"inference of {len(paths)} images ({n_boxes} boxes) done in {time.time() - t0:.2f} s")


if __name__ == "__main__":
    Executor(DemoExecutor).main()
