#!/usr/bin/env bash
# Install the Debian packages that the full test suite needs (MPI, Slurm, munge, container tools, XRootD).
# Idempotent: packages already present are not touched, and apt-get update runs only when needed
# (scripts/lib/apt.sh).
set -euo pipefail

packages=(
  openmpi-bin libopenmpi-dev cmake g++ make          # MPI and the Horovod build
  slurmctld slurmd slurm-client munge libpmix-dev    # the one-node Slurm cluster
  debootstrap                                        # the HTCondor pool and the container base
  podman buildah skopeo squashfs-tools uidmap runc   # building and running the image
  procps                                             # ps/pkill for the service scripts
  chromium                                           # headless rendering of `sbt-batch report` pages (tests)
  xrootd-server                                      # the root:// server of the remote-input tests
)

. "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"
apt_ensure "${packages[@]}"
echo "install-system: all ${#packages[@]} packages present"
