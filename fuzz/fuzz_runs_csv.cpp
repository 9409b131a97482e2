// libFuzzer entry point for reproduce's runs.csv reader; the harness is run_runs_csv in
// fuzz_targets.h.
#include "fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  equivae::fuzz::run_runs_csv(data, size);
  return 0;
}
