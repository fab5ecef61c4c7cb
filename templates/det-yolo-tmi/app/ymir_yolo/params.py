"""Hyper-parameters of the three tasks, read from config.yaml (img-man templates + the user's edits).

Declared on :class:`ymir_exc.params.HyperParams`: each key once, with its default, its range or
choices and a description; the img-man templates are checked against these models by the tests,
so the defaults live here. Every value is checked before any work starts; a bad one is a
:class:`~ymir_exc.errors.ConfigFileError` (return code 300001) naming the key::

    from ymir_yolo.params import TrainParams
    p = TrainParams.from_config(cfg.param)     # cfg = ymir_exc.util.get_merged_config()
    p.model, p.epochs, p.img_size, p.device    # ('yolov8n.yaml', 200, 320, 'cpu')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from ymir_exc.errors import ConfigFileError
from ymir_exc.params import HyperParams

MiningAlgorithm = Literal["aldd", "entropy", "random"]
MINING_ALGORITHMS = get_args(MiningAlgorithm)
Optimizer = Literal["SGD", "MuSGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSprop", "auto"]

_GPU_ID = (
    "the platform's GPUs: empty = CPU, else comma-separated indices ('0,1'; the platform renumbers "
    "the GPUs it hands over to 0..n-1)"
)


class _Device(HyperParams):
    """``gpu_id`` (a reserved key the platform sets), read as Ultralytics' device string."""

    gpu_id: str = Field("", description=_GPU_ID)

    @field_validator("gpu_id")
    @classmethod
    def _gpu_ids(cls, raw: str) -> str:
        ids = [g.strip() for g in raw.split(",") if g.strip()]
        if not all(g.isdigit() for g in ids):
            raise ValueError(f"must be comma-separated GPU indices or empty (CPU), got {raw!r}")
        return ",".join(ids)

    @property
    def devices(self) -> tuple[str, ...]:
        """Every device of gpu_id (one rank each), or ``("cpu",)``."""
        return tuple(self.gpu_id.split(",")) if self.gpu_id else ("cpu",)


def class_names_of(param: Mapping[str, Any]) -> list:
    names = param.get("class_names")
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigFileError(f"must be a non-empty list of names, got {names!r}", key="class_names")
    return list(names)


class TrainParams(_Device):
    """training-template.yaml."""

    export_format: str = Field(
        "det-voc:raw",
        description="annotation format the platform exports: det-voc:raw (VOC xml), det-ark:raw (txt) or seg-coco:raw",
    )
    model: str = Field(
        "yolov8n.yaml",
        description="an Ultralytics model YAML to train from scratch (yolov8n.yaml, yolo11n.yaml, ...), or a .pt file",
    )
    epochs: int = Field(200, ge=1, description="passes over the training set")
    batch_size: int = Field(8, ge=1, description="images per batch (split across GPUs)")
    img_size: int = Field(320, ge=32, description="network input size in pixels (a multiple of 32)")
    learning_rate: float = Field(0.002, ge=0.0, le=10.0, description="initial learning rate")
    optimizer: Optimizer = Field("AdamW", description="SGD, Adam, AdamW, NAdam, RAdam, RMSprop, MuSGD or auto")
    patience: int = Field(100, ge=0, description="early stop after this many epochs without improvement (0 = never)")
    save_period: int = Field(20, ge=0, description="a model stage every save_period epochs (0 = only the last)")
    workers: int = Field(2, ge=0, description="dataloader worker processes")
    close_mosaic: int = Field(10, ge=0, description="mosaic augmentation is off for the last close_mosaic epochs")
    cache: Literal["false", "ram", "disk", "true"] = Field(
        "false", description="cache decoded images: false, ram or disk"
    )
    plots: bool = Field(False, description="Ultralytics plots, attached to the model")
    seed: int = Field(0, ge=0, description="random seed")
    export_onnx: bool = Field(False, description="also export the best stage to ONNX")
    ultralytics_args: dict[str, Any] = Field(default_factory=dict, description="any other Ultralytics train argument")

    @field_validator("model")
    @classmethod
    def _model_file(cls, model: str) -> str:
        model = model.strip()
        if not model.endswith((".yaml", ".yml", ".pt")):
            raise ValueError(
                f"must be an Ultralytics model YAML (e.g. yolov8n.yaml, yolo11n.yaml) or a .pt file, got {model!r}"
            )
        return model

    @field_validator("ultralytics_args", mode="before")
    @classmethod
    def _mapping(cls, extra: Any) -> Any:
        if not isinstance(extra, dict):
            raise ValueError(f"must be a mapping of extra Ultralytics train arguments, got {extra!r}")
        return extra

    @property
    def device(self) -> str:
        """Ultralytics device string: ``'cpu'`` or every GPU, ``'0,1'`` (DDP when several)."""
        return self.gpu_id or "cpu"

    def ultralytics_train_args(self) -> dict[str, Any]:
        """Keyword arguments of ``YOLO.train`` (without ``data``, ``project`` and ``name``)."""
        args: dict[str, Any] = {
            "epochs": self.epochs,
            "batch": self.batch_size,
            "imgsz": self.img_size,
            "lr0": self.learning_rate,
            "optimizer": self.optimizer,
            "patience": self.patience,
            "save_period": -1,
            "workers": self.workers,
            "close_mosaic": self.close_mosaic,
            "device": self.device,
            "cache": {"false": False, "true": "ram"}.get(self.cache, self.cache),
            "plots": self.plots,
            "seed": self.seed,
            "verbose": True,
            "exist_ok": True,
            "val": True,
        }
        args.update(self.ultralytics_args)
        return args


