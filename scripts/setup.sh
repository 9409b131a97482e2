#!/usr/bin/env bash
# Installs every dependency from Debian packages (idempotent, quiet when all is
# there), then configures and builds the engine in Release under build/.
#
#   scripts/setup.sh [TARGET...]   the given CMake targets (say train_mnist), or everything
set -euo pipefail
cd "$(dirname "$0")/.."

# libdnnl-dev: oneDNN, the CPU convolutions' and GEMMs' faster route; its CMake package asks for
# OpenCL's (ocl-icd-opencl-dev, only "recommended" by it, so named here). python3-scipy: the
# SVHN reader's test against files scipy.io.savemat writes; python3-torch: the training step
# recomputed independently in PyTorch (tests/torch_check).
packages=(build-essential cmake pkg-config libopenblas-openmp-dev zlib1g-dev libdeflate-dev nlohmann-json3-dev
          libgtest-dev libgmock-dev libbenchmark-dev libboost-context-dev libmatio-dev libpng-dev
          libdnnl-dev ocl-icd-opencl-dev dataset-fashion-mnist python3 python3-numpy python3-venv
          python3-scipy python3-torch)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

build_dir=${EQUIVAE_BUILD_DIR:-build}
log="$build_dir/build.log"
mkdir -p "$build_dir"
# Configured when it has no build files yet (a configure that failed leaves a cache but none).
if [ ! -f "$build_dir/Makefile" ]; then
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >"$log" 2>&1 || { cat "$log"; exit 1; }
fi
# Quiet when all is built; the whole log when something fails.
targets=()
for t in "$@"; do targets+=(--target "$t"); done
if ! cmake --build "$build_dir" -j"$(nproc)" "${targets[@]}" >"$log" 2>&1; then
  cat "$log"
  echo "setup: build failed (log: $log)" >&2
  exit 1
fi
