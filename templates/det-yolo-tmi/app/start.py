"""Entry point of det-yolo-tmi: Ultralytics YOLO training, mining and inference for YMIR.

Run by the image's CMD (``python3 /app/start.py``, through ``/usr/bin/start.sh``); reads
/in/env.yaml and /in/config.yaml (or the files named by DEFAULT_ENV_FILE_PATH /
DEFAULT_CONFIG_FILE_PATH) and writes under /out. ``ymir_exc.executor.Executor`` dispatches to the
tasks env.yaml enables (mining, then infer, when both are) and turns any failure into state 4 with
a return code in monitor.txt and exit status 1.
"""

from __future__ import annotations

import os
import sys

APP_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, APP_DIR)

from ymir_yolo.offline import prepare_environment  # noqa: E402

# before anything imports ultralytics: offline, writable settings folder, local font
prepare_environment()


def training(cfg):
    from ymir_yolo.offline import apply_settings

    apply_settings()
    from ymir_yolo.train import training as run

    run(cfg)


class Prediction:
    """Mining and inference of this run: one :class:`ymir_yolo.predict.Predictor`, created on
    first use (so that training alone never imports torch here), shared by both tasks."""

    def __init__(self):
        self.predictor = None

    def _get(self):
        from ymir_yolo.offline import apply_settings

        apply_settings()
        if self.predictor is None:
            from ymir_yolo.predict import Predictor

            self.predictor = Predictor()
        return self.predictor

    def mining(self, cfg):
        self._get().mining(cfg)

    def infer(self, cfg):
        self._get().infer(cfg)

    def close(self):
        if self.predictor is not None:
            self.predictor.close()


if __name__ == "__main__":
    from ymir_exc.executor import Executor

    prediction = Prediction()
    try:
        Executor(training=training, mining=prediction.mining, infer=prediction.infer).main()
    finally:
        prediction.close()
