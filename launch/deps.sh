#!/usr/bin/env bash
# deps.sh: installs the Debian packages drtune builds against, only those that are missing (fast when all are there).
set -euo pipefail
pkgs=(build-essential cmake pkg-config libopenblas-openmp-dev libopenmpi-dev openmpi-bin libhdf5-openmpi-dev
      hdf5-tools libcjson-dev libpng-dev libinih-dev clang libclang-rt-14-dev
      jq munge slurmctld slurmd slurm-client) # jq: launch/retrain.sh; Slurm: the cluster tests (a private instance)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "drtune: installing missing packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "drtune: error: need root or sudo to install ${missing[*]}" >&2; exit 2; }
    SUDO=sudo
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
