#!/usr/bin/env bash
# Installs what cpscope needs to build, test and run its notebooks on Debian 12, skipping what is
# already there. Run as root (or with sudo available). The CUDA toolkit is optional and not installed
# here: without it the simulator, the tools and the host runtime build; with it (nvcc on PATH or in
# /usr/local/cuda) the CUDA backend builds too.
set -euo pipefail

packages=(
  cmake ninja-build g++ pkg-config
  libeigen3-dev libcli11-dev libfmt-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev libsqlite3-dev zlib1g-dev
  python3 python3-numpy jupyter-nbconvert python3-nbformat python3-ipykernel python3-matplotlib
  # Open MPI bootstraps the CUDA backend's nccl transport (mpirun/srun launches); its MPI parts build and are
  # tested under mpirun without the toolkit too.
  libopenmpi-dev openmpi-bin
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "setup-debian: all ${#packages[@]} packages present"
  exit 0
fi

echo "setup-debian: installing ${missing[*]}"
if [[ $(id -u) -eq 0 ]]; then
  sudo=()
elif command -v sudo >/dev/null; then
  sudo=(sudo)
else
  echo "setup-debian: need root to install: ${missing[*]}" >&2
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup-debian: done"
