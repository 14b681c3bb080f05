#!/usr/bin/env bash
# Install the Debian packages that the full test suite needs (MPI, Slurm, munge, container tools).
# Idempotent: packages already present are not touched, and apt-get update runs only when needed.
set -euo pipefail

packages=(
  openmpi-bin libopenmpi-dev cmake g++ make          # MPI and the Horovod build
  slurmctld slurmd slurm-client munge libpmix-dev    # the one-node Slurm cluster
  debootstrap                                        # the HTCondor pool and the container base
  podman buildah skopeo squashfs-tools uidmap runc   # building and running the image
  procps                                             # ps/pkill for the service scripts
)

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "install-system: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-system: all ${#packages[@]} packages present"
fi
