#!/usr/bin/env bash
# Build the CPU container image for real from containers/Dockerfile, with no registry, then test it.
#
#   bash scripts/build-image.sh [build]    # base (cached) -> image -> tests inside -> archive -> archive test
#   bash scripts/build-image.sh env        # print the exports that point podman/buildah at the work folder
#   bash scripts/build-image.sh base       # only make/import the debootstrapped base image
#   bash scripts/build-image.sh test|archive   # only the tests inside / the archive step, on the built image
#
# - base: debootstrap bookworm minbase (python3, python3-venv, ca-certificates), cached as a tarball in
#   $SBT_BATCH_CACHE/base/, `podman import`ed as localhost/sbt-batch-base:bookworm
# - build: buildah bud --isolation chroot --network host with that base (build arg BASE_IMAGE and --from);
#   the host CA bundle is bind-mounted read-only for TLS (never copied into the image), the sbt-batch cache
#   (Horovod wheels of scripts/build-horovod.sh) at /cache and pip's cache at /root/.cache/pip
# - inside the image (podman run --network none): selfcheck, a small conversion, a 1-epoch training
# - saved as a docker-archive in $SBT_BATCH_CACHE/images/ (what `apptainer build x.sif docker-archive:...`
#   takes) and run again from that archive in a separate, temporary storage
# podman/buildah storage and config live in $SBT_BATCH_CACHE/podman (runtime runc, netns none).
# Environment: SBT_BATCH_CACHE, SBT_BATCH_IMAGE (tag, default localhost/sbt-batch:<version>-cpu),
#   SBT_BATCH_IMAGE_SKIP_TESTS=1 (build and save the archive only: tests/test_container_image.py then
#   runs the same checks under pytest), DEBIAN_MIRROR.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
. scripts/lib/apt.sh
cache=${SBT_BATCH_CACHE:-$HOME/.cache/sbt-batch}
work=$cache/podman
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' sbt_batch/__init__.py)
image=${SBT_BATCH_IMAGE:-localhost/sbt-batch:${version}-cpu}
base_ref=localhost/sbt-batch-base:bookworm
deps_ref=localhost/sbt-batch-deps:cache
base_tar=$cache/base/debian-bookworm-minbase.tar
archive=$cache/images/sbt-batch-${version}-cpu.docker.tar
ca=/etc/ssl/certs/ca-certificates.crt
pip_cache=${PIP_CACHE_DIR:-$HOME/.cache/pip}
t_start=$(date +%s)

