#!/usr/bin/env bash
# A real one-machine HTCondor pool for tests: Debian trixie's minicondor in a debootstrapped root
# filesystem, started in a private mount namespace, reachable only on 127.0.0.1.
#
#   scripts/condor-pool.sh start    build (or unpack the cached) root filesystem, configure it, start the
#                                    pool, wait until the schedd answers and a slot is advertised
#   scripts/condor-pool.sh stop     stop the pool (SIGTERM to condor_master, then wait)
#   scripts/condor-pool.sh status   exit 0 when the pool is up and the schedd answers
#   scripts/condor-pool.sh env      print the exports a client needs (eval "$(scripts/condor-pool.sh env)")
#   scripts/condor-pool.sh build    only build/unpack the root filesystem (no daemons)
#   scripts/condor-pool.sh sync     copy the checkout's sbt_batch package into the pool's venv again
#
# Every step is idempotent. Settings (environment variables):
#   SBT_BATCH_CACHE            cache folder for the root filesystem tarball (default ~/.cache/sbt-batch)
#   SBT_BATCH_CONDOR_DIR       working folder: root filesystem, logs, client config (default /tmp/sbt-batch-condor)
#   SBT_BATCH_CONDOR_SHARED    folder bind-mounted at the same path inside the pool (default /tmp/sbt-batch-condor-shared)
#   SBT_BATCH_DEBIAN_MIRROR    Debian mirror (default: the first Debian URI in /etc/apt/sources*)
#   SBT_BATCH_CONDOR_SUBMITTER_UID  host uid mapped onto the job user in the shared folder (default 0)
#   SBT_BATCH_PIP              pip used to fetch the pool venv's wheels (default: the checkout's .venv, else pip3)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$REPO/scripts/lib/apt.sh"
CACHE="${SBT_BATCH_CACHE:-${HOME:-/root}/.cache/sbt-batch}"
BASE="${SBT_BATCH_CONDOR_DIR:-/tmp/sbt-batch-condor}"
SHARED="${SBT_BATCH_CONDOR_SHARED:-/tmp/sbt-batch-condor-shared}"
ROOT="$BASE/root"
HOSTCFG="$BASE/host"
PIDFILE="$BASE/master.pid"
LOG="$BASE/pool.log"
USER_NAME=tester
USER_UID=2001
SUBMITTER_UID="${SBT_BATCH_CONDOR_SUBMITTER_UID:-0}"  # host user whose files jobs may use as their own
DOMAIN=test.pool
# Bump when the root filesystem recipe changes: the cache key and the unpacked stamp use it.
ROOTFS_VERSION=3
PY_DEPS=(numpy h5py uproot awkward lz4 zstandard xxhash cramjam "dask>=2024.8" distributed dask-jobqueue typer rich pyyaml jinja2 psutil)
# Remote inputs (root://, https://) for jobs; skipped when no wheel exists for the pool's Python.
OPTIONAL_PY_DEPS=(fsspec-xrootd xrootd aiohttp)
VENV=/opt/sbt-batch
PYVER=3.13

