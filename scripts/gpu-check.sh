#!/usr/bin/env bash
# det-yolo-tmi on a GPU machine with no network: see scripts/gpu_check.py (or --help).
#
#   bash scripts/gpu-wheels.sh gpu-wheels        # beforehand, on a machine with the package index
#   bash scripts/gpu-check.sh --wheels gpu-wheels [--quick] [--dry-run] [--gpu-id 0]
#
# PYTHON: the Python 3.12 that has torch (CUDA) installed (default python3).
exec "${PYTHON:-python3}" "$(dirname "$0")/gpu_check.py" "$@"