say() { printf 'build-image: [%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }
elapsed() { echo "$(($(date +%s) - $1)) s"; }

print_env() {
    echo "export CONTAINERS_STORAGE_CONF=$work/storage.conf"
    echo "export CONTAINERS_CONF=$work/containers.conf"
    echo "export BUILDAH_ISOLATION=chroot"
}

# ---- tools and podman/buildah configuration in the work folder -----------------------------------
setup_tools() {
    apt_ensure podman buildah skopeo runc debootstrap uidmap
    mkdir -p "$work/storage" "$work/run" "$work/tmp" "$cache/base" "$cache/images" "$pip_cache"
    cat > "$work/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$work/storage"
runroot = "$work/run"
EOF
    # runc: crun fails here ("cgroups in hybrid mode not supported"); netns none: never create a bridge
    cat > "$work/containers.conf" <<EOF
[containers]
netns = "none"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$work/tmp"
EOF
    eval "$(print_env)"
    export TMPDIR=$work/tmp
}

# ---- base image: debootstrap once, cache the tarball, import ------------------------------------
make_base() {
    if [ ! -s "$base_tar" ]; then
        local t0 rootfs mirror
        t0=$(date +%s)
        mirror=${DEBIAN_MIRROR:-$(apt_mirror)}
        rootfs=$(mktemp -d "$work/tmp/rootfs.XXXXXX")
        say "debootstrap bookworm minbase from $mirror (about 1-2 min)"
        nice debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 \
            || { tail -n 20 "$work/debootstrap.log" >&2; rm -rf "$rootfs"; die "debootstrap failed"; }
        printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s-security bookworm-security main\n' \
            "$mirror" "$mirror" "$mirror" > "$rootfs/etc/apt/sources.list"
        rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
            "$rootfs"/var/log/* "$rootfs"/tmp/* 2>/dev/null || true
        tar --numeric-owner -C "$rootfs" -cf "$base_tar.tmp" .
        mv "$base_tar.tmp" "$base_tar"
        rm -rf "$rootfs"
        say "base tarball $(du -h "$base_tar" | cut -f1) in $(elapsed "$t0")"
    fi
    local want
    want=$(sha256sum "$base_tar" | cut -c1-16)
    if [ "$(podman image inspect --format '{{index .Labels "io.sbt-batch.base.tar"}}' "$base_ref" 2>/dev/null)" != "$want" ]; then
        say "podman import $base_tar"
        podman import -q --change "LABEL io.sbt-batch.base.tar=$want" --change "CMD [\"/bin/bash\"]" \
            "$base_tar" "$base_ref" >/dev/null
    fi
}

# ---- build -------------------------------------------------------------------------------------------
build_image() {
    local t0 with_horovod=1
    t0=$(date +%s)
    if [ ! -f scripts/build-horovod.sh ]; then
        say "warning: scripts/build-horovod.sh is missing: building WITHOUT Horovod"
        with_horovod=0
    fi
    say "buildah bud $image (TensorFlow layer: several minutes cold, seconds warm)"
    local args=(--isolation chroot --network host --layers
        --from "$base_ref"
        --build-arg BASE_IMAGE="$base_ref"
        --build-arg SBT_BATCH_VERSION="$version"
        --build-arg WITH_HOROVOD="$with_horovod"
        -v "$ca:$ca:ro"
        -v "$cache:/cache"
        -v "$pip_cache:/root/.cache/pip"
        -f containers/Dockerfile)
    # the deps stage gets a tag of its own so that pruning keeps its layer cache
    { nice buildah bud "${args[@]}" --target deps -t "$deps_ref" . \
        && nice buildah bud "${args[@]}" -t "$image" . ; } > "$work/build.log" 2>&1 \
        || { tail -n 40 "$work/build.log" >&2; die "image build failed (full log: $work/build.log)"; }
    # drop images of earlier builds that nothing uses (the tagged stages keep this build's cache)
    podman image prune -f >/dev/null 2>&1 || true
    say "built $image: $(podman image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}') in $(elapsed "$t0")"
}

# ---- tests inside the image --------------------------------------------------------------------------
# run_in STORAGE_ARGS... -- IMAGE ARGS...: podman run with no network, data read-only, outputs in $out
# (as the image's own non-root user: $out is world-writable)
run_in() {
    podman run --rm --network none -v "$data:/data:ro" -v "$out:/out" -w /out "$@"
}

test_image() {
    local t0 shared
    t0=$(date +%s)
    shared=${SBT_BATCH_SHARED:-$repo/../shared}
    data=$shared/data/gfex-hdf5
    [ -d "$data" ] || die "real data not found in $data (set SBT_BATCH_SHARED)"
    out=$(mktemp -d "$work/tmp/image-test.XXXXXX")
    chmod 1777 "$out"
    say "inside the image: selfcheck"
    run_in "$image" selfcheck --require tensorflow --require uproot $([ -f scripts/build-horovod.sh ] && echo --require horovod) \
        || die "selfcheck failed inside $image"
    say "inside the image: sample ntuples + conversion"
    run_in "$image" sample-ntuples /out/ntuples --kind signal --files 2 --events 100 >/dev/null \
        || die "sample-ntuples failed inside $image"
    run_in "$image" convert /out/ntuples -o /out/sample.h5 --workers 1 \
        || die "convert failed inside $image"
    say "inside the image: 1-epoch training on the real gFEX sample"
    run_in "$image" train -s '/data/*ZvvHbb*.hdf5' -b '/data/*JZ0W*.hdf5' --epochs 1 --max-events 200 \
        -o /out/train --no-progress >/dev/null \
        || die "training failed inside $image"
    [ -s "$out/train/model.keras" ] || die "training inside $image wrote no model.keras"
    rm -rf "$out"
    say "image tests passed in $(elapsed "$t0")"
}

# ---- archive, and run from it in a fresh storage ---------------------------------------------------
save_archive() {
    local t0
    t0=$(date +%s)
    rm -f "$archive.tmp"
    podman save -q --format docker-archive -o "$archive.tmp" "$image" && mv "$archive.tmp" "$archive"
    say "saved $archive ($(du -h "$archive" | cut -f1)) in $(elapsed "$t0")"
}

archive_image() {
    local t0 tmp
    save_archive
    t0=$(date +%s)
    tmp=$(mktemp -d /tmp/sbt-img.XXXXXX)   # short: podman refuses a runroot over 50 characters
    local ref
    ref=$(podman --root "$tmp/root" --runroot "$tmp/run" load -q -i "$archive" | sed -n 's/^Loaded image[^:]*: *//p' | head -n1)
    [ -n "$ref" ] || { rm -rf "$tmp"; die "podman load of $archive gave no image"; }
    podman --root "$tmp/root" --runroot "$tmp/run" run --rm --network none "$ref" selfcheck --quick >/dev/null \
        || { podman --root "$tmp/root" --runroot "$tmp/run" rmi -af >/dev/null 2>&1; rm -rf "$tmp"; die "image from $archive does not run"; }
    podman --root "$tmp/root" --runroot "$tmp/run" rmi -af >/dev/null 2>&1 || true
    rm -rf "$tmp"
    say "image runs from the archive (fresh storage) in $(elapsed "$t0")"
}

case ${1:-build} in
    env) print_env ;;
    base) setup_tools; make_base ;;
    test) setup_tools; test_image ;;
    archive) setup_tools; archive_image ;;
    build)
        setup_tools
        make_base
        build_image
        if [ "${SBT_BATCH_IMAGE_SKIP_TESTS:-0}" != 1 ]; then
            test_image
            archive_image
        else  # tests/test_container_image.py runs the same checks (and pulls the archive) under pytest
            save_archive
        fi
        say "done in $(elapsed "$t_start"): $image, $archive"
        ;;
    *) die "usage: $0 [build|base|test|archive|env]" ;;
esac
