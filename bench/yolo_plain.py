"""The "plain Ultralytics" side of bench's YOLO rows: what a user would write without ymir-exc.

    python bench/yolo_plain.py spec.json

``spec.json``: ``{"mode": "train" | "predict", "args": {...}, "config_dir": DIR, ...}``

- train: ``YOLO(model).train(**args)`` (``args`` holds data, epochs, batch, imgsz, ...).
- predict: ``YOLO(weights).predict(source=<.txt list of image paths>, stream=True, **args)``; every
  result's boxes are taken out as Python numbers (``xyxy``, ``conf``, ``cls``), as anyone using
  them would, and counted.

Only the environment a user would need offline is set (the same variables and settings the
det-yolo-tmi executor sets, so that neither side pays for a network attempt or an integration
the other skips); nothing from ymir_exc or the template is imported. Prints one JSON line:
``{"seconds": wall time inside the process, "images": n, "boxes": n, "loop_seconds": the predict
loop's wall time (model loaded, images decoded and run)}`` (``"best"``: the weights, for train).
The device is the spec's ``args["device"]`` (bench/run --device).
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    t0 = time.perf_counter()
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ["YOLO_CONFIG_DIR"] = spec["config_dir"]
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(spec["config_dir"], "matplotlib"))

    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS

    SETTINGS.update(
        {
            k: False
            for k in ("sync", "hub", "tensorboard", "wandb", "mlflow", "clearml", "comet", "dvc", "neptune", "raytune")
            if k in SETTINGS
        }
    )
    out = {}
    if spec["mode"] == "train":
        model = YOLO(spec["model"], task="detect")
        model.train(**spec["args"])
        out["best"] = str(model.trainer.best)
    else:
        model = YOLO(spec["model"], task="detect")
        images = boxes = 0
        t_loop = time.perf_counter()
        # the source is a .txt list of image paths, which Ultralytics reads in batches of
        # ``batch`` (a Python list of paths would be decoded and run as one batch of them all)
        for r in model.predict(source=spec["source"], stream=True, verbose=False, **spec["args"]):
            b = r.boxes
            rows = list(zip(b.xyxy.tolist(), b.conf.tolist(), b.cls.tolist(), strict=True))
            images += 1
            boxes += len(rows)
        out.update(images=images, boxes=boxes, loop_seconds=time.perf_counter() - t_loop)
    out["seconds"] = time.perf_counter() - t0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
