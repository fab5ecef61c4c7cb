# Shared setup of the CI container stages (.ci/containers.sh, .ci/yolo-image.sh): source it, then
# call podman_setup. Needs root (apt-get, rootful podman).
#   STATE           folder for containers.conf and logs (set by the caller)
#   DEBIAN_IMAGE    the local Debian bookworm base image name (set here)
#   CA_ARGS         podman build arguments that make pip in a build trust the host CA bundle
#   CONTAINERS_CONF exported: runc and lower ulimits (crun fails on these machines)
# podman honours CONTAINERS_STORAGE_CONF from the caller's environment (another image store).
DEBIAN_IMAGE=localhost/debian:bookworm

say() { printf '== %s\n' "$*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
size_mb() { podman image inspect --format '{{.Size}}' "$1" | awk '{ printf "%.0f MB", $1 / 1e6 }'; }

podman_tools() {  # podman, runc, debootstrap from apt when missing
    local missing=() tool
    for tool in podman runc debootstrap; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
    if [ ${#missing[@]} -gt 0 ]; then
        say "apt-get install podman runc debootstrap (missing: ${missing[*]})"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
    fi
}

podman_conf() {  # CONTAINERS_CONF: runc, lower ulimits
    export CONTAINERS_CONF=$STATE/containers.conf
    cat > "$CONTAINERS_CONF" <<'CONF'
# ymir-exc CI: crun fails on these machines (ulimits, hybrid cgroups): runc, lower ulimits
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]
[engine]
runtime = "runc"
CONF
}

debian_base() {  # DEBIAN_IMAGE from debootstrap (no registry can be reached), kept once built
    if podman image exists "$DEBIAN_IMAGE"; then
        say "$DEBIAN_IMAGE: present, kept"
        return
    fi
    say "$DEBIAN_IMAGE: debootstrap --variant=minbase bookworm, podman import"
    local rootfs=$STATE/rootfs
    rm -rf "$rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" > "$STATE/debootstrap.log" 2>&1 \
        || { tail -20 "$STATE/debootstrap.log"; return 1; }
    # as Debian's own images: no package cache, no package lists (Dockerfiles run apt-get update)
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' --quiet - "$DEBIAN_IMAGE" >/dev/null
    rm -rf "$rootfs"
}

ca_args() {  # CA_ARGS: mount the host CA bundle into builds for pip
    CA_ARGS=()
    local ca
    for ca in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
        if [ -f "$ca" ]; then CA_ARGS=(-v "$ca:/host-ca.crt:ro" --build-arg PIP_CERT=/host-ca.crt); break; fi
    done
}
