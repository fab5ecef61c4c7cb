"""The training task: YMIR dataset -> Ultralytics YOLO training -> model stages in result.yaml.

1. The train / val index files become an Ultralytics dataset under ``/out/yolo_dataset``
   (links to the images, normalised label files, data.yaml: ``ymir_exc.dataset_convert``).
2. The model is built from a YAML (from scratch: ``yolov8n.yaml``, ``yolo11n.yaml``, ...) or
   loaded from the ``.pt`` the platform hands over in ``pretrained_model_params`` (continued
   training), and trained by Ultralytics (runs folder ``/out/ultralytics/train``).
3. Ultralytics callbacks (:class:`TrainingReporter`) turn its events into the platform's:

   - progress in monitor.txt after every batch (at most twice a second) and epoch: the data
     preparation owns [0, 0.02], training [0.02, 0.97], the end (export) the rest; monotonic;
   - tensorboard scalars in ``/out/tensorboard``: ``train/*`` losses, ``val/*`` losses and
     metrics (precision, recall, mAP50, mAP50_95), ``lr/pg*``, one point per epoch;
   - model stages: ``epoch_<n>`` every ``save_period`` epochs and at the last epoch (early stop
     included), and ``best``, rewritten whenever the validation mAP50 reaches its best so far
     (result.yaml's ``best_stage_name``, see :meth:`TrainingReporter.on_model_save`); each holds
     ``/out/models/<stage>.pt`` (an Ultralytics checkpoint without optimizer, EMA weights in
     fp16; flat, so that the legacy result.yaml of protocol < 1.0.0 finds it too), with ``mAP``
     (= mAP50 on val, the platform's metric), ``mAP50_95``, ``precision`` and ``recall``.
     result.yaml's ``best_stage_name`` is the stage with the highest mAP. At most 11 stages are
     kept (the SDK evicts the oldest non-best one; its file is deleted here).

4. Optionally (``export_onnx: true``) the best stage gets ``<stage>.onnx`` too.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import yaml

from ymir_exc import monitor
from ymir_exc import result_writer as rw
from ymir_exc.dataset_convert import convert_ymir_to_yolov5
from ymir_exc.errors import ConfigFileError, ModelError
from ymir_exc.util import get_weight_files
from ymir_yolo.params import TrainParams, class_names_of

STAGE_SUFFIX = ".pt"
BEST_STAGE = "best"
PREPARE_END, TRAIN_END = 0.02, 0.97
METRIC_KEYS = {
    "mAP": "metrics/mAP50(B)",
    "mAP50_95": "metrics/mAP50-95(B)",
    "precision": "metrics/precision(B)",
    "recall": "metrics/recall(B)",
}


def log(msg: str) -> None:
    print(f"det-yolo-tmi: {msg}", flush=True)


def _fraction(v: Any) -> float:
    """A metric as a plain float in [0, 1] (NaN -> 0)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return 0.0
    if not math.isfinite(f):
        return 0.0
    return min(max(f, 0.0), 1.0)


def _rank() -> int:
    from ultralytics.utils import RANK

    return RANK


