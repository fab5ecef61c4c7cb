#!/usr/bin/env bash
# CI stage for the YOLO executor image (templates/det-yolo-tmi): build it with podman on the local
# Debian base and run it the way the platform does, on CPU:
#   1. podman + runc + debootstrap, containers.conf and the local Debian base (.ci/podman-env.sh,
#      shared with .ci/containers.sh; kept once built)
#   2. podman build templates/det-yolo-tmi/Dockerfile with BASE_IMAGE=localhost/debian:bookworm:
#      Debian's python3 + a venv, then torch + torchvision + Ultralytics from the package index in
#      one pip resolver run (PyPI's torch wheels are CUDA builds: about 3 GB of downloads cold, an
#      image of several GB; they run on CPU); pip trusts the host CA bundle mounted as /host-ca.crt
#   3. `podman run --rm IMAGE cat /img-man/<file>` prints exactly the template's files
#   4. ymir-exc verify IMAGE --runtime podman --network-none --user 1000:1000 with a small
#      training config: training, mining, infer, mining + infer, a crash case
#   5. the README's command: `podman run --rm --network none -v in:/in:ro -v out:/out IMAGE` on
#      `ymir-exc sample trees`'s in/ (a few epochs): state 3 and a result.yaml with a mAP
# Prints the build time, the image size and the run times. Idempotent; needs root.
# Environment: YMIR_EXC_CI_STATE (default /var/tmp/ymir-exc-ci), PYTHON (default python3, with
# ymir-exc installed), YOLO_CI_EPOCHS (default 3: epochs of the README run), podman's own
# CONTAINERS_STORAGE_CONF (another image store, e.g. a fresh one to measure a cold build).
set -euo pipefail
cd "$(dirname "$0")/.."
T_START=$(date +%s.%N)
STATE=${YMIR_EXC_CI_STATE:-/var/tmp/ymir-exc-ci}
PYTHON=${PYTHON:-python3}
YOLO_IMAGE=localhost/ymir/det-yolo-tmi:cpu-ci
TEST_USER=1000:1000
EPOCHS=${YOLO_CI_EPOCHS:-3}
WORK=$STATE/work-yolo
TIMINGS=()

