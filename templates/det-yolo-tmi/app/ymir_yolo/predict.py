"""Mining and inference: one model load, one batched forward pass over the candidates.

The two tasks share everything the platform lets them share: when env.yaml enables both, the
mining pass also computes the inference detections (same images, same forward pass; only the
NMS thresholds differ), so the infer task only writes them. Progress: mining owns [0, 0.5],
inference [0.5, 1] (``ymir_exc.monitor.write_monitor_logger_for_multiple_tasks``).

Pipeline per batch of ``batch_size`` candidates (the next batch is decoded by ``workers``
threads while the current one runs through the network):

1. decode with OpenCV (BGR, EXIF orientation applied, as Ultralytics does);
2. letterbox to ``img_size`` (Ultralytics ``LetterBox``; minimal padding when every image of
   the batch has the same shape, like Ultralytics' predictor);
3. forward pass (Ultralytics ``AutoBackend``: .pt, and .onnx / TorchScript when their runtime is
   installed) giving the dense head output ``(B, 4 + C, anchors)``;
4. NMS (Ultralytics ``non_max_suppression``) with the task's thresholds, boxes scaled back to
   the original image (``scale_boxes``) and rounded to integer pixels;
5. mining scores (:mod:`ymir_yolo.scoring`).

Unreadable images follow ``bad_image_policy``: ``error`` (default) stops the task with return
code 300003 naming the file; ``lowest`` gives the image the score -1 (below every real score, so
it is ranked last) and no boxes, and lists it on stderr. No candidate is ever dropped.
"""

from __future__ import annotations

import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ymir_exc import dataset_reader, monitor
from ymir_exc import result_writer as rw
from ymir_exc.env import DatasetType
from ymir_exc.errors import ImageError, ModelError
from ymir_exc.util import get_weight_files

from ymir_yolo.params import PredictParams, class_names_of

BAD_IMAGE_SCORE = -1.0
#: Ultralytics' NMS gives up after 2 s + this much per image of a batch (default 0.05 s, which a slow
#: CPU can exceed on an untrained model's thousands of boxes, silently losing detections)
NMS_SECONDS_PER_IMAGE = 1.0
_DETECTORS: Dict[Tuple[str, str, bool], "Detector"] = {}
_PENDING_INFER: Dict[str, Any] = {}


def log(msg: str) -> None:
    print(f"det-yolo-tmi: {msg}", flush=True)


def torch_device(device: str):
    """``'cpu'`` or a CUDA index as a torch.device.

    Raises:
        RuntimeError: a GPU is asked for and torch sees none (return code 300102).
    """
    import torch

    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"No CUDA GPUs are available: gpu_id asks for device {device!r} "
                           f"but this torch ({torch.__version__}) sees none")
    return torch.device(f"cuda:{int(device)}")


class Detector:
    """A loaded detection model and what the pipeline needs to know about it."""

    def __init__(self, weights: str, device: str, half: bool, class_names: Sequence[str]) -> None:
        from ultralytics.nn.autobackend import AutoBackend

        t0 = time.time()
        self.weights = weights
        self.device = torch_device(device)
        try:
            self.backend = AutoBackend(weights, device=self.device, fp16=half, fuse=True, verbose=False,
                                       end2end=False)
        except Exception as e:  # noqa: BLE001 - any loader failure means unusable weights
            raise ModelError(f"cannot load the model: {type(e).__name__}: {e}", path=weights) from e
        self.backend.eval()
        names = getattr(self.backend, "names", None) or {}
        if names and len(names) != len(class_names):
            raise ModelError(f"the model predicts {len(names)} classes {list(names.values())} but class_names "
                             f"has {len(class_names)}: {list(class_names)}", path=weights)
        self.class_names = list(class_names)
        self.nc = len(class_names)
        self.stride = int(max(getattr(self.backend, "stride", 32) or 32, 32))
        head = None
        model = getattr(self.backend, "model", None)
        if model is not None and hasattr(model, "model"):
            head = model.model[-1]
        strides = getattr(head, "stride", None)
        self.strides = [int(s) for s in strides.tolist()] if strides is not None and len(strides) else [8, 16, 32]
        self.fp16 = bool(getattr(self.backend, "fp16", False))
        self.load_seconds = time.time() - t0
        log(f"model {weights} loaded on {self.device} in {self.load_seconds:.2f} s; classes {self.class_names}")

    def warmup(self, imgsz: int) -> None:
        import torch

        x = torch.zeros(1, 3, imgsz, imgsz, device=self.device, dtype=torch.float16 if self.fp16 else torch.float32)
        with torch.inference_mode():
            self.backend(x)


