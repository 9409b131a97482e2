// Segmented leave-one-out mean pooling over CSR sets, forward and backward.
//
// Launch geometry:
// - kernel_pool_forward: one thread per element r[i, c] (256 per block, 1-D grid-stride);
//   the thread sums e[members[s], c] over its set in order and scales by 1/m_i, the CPU's
//   arithmetic in the CPU's order. Threads of a warp share i (d ≥ 32) or a few i, so the
//   member indices are broadcast loads and the e rows are read contiguously.
// - kernel_pool_backward, a deterministic gather over the sets' transpose
//   (cpu::pool_transpose, built on the host beside the sets): one thread per element
//   de[j, c] adds dr[i, c]/m_i over the rows i that pooled j, in increasing i — the CPU
//   scatter's order, so the result matches it and does not depend on scheduling; no atomics,
//   no zeroing pass. Cost O(R·m̄·d) whatever the batch: the earlier form scanned every set
//   for every j, O(N·R·m̄), ~10 ms of a B = 10,240 step.
#include "kernels/cuda/launch.h"
#include "kernels/cuda/ops.h"

namespace equivae::cuda {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_pool_forward(T* __restrict__ r, const T* __restrict__ e,
                        const int32_t* __restrict__ offsets, const int32_t* __restrict__ members,
                        int R, int d) {
  grid_dependency_prologue();
  const int total = R * d;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int row = i / d, c = i - row * d;
    const int begin = offsets[row], end = offsets[row + 1];
    T acc = T(0);
    for (int s = begin; s < end; ++s) acc += e[size_t(members[s]) * d + c];
    r[i] = acc * (T(1) / T(end - begin));
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_pool_backward(T* __restrict__ de, const T* __restrict__ dr,
                         const int32_t* __restrict__ offsets,
                         const int32_t* __restrict__ inv_offsets,
                         const int32_t* __restrict__ inv_rows, int N, int d) {
  grid_dependency_prologue();
  const int total = N * d;
  for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < total; k += gridDim.x * blockDim.x) {
    const int j = k / d, c = k - j * d;
    T acc = T(0);
    for (int t = inv_offsets[j]; t < inv_offsets[j + 1]; ++t) {
      const int i = inv_rows[t];
      acc += dr[size_t(i) * d + c] * (T(1) / T(offsets[i + 1] - offsets[i]));
    }
    de[k] = acc;
  }
}

}  // namespace

template <class T>
void pool_forward(T* r, const T* e, const int32_t* offsets, const int32_t* members, int R, int d,
                  cudaStream_t stream) {
  const size_t total = size_t(R) * d;
  if (total == 0) return;
  EQUIVAE_LAUNCH(kernel_pool_forward<T>, blocks_for(total, kThreads), kThreads, 0, stream, r, e,
                 offsets, members, R, d);
}

template <class T>
void pool_backward(T* de, const T* dr, const int32_t* offsets, const int32_t* inv_offsets,
                   const int32_t* inv_rows, int N, int d, cudaStream_t stream) {
  const size_t total = size_t(N) * d;
  if (total == 0) return;
  EQUIVAE_LAUNCH(kernel_pool_backward<T>, blocks_for(total, kThreads), kThreads, 0, stream, de, dr,
                 offsets, inv_offsets, inv_rows, N, d);
}

#define INSTANTIATE(T)                                                                         \
  template void pool_forward<T>(T*, const T*, const int32_t*, const int32_t*, int, int,        \
                                cudaStream_t);                                                 \
  template void pool_backward<T>(T*, const T*, const int32_t*, const int32_t*, const int32_t*, \
                                 int, int, cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace equivae::cuda
