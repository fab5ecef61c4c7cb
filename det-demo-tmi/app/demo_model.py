"""The colour-window detector: a small, honest object detector in numpy.

It is the model of ``det-demo-tmi``, the reference executor of this project. It learns which
colours objects are made of, slides a few box shapes over the image and scores each window with a
logistic regression. No deep learning, no GPU; every number it reports is computed from the data,
and the same input gives the same output.

Pipeline (``C`` classes, ``K`` box shapes, ``d`` = ``downscale``)::

    image --(Pillow BOX filter, 1/d)--> small RGB image --(8 levels per channel)--> colour bin b(x, y) in 0..511

    colour log-likelihood ratio, one table per class c, counted over the training set:
        LLR_c[b] = log((fg_c[b] + 1) / (N_fg_c + 512)) - log((bg_c[b] + 1) / (N_bg_c + 512))
        fg_c = pixels inside a box of class c, bg_c = every other pixel (Laplace smoothing)

    box shapes: k-means (distance 1 - IoU of centred boxes, init at area quantiles, 20 rounds)
                over the training boxes' (w, h) in small-image pixels

    windows: every box shape at every position on a grid of step ``stride`` (small-image pixels)
    window features (integral images, O(1) per window):
        f1 = mean LLR_c inside the window
        f2 = mean LLR_c in the ring around it (window grown by 50 %, minus the window)
        f3 = mean LLR_c in the centre half of the window
        f4 = standard deviation of the brightness v = (R+G+B)/765 inside the window (texture)
        f5 = mean brightness inside,  f6 = mean brightness in the ring (crowns vs their shadows)
        f7 = log(window area): a per-shape prior
    standardised with the training windows' mean / std: z = (f - mean) / std

    score: p_c(window) = sigmoid(w_c . z + b_c)                 (one-vs-rest, one model per class)

Training (per class): window label y = 1 when IoU(window, a box of class c) >= 0.5, else 0;
negatives kept deterministically (every n-th, at most ``max_negatives``, starting at the window
``seed mod n``: the training ``seed`` picks which negatives when there are more than
``max_negatives``, and changes nothing otherwise); class-balanced weights
a_i = 1 / (2 N_pos) for positives, 1 / (2 N_neg) for negatives; minimise
``L = sum_i a_i * logloss(y_i, p_i) + l2 / 2 * |w|^2`` by full-batch gradient descent from w = 0
(``epochs`` x ``iters_per_epoch`` steps of ``learning_rate``). The balanced weights make the fit
act as if positives and negatives were equally frequent; the saved model's bias gets
``+ ln(N_pos / N_neg)`` (N_neg = all negative windows, before subsampling; the prior correction of
King & Zeng 2001), so that p estimates the probability that a window is a positive.

Detection: score every window, keep p >= ``conf_threshold``, greedy NMS per class (IoU >
``nms_iou`` suppresses), keep the ``max_det`` best; boxes are mapped back to original integer
pixels and clipped inside the image.

Evaluation (:func:`evaluate`, from :mod:`ymir_exc.metrics`): the PASCAL VOC 2010+ devkit's
all-point interpolated AP per class at IoU >= 0.5, averaged over the classes that have ground truth.

This module depends on numpy, Pillow, ``ymir_exc.errors`` and ``ymir_exc.metrics`` only; the SDK
calls (reading the dataset, writing results and progress) live in ``start.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import Field

from ymir_exc import params
from ymir_exc.errors import AnnotationError, ImageError, ModelError
from ymir_exc.metrics import evaluate_detections, iou_matrix

#: colour quantisation: levels per channel, hence QUANT_LEVELS ** 3 colour bins
QUANT_LEVELS = 8
NUM_BINS = QUANT_LEVELS**3
#: the context ring is the window grown by this fraction of its size (half on each side)
RING_GROW = 0.5
#: k-means rounds for the box shapes
KMEANS_ITERS = 20
#: a window is a positive training example when its IoU with a ground-truth box is >= this
POSITIVE_IOU = 0.5
FEATURE_NAMES = (
    "llr_inside",
    "llr_ring",
    "llr_centre",
    "brightness_std",
    "brightness_inside",
    "brightness_ring",
    "log_area",
)
MODEL_FORMAT = "ymir-det-demo-tmi/colour-window"
MODEL_VERSION = 1

#: (class_id, x, y, w, h): a ground-truth box in integer pixels, (x, y) the top-left corner
GTBox = tuple[int, int, int, int, int]
#: (class_id, score, x, y, w, h): a detection in integer pixels
Detection = tuple[int, float, int, int, int, int]
#: (image path, [GTBox, ...])
Item = tuple[str, Sequence[GTBox]]


# ---------------------------------------------------------------------------- hyper-parameters


class HyperParams(params.HyperParams):
    """Hyper-parameters (the keys of the img-man templates), with their defaults: those of
    inference; :class:`TrainParams` and :class:`MiningParams` set the training and mining
    defaults. ``HyperParams.from_config(task.param)`` reads config.yaml (unknown keys are
    ignored); a bad value is a ConfigFileError naming the key."""

    downscale: int = Field(4, ge=1, le=64, description="images are shrunk by this factor (Pillow BOX filter)")
    num_anchors: int = Field(3, ge=1, le=32, description="number of box shapes (k of the k-means)")
    stride: int = Field(2, ge=1, le=1024, description="window grid step, in downscaled pixels")
    epochs: int = Field(10, ge=1, le=1000, description="evaluations / saved stages")
    iters_per_epoch: int = Field(10, ge=1, le=100000, description="gradient-descent steps per epoch")
    learning_rate: float = Field(0.5, ge=1e-9, le=100.0, description="gradient-descent step size")
    l2: float = Field(1e-3, ge=0.0, le=100.0, description="L2 penalty on the weights (not the bias)")
    max_negatives: int = Field(50000, ge=1, le=10**9, description="negatives kept per class (every n-th window)")
    nms_iou: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="NMS: a box overlapping a better one of the same class by IoU > nms_iou is dropped",
    )
    max_det: int = Field(100, ge=1, le=100000, description="detections kept per image")
    conf_threshold: float = Field(0.1, ge=0.0, le=1.0, description="detections need p >= conf_threshold")
    mining_algorithm: Literal["entropy", "random"] = Field(
        "entropy", description="entropy (uncertain images first) or random (a reproducible baseline)"
    )
    random_seed: int = Field(0, ge=-(2**63), le=2**63 - 1, description="seed of the 'random' mining score")
    seed: int = Field(
        0, ge=0, le=2**63 - 1, description="training seed: which every-n-th negatives are kept (offset seed mod n)"
    )


class TrainParams(HyperParams):
    """training-template.yaml: the evaluation after each epoch keeps detections down to p >= 0.01."""

    export_format: str = Field(
        "det-voc:raw", description="annotation format the platform exports: det-voc:raw (VOC xml) or det-ark:raw (txt)"
    )
    conf_threshold: float = Field(
        0.01, ge=0.0, le=1.0, description="score threshold of the detections the per-epoch evaluation (mAP50) uses"
    )


class MiningParams(HyperParams):
    """mining-template.yaml: the entropy scores detections down to p >= 0.05."""

    conf_threshold: float = Field(
        0.05, ge=0.0, le=1.0, description="detections (after NMS) scored by entropy need p >= conf_threshold"
    )


#: infer-template.yaml
InferParams = HyperParams


# ---------------------------------------------------------------------------- images


@dataclass
class ImageData:
    """One image, downscaled: colour bins and brightness, and the scale back to pixels."""

    path: str
    width: int  #: original size, pixels
    height: int
    bins: np.ndarray  #: (h, w) int, colour bin 0..511 of each downscaled pixel
    brightness: np.ndarray  #: (h, w) float64 in [0, 1]
    sx: float  #: original pixels per downscaled pixel, x
    sy: float


def colour_bins(rgb: np.ndarray) -> np.ndarray:
    """Quantise an (h, w, 3) uint8 RGB array to QUANT_LEVELS levels per channel: bin 0..511."""
    shift = 8 - int(math.log2(QUANT_LEVELS))
    q = rgb.astype(np.int64) >> shift
    return (q[..., 0] * QUANT_LEVELS + q[..., 1]) * QUANT_LEVELS + q[..., 2]


def load_image(path: str, downscale: int) -> ImageData:
    """Open an image (any Pillow format, converted to RGB) and shrink it by ``downscale``
    (Pillow BOX filter = the mean of each block; the small size is rounded, at least 1 px).

    Raises:
        ImageError: missing, unreadable or not a decodable image.
    """
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except FileNotFoundError:
        raise ImageError("image not found", path=path) from None
    except Exception as e:
        raise ImageError(f"cannot read image: {e}", path=path) from None
    width, height = im.size
    w = max(1, int(round(width / downscale)))
    h = max(1, int(round(height / downscale)))
    small = np.asarray(im.resize((w, h), Image.BOX) if (w, h) != im.size else im, dtype=np.uint8)
    brightness = small.astype(np.float64).sum(axis=2) / 765.0
    return ImageData(path, width, height, colour_bins(small), brightness, width / w, height / h)


def integral(a: np.ndarray) -> np.ndarray:
    """Integral image, shape (h + 1, w + 1): ``ii[y, x] = a[:y, :x].sum()``."""
    ii = np.zeros((a.shape[0] + 1, a.shape[1] + 1), dtype=np.float64)
    ii[1:, 1:] = np.cumsum(np.cumsum(a, axis=0, dtype=np.float64), axis=1)
    return ii


def rect_sums(ii: np.ndarray, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray) -> np.ndarray:
    """Sums over the rectangles [x0, x1) x [y0, y1) (integer arrays) from an integral image."""
    return ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]


# ---------------------------------------------------------------------------- geometry


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float, max_keep: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression.

    Takes boxes by score, highest first (ties: lower index first); a box whose IoU with an
    already kept box is > ``iou_thr`` is dropped. Returns the kept indices, best first (at most
    ``max_keep``).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep: list[int] = []
    while order.size and (max_keep is None or len(keep) < max_keep):
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if rest.size == 0:
            break
        order = rest[iou_matrix(boxes[i : i + 1], boxes[rest])[0] <= iou_thr]
    return np.asarray(keep, dtype=np.int64)


def kmeans_anchors(wh: np.ndarray, k: int, iters: int = KMEANS_ITERS) -> np.ndarray:
    """Cluster box sizes (n, 2) into at most ``k`` shapes, deterministically.

    Distance ``1 - IoU`` of boxes sharing a centre (as YOLOv2); centres start at the area
    quantiles ``(i + 0.5) / k`` of the boxes; ``iters`` rounds of assign / mean; an empty cluster
    keeps its centre. Returns the shapes sorted by area, duplicates removed.
    """
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    if wh.shape[0] == 0:
        raise ValueError("no box to cluster")
    order = np.argsort(wh[:, 0] * wh[:, 1], kind="stable")
    k = min(k, wh.shape[0])
    centres = wh[order[((np.arange(k) + 0.5) / k * wh.shape[0]).astype(np.int64)]].copy()
    for _ in range(iters):
        inter = np.minimum(wh[:, None, 0], centres[None, :, 0]) * np.minimum(wh[:, None, 1], centres[None, :, 1])
        iou = inter / (wh[:, None, 0] * wh[:, None, 1] + centres[None, :, 0] * centres[None, :, 1] - inter)
        assign = np.argmax(iou, axis=1)
        for j in range(k):
            members = wh[assign == j]
            if members.shape[0]:
                centres[j] = members.mean(axis=0)
    centres = centres[np.argsort(centres[:, 0] * centres[:, 1], kind="stable")]
    keep = [i for i in range(k) if not any(np.array_equal(centres[i], centres[j]) for j in range(i))]
    return centres[keep]


def window_grid(width: int, height: int, anchors: np.ndarray, stride: int) -> np.ndarray:
    """All windows ``(x, y, w, h)`` (int, downscaled pixels) of every anchor on the stride grid,
    inside a ``width`` x ``height`` image. Anchor sizes are rounded to whole pixels (at least 1,
    at most the image); a size met twice is used once."""
    out = []
    seen = set()
    for aw, ah in np.asarray(anchors).reshape(-1, 2):
        w = int(min(max(1, round(float(aw))), width))
        h = int(min(max(1, round(float(ah))), height))
        if (w, h) in seen:
            continue
        seen.add((w, h))
        xs = np.arange(0, width - w + 1, stride, dtype=np.int64)
        ys = np.arange(0, height - h + 1, stride, dtype=np.int64)
        gy, gx = np.meshgrid(ys, xs, indexing="ij")
        n = gx.size
        out.append(np.stack([gx.ravel(), gy.ravel(), np.full(n, w, np.int64), np.full(n, h, np.int64)], axis=1))
    return np.concatenate(out, axis=0) if out else np.zeros((0, 4), np.int64)


def window_features(llr_map: np.ndarray, brightness: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Raw features (n, 7) of windows (n, 4 ints, downscaled pixels), in FEATURE_NAMES order:
    mean LLR inside / in the ring / in the centre half, brightness std / mean inside / mean in
    the ring, log of the window area. The ring is the window grown by RING_GROW / 2 of its size
    on each side (at least 1 px), clipped to the image, minus the window; an empty ring (window
    = whole image) takes the inside value."""
    h, w = llr_map.shape
    x0, y0, ww, hh = (windows[:, i] for i in range(4))
    x1, y1 = x0 + ww, y0 + hh
    area = (ww * hh).astype(np.float64)
    gx = np.maximum(1, np.round(ww * RING_GROW / 2)).astype(np.int64)
    gy = np.maximum(1, np.round(hh * RING_GROW / 2)).astype(np.int64)
    ox0, oy0 = np.maximum(0, x0 - gx), np.maximum(0, y0 - gy)
    ox1, oy1 = np.minimum(w, x1 + gx), np.minimum(h, y1 + gy)
    ring_area = (ox1 - ox0) * (oy1 - oy0) - area
    cw, ch = np.maximum(1, ww // 2), np.maximum(1, hh // 2)
    cx0, cy0 = x0 + (ww - cw) // 2, y0 + (hh - ch) // 2

    def inside_and_ring(ii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s_in = rect_sums(ii, x0, y0, x1, y1)
        s_ring = rect_sums(ii, ox0, oy0, ox1, oy1) - s_in
        m_in = s_in / area
        return m_in, np.where(ring_area > 0, s_ring / np.where(ring_area > 0, ring_area, 1), m_in)

    li = integral(llr_map)
    llr_in, llr_ring = inside_and_ring(li)
    llr_centre = rect_sums(li, cx0, cy0, cx0 + cw, cy0 + ch) / (cw * ch)
    b_in, b_ring = inside_and_ring(integral(brightness))
    var = rect_sums(integral(brightness * brightness), x0, y0, x1, y1) / area - b_in * b_in
    b_std = np.sqrt(np.clip(var, 0.0, None))
    return np.stack([llr_in, llr_ring, llr_centre, b_std, b_in, b_ring, np.log(area)], axis=1)


def to_pixels(windows: np.ndarray, img: ImageData) -> np.ndarray:
    """Downscaled windows (n, 4) -> integer pixel boxes (n, 4) of the original image,
    clipped inside it, w and h >= 1."""
    x0 = np.round(windows[:, 0] * img.sx).astype(np.int64)
    y0 = np.round(windows[:, 1] * img.sy).astype(np.int64)
    x1 = np.round((windows[:, 0] + windows[:, 2]) * img.sx).astype(np.int64)
    y1 = np.round((windows[:, 1] + windows[:, 3]) * img.sy).astype(np.int64)
    x0 = np.clip(x0, 0, img.width - 1)
    y0 = np.clip(y0, 0, img.height - 1)
    x1 = np.clip(x1, x0 + 1, img.width)
    y1 = np.clip(y1, y0 + 1, img.height)
    return np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)), without overflow."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """H(p) = -p ln p - (1 - p) ln(1 - p), in nats (0 at p = 0 or 1, ln 2 at p = 0.5)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return -p * np.log(p) - (1 - p) * np.log1p(-p)


