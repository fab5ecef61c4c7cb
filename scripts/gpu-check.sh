#!/usr/bin/env bash
# det-yolo-tmi on a GPU machine with no network: see scripts/gpu_check.py (or --help).
#
#   bash scripts/gpu-wheels.sh gpu-wheels        # beforehand, on a machine with the package index
#   bash scripts/gpu-check.sh --wheels gpu-wheels [--quick] [--gpu-id 0]
#   bash scripts/gpu-check.sh --dry-run [--wheels gpu-wheels]   # the plan only
#
# PYTHON: the Python that has torch (CUDA) installed (default python3); the wheels must be made for
# its version: bash scripts/gpu-wheels.sh --python-version X.Y (default 3.12).
exec "${PYTHON:-python3}" "$(dirname "$0")/gpu_check.py" "$@"