def get_detector(cfg: Any, params: PredictParams) -> Detector:
    """The model of ``model_params_path``, loaded once per process (mining and infer share it).

    Raises:
        ModelError: no weights file among model_params_path, or it cannot be loaded (300004).
    """
    weights = get_weight_files(cfg, suffix=(".pt", ".pth", ".onnx", ".torchscript"))
    if not weights:
        raise ModelError(f"no model weights (.pt, .onnx, .torchscript) in model_params_path "
                         f"{cfg.param.get('model_params_path')!r}", key="model_params_path")
    pt = [w for w in weights if w.endswith((".pt", ".pth"))]
    path = (pt or weights)[0]
    key = (path, params.device, params.half)
    if key not in _DETECTORS:
        _DETECTORS[key] = Detector(path, params.device, params.half, class_names_of(cfg.param))
    return _DETECTORS[key]


# ------------------------------------------------------------------ images

def read_image(path: str):
    """BGR uint8 image (EXIF orientation applied), or None when it cannot be read / decoded."""
    import cv2
    import numpy as np

    try:
        data = np.fromfile(path, dtype=np.uint8)
    except (OSError, ValueError):
        return None
    if data.size == 0:
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


@dataclass
class Batch:
    paths: List[str]
    originals: List[Optional[Tuple[int, int]]]  # (h, w) or None for an unreadable image
    tensor: Any = None  # (n_readable, 3, H, W) float
    index: List[int] = field(default_factory=list)  # position in ``paths`` of each tensor row


def _letterbox_batch(images: List[Any], imgsz: int, stride: int):
    import numpy as np
    from ultralytics.data.augment import LetterBox

    same = len({im.shape for im in images}) == 1
    lb = LetterBox((imgsz, imgsz), auto=same, stride=stride)
    arr = np.stack([lb(image=im) for im in images])
    return np.ascontiguousarray(arr[..., ::-1].transpose(0, 3, 1, 2))  # BGR -> RGB, BHWC -> BCHW


def iter_batches(paths: Sequence[str], params: PredictParams, stride: int, device: Any, fp16: bool,
                 pool: ThreadPoolExecutor) -> Iterator[Batch]:
    """Decode and letterbox ``paths`` in batches, one batch ahead of the consumer."""
    import torch

    imgsz = int(math.ceil(params.img_size / stride) * stride)
    chunks = [list(paths[i:i + params.batch_size]) for i in range(0, len(paths), params.batch_size)]

    def submit(chunk: List[str]):
        return [pool.submit(read_image, p) for p in chunk]

    pending = submit(chunks[0]) if chunks else None
    for k, chunk in enumerate(chunks):
        images = [f.result() for f in pending]
        pending = submit(chunks[k + 1]) if k + 1 < len(chunks) else None
        batch = Batch(chunk, [None if im is None else im.shape[:2] for im in images])
        good = [i for i, im in enumerate(images) if im is not None]
        if good:
            arr = _letterbox_batch([images[i] for i in good], imgsz, stride)
            t = torch.from_numpy(arr).to(device, non_blocking=True)
            batch.tensor = (t.half() if fp16 else t.float()) / 255.0
            batch.index = good
        yield batch


# ------------------------------------------------------------------ one pass

