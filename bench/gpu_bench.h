#pragma once
// What the GPU benchmarks share: skipping without a device, and timing device work with
// events (device work is asynchronous: a host clock would time the launches).
#include <benchmark/benchmark.h>

#include <exception>

#include "runtime/backend.h"

#ifdef EQUIVAE_BENCH_CUBLAS
#include <cuda_runtime.h>
#endif

// A benchmark whose body may throw (a failed CUDA call, an option the device refuses): the
// error becomes that benchmark's (SkipWithError) instead of ending the run, and with it the
// JSON output of every benchmark after it. Use in place of the function's head:
//   EQUIVAE_GUARDED_BENCHMARK(BM_Name) { …body using state… }
#define EQUIVAE_GUARDED_BENCHMARK(name)      \
  void name##_body(benchmark::State& state); \
  void name(benchmark::State& state) {       \
    try {                                    \
      name##_body(state);                    \
    } catch (const std::exception& e) {      \
      state.SkipWithError(e.what());         \
    }                                        \
  }                                          \
  void name##_body(benchmark::State& state)

namespace equivae::bench {

// True (and the benchmark marked skipped) without a usable CUDA device.
inline bool skip_without_gpu(benchmark::State& state) {
  if (cuda_available()) return false;
  state.SkipWithError("no CUDA device (or a build without the CUDA backend)");
  return true;
}

#ifdef EQUIVAE_BENCH_CUBLAS
// Each iteration runs `issue` `repeats` times on `stream` between two events and reports the
// events' time (UseManualTime); then reports a CUDA error, if any, as the benchmark's.
template <class F>
void time_with_events(benchmark::State& state, cudaStream_t stream, int repeats, F&& issue) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  for (auto _ : state) {
    cudaEventRecord(start, stream);
    for (int r = 0; r < repeats; ++r) issue();
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    state.SetIterationTime(ms / 1e3);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) state.SkipWithError(cudaGetErrorString(error));
}
#endif

}  // namespace equivae::bench
