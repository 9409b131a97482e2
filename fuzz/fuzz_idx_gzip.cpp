// libFuzzer entry point for the idx_gzip reader; the harness is run_idx_gzip in fuzz_targets.h.
#include "fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  equivae::fuzz::run_idx_gzip(data, size);
  return 0;
}
