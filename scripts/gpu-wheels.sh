#!/usr/bin/env bash
# Download the wheels scripts/gpu-check.sh needs on a GPU machine that has no network, for
# CPython 3.12 on x86_64 Linux, into DIR (default ./gpu-wheels): Ultralytics and the ymir-exc
# dependencies such a machine lacks (its torch, torchvision, numpy, OpenCV, matplotlib, scipy,
# PyYAML, Pillow, psutil, tensorboard and rich are used as they are), plus ymir-exc itself built
# from this checkout. No dependencies are followed (--no-deps) except pydantic's own, so that
# pydantic-core is the exact version that pydantic pins. At most 60 MB in all (checked).
#
#   bash scripts/gpu-wheels.sh [DIR]        # then copy DIR and the checkout to the GPU machine
#
# pip reads no configuration file here (PIP_CONFIG_FILE=/dev/null, PIP_FIND_LINKS unset): the
# wheels come from the package index (PIP_INDEX_URL if set, else PyPI), not from a local folder.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-gpu-wheels}
MAX_MB=60
ULTRALYTICS_VERSION=${ULTRALYTICS_VERSION:-8.4.190}
PY=${PYTHON:-python3}
case "$DIR" in -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

mkdir -p "$DIR"
pipdl() {
    env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
        "$PY" -m pip download --quiet --dest "$DIR" --only-binary=:all: \
        --python-version 3.12 --implementation cp --abi cp312 --platform manylinux2014_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 "$@"
}
pipwheel() {
    env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
        "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$DIR" "$@"
}
echo "== Ultralytics $ULTRALYTICS_VERSION and its light dependencies (no deps followed)"
# not polars (its runtime wheel alone is 54 MB): Ultralytics imports it only to read results.csv
# back into the checkpoint (an ImportError there is caught) and for plots (the template's
# default is plots: false)
pipdl --no-deps "ultralytics==$ULTRALYTICS_VERSION" ultralytics-thop ultralytics-platform nvidia-ml-py
echo "== ymir-exc's dependencies: pydantic (with its exact pydantic-core), tensorboardX, ijson"
pipdl pydantic
pipdl --no-deps tensorboardX ijson
echo "== easydict (an sdist on PyPI: built into a pure-Python wheel) and ymir-exc from this checkout"
pipwheel easydict
pipwheel .
ls -l "$DIR"
total=$(du -cm "$DIR"/*.whl | tail -1 | cut -f1)
echo "total: ${total} MB in $(ls "$DIR"/*.whl | wc -l) wheels"
if [ "$total" -gt "$MAX_MB" ]; then
    echo "gpu-wheels.sh: ${total} MB is over the ${MAX_MB} MB budget" >&2
    exit 1
fi
