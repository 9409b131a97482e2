// Inverted dropout (cpu::dropout_forward's contract and mask).
//
// Launch geometry: both kernels elementwise, 256 threads, 1-D grid-stride. Element i's keep
// decision is Philox at (seed, step, stream_id, i) in double, as on the CPU, so the masks are
// the same bits on both backends whatever the grid.
#include "kernels/cuda/launch.h"
#include "kernels/cuda/ops.h"
#include "kernels/philox.h"

namespace equivae::cuda {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_dropout_forward(T* __restrict__ y, T* __restrict__ mask, const T* __restrict__ x,
                           size_t n, double drop, T scale, uint64_t seed, uint64_t step,
                           uint32_t stream_id) {
  grid_dependency_prologue();
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    T m = T(1);
    if (drop > 0.0)
      m = philox_uniform<double>(seed, step, stream_id, uint32_t(i)) >= drop ? scale : T(0);
    mask[i] = m;
    y[i] = drop > 0.0 ? x[i] * m : x[i];
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_dropout_backward(T* dx, const T* dy, const T* __restrict__ mask, size_t n) {
  grid_dependency_prologue();
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    dx[i] = dy[i] * mask[i];
}

}  // namespace

template <class T>
void dropout_forward(T* y, T* mask, const T* x, size_t n, T rate, uint64_t seed, uint64_t step,
                     uint32_t stream_id, cudaStream_t stream) {
  if (n == 0) return;
  // As the CPU: rate 0 (or NaN) copies with mask 1; rate ≥ 1 drops everything.
  const double drop = rate > T(0) ? double(rate) : 0.0;
  const T scale = drop < 1.0 ? T(1.0 / (1.0 - drop)) : T(0);
  EQUIVAE_LAUNCH(kernel_dropout_forward<T>, blocks_for(n, kThreads), kThreads, 0, stream, y, mask,
                 x, n, drop, scale, seed, step, stream_id);
}

template <class T>
void dropout_backward(T* dx, const T* dy, const T* mask, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  EQUIVAE_LAUNCH(kernel_dropout_backward<T>, blocks_for(n, kThreads), kThreads, 0, stream, dx, dy,
                 mask, n);
}

#define INSTANTIATE(T)                                                                        \
  template void dropout_forward<T>(T*, T*, const T*, size_t, T, uint64_t, uint64_t, uint32_t, \
                                   cudaStream_t);                                             \
  template void dropout_backward<T>(T*, const T*, const T*, size_t, cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace equivae::cuda