# ---------------------------------------------------------------------------- evaluation


def evaluate(
    detections: Sequence[Sequence[Detection]],
    ground_truth: Sequence[Sequence[GTBox]],
    num_classes: int,
    iou_thr: float = 0.5,
) -> dict[str, Any]:
    """Detection metrics over a set of images: :func:`ymir_exc.metrics.evaluate_detections`
    (PASCAL VOC 2010+ devkit protocol) with classes as indices ``0..num_classes-1``.

    Args:
        detections: per image, ``(class_id, score, x, y, w, h)``.
        ground_truth: per image, ``(class_id, x, y, w, h)``.

    Returns:
        ``{"mAP": mean AP over the classes with ground truth (0.0 when none has),
        "mAR": mean recall over those classes, "tp", "fp", "fn": counts over all classes,
        "ap": [AP per class, None for a class without ground truth]}``.

    Raises:
        ValueError: the two lists differ in length.
    """
    if len(detections) != len(ground_truth):
        raise ValueError(f"{len(detections)} detection lists for {len(ground_truth)} images")
    m = evaluate_detections(
        dict(enumerate(detections)), dict(enumerate(ground_truth)), classes=range(num_classes), iou_thr=iou_thr
    )
    m["ap"] = [m["ap"][c] for c in range(num_classes)]
    return m


