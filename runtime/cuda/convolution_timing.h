#pragma once
// TimedConvolutions' measurement on a GPU (real build only): seconds per call of a shape's three
// calls on cuDNN and on the lowering, run on `stream` on zeroed scratch of the shape — the
// fastest of 3 rounds of 5 calls after a warm-up (which also loads the kernels and makes the
// libraries' choices); infinite where a call fails. Outside any capture only (it allocates,
// waits and times).
#include <algorithm>
#include <cstddef>
#include <functional>
#include <limits>

#include "kernels/cpu/ops.h"
#include "runtime/cuda/conv_geometry.h"
#include "runtime/cuda/convolution_calls.h"
#include "runtime/cuda/device_buffer.h"
#include "runtime/cuda/timed_convolutions.h"

namespace equivae {

template <class T>
TimedConvolutions::Seconds time_convolution_calls(const cpu::Conv2dShape& s, bool transposed,
                                                  ConvolutionCalls& cudnn,
                                                  ConvolutionCalls& lowered, cudaStream_t stream) {
  const double never = std::numeric_limits<double>::infinity();
  const cpu::Conv2dShape c = forward_convolution(s, transposed);
  const size_t elem = sizeof(T), nx = size_t(c.N) * c.C_in * c.H * c.W,
               ny = size_t(c.N) * c.C_out * cpu::conv_out_h(c, false) * cpu::conv_out_w(c, false),
               nw = size_t(c.C_out) * c.C_in * c.KH * c.KW,
               bytes = std::max(cudnn.workspace_bytes(s, transposed),
                                lowered.workspace_bytes(s, transposed));
  auto zeroed = [&](size_t n) {
    DeviceBuffer b(n);
    EQUIVAE_CUDA_CHECK(cudaMemsetAsync(b.get(), 0, n, stream));
    return b;
  };
  const DeviceBuffer x = zeroed(nx * elem), y = zeroed(ny * elem), w = zeroed(nw * elem), ws(bytes);
  struct Events {
    cudaEvent_t start = nullptr, stop = nullptr;
    ~Events() {
      if (start) cudaEventDestroy(start);
      if (stop) cudaEventDestroy(stop);
    }
  } events;
  EQUIVAE_CUDA_CHECK(cudaEventCreate(&events.start));
  EQUIVAE_CUDA_CHECK(cudaEventCreate(&events.stop));
  auto time = [&](const std::function<void()>& call) {
    double best = never;
    try {
      call();  // warm-up
      for (int round = 0; round < 3; ++round) {
        float ms = 0;
        EQUIVAE_CUDA_CHECK(cudaEventRecord(events.start, stream));
        for (int i = 0; i < 5; ++i) call();
        EQUIVAE_CUDA_CHECK(cudaEventRecord(events.stop, stream));
        EQUIVAE_CUDA_CHECK(cudaEventSynchronize(events.stop));
        EQUIVAE_CUDA_CHECK(cudaEventElapsedTime(&ms, events.start, events.stop));
        best = std::min(best, double(ms) * 1e-3 / 5);
      }
    } catch (const Error&) {
      cudaStreamSynchronize(stream);
      cudaGetLastError();  // a call that failed is never chosen
      best = never;
    }
    return best;
  };
  TimedConvolutions::Seconds seconds;
  ConvolutionCalls* impls[2] = {&cudnn, &lowered};
  for (int i = 0; i < 2; ++i) {
    ConvolutionCalls& on = *impls[i];
    seconds[TimedConvolutions::kForward][i] = time(
        [&] { on.forward(s, transposed, y.get(), x.get(), w.get(), ws.get(), bytes, stream); });
    seconds[TimedConvolutions::kBackwardData][i] = time([&] {
      on.backward_data(s, transposed, x.get(), y.get(), w.get(), ws.get(), bytes, stream);
    });
    seconds[TimedConvolutions::kBackwardFilter][i] = time([&] {
      on.backward_filter(s, transposed, w.get(), x.get(), y.get(), ws.get(), bytes, stream);
    });
  }
  cudaStreamSynchronize(stream);  // the scratch is freed after the calls ran
  return seconds;
}

}  // namespace equivae