class TrainingReporter:
    """Ultralytics callbacks that report to the platform (see the module docstring).

    Holds only plain data so that Ultralytics can pickle it into its multi-GPU (DDP) workers,
    where it reports from rank 0 only; the tensorboard writer is opened lazily.
    """

    def __init__(self, cfg: Any, params: TrainParams) -> None:
        self.models_dir = cfg.ymir.output.models_dir
        self.result_file = cfg.ymir.output.training_result_file
        self.tensorboard_dir = cfg.ymir.output.tensorboard_dir
        self.save_period = params.save_period
        self.best_map = -1.0
        self.nb = 1
        self.batch = 0
        self.in_epoch = False
        self.last_report = 0.0
        self.stages: dict[str, dict[str, Any]] = {}  # written stages: name -> {files, metrics, timestamp}
        self._writer = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_writer"] = None
        return state

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_pretrain_routine_end": self.on_pretrain_routine_end,
            "on_train_epoch_start": self.on_train_epoch_start,
            "on_train_batch_end": self.on_train_batch_end,
            "on_model_save": self.on_model_save,
            "on_fit_epoch_end": self.on_fit_epoch_end,
            "on_train_end": self.on_train_end,
        }

    # -------------------------------------------------------------- progress
    def _report(self, trainer: Any, epochs_done: float, force: bool = False) -> None:
        now = time.time()
        if not force and now - self.last_report < 0.5:
            return
        self.last_report = now
        total = max(int(trainer.epochs) - int(getattr(trainer, "start_epoch", 0)), 1)
        f = min(max(epochs_done / total, 0.0), 1.0)
        monitor.write_monitor_logger_for_multiple_tasks(None, "training", PREPARE_END + (TRAIN_END - PREPARE_END) * f)

    def on_pretrain_routine_end(self, trainer: Any) -> None:
        if _rank() in (-1, 0):
            self.nb = max(len(trainer.train_loader), 1)
            self._report(trainer, 0.0, force=True)

    def on_train_epoch_start(self, trainer: Any) -> None:
        self.in_epoch = True
        self.batch = 0
        self.nb = max(len(trainer.train_loader), 1)

    def on_train_batch_end(self, trainer: Any) -> None:
        if _rank() not in (-1, 0):
            return
        self.batch += 1
        done = trainer.epoch - getattr(trainer, "start_epoch", 0) + min(self.batch / self.nb, 1.0)
        self._report(trainer, done, force=self.batch == self.nb)

    # -------------------------------------------------------------- stages
    def _metrics(self, trainer: Any) -> dict[str, float]:
        m = trainer.metrics or {}
        return {k: _fraction(m.get(src, 0.0)) for k, src in METRIC_KEYS.items()}

    def _write_stage(
        self,
        name: str,
        files: list[str],
        metrics: dict[str, float],
        timestamp: int,
        attachments: dict[str, list[str]] | None = None,
    ) -> None:
        rw.write_model_stage(
            stage_name=name,
            files=files,
            evaluation_result=metrics,
            timestamp=timestamp,
            attachments=attachments,
            evaluate_config={"iou_thr": 0.5, "conf_thr": 0.001},
        )
        self.stages[name] = {"files": list(files), "metrics": dict(metrics), "timestamp": timestamp}
        self._drop_evicted()

    def load_written_stages(self) -> None:
        """Read back the stages result.yaml lists into ``stages`` (files as paths under models_dir,
        the metrics, the timestamp). With several GPUs Ultralytics trains in DDP child processes
        and the callbacks run in rank 0's copy of this object: the parent learns the stages here."""
        try:
            with open(self.result_file, encoding="utf-8") as f:
                result = yaml.safe_load(f) or {}
        except OSError:
            return
        for name, st in (result.get("model_stages") or {}).items():
            if not isinstance(st, dict):
                continue
            metrics = {
                k: float(v)
                for k, v in st.items()
                if k not in ("stage_name", "files", "timestamp") and isinstance(v, (int, float))
            }
            self.stages[name] = {
                "files": [os.path.join(self.models_dir, f) for f in st.get("files") or []],
                "metrics": metrics,
                "timestamp": int(st.get("timestamp") or 0),
            }

    def _drop_evicted(self) -> None:
        """Delete the folders of stages the SDK evicted from result.yaml (at most 11 are kept)."""
        try:
            with open(self.result_file, encoding="utf-8") as f:
                result = yaml.safe_load(f) or {}
        except OSError:
            return
        if "model_stages" not in result:  # legacy result (protocol < 1.0.0): one model, nothing evicted
            return
        kept = set(result["model_stages"] or {})
        for name in [n for n in self.stages if n not in kept]:
            for f in self.stages.pop(name)["files"]:
                if os.path.isfile(f):
                    os.remove(f)

    def _save_weights(self, trainer: Any, stage: str) -> str:
        from ultralytics.utils.torch_utils import strip_optimizer

        os.makedirs(self.models_dir, exist_ok=True)
        dst = os.path.join(self.models_dir, stage + STAGE_SUFFIX)
        if not strip_optimizer(str(trainer.last), s=dst):
            raise ModelError("Ultralytics wrote no usable checkpoint for this epoch", path=str(trainer.last))
        return dst

    def on_model_save(self, trainer: Any) -> None:
        """After Ultralytics saved last.pt: the epoch stage (every ``save_period`` epochs and at
        the end), then ``best`` when mAP50 is at least the best so far. ``best`` gets a timestamp
        one second after every other stage's, so that it also wins ties (the best stage is the
        max of (mAP, timestamp)): result.yaml's best_stage_name is always ``best``."""
        epoch = int(trainer.epoch) + 1
        metrics = self._metrics(trainer)
        final = bool(trainer.stop) or epoch >= int(trainer.epochs)
        periodic = self.save_period > 0 and epoch % self.save_period == 0
        now = int(time.time())
        if periodic or final:
            name = f"epoch_{epoch}"
            self._write_stage(name, [self._save_weights(trainer, name)], metrics, now)
            log(f"epoch {epoch}: stage {name} (mAP50 {metrics['mAP']:.4f}, mAP50-95 {metrics['mAP50_95']:.4f})")
        if metrics["mAP"] >= self.best_map:
            improved = metrics["mAP"] > self.best_map
            self.best_map = metrics["mAP"]
            latest = max([now] + [r["timestamp"] for n, r in self.stages.items() if n != BEST_STAGE])
            self._write_stage(BEST_STAGE, [self._save_weights(trainer, BEST_STAGE)], metrics, latest + 1)
            if improved:
                log(f"epoch {epoch}: new best mAP50 {metrics['mAP']:.4f} -> stage {BEST_STAGE}")

    # -------------------------------------------------------------- tensorboard
    def _tb(self):
        if self._writer is None:
            from tensorboardX import SummaryWriter

            os.makedirs(self.tensorboard_dir, exist_ok=True)
            self._writer = SummaryWriter(log_dir=self.tensorboard_dir)
        return self._writer

    def on_fit_epoch_end(self, trainer: Any) -> None:
        if _rank() not in (-1, 0):
            return
        if not self.in_epoch:  # Ultralytics' final validation of best.pt, not an epoch
            return
        self.in_epoch = False
        step = int(trainer.epoch) + 1
        scalars: dict[str, float] = {}
        if trainer.tloss is not None:
            scalars.update(trainer.label_loss_items(trainer.tloss, prefix="train"))
        for k, v in (trainer.metrics or {}).items():
            name = k.replace("metrics/", "val/").replace("(B)", "").replace("mAP50-95", "mAP50_95")
            scalars[name] = v
        scalars.update(getattr(trainer, "lr", {}) or {})
        if getattr(trainer, "epoch_time", None):
            scalars["time/epoch_seconds"] = trainer.epoch_time
        w = self._tb()
        for k, v in scalars.items():
            try:
                w.add_scalar(k, float(v), step)
            except (TypeError, ValueError):
                continue
        w.flush()
        self._report(trainer, step - getattr(trainer, "start_epoch", 0), force=True)

    def on_train_end(self, trainer: Any) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def resolve_model(cfg: Any, params: TrainParams) -> str:
    """What to build or load: the pretrained ``.pt`` the platform hands over (continued training)
    if any, else ``model`` (a YAML to train from scratch, or a ``.pt`` path).

    Raises:
        ModelError: a ``.pt`` that does not exist (nothing can be downloaded here).
    """
    weights = get_weight_files(cfg, suffix=(".pt",))
    if weights:
        log(f"continuing training from the pretrained model {weights[0]}")
        return weights[0]
    if params.model.endswith(".pt"):
        path = params.model if os.path.isabs(params.model) else os.path.join(cfg.ymir.input.models_dir, params.model)
        if not os.path.isfile(path):
            raise ModelError(
                f"weights {params.model!r} not found and this image works offline (nothing is "
                f"downloaded): train from scratch with a model YAML such as yolov8n.yaml, or pick a "
                f"pretrained model on the platform (pretrained_model_params)",
                path=path,
                key="model",
            )
        return path
    return params.model