# ---------------------------------------------------------------------------- the model


@dataclass
class ClassModel:
    """The part of the model that belongs to one class."""

    llr: np.ndarray  #: (NUM_BINS,) colour log-likelihood ratio
    mean: np.ndarray  #: (F,) feature mean of the training windows
    std: np.ndarray  #: (F,) feature std (1 where it was 0)
    weights: np.ndarray  #: (F + 1,) logistic weights, the last one is the bias
    trained: bool = True  #: False when the class had no positive window: it is never detected


class DemoModel:
    """A trained colour-window detector: everything needed to detect, saved as one JSON file."""

    def __init__(
        self,
        class_names: Sequence[str],
        downscale: int,
        stride: int,
        anchors: np.ndarray,
        classes: Sequence[ClassModel],
        info: dict[str, Any] | None = None,
    ) -> None:
        self.class_names = list(class_names)
        self.downscale = int(downscale)
        self.stride = int(stride)
        self.anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
        self.classes = list(classes)
        self.info = dict(info or {})

    # -- serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "class_names": self.class_names,
            "downscale": self.downscale,
            "stride": self.stride,
            "quant_levels": QUANT_LEVELS,
            "ring_grow": RING_GROW,
            "feature_names": list(FEATURE_NAMES),
            "anchors": self.anchors.tolist(),
            "classes": [
                {
                    "class_name": n,
                    "trained": cm.trained,
                    "weights": cm.weights.tolist(),
                    "feature_mean": cm.mean.tolist(),
                    "feature_std": cm.std.tolist(),
                    "llr": cm.llr.tolist(),
                }
                for n, cm in zip(self.class_names, self.classes, strict=False)
            ],
            "info": self.info,
        }

    def save(self, path: str) -> None:
        """Write the model as JSON (the same model gives the same bytes)."""
        text = json.dumps(self.to_dict(), indent=1, sort_keys=False, allow_nan=False)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> DemoModel:
        """Read a model written by :meth:`save`.

        Raises:
            ModelError: missing file, not JSON, or not a model of this format / version.
        """
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except FileNotFoundError:
            raise ModelError("model file not found", path=path) from None
        except (OSError, ValueError) as e:
            raise ModelError(f"not a readable JSON model: {e}", path=path) from None
        if not isinstance(d, dict) or d.get("format") != MODEL_FORMAT or d.get("version") != MODEL_VERSION:
            raise ModelError(f"not a {MODEL_FORMAT} v{MODEL_VERSION} model", path=path, key="format")
        try:
            if d["quant_levels"] != QUANT_LEVELS or list(d["feature_names"]) != list(FEATURE_NAMES):
                raise ValueError("quantisation or features differ from this code's")
            nf = len(FEATURE_NAMES)
            classes = []
            for c in d["classes"]:
                cm = ClassModel(
                    np.asarray(c["llr"], np.float64),
                    np.asarray(c["feature_mean"], np.float64),
                    np.asarray(c["feature_std"], np.float64),
                    np.asarray(c["weights"], np.float64),
                    bool(c["trained"]),
                )
                if (
                    cm.llr.shape != (NUM_BINS,)
                    or cm.mean.shape != (nf,)
                    or cm.std.shape != (nf,)
                    or cm.weights.shape != (nf + 1,)
                ):
                    raise ValueError(f"bad array sizes for class {c.get('class_name')!r}")
                classes.append(cm)
            model = cls(
                d["class_names"],
                d["downscale"],
                d["stride"],
                np.asarray(d["anchors"], np.float64),
                classes,
                d.get("info"),
            )
            if len(model.classes) != len(model.class_names) or not model.class_names or model.anchors.shape[0] == 0:
                raise ValueError("class_names, classes and anchors do not fit")
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"malformed model: {e}", path=path) from None
        return model

    # -- detection
    def class_scores(self, img: ImageData) -> tuple[np.ndarray, np.ndarray]:
        """Windows (n, 4, downscaled px) of an image and their probabilities (C, n)."""
        h, w = img.bins.shape
        windows = window_grid(w, h, self.anchors, self.stride)
        probs = np.zeros((len(self.classes), windows.shape[0]))
        for c, cm in enumerate(self.classes):
            if cm.trained:
                z = (window_features(cm.llr[img.bins], img.brightness, windows) - cm.mean) / cm.std
                probs[c] = sigmoid(z @ cm.weights[:-1] + cm.weights[-1])
        return windows, probs

    def detect_image(self, img: ImageData, conf_threshold: float, nms_iou: float, max_det: int) -> list[Detection]:
        """Detections ``(class_id, score, x, y, w, h)`` of a loaded image, best first."""
        windows, probs = self.class_scores(img)
        return postprocess(windows, probs, img, conf_threshold, nms_iou, max_det, self.trained_mask())

    def detect(self, path: str, conf_threshold: float, nms_iou: float, max_det: int) -> list[Detection]:
        """Detections of the image at ``path`` (see :meth:`detect_image`).

        Raises:
            ImageError: the image cannot be read.
        """
        return self.detect_image(load_image(path, self.downscale), conf_threshold, nms_iou, max_det)

    def trained_mask(self) -> list[bool]:
        return [cm.trained for cm in self.classes]


