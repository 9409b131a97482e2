#pragma once
// Whether a test of the CUDA kernels can run here: always under the emulator; in the native
// build (EQUIVAE_TEST_REAL_CUDA, the *_gpu test binaries) only where a CUDA device is present.
#include "runtime/backend.h"

namespace equivae::test {

inline bool gpu_ready() {
#if defined(EQUIVAE_TEST_REAL_CUDA)
  return cuda_available();
#else
  return true;
#endif
}

}  // namespace equivae::test
