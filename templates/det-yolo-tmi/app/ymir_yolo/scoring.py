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
from collections.abc import Sequence

import torch
import torch.nn.functional as F

EPS = 1e-7


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Element-wise ``h(p) = -p ln p - (1 - p) ln(1 - p)`` (nats), with p clamped to [eps, 1 - eps]."""
    p = p.float().clamp(EPS, 1.0 - EPS)
    return -(p * p.log() + (1.0 - p) * (1.0 - p).log())


def random_scores(paths: Sequence[str], seed: int = 0) -> list[float]:
    """Uniform pseudo-random scores in [0, 1), reproducible, independent of the candidates' order
    and of where the files lie (the score follows the image's content, not its path)::

        score(image) = int(sha1(f"{seed}:" + sha1(image bytes).hexdigest())[:13], 16) / 16**13

    (52 bits: exact in a float, never 1.0; the same formula as det-demo-tmi's). A baseline:
    active learning papers report their gains over random selection.

    Raises:
        OSError: an image cannot be read.
    """
    out = []
    for p in paths:
        with open(p, "rb") as f:
            digest = hashlib.sha1(f.read()).hexdigest()
        h = hashlib.sha1(f"{seed}:{digest}".encode("ascii")).hexdigest()
        out.append(int(h[:13], 16) / float(16**13))
    return out


def entropy_scores(det_class_probs: Sequence[torch.Tensor], max_det: int | None = None) -> list[float]:
    """Uncertainty sampling with the entropy of each detection's detected class (Settles, "Active
    Learning Literature Survey", University of Wisconsin-Madison CS TR 1648, 2009: uncertainty
    sampling), summed over an image's detections, one of the aggregations (sum, average, max)
    compared by Brust, Käding and Denzler, "Active Learning for Deep Object Detection", VISAPP 2019.

    The YOLO head scores every class with an independent sigmoid, so a detection's uncertainty is
    the binary entropy of the probability of the class it was detected as (the arg max, which is
    the class NMS keeps): "is this box really a c?". For image ``I`` with detections ``D(I)``
    (after NMS, confidence >= ``mining_conf_threshold``, at most ``max_det`` of them, highest
    confidence first)::

        score(I) = sum_{d in D(I)} h(p_{d,c*(d)}),   c*(d) = argmax_c p_{d,c}

    Summing ``h`` over all C classes instead would let the C - 1 background classes dominate
    (80 classes at 0.01 add 79 * h(0.01) = 4.4 nats beside the detected class's h(0.9) = 0.33).
    Cap: each term is at most ``ln 2``, so ``0 <= score(I) <= max_det * ln 2`` (``max_det`` =
    ``mining_max_det``, 300 by default); an image with many uncertain boxes scores high, one with
    no detection scores 0.

    Args:
        det_class_probs: per image, a ``(n_detections, C)`` tensor of class probabilities, rows in
            NMS order (highest confidence first).
        max_det: keep at most this many rows per image (the cap above); None: all.

    Returns:
        one score per image, in nats.
    """
    out = []
    for p in det_class_probs:
        if not p.numel():
            out.append(0.0)
            continue
        rows = p[:max_det] if max_det is not None else p
        out.append(float(binary_entropy(rows.max(dim=1).values).sum()))
    return out


def letterbox_region(orig_hw: tuple[int, int], input_hw: tuple[int, int], img_size: int) -> tuple[int, int, int, int]:
    """``(top, left, height, width)``, in network-input pixels, of an ``orig_hw`` image inside its
    letterboxed ``input_hw`` input, by Ultralytics' ``LetterBox`` (center=True, scaleup=True): the
    image is resized by ``r = min(S / h0, S / w0)`` (``S`` = ``img_size``) to
    ``round(h0 r) x round(w0 r)`` and the padding is split in two, ``top = round(dh / 2 - 0.1)``.
    The same for an image letterboxed alone (minimal padding) or in a batch (padded to S x S)."""
    h0, w0 = orig_hw
    H, W = input_hw
    r = min(img_size / h0, img_size / w0)
    h, w = max(round(h0 * r), 1), max(round(w0 * r), 1)
    top, left = round((H - h) / 2 - 0.1), round((W - w) / 2 - 0.1)
    return max(top, 0), max(left, 0), min(h, H), min(w, W)


def level_shapes(input_hw: tuple[int, int], strides: Sequence[int]) -> list[tuple[int, int]]:
    """``(h, w)`` of each prediction grid for a letterboxed input of ``input_hw`` pixels."""
    H, W = input_hw
    return [(H // s, W // s) for s in strides]


def aldd_scores(
    class_probs: torch.Tensor,
    input_hw: tuple[int, int],
    strides: Sequence[int] = (8, 16, 32),
    window: int = 3,
    pool: int = 4,
    orig_hw: Sequence[tuple[int, int]] | None = None,
    img_size: int | None = None,
) -> torch.Tensor:
    """ALDD: Aghdam, Gonzalez-Garcia, van de Weijer and López, "Active Learning for Deep Detection
    Neural Networks", ICCV 2019.

    The paper scores every pixel by how much the network's predictions around it disagree (a
    pixel-level mutual information: the entropy of the mean prediction minus the mean entropy of
    the predictions, as in BALD, with the neighbourhood of the pixel as the ensemble), then turns
    the score map into one image score by max pooling over regions and averaging. Here, for each
    class ``c`` and each prediction grid ``l``, cropped to the cells that cover the image itself
    (not the letterbox padding, see below) and resized bilinearly to the cropped finest grid
    (stride 8), with ``N(u)`` the ``window x window`` neighbourhood of cell ``u`` (cells outside
    the crop not counted)::

        pbar_{l,c}(u) = mean_{v in N(u)} p_{l,c}(v)
        U_c(u)        = sum_l [ h(pbar_{l,c}(u)) - mean_{v in N(u)} h(p_{l,c}(v)) ]   (>= 0, Jensen)
        score(I)      = sum_c mean_{blocks B} max_{u in B} U_c(u)

    where the blocks are the non-overlapping ``pool x pool`` tiles of the cropped grid (the last
    row / column of blocks may be smaller).

    Sizes actually used, against the reference: the reference computes the map at input
    resolution with a 9 x 9-pixel window. Here everything is on the stride-8 grid: the default
    3-cell window spans 24 x 24 input pixels (2.7 times the reference's 9 on a side) and the
    4-cell block 32 x 32 pixels; a window of 1 cell would make every ``U`` 0, hence
    ``aldd_window >= 3`` (odd). This is a coarser approximation of the reference, chosen so the
    cost does not grow with ``img_size``; it is not the same computation.

    Padding: letterboxing pads an image to its batch's shape, and padded cells (score about 0)
    would lower the mean with the batch's shape. With ``orig_hw`` and ``img_size`` the score of
    each image uses only the cells of each grid that overlap the image (:func:`letterbox_region`),
    so an image scores the same alone and in a batch of another shape (exactly so when the
    padding is a multiple of the largest stride, as for a 320 x 256 image in a 320 x 320 batch;
    otherwise up to how the network itself sees the shifted image).

    Args:
        class_probs: ``(B, C, A)`` class probabilities of the dense head, anchors ordered grid
            by grid (stride 8, 16, 32) and row-major in each grid.
        input_hw: ``(H, W)`` of the network input, multiples of the largest stride.
        strides: the grids' strides.
        window: odd neighbourhood size >= 3, in cells of the finest grid.
        pool: block size of the max pooling, in cells of the finest grid.
        orig_hw: per image, its original ``(h, w)`` in pixels; None: the whole input counts.
        img_size: the letterbox target size (``img_size`` rounded up to the largest stride);
            required with ``orig_hw``.

    Returns:
        ``(B,)`` scores.

    Raises:
        ValueError: the number of anchors does not match ``input_hw`` and ``strides``, a window
            that is even or < 3, or ``orig_hw`` without ``img_size`` or of the wrong length.
    """
    if window % 2 != 1 or window < 3:
        raise ValueError(f"aldd window must be odd and >= 3, got {window}")
    B, C, A = class_probs.shape
    shapes = level_shapes(input_hw, strides)
    if sum(h * w for h, w in shapes) != A:
        raise ValueError(f"{A} anchors do not match an input of {input_hw} with strides {list(strides)}")
    if orig_hw is not None and (img_size is None or len(orig_hw) != B):
        raise ValueError(f"orig_hw needs img_size and one (h, w) per image ({B}), got {orig_hw!r}, {img_size!r}")
    p = class_probs.float()
    maps = []
    offset = 0
    for h, w in shapes:
        maps.append(p[:, :, offset : offset + h * w].reshape(B, C, h, w))
        offset += h * w
    H, W = input_hw
    scores = []
    for b in range(B):
        top, left, h_img, w_img = (
            (0, 0, H, W) if orig_hw is None else letterbox_region(tuple(orig_hw[b]), input_hw, int(img_size))
        )  # type: ignore[arg-type]
        fine = None
        total = None
        for m, s in zip(maps, strides, strict=False):
            r0, r1 = top // s, -(-(top + h_img) // s)
            c0, c1 = left // s, -(-(left + w_img) // s)
            crop = m[b : b + 1, :, r0:r1, c0:c1]
            if fine is None:
                fine = tuple(crop.shape[2:])
            elif tuple(crop.shape[2:]) != fine:
                crop = F.interpolate(crop, size=fine, mode="bilinear", align_corners=False)
            mean_p = F.avg_pool2d(crop, window, stride=1, padding=window // 2, count_include_pad=False)
            mean_h = F.avg_pool2d(binary_entropy(crop), window, stride=1, padding=window // 2, count_include_pad=False)
            u = (binary_entropy(mean_p) - mean_h).clamp(min=0.0)
            total = u if total is None else total + u
        pooled = F.max_pool2d(total, pool, stride=pool, ceil_mode=True)  # (1, C, h', w')
        scores.append(pooled.mean(dim=(2, 3)).sum(dim=1))
    return torch.cat(scores) if scores else torch.zeros(0)