def postprocess(
    windows: np.ndarray,
    probs: np.ndarray,
    img: ImageData,
    conf_threshold: float,
    nms_iou: float,
    max_det: int,
    trained: Sequence[bool] | None = None,
) -> list[Detection]:
    """Threshold, per-class NMS (in original pixels), then the ``max_det`` best over all
    classes (ties: lower class, then earlier window). Boxes are integer pixels."""
    pixel_boxes = to_pixels(windows, img)
    cand: list[tuple[float, int, int]] = []
    for c in range(probs.shape[0]):
        if trained is not None and not trained[c]:
            continue
        idx = np.nonzero(probs[c] >= conf_threshold)[0]
        if idx.size == 0:
            continue
        kept = idx[nms(pixel_boxes[idx], probs[c, idx], nms_iou, max_keep=max_det)]
        cand.extend((float(probs[c, k]), c, int(k)) for k in kept)
    cand.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [(c, s, *(int(v) for v in pixel_boxes[k])) for s, c, k in cand[:max_det]]


# ---------------------------------------------------------------------------- training


def _gt_array(boxes: Sequence[GTBox], class_id: int, img: ImageData) -> np.ndarray:
    """Ground-truth boxes of one class in downscaled (continuous) pixels, (m, 4)."""
    rows = [(b[1] / img.sx, b[2] / img.sy, b[3] / img.sx, b[4] / img.sy) for b in boxes if b[0] == class_id]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def _box_mask(shape: tuple[int, int], gt_small: np.ndarray) -> np.ndarray:
    """Downscaled pixels whose centre lies inside any of the boxes (m, 4)."""
    h, w = shape
    cx = np.arange(w) + 0.5
    cy = np.arange(h) + 0.5
    mask = np.zeros(shape, dtype=bool)
    for x, y, bw, bh in gt_small:
        mask[np.ix_((cy >= y) & (cy < y + bh), (cx >= x) & (cx < x + bw))] = True
    return mask