@dataclass
class PassResult:
    scores: Dict[str, float] = field(default_factory=dict)
    boxes: Dict[str, List[rw.Annotation]] = field(default_factory=dict)
    bad_images: List[str] = field(default_factory=list)
    seconds: float = 0.0


def _annotations(det, orig_hw: Tuple[int, int], input_hw: Tuple[int, int], class_names: Sequence[str]) -> List[rw.Annotation]:
    """NMS output rows ``x1 y1 x2 y2 conf cls`` (letterboxed input pixels) -> integer-pixel boxes
    of the original image: ``x = round(x1)``, ``w = round(x2) - x`` (>= 1), clipped to the image."""
    from ultralytics.utils.ops import scale_boxes

    if det is None or not len(det):
        return []
    det = det.detach().float().cpu()
    xyxy = scale_boxes(input_hw, det[:, :4].clone(), orig_hw)
    H, W = orig_hw
    out = []
    for (x1, y1, x2, y2), conf, cls in zip(xyxy.tolist(), det[:, 4].tolist(), det[:, 5].tolist()):
        x, y = min(max(int(round(x1)), 0), W - 1), min(max(int(round(y1)), 0), H - 1)
        w = min(max(int(round(x2)) - x, 1), W - x)
        h = min(max(int(round(y2)) - y, 1), H - y)
        score = min(max(float(conf), 0.0), 1.0)
        out.append(rw.Annotation(class_name=class_names[int(cls)], score=score, box=rw.Box(x=x, y=y, w=w, h=h)))
    return out


def run_pass(paths: Sequence[str], detector: Detector, params: PredictParams, *, mining: Optional[str],
             infer: bool, progress: Callable[[float], None]) -> PassResult:
    """One batched forward pass over ``paths``: mining scores with algorithm ``mining`` (None for
    none), inference boxes when ``infer``. ``progress`` gets fractions 0-1 of the pass.

    Raises:
        ImageError: an unreadable image with ``bad_image_policy: error`` (return code 300003).
    """
    import torch
    from ultralytics.utils.nms import non_max_suppression

    from ymir_yolo import scoring

    res = PassResult()
    t0 = time.time()
    n = len(paths)
    done = 0
    with ThreadPoolExecutor(max_workers=max(1, params.workers)) as pool, torch.inference_mode():
        for batch in iter_batches(paths, params, detector.stride, detector.device, detector.fp16, pool):
            for i, shape in enumerate(batch.originals):
                if shape is None:
                    p = batch.paths[i]
                    if params.bad_image_policy == "error":
                        raise ImageError("not a readable image (OpenCV cannot decode it); set bad_image_policy: "
                                         "lowest to rank such images last instead", path=p)
                    res.bad_images.append(p)
                    print(f"det-yolo-tmi: unreadable image, ranked last with no boxes: {p}", file=sys.stderr)
                    if mining:
                        res.scores[p] = BAD_IMAGE_SCORE
                    if infer:
                        res.boxes[p] = []
            if batch.tensor is not None:
                out = detector.backend(batch.tensor)
                y = out[0] if isinstance(out, (list, tuple)) else out
                if isinstance(y, dict) or y.ndim != 3 or y.shape[1] != 4 + detector.nc:
                    raise ModelError(f"unexpected model output {getattr(y, 'shape', type(y))}; expected "
                                     f"(batch, 4 + {detector.nc}, anchors) from a YOLO detection head",
                                     path=detector.weights)
                input_hw = tuple(batch.tensor.shape[2:])
                rows = [batch.paths[i] for i in batch.index]
                if mining == "entropy":
                    dets, keep = non_max_suppression(y, params.mining_conf_threshold, params.mining_nms_iou,
                                                     max_det=params.mining_max_det, nc=detector.nc,
                                                     max_time_img=NMS_SECONDS_PER_IMAGE, return_idxs=True)
                    probs = [y[b, 4:, keep[b].view(-1).long()].T for b in range(len(rows))]
                    for p, s in zip(rows, scoring.entropy_scores(probs, params.mining_max_det)):
                        res.scores[p] = s
                elif mining == "aldd":
                    try:
                        s = scoring.aldd_scores(y[:, 4:, :], input_hw, detector.strides, params.aldd_window,
                                                params.aldd_pool, [batch.originals[i] for i in batch.index],
                                                math.ceil(params.img_size / detector.stride) * detector.stride)
                    except ValueError as e:
                        raise ModelError(f"ALDD needs the dense YOLO head output: {e}", path=detector.weights) from e
                    for p, v in zip(rows, s.tolist()):
                        res.scores[p] = float(v)
                if infer:
                    dets = non_max_suppression(y, params.conf_threshold, params.nms_iou, max_det=params.max_det,
                                               nc=detector.nc, max_time_img=NMS_SECONDS_PER_IMAGE)
                    for b, p in enumerate(rows):
                        res.boxes[p] = _annotations(dets[b], batch.originals[batch.index[b]], input_hw,
                                                    detector.class_names)
            done += len(batch.paths)
            progress(done / n if n else 1.0)
    res.seconds = time.time() - t0
    return res