say() { printf 'condor-pool: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot and mount namespaces need it)"

rootfs_key() {
    printf '%s\n' "$ROOTFS_VERSION" "${PY_DEPS[@]}" "${OPTIONAL_PY_DEPS[@]}" | sha256sum | cut -c1-12
}

mirror() { echo "${SBT_BATCH_DEBIAN_MIRROR:-$(apt_mirror)}"; }

pip_cmd() {
    if [ -n "${SBT_BATCH_PIP:-}" ]; then echo "$SBT_BATCH_PIP"
    elif [ -x "$REPO/.venv/bin/pip" ]; then echo "$REPO/.venv/bin/pip"
    else echo "pip3"; fi
}

compressor() { if command -v zstd >/dev/null; then echo "zstd -T0 -3"; else echo "gzip -1"; fi; }
tar_ext() { if command -v zstd >/dev/null; then echo tar.zst; else echo tar.gz; fi; }

# --- root filesystem ----------------------------------------------------------------------------

in_chroot() {  # run a command in root filesystem $1 with /proc mounted (private mount namespace)
    local dir=$1
    shift
    unshare --mount --propagation private -- bash -c 'mount -t proc proc "$0/proc" && exec chroot "$@"' "$dir" "$dir" "$@"
}

debootstrap_rootfs() {  # build a fresh root filesystem in $1; each stage is resumable
    local dir=$1 mirror
    mirror=$(mirror)
    command -v debootstrap >/dev/null || apt_ensure debootstrap
    if [ ! -f "$dir/.stage-debootstrap" ]; then
        rm -rf "$dir"
        mkdir -p "$dir"
        say "debootstrap trixie from $mirror (about a minute)"
        nice debootstrap --variant=minbase --include=python3,python3-venv trixie "$dir" "$mirror" \
            >"$BASE/debootstrap.log" 2>&1 || { tail -n 20 "$BASE/debootstrap.log" >&2; die "debootstrap failed (log: $BASE/debootstrap.log)"; }
        printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
        chmod 755 "$dir/usr/sbin/policy-rc.d"
        touch "$dir/.stage-debootstrap"
    fi
    if [ ! -f "$dir/.stage-minicondor" ]; then
        say "installing minicondor in the root filesystem (about 30 s)"
        in_chroot "$dir" env DEBIAN_FRONTEND=noninteractive bash -c \
            'apt-get update -q && apt-get install -y -q --no-install-recommends minicondor && apt-get clean && rm -rf /var/lib/apt/lists/*' \
            >"$BASE/apt.log" 2>&1 || { tail -n 20 "$BASE/apt.log" >&2; die "apt-get install minicondor failed (log: $BASE/apt.log)"; }
        touch "$dir/.stage-minicondor"
    fi
    if [ ! -f "$dir/.stage-venv" ]; then
        say "installing the conversion dependencies into $VENV (Python $PYVER)"
        rm -rf "${dir:?}$VENV"
        chroot "$dir" python3 -m venv --without-pip "$VENV"
        local site="$dir$VENV/lib/python$PYVER/site-packages"
        [ -d "$site" ] || die "no $site: is the root filesystem's Python $PYVER?"
        # Wheels for the pool's Python are fetched by the host's pip (its TLS setup and wheel cache),
        # so nothing inside the root filesystem needs network access.
        nice "$(pip_cmd)" install -q --disable-pip-version-check --target "$site" --only-binary=:all: \
            --python-version "$PYVER" --implementation cp --abi "cp${PYVER/./}" \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any \
            "${PY_DEPS[@]}" >"$BASE/pip.log" 2>&1 || { tail -n 20 "$BASE/pip.log" >&2; die "pip install into the pool venv failed (log: $BASE/pip.log)"; }
        if nice "$(pip_cmd)" install -q --disable-pip-version-check --target "$site" --only-binary=:all: \
            --python-version "$PYVER" --implementation cp --abi "cp${PYVER/./}" \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any \
            "${PY_DEPS[@]}" "${OPTIONAL_PY_DEPS[@]}" >"$BASE/pip-optional.log" 2>&1; then
            echo "${OPTIONAL_PY_DEPS[*]}" >"$dir$VENV/.optional-deps"
        else
            say "note: ${OPTIONAL_PY_DEPS[*]} not installed in the pool venv (no wheels for Python $PYVER; log: $BASE/pip-optional.log)"
        fi
        in_chroot "$dir" "$VENV/bin/python" -c 'import numpy, h5py, uproot, awkward, dask, distributed, dask_jobqueue, typer, rich, yaml, jinja2, psutil' ||
            die "the pool venv cannot import the conversion dependencies"
        touch "$dir/.stage-venv"
    fi
    useradd_rootfs "$dir"
}

useradd_rootfs() {
    local dir=$1
    chroot "$dir" getent passwd "$USER_NAME" >/dev/null ||
        chroot "$dir" useradd --uid "$USER_UID" --user-group --create-home --shell /bin/bash "$USER_NAME"
}

ensure_rootfs() {
    local key stamp tarball
    key=$(rootfs_key)
    stamp="$ROOT/.sbt-batch-rootfs"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && [ -x "$ROOT/usr/sbin/condor_master" ]; then
        return 0
    fi
    master_alive && die "the pool is running from an outdated root filesystem: run '$0 stop' first"
    mkdir -p "$BASE" "$CACHE"
    tarball="$CACHE/condor-rootfs-trixie-$key.$(tar_ext)"
    rm -rf "$ROOT"
    if [ -f "$tarball" ]; then
        say "unpacking cached root filesystem $tarball"
        mkdir -p "$ROOT"
        tar -C "$ROOT" --numeric-owner -I "$(compressor)" -xf "$tarball"
    else
        local tmp="$BASE/root.new"
        debootstrap_rootfs "$tmp"
        say "caching the root filesystem as $tarball"
        rm -f "$CACHE"/condor-rootfs-trixie-*."$(tar_ext)"
        tar -C "$tmp" --numeric-owner -I "$(compressor)" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
        mv "$tmp" "$ROOT"
    fi
    echo "$key" >"$stamp"
}

# --- configuration ------------------------------------------------------------------------------

configure() {
    useradd_rootfs "$ROOT"
    local d
    for d in /run/condor /var/lock/condor /var/spool/condor /var/lib/condor /var/lib/condor/execute \
        /var/lib/condor/cred_dir /var/log/condor; do
        chroot "$ROOT" install -d -o condor -g condor "$d"  # inside: /var/lock links to /run/lock
    done
    chmod 700 "$ROOT/var/lib/condor/cred_dir"
    cat >"$ROOT/etc/condor/condor_config.local" <<EOF
# Written by sbt-batch scripts/condor-pool.sh: a personal pool on loopback for tests.
ENABLE_IPV6 = FALSE
NETWORK_INTERFACE = 127.0.0.1
BIND_ALL_INTERFACES = FALSE
CONDOR_HOST = 127.0.0.1
UID_DOMAIN = $DOMAIN
TRUST_DOMAIN = $DOMAIN
FILESYSTEM_DOMAIN = $DOMAIN
MOUNT_UNDER_SCRATCH =
SCHEDD_INTERVAL = 1
NEGOTIATOR_INTERVAL = 1
NEGOTIATOR_MIN_INTERVAL = 1
NEGOTIATOR_CYCLE_DELAY = 1
UPDATE_INTERVAL = 2
STARTER_UPDATE_INTERVAL = 2
JOB_START_DELAY = 0
SHADOW_SIZE_ESTIMATE = 1
# One job per core, and a little more memory than the machine would give a 2-core slot.
NUM_CPUS = 2
# Remove terminated jobs from the queue quickly; their state lives in the event log and history.
SYSTEM_PERIODIC_REMOVE =
# Parallel universe (submit train --nodes N): the schedd's dedicated scheduler may claim the slots.
# It could not carve two dynamic slots out of one partitionable slot ("claim id not found for new
# dynamic slot"), so the two cores are two static slots of one CPU (two nodes of a parallel job, or
# any two 1-CPU jobs). It gives an idle claim back after a few seconds, so that the vanilla jobs of
# other tests are not kept waiting for the default 10 minutes.
NUM_SLOTS_TYPE_1 = 2
SLOT_TYPE_1 = cpus=1
SLOT_TYPE_1_PARTITIONABLE = FALSE
DedicatedScheduler = "DedicatedScheduler@\$(FULL_HOSTNAME)"
STARTD_ATTRS = \$(STARTD_ATTRS) DedicatedScheduler
UNUSED_CLAIM_TIMEOUT = 5
EOF
    mkdir -p "$ROOT/etc/condor/tokens.d" "$ROOT/etc/condor/passwords.d"
    chmod 700 "$ROOT/etc/condor/tokens.d" "$ROOT/etc/condor/passwords.d"
    if [ ! -s "$ROOT/etc/condor/passwords.d/POOL" ]; then
        head -c 48 /dev/urandom | base64 -w0 | chroot "$ROOT" condor_store_cred add -c -i - >/dev/null 2>&1 ||
            chroot "$ROOT" condor_store_cred add -c -p "$(head -c 48 /dev/urandom | base64 -w0)" >/dev/null
        [ -s "$ROOT/etc/condor/passwords.d/POOL" ] || die "could not create the pool signing key"
        rm -f "$HOSTCFG/tokens.d/$USER_NAME"  # signed with an older key
    fi
    # The IDTOKEN the host client uses: jobs submitted with it are owned by $USER_NAME.
    mkdir -p "$HOSTCFG/tokens.d"
    chmod 700 "$HOSTCFG/tokens.d"
    if [ ! -s "$HOSTCFG/tokens.d/$USER_NAME" ]; then
        chroot "$ROOT" condor_token_create -identity "$USER_NAME@$DOMAIN" >"$HOSTCFG/tokens.d/$USER_NAME.tmp"
        mv "$HOSTCFG/tokens.d/$USER_NAME.tmp" "$HOSTCFG/tokens.d/$USER_NAME"
    fi
    chown -R 0:0 "$HOSTCFG/tokens.d"  # the bindings refuse tokens owned by another user
    chmod 600 "$HOSTCFG/tokens.d/$USER_NAME"
    cat >"$HOSTCFG/condor_config" <<EOF
# Client configuration for the sbt-batch test pool (written by scripts/condor-pool.sh).
CONDOR_HOST = 127.0.0.1
COLLECTOR_HOST = 127.0.0.1
ENABLE_IPV6 = FALSE
NETWORK_INTERFACE = 127.0.0.1
BIND_ALL_INTERFACES = FALSE
UID_DOMAIN = $DOMAIN
TRUST_DOMAIN = $DOMAIN
FILESYSTEM_DOMAIN = $DOMAIN
SEC_TOKEN_DIRECTORY = $HOSTCFG/tokens.d
SEC_CLIENT_AUTHENTICATION_METHODS = IDTOKENS
LOG = $HOSTCFG/log
EOF
    mkdir -p "$HOSTCFG/log"
    write_shims
    mkdir -p "$SHARED" "$ROOT$SHARED"
    chmod 1777 "$SHARED"
    sync_package
}

# Command-line tools for host programs that call them (dask-jobqueue's HTCondorCluster runs condor_submit,
# condor_q and condor_rm): each runs the pool's own tool inside the root filesystem as $USER_NAME; a submit
# file given as an argument is copied in first (the host's /tmp is not visible there).
write_shims() {
    mkdir -p "$HOSTCFG/bin"
    local tool
    for tool in condor_submit condor_q condor_rm condor_status condor_history; do
        cat >"$HOSTCFG/bin/$tool" <<SHIM
#!/usr/bin/env bash
# Written by scripts/condor-pool.sh: run $tool of the test pool (inside $ROOT) as $USER_NAME.
set -euo pipefail
args=()
for a in "\$@"; do
    if [ "$tool" = condor_submit ] && [ -f "\$a" ]; then
        dir=\$(mktemp -d "$ROOT/tmp/sbt-batch-submit.XXXXXX"); chmod 755 "\$dir"
        cp "\$a" "\$dir/"; chmod 644 "\$dir/\$(basename "\$a")"; a="\${dir#$ROOT}/\$(basename "\$a")"
    fi
    args+=("\$a")
done
exec chroot --userspec=$USER_UID:$USER_UID "$ROOT" env -i PATH=/usr/bin:/bin HOME=/tmp \\
    CONDOR_CONFIG=/etc/condor/condor_config _CONDOR_SEC_TOKEN_DIRECTORY=/tmp/.sbt-batch-tokens \\
    _CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS=IDTOKENS /usr/bin/$tool "\${args[@]}"
SHIM
        chmod 755 "$HOSTCFG/bin/$tool"
    done
}

# The pool's venv imports sbt_batch from a copy of the checkout (jobs run as $USER_NAME, who may not
# be able to read the checkout itself, for example under /root in CI).
sync_package() {
    local site="$ROOT$VENV/lib/python$PYVER/site-packages"
    [ -d "$site" ] || die "no pool venv at $site"
    rm -rf "$site/sbt_batch.new"
    cp -r "$REPO/sbt_batch" "$site/sbt_batch.new"
    find "$site/sbt_batch.new" -name __pycache__ -prune -exec rm -rf {} +
    rm -rf "$site/sbt_batch"
    mv "$site/sbt_batch.new" "$site/sbt_batch"
    chmod -R a+rX "$site/sbt_batch"
    cat >"$ROOT$VENV/bin/sbt-batch" <<EOF
#!$VENV/bin/python3
import sys
from sbt_batch.cli import main
sys.exit(main())
EOF
    chmod 755 "$ROOT$VENV/bin/sbt-batch"
    ln -sf "$VENV/bin/sbt-batch" "$ROOT/usr/local/bin/sbt-batch"
    sync_horovod_runner "$site"
}

# The pool has no TensorFlow, hence no Horovod. Node 0 of a parallel-universe job still needs Horovod's
# rendezvous server, which is pure Python (horovod.runner): copy that part from the checkout's Horovod
# (scripts/build-horovod.sh), without the compiled framework extensions. Nothing to do without one.
sync_horovod_runner() {
    local site=$1 src
    src=$("$REPO/.venv/bin/python" -c 'import horovod, os; print(os.path.dirname(horovod.__file__))' 2>/dev/null) || return 0
    [ -f "$src/runner/http/http_server.py" ] || return 0
    rm -rf "$site/horovod.new"
    mkdir -p "$site/horovod.new"
    cp "$src/__init__.py" "$site/horovod.new/"
    cp -r "$src/common" "$src/runner" "$site/horovod.new/"
    find "$site/horovod.new" \( -name __pycache__ -o -name '*.so' \) -prune -exec rm -rf {} +
    rm -rf "$site/horovod"
    mv "$site/horovod.new" "$site/horovod"
    chmod -R a+rX "$site/horovod"
}

# --- daemons ------------------------------------------------------------------------------------

master_pid() { [ -f "$PIDFILE" ] && cat "$PIDFILE" || true; }

master_alive() {
    local pid state
    pid=$(master_pid)
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    # PID 1 may not reap: a zombie master is a dead master.
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo X)
    [ "$state" != Z ] && [ "$state" != X ] && grep -q condor_master "/proc/$pid/comm" 2>/dev/null
}