def colour_llr(fg: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """LLR[b] = log((fg[b] + 1) / (N_fg + 512)) - log((bg[b] + 1) / (N_bg + 512))."""
    fg = np.asarray(fg, dtype=np.float64)
    bg = np.asarray(bg, dtype=np.float64)
    return np.log((fg + 1) / (fg.sum() + fg.size)) - np.log((bg + 1) / (bg.sum() + bg.size))


def logistic_loss_grad(
    x: np.ndarray, y: np.ndarray, a: np.ndarray, w: np.ndarray, l2: float
) -> tuple[float, np.ndarray]:
    """Weighted logistic loss and its gradient; ``x`` (n, F + 1) ends with a column of ones
    (bias, not penalised)."""
    z = x @ w
    loss = float(np.sum(a * np.where(y > 0, np.logaddexp(0.0, -z), np.logaddexp(0.0, z))))
    reg = w.copy()
    reg[-1] = 0.0
    loss += 0.5 * l2 * float(reg @ reg)
    grad = x.T @ (a * (sigmoid(z) - y)) + l2 * reg
    return loss, grad


@dataclass
class _ClassData:
    x: np.ndarray  # (n, F + 1) standardised, ones column last
    y: np.ndarray
    a: np.ndarray
    n_pos: int
    n_neg: int  # negatives kept (after subsampling)
    prior_logit: float  # ln(positives / all negatives): added to the bias of the saved model


def _load_items(
    items: Sequence[Item], downscale: int, tick: Callable[[], None]
) -> tuple[list[ImageData], list[list[GTBox]]]:
    """The images of ``items``, downscaled, and their boxes as integer tuples; ``tick`` after each.

    Raises:
        ImageError: an image cannot be read.
    """
    imgs: list[ImageData] = []
    gts: list[list[GTBox]] = []
    for path, boxes in items:
        imgs.append(load_image(path, downscale))
        gts.append([tuple(int(v) for v in b) for b in boxes])  # type: ignore[misc]
        tick()
    return imgs, gts


class Trainer:
    """Prepares the data once, then trains epoch by epoch and evaluates on the validation set.

    Usage::

        t = Trainer(train_items, val_items, class_names, HyperParams())
        for epoch in range(1, t.params.epochs + 1):
            loss = t.run_epoch()
            metrics = t.evaluate(conf_threshold=0.05)
            t.model().save(...)

    Raises (constructor):
        ImageError: an image cannot be read.
        AnnotationError: the training set has no box at all.
    """

    def __init__(
        self,
        train_items: Sequence[Item],
        val_items: Sequence[Item],
        class_names: Sequence[str],
        params: HyperParams,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        self.params = params
        self.class_names = list(class_names)
        n_all = len(train_items) + len(val_items)
        done = 0

        def tick() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(0.9 * done / max(1, n_all))

        # 1. images, downscaled, and their boxes
        self.train_imgs, self.train_gts = _load_items(train_items, params.downscale, tick)
        self.val_imgs, self.val_gts = _load_items(val_items, params.downscale, tick)
        # 2. box shapes
        wh = [
            (b[3] / img.sx, b[4] / img.sy)
            for img, gts in zip(self.train_imgs, self.train_gts, strict=False)
            for b in gts
        ]
        if not wh:
            raise AnnotationError("the training set has no box: nothing to learn")
        self.anchors = kmeans_anchors(np.asarray(wh), params.num_anchors)
        # 3. per class: colour statistics, training windows, standardisation
        self.class_models: list[ClassModel] = []
        self.class_data: list[_ClassData | None] = []
        for c in range(len(self.class_names)):
            cm, data = self._prepare_class(c)
            self.class_models.append(cm)
            self.class_data.append(data)
        # 4. validation windows and their standardised features, computed once
        self.val_windows: list[np.ndarray] = []
        self.val_z: list[list[np.ndarray | None]] = [[] for _ in self.val_imgs]
        for k, img in enumerate(self.val_imgs):
            h, w = img.bins.shape
            win = window_grid(w, h, self.anchors, params.stride)
            self.val_windows.append(win)
            for cm in self.class_models:
                self.val_z[k].append(
                    (window_features(cm.llr[img.bins], img.brightness, win) - cm.mean) / cm.std if cm.trained else None
                )
        if progress is not None:
            progress(1.0)
        self.epoch = 0
        self.losses: list[float] = []

    def _prepare_class(self, c: int) -> tuple[ClassModel, _ClassData | None]:
        """Class ``c``'s colour model and standardisation (weights zero) and its training data:
        every window of the training images, positive at IoU >= POSITIVE_IOU with a box of the
        class, negatives subsampled to max_negatives (every n-th from ``seed mod n``); the data is
        None when the class has no positive or no negative window."""
        p, nf = self.params, len(FEATURE_NAMES)
        gts_small = [_gt_array(g, c, img) for img, g in zip(self.train_imgs, self.train_gts, strict=False)]
        fg = np.zeros(NUM_BINS)
        bg = np.zeros(NUM_BINS)
        for img, gs in zip(self.train_imgs, gts_small, strict=False):
            mask = _box_mask(img.bins.shape, gs)
            fg += np.bincount(img.bins[mask], minlength=NUM_BINS)
            bg += np.bincount(img.bins[~mask], minlength=NUM_BINS)
        llr = colour_llr(fg, bg)
        feats, labels = [], []
        for img, gs in zip(self.train_imgs, gts_small, strict=False):
            h, w = img.bins.shape
            win = window_grid(w, h, self.anchors, p.stride)
            feats.append(window_features(llr[img.bins], img.brightness, win))
            pos = (iou_matrix(win, gs).max(axis=1) >= POSITIVE_IOU) if gs.shape[0] else np.zeros(win.shape[0], bool)
            labels.append(pos)
        f = np.concatenate(feats) if feats else np.zeros((0, nf))
        y = np.concatenate(labels) if labels else np.zeros(0, bool)
        pos_idx = np.nonzero(y)[0]
        neg_idx = np.nonzero(~y)[0]
        n_neg_all = neg_idx.size
        step = max(1, math.ceil(neg_idx.size / p.max_negatives))
        neg_idx = neg_idx[p.seed % step :: step]
        idx = np.sort(np.concatenate([pos_idx, neg_idx]))
        f, y = f[idx], y[idx].astype(np.float64)
        mean = f.mean(axis=0) if f.shape[0] else np.zeros(nf)
        std = f.std(axis=0) if f.shape[0] else np.ones(nf)
        std = np.where(std > 1e-12, std, 1.0)
        trained = pos_idx.size > 0 and neg_idx.size > 0
        cm = ClassModel(llr, mean, std, np.zeros(nf + 1), trained)
        if not trained:
            return cm, None
        a = np.where(y > 0, 0.5 / pos_idx.size, 0.5 / neg_idx.size)
        x = np.concatenate([(f - mean) / std, np.ones((f.shape[0], 1))], axis=1)
        return cm, _ClassData(x, y, a, int(pos_idx.size), int(neg_idx.size), math.log(pos_idx.size / n_neg_all))

    def loss(self) -> float:
        """Current training loss: mean over the trained classes of their weighted logistic loss."""
        vals = [
            logistic_loss_grad(d.x, d.y, d.a, cm.weights, self.params.l2)[0]
            for cm, d in zip(self.class_models, self.class_data, strict=False)
            if d is not None
        ]
        return float(np.mean(vals)) if vals else 0.0

    def run_epoch(self, progress: Callable[[float], None] | None = None) -> float:
        """``iters_per_epoch`` gradient-descent steps for every class; returns the loss after."""
        p = self.params
        for it in range(p.iters_per_epoch):
            for cm, d in zip(self.class_models, self.class_data, strict=False):
                if d is None:
                    continue
                _, g = logistic_loss_grad(d.x, d.y, d.a, cm.weights, p.l2)
                cm.weights = cm.weights - p.learning_rate * g
            if progress is not None:
                progress((it + 1) / p.iters_per_epoch)
        for cm in self.class_models:
            if not np.all(np.isfinite(cm.weights)):
                raise FloatingPointError("weights became NaN / infinite: lower learning_rate")
        self.epoch += 1
        loss = self.loss()
        self.losses.append(loss)
        return loss

    def scoring_weights(self, c: int) -> np.ndarray:
        """Weights of class ``c`` for scoring: the trained ones with the prior correction
        ``ln(N_pos / N_neg)`` (all negatives, before subsampling) added to the bias."""
        w = self.class_models[c].weights.copy()
        d = self.class_data[c]
        if d is not None:
            w[-1] += d.prior_logit
        return w

    def val_detections(self, conf_threshold: float) -> list[list[Detection]]:
        """Detections of the current model on every validation image."""
        p = self.params
        out = []
        for img, win, zs in zip(self.val_imgs, self.val_windows, self.val_z, strict=False):
            probs = np.zeros((len(self.class_models), win.shape[0]))
            for c, z in enumerate(zs):
                if z is not None:
                    w = self.scoring_weights(c)
                    probs[c] = sigmoid(z @ w[:-1] + w[-1])
            out.append(
                postprocess(
                    win, probs, img, conf_threshold, p.nms_iou, p.max_det, [cm.trained for cm in self.class_models]
                )
            )
        return out

    def evaluate(self, conf_threshold: float | None = None, iou_thr: float = 0.5) -> dict[str, Any]:
        """:func:`evaluate` of the current model on the validation set."""
        conf = self.params.conf_threshold if conf_threshold is None else conf_threshold
        return evaluate(self.val_detections(conf), self.val_gts, len(self.class_names), iou_thr)

    def model(self) -> DemoModel:
        """A snapshot of the current model."""
        info = {
            "epoch": self.epoch,
            "train_loss": self.losses[-1] if self.losses else None,
            "train_images": len(self.train_imgs),
            "positives": [d.n_pos if d else 0 for d in self.class_data],
            "negatives": [d.n_neg if d else 0 for d in self.class_data],
        }
        classes = [
            ClassModel(cm.llr.copy(), cm.mean.copy(), cm.std.copy(), self.scoring_weights(c), cm.trained)
            for c, cm in enumerate(self.class_models)
        ]
        return DemoModel(self.class_names, self.params.downscale, self.params.stride, self.anchors, classes, info)


# ---------------------------------------------------------------------------- mining


def entropy_score(detections: Sequence[Detection]) -> float:
    """Mean binary entropy ``H(p) = -p ln p - (1 - p) ln(1 - p)`` of the detections' scores
    (the top ``max_det`` windows after NMS); 0.0 when there is none."""
    if not detections:
        return 0.0
    return float(np.mean(binary_entropy([d[1] for d in detections])))


def random_score(path: str, seed: int = 0) -> float:
    """A reproducible pseudo-random score in [0, 1) for an image:
    ``int(sha1(f"{seed}:" + sha1(image bytes).hexdigest())[:13 hex digits], 16) / 16**13``
    (52 bits: exact in a float, never 1.0).

    Raises:
        ImageError: the file cannot be read.
    """
    try:
        with open(path, "rb") as f:
            digest = hashlib.sha1(f.read()).hexdigest()
    except OSError as e:
        raise ImageError(f"cannot read image: {e.strerror}", path=path) from None
    h = hashlib.sha1(f"{seed}:{digest}".encode("ascii")).hexdigest()
    return int(h[:13], 16) / float(16**13)