# ------------------------------------------------------------------ tasks

def _candidates(cfg: Any) -> List[str]:
    return [item.image_path for item in dataset_reader.read_items(DatasetType.CANDIDATE, cfg)]


def _reporter(cfg: Any, task: str) -> Callable[[float], None]:
    last = [0.0]

    def report(p: float) -> None:
        now = time.time()
        if p >= 1.0 or now - last[0] >= 0.5:
            last[0] = now
            monitor.write_monitor_logger_for_multiple_tasks(cfg, task, min(max(p, 0.0), 1.0))

    return report


def mining(cfg: Any) -> None:
    """The mining task: a score for every candidate, result.tsv sorted by score (descending)."""
    params = PredictParams.from_config(cfg.param)
    report = _reporter(cfg, "mining")
    report(0.0)
    paths = _candidates(cfg)
    also_infer = bool(cfg.ymir.run_infer)
    algo = params.mining_algorithm
    log(f"mining {len(paths)} candidates with {algo}" + (" (inference in the same pass)" if also_infer and algo != "random" else ""))
    if algo == "random":
        rw.write_mining_result(list(zip(paths, scoring_random(paths, params.random_seed))))
        report(1.0)
        return
    detector = get_detector(cfg, params)
    res = run_pass(paths, detector, params, mining=algo, infer=also_infer, progress=report)
    rw.write_mining_result([(p, res.scores[p]) for p in paths])
    if also_infer:
        _PENDING_INFER.clear()
        _PENDING_INFER.update(paths=list(paths), boxes=res.boxes)
    log(f"mining done in {res.seconds:.2f} s ({len(paths) / max(res.seconds, 1e-9):.1f} images/s)"
        + (f"; {len(res.bad_images)} unreadable image(s) ranked last" if res.bad_images else ""))
    report(1.0)


def scoring_random(paths: Sequence[str], seed: int) -> List[float]:
    from ymir_yolo.scoring import random_scores

    return random_scores(paths, seed)


def infer(cfg: Any) -> None:
    """The inference task: boxes for every candidate (an empty list when nothing is found)."""
    params = PredictParams.from_config(cfg.param)
    report = _reporter(cfg, "infer")
    report(0.0)
    paths = _candidates(cfg)
    if _PENDING_INFER.get("paths") == paths:
        boxes = _PENDING_INFER["boxes"]
        log("inference results computed in the mining pass")
    else:
        detector = get_detector(cfg, params)
        res = run_pass(paths, detector, params, mining=None, infer=True, progress=report)
        boxes = res.boxes
        log(f"inference done in {res.seconds:.2f} s ({len(paths) / max(res.seconds, 1e-9):.1f} images/s)")
    rw.write_infer_result({p: boxes[p] for p in paths})
    log(f"{sum(len(b) for b in boxes.values())} boxes on {len(paths)} images")
    report(1.0)
