#!/usr/bin/env bash
# Reproducible build of Horovod (TensorFlow + MPI + Gloo) and mpi4py for one Python environment.
#
#   bash scripts/build-horovod.sh [PYTHON]        # default: $PYTHON, else python3
#
# - pinned versions and sdist checksums; TensorFlow must already be installed in that environment
# - the Horovod sdist is patched at build time (scripts/patches/*.patch, checked to apply)
# - wheels are cached in ${SBT_BATCH_CACHE:-$HOME/.cache/sbt-batch}/wheels/<key>/, keyed by the
#   package, TensorFlow, Python and MPI versions and the patch checksum; a cached run takes seconds
# - idempotent; installs the Debian build dependencies when they are missing (needs root)
# Used as is by containers/Dockerfile (with scripts/lib/ and scripts/patches/): plain bash, no assumption
# about where the environment lives.
set -euo pipefail

HOROVOD_VERSION=0.28.1
HOROVOD_SHA256=92a43f5a94c43907a56805bad15f19700c62ffc83b7ca483f9e104e229f67ef0
MPI4PY_VERSION=4.1.2
MPI4PY_SHA256=56860286dc45f20e8821e93cb06669e30462348bf866f685553fa4b712d58d02
APT_PACKAGES="openmpi-bin libopenmpi-dev cmake g++ make patch"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
patch_file="$here/patches/horovod-${HOROVOD_VERSION}-tf2.16-no-xla.patch"
py=${1:-${PYTHON:-python3}}
cache=${SBT_BATCH_CACHE:-$HOME/.cache/sbt-batch}/wheels
t0=$(date +%s)

say() { printf 'build-horovod: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

command -v "$py" >/dev/null 2>&1 || [ -x "$py" ] || die "python not found: $py"
[ -f "$patch_file" ] || die "missing patch $patch_file"

# ---- Debian build dependencies -------------------------------------------------------------
[ -f "$here/lib/apt.sh" ] || die "missing $here/lib/apt.sh"
. "$here/lib/apt.sh"
# shellcheck disable=SC2086  # one word per package
apt_ensure $APT_PACKAGES

# ---- cache keys ------------------------------------------------------------------------------
read -r pyver pytag tfver < <("$py" - <<'EOF'
import sys
from importlib import metadata
tf = None
for name in ("tensorflow-cpu", "tensorflow", "tensorflow-gpu"):
    try:
        tf = metadata.version(name)
        break
    except metadata.PackageNotFoundError:
        pass
print("%d.%d" % sys.version_info[:2], "cp%d%d" % sys.version_info[:2], tf or "none")
EOF
)
[ "$tfver" != none ] || die "TensorFlow is not installed in $py (pip install tensorflow-cpu==2.21.0 first)"
mpiver=$(mpirun --version 2>/dev/null | sed -n 's/.*(Open MPI) \([0-9.]*\).*/\1/p' | head -n1)
[ -n "$mpiver" ] || die "mpirun --version did not report an Open MPI version"
patch_sum=$(sha256sum "$patch_file" | cut -c1-12)
hvd_key="horovod-${HOROVOD_VERSION}-tf${tfver}-${pytag}-ompi${mpiver}-p${patch_sum}"
mpi4py_key="mpi4py-${MPI4PY_VERSION}-${pytag}-ompi${mpiver}"
mkdir -p "$cache"

work=$(mktemp -d "${TMPDIR:-/tmp}/build-horovod.XXXXXX")
trap 'rm -rf "$work"' EXIT

pip() { "$py" -m pip --disable-pip-version-check "$@"; }

# fetch_sdist NAME VERSION SHA256 -> path of the checked sdist in $work
fetch_sdist() {
    local name=$1 version=$2 sum=$3 f
    pip download --quiet --no-deps --no-binary :all: --no-build-isolation -d "$work/sdist" "$name==$version" >&2 \
        || pip download --quiet --no-deps --no-binary :all: -d "$work/sdist" "$name==$version" >&2
    f=$(ls "$work"/sdist/"$name"-"$version".tar.gz 2>/dev/null || ls "$work"/sdist/"${name//-/_}"-"$version".tar.gz)
    if [ -n "$sum" ]; then
        echo "$sum  $f" | sha256sum --check --quiet - >&2 || die "checksum mismatch for $f"
    fi
    echo "$f"
}

# ---- Horovod ---------------------------------------------------------------------------------
hvd_dir="$cache/$hvd_key"
if ! ls "$hvd_dir"/horovod-*.whl >/dev/null 2>&1; then
    say "building $hvd_key (about 5 minutes on 2 cores)"
    sdist=$(fetch_sdist horovod "$HOROVOD_VERSION" "$HOROVOD_SHA256")
    tar -xzf "$sdist" -C "$work"
    src="$work/horovod-$HOROVOD_VERSION"
    patch -d "$src" -p1 --forward --quiet < "$patch_file" || die "patch did not apply: $patch_file"
    ! grep -q 'xla_mpi_ops.cc' "$src/horovod/tensorflow/CMakeLists.txt" || die "patch check failed"
    mkdir -p "$work/wheel"
    (
        export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1
        export HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
        export MAKEFLAGS="${MAKEFLAGS:--j2}"
        # RelWithDebInfo is hard-coded in setup.py: strip debug info at link time (wheel 10x smaller)
        export LDFLAGS="${LDFLAGS:-} -Wl,--strip-debug"
        export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-1700000000}"
        nice -n 10 "$py" -m pip --disable-pip-version-check wheel --no-deps --no-build-isolation \
            -w "$work/wheel" "$src" > "$work/build.log" 2>&1
    ) || { tail -n 40 "$work/build.log" >&2; die "Horovod build failed (log above)"; }
    mkdir -p "$hvd_dir.tmp.$$" && mv "$work"/wheel/horovod-*.whl "$hvd_dir.tmp.$$"/
    rm -rf "$hvd_dir" && mv "$hvd_dir.tmp.$$" "$hvd_dir"