def check_gpus(device: str) -> None:
    """Fail early, with the platform's "no GPU" code, when gpu_id names GPUs torch cannot see.

    Raises:
        RuntimeError: reads "No CUDA GPUs are available", which ymir_exc.executor maps to 300102.
    """
    if device == "cpu":
        return
    import torch

    wanted = [int(g) for g in device.split(",")]
    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if seen == 0 or max(wanted) >= seen:
        raise RuntimeError(
            f"No CUDA GPUs are available for gpu_id {device!r}: torch {torch.__version__} sees {seen} GPU(s)"
        )


def skip_online_amp_check() -> bool:
    """On a GPU, Ultralytics checks AMP by running ``yolo26n.pt``, which it downloads first: offline,
    that is a network attempt (and a failure) per run. When that file is not already in the
    weights folder, the check is replaced by "AMP works" (Ultralytics' own answer when the
    download fails). ``ultralytics_args: {amp: false}`` turns AMP off if a GPU gives NaN losses.
    Returns True when the check was replaced."""
    import ultralytics.engine.trainer as trainer_module
    from ultralytics.utils import WEIGHTS_DIR

    if (WEIGHTS_DIR / "yolo26n.pt").is_file() or not hasattr(trainer_module, "check_amp"):
        return False
    trainer_module.check_amp = lambda model, *a, **k: True
    return True


