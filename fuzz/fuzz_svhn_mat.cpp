// libFuzzer entry point for the SVHN .mat reader; the harness is run_svhn_mat in fuzz_targets.h.
#include "fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  equivae::fuzz::run_svhn_mat(data, size);
  return 0;
}