# shellcheck source=.ci/podman-env.sh
. .ci/podman-env.sh
timing() { TIMINGS+=("$(printf '%-50s %s' "$1" "$2")"); }
ymir_exc() { "$PYTHON" -m ymir_exc.cli "$@"; }
fail() { echo "yolo-image.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (apt-get, rootful podman)"
"$PYTHON" -c 'import ymir_exc.cli' || fail "$PYTHON cannot import ymir_exc: pip install -e . first"
mkdir -p "$STATE"
rm -rf "$WORK"
mkdir -p "$WORK"

# ---------------------------------------------------------------- 1. tools, config, Debian base
t=$(now)
podman_tools
podman_conf
debian_base
timing "tools + local Debian base" "$(since "$t") s"

# ---------------------------------------------------------------- 2. build
ca_args
old=$(podman image inspect --format '{{.Id}}' "$YOLO_IMAGE" 2>/dev/null || true)
log=$STATE/build-det-yolo-tmi.log
say "podman build -f templates/det-yolo-tmi/Dockerfile -t $YOLO_IMAGE (BASE_IMAGE=$DEBIAN_IMAGE)"
t=$(now)
if ! podman build --format docker --pull=never -f templates/det-yolo-tmi/Dockerfile \
        --build-arg "BASE_IMAGE=$DEBIAN_IMAGE" "${CA_ARGS[@]}" -t "$YOLO_IMAGE" . > "$log" 2>&1; then
    tail -40 "$log"
    fail "build of $YOLO_IMAGE failed (log: $log)"
fi
secs=$(since "$t")
if [ -n "$old" ] && [ "$old" != "$(podman image inspect --format '{{.Id}}' "$YOLO_IMAGE")" ]; then
    podman rmi "$old" >/dev/null 2>&1 || true   # the image this build replaced, if unused
fi
grep -E '^(torch |ymir_exc |fonts:)' "$log" | sed 's/^/  /' || true
# what pip downloaded ("Downloading NAME (12.3 MB)" lines; apt's "Fetched N MB" apart)
downloads=$(grep -oE 'Downloading [^ ]+ \([0-9.]+ [kMG]B\)' "$log" | tr -d '()' | awk '
    { v = $3; if ($4 == "kB") v /= 1000; if ($4 == "GB") v *= 1000; s += v; n++ }
    END { printf "pip downloaded %.0f MB in %d files", s, n }')
echo "built $YOLO_IMAGE in $secs s, $(size_mb "$YOLO_IMAGE"); $downloads; apt: $(grep -oE 'Fetched [0-9.]+ [kMG]B' "$log" | tr '\n' ' ')"
timing "build $YOLO_IMAGE" "$secs s, $(size_mb "$YOLO_IMAGE")"

# ---------------------------------------------------------------- 3. img-man, no banner
for f in manifest.yaml training-template.yaml mining-template.yaml infer-template.yaml; do
    cmp -s <(podman run --rm --network none "$YOLO_IMAGE" cat "/img-man/$f") "templates/det-yolo-tmi/img-man/$f" \
        || fail "podman run --rm $YOLO_IMAGE cat /img-man/$f is not exactly templates/det-yolo-tmi/img-man/$f"
done
echo "img-man: run --rm IMAGE cat /img-man/<file> prints exactly the 4 files"

# ---------------------------------------------------------------- 4. verify
# small: the whole path (stages, mAP, tensorboard, mining, inference), not the accuracy
cat > "$WORK/tiny.yaml" <<'YAML'
epochs: 2
img_size: 96
batch_size: 8
save_period: 1
workers: 0
YAML
say "ymir-exc verify $YOLO_IMAGE --runtime podman --network-none --user $TEST_USER --config tiny.yaml"
t=$(now)
ymir_exc verify "$YOLO_IMAGE" --runtime podman --network-none --user "$TEST_USER" --config "$WORK/tiny.yaml" \
        --work-dir "$WORK/verify" > "$WORK/verify.log" 2>&1 \
    || { cat "$WORK/verify.log"; fail "ymir-exc verify failed (work dirs: $WORK/verify)"; }
cat "$WORK/verify.log"
timing "verify [podman] (5 scenarios + img-man)" "$(since "$t") s"

# ---------------------------------------------------------------- 5. the README's command
say "README: ymir-exc sample trees; podman run --rm --network none -v in:/in:ro -v out:/out IMAGE ($EPOCHS epochs)"
ymir_exc sample trees --out "$WORK/trees" >/dev/null
echo "epochs: $EPOCHS" >> "$WORK/trees/in/config.yaml"
t=$(now)
podman run --rm --network none -v "$WORK/trees/in:/in:ro" -v "$WORK/trees/out:/out" "$YOLO_IMAGE" \
        > "$WORK/trees-run.log" 2>&1 \
    || { tail -40 "$WORK/trees-run.log"; fail "podman run on the sample failed"; }
secs=$(since "$t")
mon=$(head -1 "$WORK/trees/out/monitor.txt")
result=$WORK/trees/out/models/result.yaml
[ "$(cut -f4 <<< "$mon")" = 3 ] && [ -f "$result" ] \
    || { tail -40 "$WORK/trees-run.log"; fail "podman run on the sample: monitor.txt '$mon', expected state 3 and models/result.yaml"; }
"$PYTHON" - "$result" <<'PY'
import math, sys, yaml
r = yaml.safe_load(open(sys.argv[1]))
best = r["best_stage_name"]
stage = r["model_stages"][best]
m = stage["mAP"]
assert isinstance(m, float) and math.isfinite(m) and 0.0 <= m <= 1.0, m
print(f"result.yaml: best_stage_name {best}, mAP {m:.4f}, files {stage['files']}")
PY
echo "trained in $secs s, monitor.txt state 3"
timing "podman run (README command, $EPOCHS epochs)" "$secs s"

say "YOLO image stage: timings"
printf '%s\n' "${TIMINGS[@]}"
printf '%-50s %s\n' "total" "$(since "$T_START") s"
say "YOLO image stage passed"
