#!/usr/bin/env bash
# Installs every dependency from Debian packages (idempotent, quiet when all is
# there), then configures and builds the engine in Release under build/.
#
#   scripts/setup.sh [TARGET...]   the given CMake targets (say train_mnist), or everything
#   EQUIVAE_CUDA=ON|OFF            with or without the real CUDA backend (default: with it, but
#                                  for named targets only where a GPU is present)
set -euo pipefail
cd "$(dirname "$0")/.."
script=setup
source scripts/common.sh

# libdnnl-dev: oneDNN, the CPU convolutions' and GEMMs' faster route; its CMake package asks for
# OpenCL's (ocl-icd-opencl-dev, only "recommended" by it, so named here). python3-scipy: the
# SVHN reader's test against files scipy.io.savemat writes; python3-torch: the training step
# recomputed independently in PyTorch (tests/torch_check).
packages=(build-essential cmake pkg-config libopenblas-openmp-dev zlib1g-dev libdeflate-dev nlohmann-json3-dev
          libgtest-dev libgmock-dev libbenchmark-dev libboost-context-dev libmatio-dev libpng-dev
          libdnnl-dev ocl-icd-opencl-dev dataset-fashion-mnist python3 python3-numpy python3-venv
          python3-scipy python3-torch)
install_packages "${packages[@]}"

# The real CUDA backend (nvcc for sm_80 and sm_90: most of the build's time) for everything, and
# for named targets where a GPU is present; named targets on a machine without one (the first
# command: train_mnist, which then trains on the CPU) are built without it, unless the build
# directory was configured with it (a whole build before: nothing to gain by switching). EQUIVAE_CUDA=
# ON|OFF decides instead. A build directory configured the other way is configured again (the
# second command after the first: once).
build_dir=${EQUIVAE_BUILD_DIR:-build}
has_gpu() {  # no pipe into grep -q: under pipefail an early exit of grep could read as "none"
  compgen -G '/dev/nvidia[0-9]*' >/dev/null || [[ $(nvidia-smi -L 2>/dev/null) == *GPU\ * ]]
}
cache=$build_dir/CMakeCache.txt
cuda=ON
if [[ -z ${EQUIVAE_CUDA:-} ]] && (($#)) && { [[ ! -f $cache ]] || grep -qx "EQUIVAE_CUDA:BOOL=OFF" "$cache"; } &&
  ! has_gpu; then
  cuda=OFF
  echo "$script: no GPU here: building $* for the CPU, without the CUDA backend (EQUIVAE_CUDA=ON builds it)"
fi
cuda=${EQUIVAE_CUDA:-$cuda}
[[ $cuda == ON || $cuda == OFF ]] || { echo "$script: EQUIVAE_CUDA must be ON or OFF, got '$cuda'" >&2; exit 1; }

configure=(cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DEQUIVAE_CUDA="$cuda")
configure_once "$build_dir" "${configure[@]}"
if ! grep -qx "EQUIVAE_CUDA:BOOL=$cuda" "$cache"; then
  "${configure[@]}" >"$build_dir/build.log" 2>&1 || { cat "$build_dir/build.log"; exit 1; }
fi
targets=()
for t in "$@"; do targets+=(--target "$t"); done
build_quietly "$build_dir" -j"$(nproc)" "${targets[@]}"
