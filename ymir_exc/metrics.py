"""Detection metrics: PASCAL VOC average precision per class at IoU 0.5, and their mean (mAP).

Example::

    from ymir_exc import metrics

    truth = {"a.jpg": [("tree", 10, 10, 20, 20)]}                 # class, x, y, w, h (pixels)
    found = {"a.jpg": [("tree", 0.9, 11, 10, 20, 20)]}            # class, score, x, y, w, h
    m = metrics.evaluate_detections(found, truth)
    m["mAP"], m["ap"]["tree"]                                      # (1.0, 1.0)

The protocol is the PASCAL VOC devkit's (``VOCevaldet.m`` and ``VOCap.m``, VOC2010 and later):

1. Per class, the detections of every image are sorted by score, highest first (a stable sort:
   on a tie the earlier detection comes first, as MATLAB's ``sort`` does).
2. Each detection is compared with the ground-truth boxes of its own image and class; the box of
   highest IoU is taken. When that IoU is >= ``iou_thr`` (0.5) and the box is not matched yet,
   the detection is a true positive and the box becomes matched; otherwise (too little overlap,
   or a duplicate detection of a matched box) it is a false positive.
3. ``precision_k = TP_k / k`` and ``recall_k = TP_k / N_gt`` after the k best detections.
4. AP is the area under the precision / recall curve with all-point interpolation: the curve is
   extended by (recall 0, precision 0) and (recall 1, precision 0), precision is made
   monotone (``p(r) = max_{r' >= r} p(r')``), and ``AP = sum_i (r_i - r_{i-1}) * p(r_i)`` over
   the points where recall changes. (VOC2007 used an 11-point average instead; this is not it.)
5. mAP is the mean of AP over the classes that have at least one ground-truth box.

Differences from the devkit, on purpose: boxes are continuous, ``[x, x + w) x [y, y + h)``,
so a box's area is ``w * h`` (the devkit counts inclusive pixel corners, ``(w + 1) * (h + 1)``),
matching how ``infer-result.json`` and the ark / VOC readers of this SDK describe boxes; and
there is no "difficult" flag (every ground-truth box counts).

numpy is imported when a function is called, not when this module is imported.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported by the functions that need it, not with this module
    from numpy.typing import ArrayLike, NDArray

#: a ground-truth box: a tuple ``(class, x, y, w, h)`` or an object with attributes
#: ``class_name, x, y, w, h`` (:class:`ymir_exc.dataset_reader.BBox`)
GroundTruth = Any
#: a detection: a tuple ``(class, score, x, y, w, h)`` or an object with attributes
#: ``class_name, score, x, y, w, h`` (:class:`ymir_exc.task.Detection`)
Prediction = Any
#: ``(x, y, w, h)`` in pixels
_Box = tuple[float, float, float, float]

__all__ = ["evaluate_detections", "iou_matrix", "voc_ap"]


def iou_matrix(a: ArrayLike, b: ArrayLike) -> NDArray[Any]:
    """Intersection over union of every box of ``a`` with every box of ``b``.

    Args:
        a: array-like of shape (n, 4) (or (4,) for one box): ``x, y, w, h`` in pixels.
        b: array-like of shape (m, 4), same form.

    Returns:
        numpy float64 array of shape (n, m), values in [0, 1]; 0 where both boxes are empty.
    """
    import numpy as np

    p = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    q = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix = np.minimum(p[:, None, 0] + p[:, None, 2], q[None, :, 0] + q[None, :, 2]) - np.maximum(
        p[:, None, 0], q[None, :, 0]
    )
    iy = np.minimum(p[:, None, 1] + p[:, None, 3], q[None, :, 1] + q[None, :, 3]) - np.maximum(
        p[:, None, 1], q[None, :, 1]
    )
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    union = (p[:, 2] * p[:, 3])[:, None] + (q[:, 2] * q[:, 3])[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def voc_ap(recall: ArrayLike, precision: ArrayLike) -> float:
    """All-point interpolated average precision (PASCAL VOC devkit ``VOCap.m``, VOC2010+).

    ``AP = sum_i (r_i - r_{i-1}) * max_{r' >= r_i} p(r')`` over the points where recall changes,
    with the curve extended by (0, 0) on the left and (1, 0) on the right.

    Args:
        recall: recall after each of the k best detections, non-decreasing, in [0, 1] (length k).
        precision: precision after each of them, in [0, 1] (length k).

    Returns:
        AP in [0, 1]; 0.0 for empty input.

    Raises:
        ValueError: the two sequences differ in length.
    """
    import numpy as np

    rec = np.asarray(recall, dtype=np.float64).ravel()
    prec = np.asarray(precision, dtype=np.float64).ravel()
    if rec.shape != prec.shape:
        raise ValueError(f"recall has {rec.size} values, precision {prec.size}")
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _truth(g: GroundTruth) -> tuple[Hashable, _Box]:
    if hasattr(g, "class_name"):
        return g.class_name, (g.x, g.y, g.w, g.h)
    if len(g) != 5:
        raise ValueError(f"a ground-truth box is (class, x, y, w, h), got {g!r}")
    c, x, y, w, h = g
    return c, (x, y, w, h)


def _prediction(d: Prediction) -> tuple[Hashable, float, _Box]:
    if hasattr(d, "class_name"):
        return d.class_name, float(d.score), (d.x, d.y, d.w, d.h)
    if len(d) != 6:
        raise ValueError(f"a detection is (class, score, x, y, w, h), got {d!r}")
    c, s, x, y, w, h = d
    return c, float(s), (x, y, w, h)


def evaluate_detections(
    detections: Mapping[Any, Sequence[Prediction]],
    ground_truth: Mapping[Any, Sequence[GroundTruth]],
    classes: Sequence[Hashable] | None = None,
    iou_thr: float = 0.5,
) -> dict[str, Any]:
    """Detection metrics over a set of images, by the PASCAL VOC protocol (module docstring).

    Args:
        detections: image key (e.g. its path) -> detections, each ``(class, score, x, y, w, h)``
            or an object with ``class_name, score, x, y, w, h`` (:class:`ymir_exc.task.Detection`).
            An image missing here has no detection.
        ground_truth: image key -> boxes, each ``(class, x, y, w, h)`` or an object with
            ``class_name, x, y, w, h`` (:class:`ymir_exc.dataset_reader.BBox`). Every evaluated
            image must be a key, also one without boxes.
        classes: the classes to report, in order (default: every class seen in either mapping,
            sorted by its string). A class is any hashable label: a name or an index, the same
            kind on both sides.
        iou_thr: IoU a detection needs with a ground-truth box to count as found (VOC: 0.5).

    Returns:
        ``{"mAP": mean AP over the reported classes that have ground truth (0.0 when none has),
        "mAR": mean recall over those classes, "ap": {class: AP, None without ground truth},
        "tp", "fp", "fn": counts (int) over the reported classes}``. Every number is a plain
        Python float or int; mAP, mAR and each AP lie in [0, 1].

    Raises:
        ValueError: a detection's image is not a key of ``ground_truth``, or a box or detection
            has the wrong number of fields.
    """
    import numpy as np

    unknown = [k for k in detections if k not in ground_truth]
    if unknown:
        raise ValueError(f"detections for {len(unknown)} image(s) without ground truth, e.g. {unknown[0]!r}")
    keys = list(ground_truth)
    gts, dets = _by_class(detections, ground_truth, keys)
    if classes is None:
        classes = sorted(set(gts) | set(dets), key=str)
    ap: dict[Hashable, float | None] = {}
    recalls: list[float] = []
    tp_all = fp_all = fn_all = 0
    for c in classes:
        boxes = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in gts.get(c, [[] for _ in keys])]
        found = sorted(dets.get(c, []), key=lambda t: -t[0])  # stable: ties keep their order
        ap[c], recall, (tp, fp, fn) = _class_metrics(found, boxes, iou_thr)
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
        if recall is not None:
            recalls.append(recall)
    valid = [a for a in ap.values() if a is not None]
    return {
        "mAP": float(np.mean(valid)) if valid else 0.0,
        "mAR": float(np.mean(recalls)) if recalls else 0.0,
        "ap": ap,
        "tp": tp_all,
        "fp": fp_all,
        "fn": fn_all,
    }


def _by_class(
    detections: Mapping[Any, Sequence[Prediction]], ground_truth: Mapping[Any, Sequence[GroundTruth]], keys: list[Any]
) -> tuple[dict[Hashable, list[list[_Box]]], dict[Hashable, list[tuple[float, int, _Box]]]]:
    """Group the boxes by class: ``gts[class][i]`` the ground-truth boxes of image ``keys[i]``,
    ``dets[class]`` the ``(score, i, box)`` of every detection of that class.

    Raises:
        ValueError: a box or detection has the wrong number of fields.
    """
    gts: dict[Hashable, list[list[_Box]]] = {}
    dets: dict[Hashable, list[tuple[float, int, _Box]]] = {}
    for i, k in enumerate(keys):
        for g in ground_truth[k]:
            c, box = _truth(g)
            gts.setdefault(c, [[] for _ in keys])[i].append(box)
        for d in detections.get(k, ()):
            c, s, box = _prediction(d)
            dets.setdefault(c, []).append((s, i, box))
    return gts, dets


def _class_metrics(
    found: list[tuple[float, int, _Box]], boxes: list[NDArray[Any]], iou_thr: float
) -> tuple[float | None, float | None, tuple[int, int, int]]:
    """AP, recall and ``(tp, fp, fn)`` of one class: ``found`` its detections sorted by score
    (descending), ``boxes[i]`` the ``(n_i, 4)`` ground-truth array of image ``i``. AP and recall
    are None when the class has no ground truth."""
    import numpy as np

    n_gt = sum(b.shape[0] for b in boxes)
    tp = _match(found, boxes, iou_thr)
    n_tp = int(tp.sum())
    counts = (n_tp, len(found) - n_tp, n_gt - n_tp)
    if n_gt == 0:
        return None, None, counts
    ctp = np.cumsum(tp)
    return voc_ap(ctp / n_gt, ctp / np.arange(1, len(found) + 1)), n_tp / n_gt, counts


def _match(found: list[tuple[float, int, _Box]], boxes: list[NDArray[Any]], iou_thr: float) -> NDArray[Any]:
    """VOC matching of one class: ``found`` sorted by score (descending), ``boxes[i]`` the
    ``(n_i, 4)`` ground-truth array of image ``i``. Returns a float array of ``len(found)``, 1 where
    the detection is a true positive (IoU >= ``iou_thr`` with its best box, not matched before)."""
    import numpy as np

    matched = [np.zeros(b.shape[0], dtype=bool) for b in boxes]
    tp = np.zeros(len(found))
    for rank, (_, i, box) in enumerate(found):
        if boxes[i].shape[0] == 0:
            continue
        ious = iou_matrix(box, boxes[i])[0]
        best = int(np.argmax(ious))
        if ious[best] >= iou_thr and not matched[i][best]:
            matched[i][best] = True
            tp[rank] = 1
    return tp
