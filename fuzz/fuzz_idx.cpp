// libFuzzer entry point for the idx reader; the harness is run_idx in fuzz_targets.h.
#include "fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  equivae::fuzz::run_idx(data, size);
  return 0;
}
