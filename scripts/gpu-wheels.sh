#!/usr/bin/env bash
# Download the wheels scripts/gpu-check.sh needs on a GPU machine that has no network, for
# CPython X.Y (--python-version, default 3.12: the GPU machine's Python, the one gpu-check.sh
# gets as --python) on x86_64 Linux, into DIR (default ./gpu-wheels): Ultralytics and the ymir-exc
# dependencies such a machine lacks (its torch, torchvision, numpy, OpenCV, matplotlib, scipy,
# PyYAML, Pillow, psutil, tensorboard and rich are used as they are), plus ymir-exc itself built
# from this checkout. No dependencies are followed (--no-deps) except pydantic's own, so that
# pydantic-core is the exact version that pydantic pins. At most 60 MB in all (checked).
#
#   bash scripts/gpu-wheels.sh [--python-version X.Y] [DIR]   # then copy DIR and the checkout over
#
# pip reads no configuration file here (PIP_CONFIG_FILE=/dev/null, PIP_FIND_LINKS unset): the
# wheels come from the package index (PIP_INDEX_URL if set, else PyPI), not from a local folder.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=gpu-wheels
PYVER=3.12
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        --python-version) [ $# -ge 2 ] || { echo "gpu-wheels.sh: --python-version needs X.Y, e.g. 3.11" >&2; exit 2; }
                          PYVER=$2; shift 2 ;;
        --python-version=*) PYVER=${1#*=}; shift ;;
        -*) echo "gpu-wheels.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) DIR=$1; shift ;;
    esac
done
if ! [[ "$PYVER" =~ ^3\.[0-9]+$ ]]; then
    echo "gpu-wheels.sh: --python-version $PYVER: expected X.Y, e.g. 3.12" >&2
    exit 2
fi
ABI=cp${PYVER/./}
MAX_MB=60
ULTRALYTICS_VERSION=${ULTRALYTICS_VERSION:-8.4.190}
PY=${PYTHON:-python3}

mkdir -p "$DIR"
pipdl() {
    env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
        "$PY" -m pip download --quiet --dest "$DIR" --only-binary=:all: \
        --python-version "$PYVER" --implementation cp --abi "$ABI" --platform manylinux2014_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 "$@"
}
pipwheel() {
    env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
        "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$DIR" "$@"
}
echo "== for CPython $PYVER ($ABI) on x86_64 Linux, into $DIR"
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