else
    say "using cached wheel $hvd_key"
fi

# ---- mpi4py, built against the system Open MPI ----------------------------------------------
m_dir="$cache/$mpi4py_key"
if ! ls "$m_dir"/mpi4py-*.whl >/dev/null 2>&1; then
    say "building $mpi4py_key"
    sdist=$(fetch_sdist mpi4py "$MPI4PY_VERSION" "$MPI4PY_SHA256")
    mkdir -p "$work/wheel-mpi4py"
    # no debug info: compiles faster and the wheel is smaller
    MPICC=${MPICC:-mpicc} CFLAGS="${CFLAGS:-} -g0" LDFLAGS="${LDFLAGS:-} -Wl,--strip-debug" nice -n 10 "$py" -m pip --disable-pip-version-check wheel --no-deps \
        -w "$work/wheel-mpi4py" "$sdist" > "$work/mpi4py.log" 2>&1 \
        || { tail -n 40 "$work/mpi4py.log" >&2; die "mpi4py build failed (log above)"; }
    mkdir -p "$m_dir.tmp.$$" && mv "$work"/wheel-mpi4py/mpi4py-*.whl "$m_dir.tmp.$$"/
    rm -rf "$m_dir" && mv "$m_dir.tmp.$$" "$m_dir"
else
    say "using cached wheel $mpi4py_key"
fi

# ---- install (unless exactly these wheels are installed already) ------------------------------
installed_from() {  # the sha256 of the wheel file a distribution was installed from, if pip recorded it
    "$py" - "$1" <<'EOF'
import json, sys
from importlib import metadata
try:
    text = metadata.distribution(sys.argv[1]).read_text("direct_url.json") or "{}"
    print(json.loads(text).get("archive_info", {}).get("hashes", {}).get("sha256", ""))
except metadata.PackageNotFoundError:
    print("")
EOF
}
hvd_whl=$(ls "$hvd_dir"/horovod-*.whl)
m_whl=$(ls "$m_dir"/mpi4py-*.whl)
fresh=0
if [ "$(installed_from horovod)" != "$(sha256sum "$hvd_whl" | cut -d' ' -f1)" ] \
   || [ "$(installed_from mpi4py)" != "$(sha256sum "$m_whl" | cut -d' ' -f1)" ]; then
    # --force-reinstall: the same version number may have been built against another TensorFlow
    pip install --quiet --no-deps --force-reinstall "$hvd_whl" "$m_whl"
    pip install --quiet "$hvd_whl"   # runtime deps (cloudpickle, psutil, pyyaml, packaging)
    fresh=1
else
    say "already installed from the cached wheels"
fi

# ---- verify ----------------------------------------------------------------------------------
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
"$py" -c 'import horovod.tensorflow as h; from mpi4py import MPI
assert h.mpi_built() and h.gloo_built(), "Horovod lacks MPI or Gloo"' 2>/dev/null \
    || die "import horovod.tensorflow / mpi4py failed, or Horovod lacks MPI/Gloo"
if [ "$fresh" = 1 ] || [ "${HOROVOD_CHECK_BUILD:-0}" = 1 ]; then   # the full check takes ~40 s
    bindir=$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    check=$("$bindir/horovodrun" --check-build 2>&1) || { echo "$check" >&2; die "horovodrun --check-build failed"; }
    for want in TensorFlow MPI Gloo; do
        echo "$check" | grep -q "\[X\] $want" || { echo "$check" >&2; die "Horovod was built without $want"; }
    done
    echo "$check" | sed -n '/Available Frameworks/,$p' >&2
fi
say "ok: horovod $HOROVOD_VERSION (tf $tfver, $pytag, Open MPI $mpiver), mpi4py $MPI4PY_VERSION in $(($(date +%s) - t0)) s"
