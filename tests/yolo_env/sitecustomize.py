"""Test / CI environment only: make a CUDA build of torchvision importable next to a CPU torch.

Why: on the project's CI machines torch is the CPU wheel (2.13.0+cpu) while pip resolves
``torchvision`` (pulled by ultralytics) to a CUDA build whose compiled ops (``_C.so``) cannot load.
``import torchvision`` then fails with ``operator torchvision::nms does not exist`` (its
``_meta_registrations`` module registers a fake kernel for an op that was never defined), and
Ultralytics imports torchvision in its validator and predictor. Real users get a matching
torch / torchvision pair from their base image and never need this file.

What: Python imports ``sitecustomize`` at start-up when this folder is on ``PYTHONPATH``
(tests/test_yolo_template.py, .ci/yolo-setup.sh and the README's local command put it there;
nothing in the product does). It installs an import hook that costs nothing until
``torchvision`` is first imported. Then, and only then, it:

1. imports torch and tries to load torchvision's own ``_C`` library: if that works (matching
   builds) it does nothing more;
2. otherwise defines ``torchvision::nms`` (and ``torchvision::qnms``, which torchvision also
   registers a fake kernel for) with a pure-torch greedy NMS (same semantics as torchvision:
   indices of kept boxes sorted by decreasing score, a box is dropped when its IoU with a kept
   box is > ``iou_threshold``);
3. after torchvision's ``__init__`` has run, makes ``torchvision.extension._has_ops`` return
   True so that ``torchvision.ops.nms`` calls the operator (other compiled ops such as
   ``roi_align`` stay missing and fail loudly if used; YOLO detection does not use them).

Set ``YMIR_EXC_NO_TV_WORKAROUND=1`` to disable the hook.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

_LIBS = []  # keep torch.library.Library objects alive (deleting one deregisters its ops)


def _greedy_nms(dets, scores, iou_threshold: float):
    """Greedy NMS on ``dets`` (N x 4, ``x1, y1, x2, y2``) with ``scores`` (N); int64 indices."""
    import torch

    if dets.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=dets.device)
    dets = dets.float()
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    order = scores.argsort(descending=True, stable=True)
    keep = []
    while order.numel() > 0:
        i = order[0]
        keep.append(i)
        if order.numel() == 1:
            break
        rest = order[1:]
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])).clamp(min=0)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        iou = torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))
        order = rest[iou <= iou_threshold]
    return torch.stack(keep).to(torch.int64)


def _qnms(dets, scores, iou_threshold: float):
    raise NotImplementedError("torchvision::qnms is not available in the CPU test environment")


def _register_fallback_ops() -> bool:
    """Define torchvision::nms / qnms unless torchvision's own compiled ops load. True if defined."""
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    folder = list(spec.submodule_search_locations)[0]
    for name in ("_C.so", "_C.pyd"):
        lib_path = os.path.join(folder, name)
        if os.path.exists(lib_path):
            try:
                torch.ops.load_library(lib_path)
                return False  # matching builds: nothing to do
            except (OSError, RuntimeError, ImportError):
                break
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.impl("nms", _greedy_nms, "CompositeExplicitAutograd")
    lib.impl("qnms", _qnms, "CompositeExplicitAutograd")
    _LIBS.append(lib)
    return True


class _TorchvisionHook(importlib.abc.MetaPathFinder):
    """Runs :func:`_register_fallback_ops` right before ``import torchvision`` executes."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision":
            return None
        sys.meta_path.remove(self)  # once; find_spec below must not recurse into us
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        try:
            defined = _register_fallback_ops()
        except Exception as e:
            print(f"tests/yolo_env/sitecustomize: torchvision workaround failed: {e!r}", file=sys.stderr)
            return spec
        if defined:
            loader = spec.loader
            exec_module = loader.exec_module

            def exec_and_enable(module):
                exec_module(module)
                ext = sys.modules.get("torchvision.extension")
                if ext is not None:
                    ext._has_ops = lambda: True

            loader.exec_module = exec_and_enable
        return spec


if not os.environ.get("YMIR_EXC_NO_TV_WORKAROUND") and "torchvision" not in sys.modules:
    sys.meta_path.insert(0, _TorchvisionHook())
