// libFuzzer entry point for the flags reader; the harness is run_flags in fuzz_targets.h.
#include "fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  equivae::fuzz::run_flags(data, size);
  return 0;
}