client() {  # run a condor tool as $USER_NAME inside the root filesystem, with the host token
    chroot --userspec="$USER_UID:$USER_UID" "$ROOT" env -i PATH=/usr/bin:/bin HOME=/tmp \
        CONDOR_CONFIG=/etc/condor/condor_config _CONDOR_SEC_TOKEN_DIRECTORY=/tmp/.sbt-batch-tokens \
        _CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS=IDTOKENS "$@"
}

install_client_token() {
    mkdir -p "$ROOT/tmp/.sbt-batch-tokens"
    cp "$HOSTCFG/tokens.d/$USER_NAME" "$ROOT/tmp/.sbt-batch-tokens/$USER_NAME"
    chown -R "$USER_UID:$USER_UID" "$ROOT/tmp/.sbt-batch-tokens"
    chmod 700 "$ROOT/tmp/.sbt-batch-tokens"
    chmod 600 "$ROOT/tmp/.sbt-batch-tokens/$USER_NAME"
}

schedd_answers() { client condor_q -totals >/dev/null 2>&1; }
slot_ready() { [ "$(client condor_status -af Name 2>/dev/null | wc -l)" -gt 0 ]; }

start() {
    if master_alive && schedd_answers; then
        sync_package
        write_shims
        say "already running (pid $(master_pid))"
        return 0
    fi
    master_alive && stop
    local t0=$SECONDS
    ensure_rootfs
    configure
    install_client_token
    rm -f "$PIDFILE"
    # Logs from an earlier run would confuse readiness checks: keep only the current one.
    rm -f "$ROOT"/var/log/condor/*Log* 2>/dev/null || true
    : >"$LOG"
    # The shared folder is bind-mounted at the same path inside. The job user ($USER_NAME) cannot read
    # files that root (the submitter here) creates with mode 0600, so the bind mount is *idmapped*:
    # inside, files owned by host uid $SUBMITTER_UID appear as $USER_NAME's, and what jobs write there
    # belongs to $SUBMITTER_UID on the host, as if submitter and job owner were one user (as on a real
    # site). The kernel refuses user namespaces to chrooted processes, so the mapping's user namespace
    # is made outside and handed to the root filesystem's mount(8) (util-linux >= 2.39).
    rm -f "$BASE/idmapped"
    setsid unshare --mount --propagation private -- bash -c '
        set -e
        root=$1 shared=$2 pidfile=$3 submitter=$4 uid=$5 marker=$6
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        mount --bind "$shared" "$root$shared"
        unshare --user sleep 60 &
        holder=$!
        for _ in $(seq 100); do
            [ "$(readlink /proc/$holder/ns/user)" != "$(readlink /proc/self/ns/user)" ] && break
            sleep 0.05
        done
        if echo "$submitter $uid 1" >/proc/$holder/uid_map && echo "$submitter $uid 1" >/proc/$holder/gid_map &&
            chroot "$root" mount --bind -o "X-mount.idmap=/proc/$holder/ns/user" "$shared" "$shared"; then
            touch "$marker"
        else
            echo "condor-pool: warning: no idmapped mount; jobs see the shared folder with host ownership" >&2
        fi
        kill $holder 2>/dev/null || true
        wait $holder 2>/dev/null || true
        echo $$ >"$pidfile"
        exec chroot "$root" /usr/sbin/condor_master -f
    ' condor-pool "$ROOT" "$SHARED" "$PIDFILE" "$SUBMITTER_UID" "$USER_UID" "$BASE/idmapped" </dev/null >>"$LOG" 2>&1 &
    local i
    for i in $(seq 1 600); do
        if [ $((i % 10)) = 0 ] && ! master_alive && [ -f "$PIDFILE" ]; then
            tail -n 20 "$LOG" >&2
            die "condor_master exited (logs: $LOG, $ROOT/var/log/condor)"
        fi
        if master_alive && schedd_answers && slot_ready; then
            say "pool up in $((SECONDS - t0)) s (pid $(master_pid)); shared folder $SHARED"
            return 0
        fi
        sleep 0.2
    done
    die "the pool did not come up within 120 s (logs: $LOG, $ROOT/var/log/condor)"
}

stop() {
    local pid i
    pid=$(master_pid)
    if ! master_alive; then
        rm -f "$PIDFILE"
        say "not running"
        return 0
    fi
    kill -TERM "$pid"
    for i in $(seq 1 150); do
        master_alive || break
        sleep 0.2
    done
    if master_alive; then
        say "condor_master did not stop in 30 s: killing it"
        kill -KILL "$pid" || true
    fi
    # Daemons the master could not stop (unlikely) would hold the namespace; end them by their pid.
    local p
    for p in $(pgrep -f "^condor_(schedd|collector|negotiator|startd|shared_port|procd|starter|shadow)" || true); do
        [ "$(readlink "/proc/$p/root" 2>/dev/null)" = "$ROOT" ] && kill -KILL "$p" 2>/dev/null || true
    done
    rm -f "$PIDFILE"
    say "stopped"
}

status() {
    if master_alive && schedd_answers; then
        say "running (pid $(master_pid)); CONDOR_CONFIG=$HOSTCFG/condor_config; shared folder $SHARED"
        return 0
    fi
    say "not running"
    return 1
}

print_env() {
    printf 'export CONDOR_CONFIG=%q\n' "$HOSTCFG/condor_config"
    printf 'export SBT_BATCH_CONDOR_SHARED=%q\n' "$SHARED"
    # condor_submit/condor_q/condor_rm for host programs (dask-jobqueue): put this folder on PATH to use them
    printf 'export SBT_BATCH_CONDOR_BIN=%q\n' "$HOSTCFG/bin"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
restart) stop; start ;;
status) status ;;
env) print_env ;;
build) ensure_rootfs ;;
sync) sync_package ;;
*) echo "usage: $0 start|stop|restart|status|env|build|sync" >&2; exit 2 ;;
esac
