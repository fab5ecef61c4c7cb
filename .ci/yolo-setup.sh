#!/usr/bin/env bash
# Install the YOLO template's runtime (torch CPU, Ultralytics, tensorboard, cloudpickle for DDP) into the ACTIVE venv,
# reproducibly and from nothing, then check it works offline and print the versions.
#
#   . .venv/bin/activate && bash .ci/yolo-setup.sh
#   PYTHONPATH=tests/yolo_env python -m pytest tests/test_yolo_template.py
#
# torch is pinned first (a CPU wheel; any looser requirement lets pip pull several GB of CUDA
# packages) and everything else is installed under a constraint file holding that pin.
# Ultralytics then brings a CUDA build of torchvision whose compiled ops cannot load on a CPU
# torch; tests/yolo_env/sitecustomize.py (put on PYTHONPATH by the tests and by this script's
# check only) registers a CPU NMS for it. See tests/yolo_env/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
ULTRALYTICS_VERSION="${ULTRALYTICS_VERSION:-8.4.190}"

if [ -z "${VIRTUAL_ENV:-}" ]; then
    echo "yolo-setup: activate a venv first (the install goes into it)" >&2
    exit 2
fi

constraints="$(mktemp)"
config_dir="$(mktemp -d)"
trap 'rm -rf "$constraints" "$config_dir"' EXIT
echo "torch==${TORCH_VERSION}" > "$constraints"

echo "== yolo-setup: torch ${TORCH_VERSION}, ultralytics ${ULTRALYTICS_VERSION} into ${VIRTUAL_ENV}"
python -m pip install --quiet "torch==${TORCH_VERSION}"
python -m pip install --quiet -c "$constraints" "ultralytics==${ULTRALYTICS_VERSION}" tensorboard cloudpickle

echo "== yolo-setup: offline check (train-free: build a model, run NMS through torchvision)"
YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false YOLO_CONFIG_DIR="$config_dir" \
PYTHONPATH="$PWD/tests/yolo_env${PYTHONPATH:+:$PYTHONPATH}" python - <<'PY'
import platform

import torch
import torchvision
import ultralytics
from ultralytics import YOLO

boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [20.0, 20.0, 30.0, 30.0]])
keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist()
assert keep == [0, 2], keep
YOLO("yolov8n.yaml")
print(f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"ultralytics {ultralytics.__version__}, cuda available: {torch.cuda.is_available()}")
PY
python -m pip list 2>/dev/null | grep -i -E "^(torch|torchvision|ultralytics|tensorboard|tensorboardx|opencv-python|numpy) " || true
