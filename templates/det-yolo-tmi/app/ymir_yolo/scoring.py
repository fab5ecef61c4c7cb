"""Mining scores: how much labelling an image would teach the detector. Higher = mine first.

Three algorithms (``mining_algorithm`` in mining-template.yaml), all computed from one forward
pass of the detector over a batch (except ``random``, which needs none):

- :func:`random_scores`: a baseline.
- :func:`entropy_scores`: uncertainty sampling on the detections.
- :func:`aldd_scores`: ALDD, Aghdam et al., ICCV 2019 (pixel-level mutual information).

Notation: the YOLO (v8 / 11) detection head predicts, for every anchor point ``a`` of the three
prediction grids (strides 8, 16, 32), a class probability vector ``p_a in [0, 1]^C`` (one
independent sigmoid per class; there is no objectness). ``h(p) = -p ln p - (1 - p) ln(1 - p)``
is the binary entropy in nats (``h(0) = h(1) = 0``, ``h(0.5) = ln 2``).
"""

from __future__ import annotations

import hashlib
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F

EPS = 1e-7


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Element-wise ``h(p) = -p ln p - (1 - p) ln(1 - p)`` (nats), with p clamped to [eps, 1 - eps]."""
    p = p.float().clamp(EPS, 1.0 - EPS)
    return -(p * p.log() + (1.0 - p) * (1.0 - p).log())


def random_scores(paths: Sequence[str], seed: int = 0) -> List[float]:
    """Uniform pseudo-random scores in [0, 1), reproducible and independent of the candidates' order.

    ``score(path) = int(sha1(f"{seed}:{path}")[:13], 16) / 16**13``. A baseline: active learning
    papers report their gains over random selection.
    """
    out = []
    for p in paths:
        h = hashlib.sha1(f"{seed}:{p}".encode("utf-8")).hexdigest()
        out.append(int(h[:13], 16) / float(16 ** 13))
    return out


def entropy_scores(det_class_probs: Sequence[torch.Tensor]) -> List[float]:
    """Uncertainty sampling with the entropy of the detections (Settles, "Active Learning Literature
    Survey", University of Wisconsin-Madison CS TR 1648, 2009: uncertainty sampling), aggregated
    over an image's detections by summation, one of the aggregations (sum, average, max) compared
    by Brust, Käding and Denzler, "Active Learning for Deep Object Detection", VISAPP 2019.

    For image ``I`` with detections ``D(I)`` (after NMS, confidence >= ``mining_conf_threshold``)::

        score(I) = sum_{d in D(I)} sum_{c=1..C} h(p_{d,c})

    where ``p_d`` is the class probability vector of the anchor that produced detection ``d``.
    An image with many uncertain boxes (p near 0.5) scores high; one with no detection scores 0.

    Args:
        det_class_probs: per image, a ``(n_detections, C)`` tensor of class probabilities.
    """
    return [float(binary_entropy(p).sum()) if p.numel() else 0.0 for p in det_class_probs]


def level_shapes(input_hw: Tuple[int, int], strides: Sequence[int]) -> List[Tuple[int, int]]:
    """``(h, w)`` of each prediction grid for a letterboxed input of ``input_hw`` pixels."""
    H, W = input_hw
    return [(H // s, W // s) for s in strides]


def aldd_scores(class_probs: torch.Tensor, input_hw: Tuple[int, int], strides: Sequence[int] = (8, 16, 32),
                window: int = 3, pool: int = 4) -> torch.Tensor:
    """ALDD: Aghdam, Gonzalez-Garcia, van de Weijer and López, "Active Learning for Deep Detection
    Neural Networks", ICCV 2019.

    The paper scores every pixel by how much the network's predictions around it disagree (a
    pixel-level mutual information: the entropy of the mean prediction minus the mean entropy of
    the predictions, as in BALD, with the neighbourhood of the pixel as the ensemble), then turns
    the score map into one image score by max pooling over regions and averaging. Here, for each
    class ``c`` and each prediction grid ``l`` (resized bilinearly to the finest grid, stride 8),
    with ``N(u)`` the ``window x window`` neighbourhood of cell ``u`` (cells outside the image not
    counted)::

        pbar_{l,c}(u) = mean_{v in N(u)} p_{l,c}(v)
        U_c(u)        = sum_l [ h(pbar_{l,c}(u)) - mean_{v in N(u)} h(p_{l,c}(v)) ]   (>= 0, Jensen)
        score(I)      = sum_c mean_{blocks B} max_{u in B} U_c(u)

    where the blocks are the non-overlapping ``pool x pool`` tiles of the grid. Defaults: a 3 x 3
    window (24 input pixels) and 4 x 4 blocks (32 input pixels), the grid-cell equivalents of the
    pixel sizes used by the authors' reference implementation; computing on the stride-8 grid
    rather than at input resolution keeps the cost independent of ``img_size``.

    Args:
        class_probs: ``(B, C, A)`` class probabilities of the dense head, anchors ordered grid
            by grid (stride 8, 16, 32) and row-major in each grid.
        input_hw: ``(H, W)`` of the network input, multiples of the largest stride.
        strides: the grids' strides.
        window: odd neighbourhood size, in cells of the finest grid.
        pool: block size of the max pooling, in cells of the finest grid.

    Returns:
        ``(B,)`` scores.

    Raises:
        ValueError: the number of anchors does not match ``input_hw`` and ``strides``, or an even window.
    """
    if window % 2 != 1:
        raise ValueError(f"aldd window must be odd, got {window}")
    B, C, A = class_probs.shape
    shapes = level_shapes(input_hw, strides)
    if sum(h * w for h, w in shapes) != A:
        raise ValueError(f"{A} anchors do not match an input of {input_hw} with strides {list(strides)}")
    p = class_probs.float()
    fine = shapes[0]
    total = None
    offset = 0
    for (h, w) in shapes:
        m = p[:, :, offset:offset + h * w].reshape(B, C, h, w)
        offset += h * w
        if (h, w) != fine:
            m = F.interpolate(m, size=fine, mode="bilinear", align_corners=False)
        mean_p = F.avg_pool2d(m, window, stride=1, padding=window // 2, count_include_pad=False)
        mean_h = F.avg_pool2d(binary_entropy(m), window, stride=1, padding=window // 2, count_include_pad=False)
        u = (binary_entropy(mean_p) - mean_h).clamp(min=0.0)
        total = u if total is None else total + u
    pooled = F.max_pool2d(total, pool, stride=pool, ceil_mode=True)  # (B, C, h', w')
    return pooled.mean(dim=(2, 3)).sum(dim=1)