def _build_model(source: str):
    from ultralytics import YOLO

    try:
        return YOLO(source, task="detect")
    except FileNotFoundError as e:
        if source.endswith((".yaml", ".yml")):
            raise ConfigFileError(f"unknown model YAML {source!r}: {e}", key="model") from e
        raise ModelError(f"cannot load {source}: {e}", path=source) from e
    except Exception as e:
        if source.endswith(".pt"):
            raise ModelError(f"cannot load {source}: {type(e).__name__}: {e}", path=source) from e
        raise


def _attachments(save_dir: str) -> dict[str, list[str]] | None:
    if not os.path.isdir(save_dir):
        return None
    images = sorted(os.path.join(save_dir, f) for f in os.listdir(save_dir) if f.endswith((".png", ".jpg")))
    return {"images": images} if images else None


def _export_onnx(reporter: TrainingReporter, params: TrainParams) -> None:
    from ultralytics import YOLO

    best = BEST_STAGE
    rec = reporter.stages.get(best)
    if rec is None:
        return
    pt = os.path.join(reporter.models_dir, best + STAGE_SUFFIX)
    t0 = time.time()
    try:
        onnx_path = YOLO(pt, task="detect").export(format="onnx", imgsz=params.img_size, device="cpu")
    except Exception as e:
        raise ModelError(f"ONNX export failed: {type(e).__name__}: {e}", path=pt, key="export_onnx") from e
    reporter._write_stage(best, [pt, str(onnx_path)], rec["metrics"], rec["timestamp"])
    log(f"stage {best}: exported {onnx_path} in {time.time() - t0:.1f} s")


def _best_stage_name(result_file: str) -> str:
    with open(result_file, encoding="utf-8") as f:
        return str((yaml.safe_load(f) or {}).get("best_stage_name") or "")


def training(cfg: Any) -> None:
    """The training task (see the module docstring)."""
    t0 = time.time()
    params = TrainParams.from_config(cfg.param)
    class_names = class_names_of(cfg.param)
    out = cfg.ymir.output
    monitor.write_monitor_logger_for_multiple_tasks(cfg, "training", 0.0)
    if params.export_onnx:
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise ConfigFileError(
                "export_onnx is true but the onnx package is not installed in this image "
                "(pip install onnx, or set export_onnx: false)",
                key="export_onnx",
            ) from None

    data_yaml = convert_ymir_to_yolov5(cfg, out_dir=os.path.join(out.root_dir, "yolo_dataset"))
    log(f"dataset ready in {time.time() - t0:.2f} s: {data_yaml}; classes {class_names}")
    monitor.write_monitor_logger_for_multiple_tasks(cfg, "training", PREPARE_END)

    check_gpus(params.device)
    source = resolve_model(cfg, params)
    model = _build_model(source)
    if params.device != "cpu" and skip_online_amp_check():
        log(
            "AMP self-check skipped (it would download yolo26n.pt); "
            "AMP stays on unless ultralytics_args sets amp: false"
        )
    reporter = TrainingReporter(cfg, params)
    for event, fn in reporter.callbacks().items():
        model.add_callback(event, fn)
    args = params.ultralytics_train_args()
    args.update(data=data_yaml, project=os.path.join(out.root_dir, "ultralytics"), name="train")
    log(f"training {source} on {params.device}: " + ", ".join(f"{k}={v}" for k, v in args.items()))
    model.train(**args)
    if "," in params.device:  # DDP: rank 0 wrote the stages in a child process
        reporter.load_written_stages()
    if not reporter.stages:
        raise ModelError("training ended without writing a model stage")

    save_dir = str(getattr(model.trainer, "save_dir", "") or "")
    if params.plots and save_dir:
        files = _attachments(save_dir)
        last = max(reporter.stages.items(), key=lambda kv: kv[1]["timestamp"])
        if files:
            reporter._write_stage(last[0], last[1]["files"], last[1]["metrics"], last[1]["timestamp"], files)
    if params.export_onnx:
        _export_onnx(reporter, params)
    best = _best_stage_name(out.training_result_file)
    log(
        f"training done in {time.time() - t0:.1f} s; best stage {best}: mAP50 "
        f"{reporter.stages.get(best, {}).get('metrics', {}).get('mAP', float('nan')):.4f}"
    )