class PredictParams(_Device):
    """mining-template.yaml and infer-template.yaml (the keys both tasks use)."""

    img_size: int = Field(320, ge=32, description="network input size in pixels (a multiple of 32)")
    batch_size: int = Field(16, ge=1, description="images per forward pass")
    workers: int = Field(2, ge=0, description="threads decoding the next batch while the current one runs")
    num_workers: int = Field(1, ge=1, description="CPU processes (ranks, torch.distributed gloo) when no GPU is given")
    half: bool = Field(False, description="fp16 inference on GPU (false on CPU, whatever the config says)")
    bad_image_policy: Literal["error", "lowest"] = Field(
        "error", description="an image that cannot be decoded: error (stop) or lowest (no boxes / ranked last)"
    )
    # inference
    conf_threshold: float = Field(0.25, ge=0.0, le=1.0, description="detections need confidence >= conf_threshold")
    nms_iou: float = Field(0.7, ge=0.0, le=1.0, description="NMS IoU threshold")
    max_det: int = Field(300, ge=1, description="detections kept per image")
    # mining
    mining_algorithm: MiningAlgorithm = Field("aldd", description="aldd, entropy or random")
    mining_conf_threshold: float = Field(
        0.05, ge=0.0, le=1.0, description="entropy: detections with confidence >= this are scored"
    )
    mining_nms_iou: float = Field(0.7, ge=0.0, le=1.0, description="entropy: NMS IoU threshold")
    mining_max_det: int = Field(300, ge=1, description="entropy: at most this many detections per image")
    random_seed: int = Field(0, ge=0, description="random: seed")
    aldd_window: int = Field(
        3, ge=3, description="aldd: neighbourhood, odd, in cells of the stride-8 grid (1 would make every score 0)"
    )
    aldd_pool: int = Field(4, ge=1, description="aldd: max-pooling block, in cells of the stride-8 grid")

    @field_validator("aldd_window")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 != 1:
            raise ValueError(f"must be odd (the window is centred on a cell), got {v}")
        return v

    @model_validator(mode="after")
    def _no_half_on_cpu(self) -> PredictParams:
        self.half = self.half and self.gpu_id != ""
        return self

    @property
    def device(self) -> str:
        """The first device: ``'cpu'`` or a GPU index (one process per GPU uses the others)."""
        return self.devices[0]
