#!/usr/bin/env bash
# Builds what it needs (via setup.sh) and runs every test with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
ctest --test-dir "${EQUIVAE_BUILD_DIR:-build}" --output-on-failure -j"$(nproc)" "$@"
