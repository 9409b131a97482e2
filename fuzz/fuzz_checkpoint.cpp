// libFuzzer entry point for the checkpoint reader; the harness is run_checkpoint in fuzz_targets.h.
#include "fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  equivae::fuzz::run_checkpoint(data, size);
  return 0;
}
