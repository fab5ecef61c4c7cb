"""Mining and inference: one model load per rank, one batched forward pass over the candidates.

The two tasks share everything the platform lets them share: when env.yaml enables both, the
mining pass also computes the inference detections (same images, same forward pass; only the
NMS thresholds differ) into part files, and the infer task only merges them. What is shared lives
in a :class:`Predictor` object the entry point creates, not in module state. Progress: mining
owns [0, 0.5], inference [0.5, 1] (``ymir_exc.monitor.write_monitor_logger_for_multiple_tasks``).

Ranks (torch.distributed): one process per GPU of ``gpu_id`` (NCCL), or ``num_workers`` CPU
processes (gloo) when no GPU is given (default 1: everything runs in this process). Rank ``r``
takes candidates ``r, r + N, ...``, streams its scores and boxes to part files, and rank 0 merges
them (k-way, :mod:`ymir_exc.streaming`) once all are done; monitor.txt shows the candidates done
by all ranks together; a rank that raises fails the task (state 4) with its message.

Pipeline per batch of ``batch_size`` candidates (the next batch is decoded by ``workers``
threads while the current one runs through the network):

1. decode with OpenCV (BGR, EXIF orientation applied, as Ultralytics does);
2. letterbox to ``img_size`` x ``img_size`` (Ultralytics ``LetterBox``, the same padding for
   every image: an image's result does not depend on its batch or its rank);
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

import heapq
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ymir_exc import dataset_reader, monitor
from ymir_exc import result_writer as rw
from ymir_exc.env import DatasetType
from ymir_exc.errors import ImageError, ModelError
from ymir_exc.streaming import InferResultWriter, merge_mining_parts, write_mining_part
from ymir_exc.util import get_weight_files
from ymir_yolo.params import PredictParams, class_names_of

BAD_IMAGE_SCORE = -1.0
#: Ultralytics' NMS gives up after 2 s + this much per image of a batch (default 0.05 s, which a slow
#: CPU can exceed on an untrained model's thousands of boxes, silently losing detections)
NMS_SECONDS_PER_IMAGE = 1.0


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
        raise RuntimeError(
            f"No CUDA GPUs are available: gpu_id asks for device {device!r} "
            f"but this torch ({torch.__version__}) sees none"
        )
    return torch.device(f"cuda:{int(device)}")


class Detector:
    """A loaded detection model and what the pipeline needs to know about it."""

    def __init__(self, weights: str, device: str, half: bool, class_names: Sequence[str]) -> None:
        from ultralytics.nn.autobackend import AutoBackend

        t0 = time.time()
        self.weights = weights
        self.device = torch_device(device)
        try:
            self.backend = AutoBackend(weights, device=self.device, fp16=half, fuse=True, verbose=False, end2end=False)
        except Exception as e:
            raise ModelError(f"cannot load the model: {type(e).__name__}: {e}", path=weights) from e
        self.backend.eval()
        names = getattr(self.backend, "names", None) or {}
        if names and len(names) != len(class_names):
            raise ModelError(
                f"the model predicts {len(names)} classes {list(names.values())} but class_names "
                f"has {len(class_names)}: {list(class_names)}",
                path=weights,
            )
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


def weights_of(cfg: Any) -> str:
    """The weights file of ``model_params_path`` (a .pt first).

    Raises:
        ModelError: no weights file among model_params_path (300004).
    """
    weights = get_weight_files(cfg, suffix=(".pt", ".pth", ".onnx", ".torchscript"))
    if not weights:
        raise ModelError(
            f"no model weights (.pt, .onnx, .torchscript) in model_params_path {cfg.param.get('model_params_path')!r}",
            key="model_params_path",
        )
    pt = [w for w in weights if w.endswith((".pt", ".pth"))]
    return (pt or weights)[0]


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
    paths: list[str]
    originals: list[tuple[int, int] | None]  # (h, w) or None for an unreadable image
    tensor: Any = None  # (n_readable, 3, H, W) float
    index: list[int] = field(default_factory=list)  # position in ``paths`` of each tensor row


def _letterbox_batch(images: list[Any], imgsz: int, stride: int):
    import numpy as np
    from ultralytics.data.augment import LetterBox

    # every image padded to imgsz x imgsz whatever the batch holds: an image's input (and so its
    # boxes and scores) does not depend on which images share its batch or its rank
    lb = LetterBox((imgsz, imgsz), auto=False, stride=stride)
    arr = np.stack([lb(image=im) for im in images])
    return np.ascontiguousarray(arr[..., ::-1].transpose(0, 3, 1, 2))  # BGR -> RGB, BHWC -> BCHW


def iter_batches(
    paths: Sequence[str], params: PredictParams, stride: int, device: Any, fp16: bool, pool: ThreadPoolExecutor
) -> Iterator[Batch]:
    """Decode and letterbox ``paths`` in batches, one batch ahead of the consumer."""
    import torch

    imgsz = int(math.ceil(params.img_size / stride) * stride)
    chunks = [list(paths[i : i + params.batch_size]) for i in range(0, len(paths), params.batch_size)]

    def submit(chunk: list[str]):
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
    scores: dict[str, float] = field(default_factory=dict)
    boxes: dict[str, list[rw.Annotation]] = field(default_factory=dict)
    bad_images: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _annotations(
    det, orig_hw: tuple[int, int], input_hw: tuple[int, int], class_names: Sequence[str]
) -> list[rw.Annotation]:
    """NMS output rows ``x1 y1 x2 y2 conf cls`` (letterboxed input pixels) -> integer-pixel boxes
    of the original image: ``x = round(x1)``, ``w = round(x2) - x`` (>= 1), clipped to the image."""
    from ultralytics.utils.ops import scale_boxes

    if det is None or not len(det):
        return []
    det = det.detach().float().cpu()
    xyxy = scale_boxes(input_hw, det[:, :4].clone(), orig_hw)
    H, W = orig_hw
    out = []
    for (x1, y1, x2, y2), conf, cls in zip(xyxy.tolist(), det[:, 4].tolist(), det[:, 5].tolist(), strict=False):
        x, y = min(max(int(round(x1)), 0), W - 1), min(max(int(round(y1)), 0), H - 1)
        w = min(max(int(round(x2)) - x, 1), W - x)
        h = min(max(int(round(y2)) - y, 1), H - y)
        score = min(max(float(conf), 0.0), 1.0)
        out.append(rw.Annotation(class_name=class_names[int(cls)], score=score, box=rw.Box(x=x, y=y, w=w, h=h)))
    return out


def run_pass(
    paths: Sequence[str],
    detector: Detector,
    params: PredictParams,
    *,
    mining: str | None,
    infer: bool,
    progress: Callable[[float], None],
    on_score: Callable[[int, str, float], None] | None = None,
    on_boxes: Callable[[int, str, list[rw.Annotation]], None] | None = None,
) -> PassResult:
    """One batched forward pass over ``paths``: mining scores with algorithm ``mining`` (None for
    none), inference boxes when ``infer``. ``progress`` gets fractions 0-1 of the pass.

    Results go to ``on_score(position, path, score)`` / ``on_boxes(position, path, annotations)``
    (``position``: index in ``paths``) as each batch is done, or, without them, into the returned
    :class:`PassResult`'s ``scores`` / ``boxes``.

    Raises:
        ImageError: an unreadable image with ``bad_image_policy: error`` (return code 300003).
    """
    import torch
    from ultralytics.utils.nms import non_max_suppression

    from ymir_yolo import scoring

    res = PassResult()
    put_score = on_score or (lambda k, p, v: res.scores.__setitem__(p, v))
    put_boxes = on_boxes or (lambda k, p, v: res.boxes.__setitem__(p, v))
    t0 = time.time()
    n = len(paths)
    done = 0
    with ThreadPoolExecutor(max_workers=max(1, params.workers)) as pool, torch.inference_mode():
        for batch in iter_batches(paths, params, detector.stride, detector.device, detector.fp16, pool):
            for i, shape in enumerate(batch.originals):
                if shape is None:
                    p = batch.paths[i]
                    if params.bad_image_policy == "error":
                        raise ImageError(
                            "not a readable image (OpenCV cannot decode it); set bad_image_policy: "
                            "lowest to rank such images last instead",
                            path=p,
                        )
                    res.bad_images.append(p)
                    print(f"det-yolo-tmi: unreadable image, ranked last with no boxes: {p}", file=sys.stderr)
                    if mining:
                        put_score(done + i, p, BAD_IMAGE_SCORE)
                    if infer:
                        put_boxes(done + i, p, [])
            if batch.tensor is not None:
                out = detector.backend(batch.tensor)
                y = out[0] if isinstance(out, (list, tuple)) else out
                if isinstance(y, dict) or y.ndim != 3 or y.shape[1] != 4 + detector.nc:
                    raise ModelError(
                        f"unexpected model output {getattr(y, 'shape', type(y))}; expected "
                        f"(batch, 4 + {detector.nc}, anchors) from a YOLO detection head",
                        path=detector.weights,
                    )
                input_hw = tuple(batch.tensor.shape[2:])
                rows = [batch.paths[i] for i in batch.index]
                pos = [done + i for i in batch.index]
                if mining == "entropy":
                    dets, keep = non_max_suppression(
                        y,
                        params.mining_conf_threshold,
                        params.mining_nms_iou,
                        max_det=params.mining_max_det,
                        nc=detector.nc,
                        max_time_img=NMS_SECONDS_PER_IMAGE,
                        return_idxs=True,
                    )
                    probs = [y[b, 4:, keep[b].view(-1).long()].T for b in range(len(rows))]
                    for k, p, v in zip(pos, rows, scoring.entropy_scores(probs, params.mining_max_det), strict=False):
                        put_score(k, p, v)
                elif mining == "aldd":
                    try:
                        s = scoring.aldd_scores(
                            y[:, 4:, :],
                            input_hw,
                            detector.strides,
                            params.aldd_window,
                            params.aldd_pool,
                            [batch.originals[i] for i in batch.index],
                            math.ceil(params.img_size / detector.stride) * detector.stride,
                        )
                    except ValueError as e:
                        raise ModelError(f"ALDD needs the dense YOLO head output: {e}", path=detector.weights) from e
                    for k, p, v in zip(pos, rows, s.tolist(), strict=False):
                        put_score(k, p, float(v))
                if infer:
                    dets = non_max_suppression(
                        y,
                        params.conf_threshold,
                        params.nms_iou,
                        max_det=params.max_det,
                        nc=detector.nc,
                        max_time_img=NMS_SECONDS_PER_IMAGE,
                    )
                    for b, (k, p) in enumerate(zip(pos, rows, strict=False)):
                        put_boxes(
                            k, p, _annotations(dets[b], batch.originals[batch.index[b]], input_hw, detector.class_names)
                        )
            done += len(batch.paths)
            progress(done / n if n else 1.0)
    res.seconds = time.time() - t0
    return res


# ------------------------------------------------------------------ ranks (torch.distributed)


@dataclass(frozen=True)
class ShardPlan:
    """How the candidates are shared: ``world_size`` ranks, rank ``r`` on ``devices[r]``
    (``"cpu"`` or a GPU index) taking candidates ``r, r + world_size, ...``; torch.distributed
    ``backend`` ``"nccl"`` (one rank per GPU of gpu_id) or ``"gloo"`` (``num_workers`` CPU ranks)."""

    backend: str
    world_size: int
    devices: tuple[str, ...]

    def init_args(self, rank: int, port: int) -> dict[str, Any]:
        """Keyword arguments of ``torch.distributed.init_process_group`` for ``rank`` (a TCP
        rendezvous on this host at ``port``)."""
        return {
            "backend": self.backend,
            "init_method": f"tcp://127.0.0.1:{int(port)}",
            "rank": int(rank),
            "world_size": self.world_size,
        }

    def device(self, rank: int) -> str:
        return self.devices[rank]


def shard_plan(params: PredictParams) -> ShardPlan:
    """One rank per GPU of ``gpu_id`` (NCCL), else ``num_workers`` CPU ranks (gloo)."""
    if tuple(params.devices) != ("cpu",):
        return ShardPlan("nccl", len(params.devices), tuple(params.devices))
    return ShardPlan("gloo", params.num_workers, ("cpu",) * params.num_workers)


def shard_of(items: Iterable[Any], rank: int, world_size: int) -> Iterator[tuple[int, Any]]:
    """``(index, item)`` of the items rank ``rank`` takes: every ``world_size``-th from ``rank``
    (disjoint, together all of them, the same for every run over the same list)."""
    for i, x in enumerate(items):
        if i % world_size == rank:
            yield i, x


@dataclass
class Job:
    """What every rank needs (pickled to spawned ranks)."""

    cfg: Any
    params: PredictParams
    plan: ShardPlan
    weights: str
    class_names: list[str]
    mining: str | None  # algorithm, or None for an inference-only pass
    infer: bool
    parts_dir: str
    n: int
    merge_mining: bool  # rank 0 merges the mining parts into result.tsv
    merge_infer: bool  # rank 0 merges the infer parts into infer-result.json
    port: int = 0


class RankFailed(RuntimeError):
    """A rank raised: carries its message and its return code (state 4 in monitor.txt)."""

    def __init__(self, message: str, return_code: int) -> None:
        super().__init__(message)
        self.return_code = return_code


def _mining_part(parts_dir: str, rank: int) -> str:
    return os.path.join(parts_dir, f"mining-{rank}.tsv")


def _infer_part(parts_dir: str, rank: int) -> str:
    return os.path.join(parts_dir, f"infer-{rank}.jsonl")


def _error_file(parts_dir: str, rank: int) -> str:
    return os.path.join(parts_dir, f"error-{rank}.json")


def _run_rank(rank: int, job: Job, progress: Callable[[int], None], detector: Detector | None = None) -> Detector:
    """Rank ``rank``'s shard through the model: mining rows to a sorted part file, boxes to a
    JSON-lines part file (``[index, path, [[class, score, x, y, w, h], ...]]``, index order)."""
    shard = list(shard_of(_iter_candidates(job.cfg), rank, job.plan.world_size))
    if detector is None:
        detector = Detector(job.weights, job.plan.device(rank), job.params.half, job.class_names)
    index = [i for i, _ in shard]
    paths = [p for _, p in shard]
    mining_rows: list[tuple[int, str, float]] = []
    infer_file = open(_infer_part(job.parts_dir, rank), "w", encoding="utf-8") if job.infer else None
    try:

        def on_boxes(k: int, p: str, anns: list[rw.Annotation]) -> None:
            assert infer_file is not None
            boxes = [[a.class_name, a.score, a.box.x, a.box.y, a.box.w, a.box.h] for a in anns]
            infer_file.write(json.dumps([index[k], p, boxes], ensure_ascii=False) + "\n")

        last = [0]

        def on_progress(f: float) -> None:
            done = int(round(f * len(paths)))
            if done != last[0]:
                last[0] = done
                progress(done)

        res = run_pass(
            paths,
            detector,
            job.params,
            mining=job.mining,
            infer=job.infer,
            progress=on_progress,
            on_score=lambda k, p, v: mining_rows.append((index[k], p, v)),
            on_boxes=on_boxes,
        )
    finally:
        if infer_file is not None:
            infer_file.close()
    if job.mining:
        write_mining_part(_mining_part(job.parts_dir, rank), mining_rows)
    log(
        f"rank {rank}/{job.plan.world_size}: {len(paths)} candidates in {res.seconds:.2f} s"
        + (f"; {len(res.bad_images)} unreadable image(s) ranked last" if res.bad_images else "")
    )
    return detector


def merge_infer_parts(parts: Sequence[str], expected: int) -> None:
    """The infer part files (each in index order) merged by index, k-way, into
    infer-result.json with :class:`ymir_exc.streaming.InferResultWriter`.

    Raises:
        ResultError: the parts hold another number of images than ``expected``, or a result
            the writer refuses.
    """
    from ymir_exc.errors import ResultError

    def rows(part: str) -> Iterator[tuple[int, str, list]]:
        with open(part, encoding="utf-8") as f:
            for line in f:
                i, p, boxes = json.loads(line)
                yield i, p, boxes

    n = 0
    with InferResultWriter() as w:
        for _i, p, boxes in heapq.merge(*map(rows, parts), key=lambda r: r[0]):
            w.add(
                p,
                [
                    {"class_name": c, "score": s, "box": {"x": x, "y": y, "w": bw, "h": bh}}
                    for c, s, x, y, bw, bh in boxes
                ],
            )
            n += 1
        if n != expected:
            raise ResultError(f"the ranks' infer parts hold {n} image(s), expected {expected}", key="infer_result")


def _merge(job: Job) -> None:
    ranks = range(job.plan.world_size)
    if job.merge_mining:
        merge_mining_parts([_mining_part(job.parts_dir, r) for r in ranks], expected=job.n)
    if job.merge_infer:
        merge_infer_parts([_infer_part(job.parts_dir, r) for r in ranks], job.n)


def _rank_entry(rank: int, job: Job, counters: Any) -> None:
    """A spawned rank: joins the process group, runs its shard, and (rank 0) merges the parts
    once every rank is done. A failure is written to ``error-<rank>.json`` for the launcher."""
    import torch
    import torch.distributed as dist

    from ymir_yolo.offline import apply_settings

    started = False
    try:
        apply_settings()
        if job.plan.backend == "gloo":  # the CPU ranks share the cores rather than each taking all
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // job.plan.world_size))
        if job.plan.backend == "nccl":
            torch.cuda.set_device(torch_device(job.plan.device(rank)))
        dist.init_process_group(**job.plan.init_args(rank, job.port))
        started = True

        def progress(done: int) -> None:
            counters[rank] = done

        _run_rank(rank, job, progress)
        total = torch.tensor(
            [counters[rank]], dtype=torch.int64, device="cuda" if job.plan.backend == "nccl" else "cpu"
        )
        dist.all_reduce(total)  # every rank has written its parts
        if rank == 0:
            if int(total.item()) != job.n:
                raise RuntimeError(f"the ranks scored {int(total.item())} of {job.n} candidates")
            _merge(job)
        dist.barrier()
    except BaseException as e:
        from ymir_exc.executor import return_code_for

        with open(_error_file(job.parts_dir, rank), "w", encoding="utf-8") as f:
            json.dump(
                {"type": type(e).__name__, "message": str(e), "return_code": return_code_for(e), "time": time.time()}, f
            )
        raise
    finally:
        if started:
            dist.destroy_process_group()


def run_sharded(job: Job, report: Callable[[float], None]) -> None:
    """Run ``job`` on ``job.plan.world_size`` spawned ranks (torch.multiprocessing, rendezvous on
    a free port); progress is the candidates done by all ranks together.

    Raises:
        RankFailed: a rank raised (its message, its return code); the other ranks are stopped.
    """
    import torch.multiprocessing as tmp
    from torch.multiprocessing.spawn import ProcessException

    from ymir_exc import settings
    from ymir_exc.util import find_free_port

    world = job.plan.world_size
    job.port = find_free_port()
    counters = tmp.get_context("spawn").Array("q", world, lock=False)
    saved = {k: os.environ.get(k) for k in ("DEFAULT_ENV_FILE_PATH", "DEFAULT_CONFIG_FILE_PATH")}
    # the ranks read the same env.yaml / config.yaml as this process (rank 0's writers need them)
    os.environ["DEFAULT_ENV_FILE_PATH"] = settings.DEFAULT_ENV_FILE_PATH
    os.environ["DEFAULT_CONFIG_FILE_PATH"] = settings.DEFAULT_CONFIG_FILE_PATH
    try:
        ctx = tmp.start_processes(_rank_entry, args=(job, counters), nprocs=world, join=False, start_method="spawn")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        while not ctx.join(timeout=0.5):
            report(min(sum(counters[:]) / job.n, 0.99) if job.n else 0.99)
    except ProcessException as e:
        raise _rank_failure(job, getattr(e, "error_index", None), str(e)) from None
    report(1.0)


def _rank_failure(job: Job, rank: int | None, fallback: str) -> RankFailed:
    """The error of the rank that failed first (the others then fail on a closed connection),
    from the ``error-<rank>.json`` files; else ``fallback`` (a rank killed without one)."""
    from ymir_exc.code import ExecutorReturnCode as RC

    errors = []
    for r in range(job.plan.world_size):
        try:
            with open(_error_file(job.parts_dir, r), encoding="utf-8") as f:
                err = json.load(f)
            errors.append((float(err.get("time", 0.0)), r, err))
        except (OSError, ValueError):
            continue
    if errors:
        _, r, err = min(errors, key=lambda e: e[:2])
        return RankFailed(
            f"rank {r} of {job.plan.world_size} failed: {err['type']}: {err['message']}",
            int(err.get("return_code") or RC.RC_CMD_CONTAINER_ERROR),
        )
    lines = fallback.strip().splitlines()
    return RankFailed(
        f"rank {rank} of {job.plan.world_size} failed: {lines[-1] if lines else fallback}",
        int(RC.RC_CMD_CONTAINER_ERROR),
    )


# ------------------------------------------------------------------ tasks


def _iter_candidates(cfg: Any) -> Iterator[str]:
    for item in dataset_reader.read_items(DatasetType.CANDIDATE, cfg):
        yield item.image_path


def _reporter(cfg: Any, task: str) -> Callable[[float], None]:
    last = [0.0]

    def report(p: float) -> None:
        now = time.time()
        if p >= 1.0 or now - last[0] >= 0.5:
            last[0] = now
            monitor.write_monitor_logger_for_multiple_tasks(cfg, task, min(max(p, 0.0), 1.0))

    return report


class Predictor:
    """Mining and inference of one executor run. When env.yaml enables both, the mining pass also
    computes the inference boxes (same images, same forward pass, only the NMS thresholds differ)
    into per-rank part files, and the infer task merges them: held here, not in module state::

        predictor = Predictor()
        Executor(training=..., mining=predictor.mining, infer=predictor.infer).main()

    With one rank the model is loaded once, in this process, and kept for the next task.
    """

    def __init__(self) -> None:
        self._detectors: dict[tuple[str, str, bool], Detector] = {}
        self._pending_infer: tuple[str, int, str] | None = None  # (parts dir, n, candidate index file)

    def close(self) -> None:
        """Remove part files a task left (an infer task that never ran)."""
        if self._pending_infer:
            shutil.rmtree(self._pending_infer[0], ignore_errors=True)
            self._pending_infer = None

    def _run(self, cfg: Any, params: PredictParams, job: Job, report: Callable[[float], None]) -> None:
        if job.plan.world_size == 1:
            key = (job.weights, job.plan.device(0), job.params.half)
            done = [0]

            def progress(k: int) -> None:
                done[0] = k
                report(k / job.n if job.n else 1.0)

            self._detectors[key] = _run_rank(0, job, progress, self._detectors.get(key))
            _merge(job)
            report(1.0)
        else:
            log(f"{job.plan.world_size} ranks ({job.plan.backend}) on {', '.join(job.plan.devices)}")
            run_sharded(job, report)

    def _job(
        self,
        cfg: Any,
        params: PredictParams,
        mining: str | None,
        infer: bool,
        n: int,
        merge_mining: bool,
        merge_infer: bool,
    ) -> Job:
        return Job(
            cfg=cfg,
            params=params,
            plan=shard_plan(params),
            weights=weights_of(cfg),
            class_names=class_names_of(cfg.param),
            mining=mining,
            infer=infer,
            parts_dir=tempfile.mkdtemp(prefix="ymir-yolo-parts-"),
            n=n,
            merge_mining=merge_mining,
            merge_infer=merge_infer,
        )

    def mining(self, cfg: Any) -> None:
        """The mining task: a score for every candidate, result.tsv sorted by score (descending)."""
        params = PredictParams.from_config(cfg.param)
        report = _reporter(cfg, "mining")
        report(0.0)
        n = sum(1 for _ in _iter_candidates(cfg))
        also_infer = bool(cfg.ymir.run_infer)
        algo = params.mining_algorithm
        log(
            f"mining {n} candidates with {algo}"
            + (" (inference in the same pass)" if also_infer and algo != "random" else "")
        )
        if algo == "random":
            paths = list(_iter_candidates(cfg))
            rw.write_mining_result(list(zip(paths, scoring_random(paths, params.random_seed), strict=False)))
            report(1.0)
            return
        t0 = time.time()
        job = self._job(cfg, params, algo, also_infer, n, merge_mining=True, merge_infer=False)
        try:
            self._run(cfg, params, job, report)
        except BaseException:
            shutil.rmtree(job.parts_dir, ignore_errors=True)
            raise
        if also_infer:
            self.close()
            self._pending_infer = (job.parts_dir, n, str(_index_file(cfg)))
        else:
            shutil.rmtree(job.parts_dir, ignore_errors=True)
        seconds = time.time() - t0
        log(f"mining done in {seconds:.2f} s ({n / max(seconds, 1e-9):.1f} images/s)")
        report(1.0)

    def infer(self, cfg: Any) -> None:
        """The inference task: boxes for every candidate (an empty list when nothing is found)."""
        params = PredictParams.from_config(cfg.param)
        report = _reporter(cfg, "infer")
        report(0.0)
        n = sum(1 for _ in _iter_candidates(cfg))
        pending, self._pending_infer = self._pending_infer, None
        t0 = time.time()
        if pending is not None and pending[1:] == (n, str(_index_file(cfg))):
            try:
                world = len([f for f in os.listdir(pending[0]) if f.startswith("infer-")])
                merge_infer_parts([_infer_part(pending[0], r) for r in range(world)], n)
            finally:
                shutil.rmtree(pending[0], ignore_errors=True)
            log("inference results computed in the mining pass")
        else:
            if pending is not None:
                shutil.rmtree(pending[0], ignore_errors=True)
            job = self._job(cfg, params, None, True, n, merge_mining=False, merge_infer=True)
            try:
                self._run(cfg, params, job, report)
            finally:
                shutil.rmtree(job.parts_dir, ignore_errors=True)
            seconds = time.time() - t0
            log(f"inference done in {seconds:.2f} s ({n / max(seconds, 1e-9):.1f} images/s)")
        log(f"{n} images written to infer-result.json")
        report(1.0)


def _index_file(cfg: Any) -> str:
    return str(cfg.ymir.input.candidate_index_file)


def scoring_random(paths: Sequence[str], seed: int) -> list[float]:
    from ymir_yolo.scoring import random_scores

    return random_scores(paths, seed)
