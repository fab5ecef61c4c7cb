"""Hyper-parameters of the three tasks, read from config.yaml (img-man templates + the user's edits).

Every value is checked here, before any work starts; a bad one is a
:class:`~ymir_exc.errors.ConfigFileError` (return code 300001) naming the key::

    from ymir_yolo.params import TrainParams
    p = TrainParams.from_config(cfg.param)     # cfg = ymir_exc.util.get_merged_config()
    p.model, p.epochs, p.img_size, p.device    # ('yolov8n.yaml', 300, 320, 'cpu')

The defaults below are those of the img-man templates; the templates document each key.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ymir_exc.errors import ConfigFileError

MINING_ALGORITHMS = ("aldd", "entropy", "random")
BAD_IMAGE_POLICIES = ("error", "lowest")


def _get(param: Mapping[str, Any], key: str, default: Any) -> Any:
    v = param.get(key, default)
    return default if v is None else v


def _int(param: Mapping[str, Any], key: str, default: int, minimum: int | None = None) -> int:
    v = _get(param, key, default)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        v = int(v.strip())
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise ConfigFileError(f"must be an integer, got {v!r}", key=key)
    if minimum is not None and v < minimum:
        raise ConfigFileError(f"must be >= {minimum}, got {v}", key=key)
    return int(v)


def _float(
    param: Mapping[str, Any], key: str, default: float, lo: float | None = None, hi: float | None = None
) -> float:
    v = _get(param, key, default)
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise ConfigFileError(f"must be a number, got {v!r}", key=key)
    v = float(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi) or v != v:
        raise ConfigFileError(f"must be in [{lo}, {hi}], got {v}", key=key)
    return v


def _bool(param: Mapping[str, Any], key: str, default: bool) -> bool:
    v = _get(param, key, default)
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
        return v.strip().lower() in ("true", "yes", "1", "on")
    raise ConfigFileError(f"must be true or false, got {v!r}", key=key)


def _aldd_window(param: Mapping[str, Any], default: int) -> int:
    """``aldd_window``: an odd integer >= 3 (1 would make every ALDD score 0: a cell's own
    neighbourhood has no disagreement).

    Raises:
        ConfigFileError: key ``aldd_window``, not an odd integer >= 3.
    """
    v = _int(param, "aldd_window", default, 3)
    if v % 2 != 1:
        raise ConfigFileError(f"must be odd (the window is centred on a cell), got {v}", key="aldd_window")
    return v


def _choice(param: Mapping[str, Any], key: str, default: str, choices: Sequence[str]) -> str:
    v = str(_get(param, key, default)).strip().lower()
    if v not in choices:
        raise ConfigFileError(f"must be one of {list(choices)}, got {v!r}", key=key)
    return v


def device_of(param: Mapping[str, Any]) -> str:
    """Ultralytics device string from the platform's ``gpu_id``: ``''`` -> ``'cpu'``,
    ``'0,1'`` -> ``'0,1'`` (the platform renumbers the GPUs it hands over to ``0..n-1``)."""
    raw = param.get("gpu_id")
    ids = [g.strip() for g in str(raw if raw is not None else "").split(",") if g.strip()]
    for g in ids:
        if not g.isdigit():
            raise ConfigFileError(f"must be comma-separated GPU indices or empty (CPU), got {raw!r}", key="gpu_id")
    return ",".join(ids) if ids else "cpu"


def class_names_of(param: Mapping[str, Any]) -> list:
    names = param.get("class_names")
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigFileError(f"must be a non-empty list of names, got {names!r}", key="class_names")
    return list(names)


@dataclass
class TrainParams:
    """training-template.yaml."""

    model: str = "yolov8n.yaml"
    epochs: int = 200
    batch_size: int = 8
    img_size: int = 320
    learning_rate: float = 0.002
    optimizer: str = "AdamW"
    patience: int = 100
    save_period: int = 20
    workers: int = 2
    export_format: str = "det-voc:raw"
    export_onnx: bool = False
    close_mosaic: int = 10
    cache: str = "false"
    plots: bool = False
    seed: int = 0
    device: str = "cpu"
    ultralytics_args: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, param: Mapping[str, Any]) -> TrainParams:
        d = cls()
        model = str(_get(param, "model", d.model)).strip()
        if not model.endswith((".yaml", ".yml", ".pt")):
            raise ConfigFileError(
                f"must be an Ultralytics model YAML (e.g. yolov8n.yaml, yolo11n.yaml) or a .pt file, got {model!r}",
                key="model",
            )
        extra = _get(param, "ultralytics_args", {})
        if not isinstance(extra, dict):
            raise ConfigFileError(
                f"must be a mapping of extra Ultralytics train arguments, got {extra!r}", key="ultralytics_args"
            )
        cache = str(_get(param, "cache", d.cache)).strip().lower()
        if cache not in ("false", "ram", "disk", "true"):
            raise ConfigFileError(f"must be false, ram or disk, got {cache!r}", key="cache")
        optimizer = str(_get(param, "optimizer", d.optimizer)).strip()
        known_opt = ("SGD", "MuSGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSprop", "auto")
        if optimizer not in known_opt:
            raise ConfigFileError(f"must be one of {list(known_opt)}, got {optimizer!r}", key="optimizer")
        return cls(
            model=model,
            epochs=_int(param, "epochs", d.epochs, 1),
            batch_size=_int(param, "batch_size", d.batch_size, 1),
            img_size=_int(param, "img_size", d.img_size, 32),
            learning_rate=_float(param, "learning_rate", d.learning_rate, 0.0, 10.0),
            optimizer=optimizer,
            patience=_int(param, "patience", d.patience, 0),
            save_period=_int(param, "save_period", d.save_period, 0),
            workers=_int(param, "workers", d.workers, 0),
            export_format=str(_get(param, "export_format", d.export_format)),
            export_onnx=_bool(param, "export_onnx", d.export_onnx),
            close_mosaic=_int(param, "close_mosaic", d.close_mosaic, 0),
            cache=cache,
            plots=_bool(param, "plots", d.plots),
            seed=_int(param, "seed", d.seed, 0),
            device=device_of(param),
            ultralytics_args=dict(extra),
        )

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


@dataclass
class PredictParams:
    """mining-template.yaml and infer-template.yaml (the keys both tasks use)."""

    img_size: int = 320
    batch_size: int = 16
    workers: int = 2
    half: bool = False
    bad_image_policy: str = "error"
    device: str = "cpu"
    #: every device of gpu_id (one rank each), or ``("cpu",)``
    devices: tuple[str, ...] = ("cpu",)
    #: CPU processes (ranks, torch.distributed gloo) when no GPU is given
    num_workers: int = 1
    # inference
    conf_threshold: float = 0.25
    nms_iou: float = 0.7
    max_det: int = 300
    # mining
    mining_algorithm: str = "aldd"
    mining_conf_threshold: float = 0.05
    mining_nms_iou: float = 0.7
    mining_max_det: int = 300
    random_seed: int = 0
    aldd_window: int = 3
    aldd_pool: int = 4

    @classmethod
    def from_config(cls, param: Mapping[str, Any]) -> PredictParams:
        d = cls()
        device = device_of(param)
        return cls(
            img_size=_int(param, "img_size", d.img_size, 32),
            batch_size=_int(param, "batch_size", d.batch_size, 1),
            workers=_int(param, "workers", d.workers, 0),
            half=_bool(param, "half", d.half) and device != "cpu",
            bad_image_policy=_choice(param, "bad_image_policy", d.bad_image_policy, BAD_IMAGE_POLICIES),
            device=device.split(",")[0] if device != "cpu" else device,
            devices=tuple(device.split(",")),
            num_workers=_int(param, "num_workers", d.num_workers, 1),
            conf_threshold=_float(param, "conf_threshold", d.conf_threshold, 0.0, 1.0),
            nms_iou=_float(param, "nms_iou", d.nms_iou, 0.0, 1.0),
            max_det=_int(param, "max_det", d.max_det, 1),
            mining_algorithm=_choice(param, "mining_algorithm", d.mining_algorithm, MINING_ALGORITHMS),
            mining_conf_threshold=_float(param, "mining_conf_threshold", d.mining_conf_threshold, 0.0, 1.0),
            mining_nms_iou=_float(param, "mining_nms_iou", d.mining_nms_iou, 0.0, 1.0),
            mining_max_det=_int(param, "mining_max_det", d.mining_max_det, 1),
            random_seed=_int(param, "random_seed", d.random_seed, 0),
            aldd_window=_aldd_window(param, d.aldd_window),
            aldd_pool=_int(param, "aldd_pool", d.aldd_pool, 1),
        )
