#!/usr/bin/env bash
# Installs every dependency from Debian packages (idempotent, quiet when all is
# there), then configures and builds the engine in Release under build/.
#
#   scripts/setup.sh [TARGET...]   the given CMake targets (say train_mnist), or everything
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

build_dir=${EQUIVAE_BUILD_DIR:-build}
configure_once "$build_dir" cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release
targets=()
for t in "$@"; do targets+=(--target "$t"); done
build_quietly "$build_dir" -j"$(nproc)" "${targets[@]}"
