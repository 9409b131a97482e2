#!/usr/bin/env bash
# Builds what it needs (via setup.sh) and runs every test with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# --timeout: the limit of every test without its own (a hung one fails, not the whole job).
ctest --test-dir "${EQUIVAE_BUILD_DIR:-build}" --output-on-failure --timeout 900 -j"$(nproc)" "$@"
