// Segmented leave-one-out mean pooling over CSR sets, forward and backward.
//
// Launch geometry:
// - kernel_pool_forward: one thread per element r[i, c] (256 per block, 1-D grid-stride);
//   the thread sums e[members[s], c] over its set in order and scales by 1/m_i, the CPU's
//   arithmetic in the CPU's order. Threads of a warp share i (d ≥ 32) or a few i, so the
//   member indices are broadcast loads and the e rows are read contiguously.
// - kernel_pool_backward, the deterministic gather form (chosen over an atomic scatter so a
//   step is bit-reproducible run to run and no zeroing pass is needed): one block of 8 warps
//   per row j of de. Warp w scans the member lists of pooled rows [w·R/8, (w+1)·R/8), 32
//   entries per step, and finds the entries equal to j with a ballot; for each hit (in
//   order) the warp's lanes, one per column, add dr[i, c]/m_i. The 8 warp partials are
//   summed in shared memory in warp order, so the result does not depend on scheduling.
//   Columns go in chunks of 32 (d = 8…64 in the models). grid = N. Cost: every block scans
//   all R·m̄ member entries (coalesced, L2-resident: ~1,100 for the supervised step).
#include "kernels/cuda/launch.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/reduce.cuh"

namespace equivae::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_pool_forward(T* __restrict__ r, const T* __restrict__ e,
                        const int32_t* __restrict__ offsets, const int32_t* __restrict__ members,
                        int R, int d) {
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
                         const int32_t* __restrict__ offsets, const int32_t* __restrict__ members,
                         int R, int d) {
  EQUIVAE_SHARED_2D(T, partial, kWarps, 32);
  const int j = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int i_begin = int(int64_t(R) * warp / kWarps);
  const int i_end = int(int64_t(R) * (warp + 1) / kWarps);
  const int s_begin = offsets[i_begin], s_end = offsets[i_end];
  for (int c0 = 0; c0 < d; c0 += 32) {
    const int c = c0 + lane;
    T acc = T(0);
    int i = i_begin;  // the pooled row owning entry s: advances monotonically with s
    for (int base = s_begin; base < s_end; base += 32) {
      const int s = base + lane;
      unsigned hits = __ballot_sync(kFullWarp, s < s_end && members[s] == j);
      while (hits) {
        const int sk = base + __ffs(int(hits)) - 1;
        hits &= hits - 1;
        while (offsets[i + 1] <= sk) ++i;
        if (c < d) acc += dr[size_t(i) * d + c] * (T(1) / T(offsets[i + 1] - offsets[i]));
      }
    }
    partial[warp][lane] = acc;
    __syncthreads();
    if (warp == 0 && c < d) {
      T sum = partial[0][lane];
#pragma unroll
      for (int w = 1; w < kWarps; ++w) sum += partial[w][lane];
      de[size_t(j) * d + c] = sum;
    }
    __syncthreads();  // partial is reused by the next column chunk
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
void pool_backward(T* de, const T* dr, const int32_t* offsets, const int32_t* members, int R, int N,
                   int d, cudaStream_t stream) {
  if (N <= 0 || d <= 0) return;
  EQUIVAE_LAUNCH(kernel_pool_backward<T>, unsigned(N), kThreads, 0, stream, de, dr, offsets,
                 members, R, d);
}

#define INSTANTIATE(T)                                                                        \
  template void pool_forward<T>(T*, const T*, const int32_t*, const int32_t*, int, int,       \
                                cudaStream_t);                                                \
  template void pool_backward<T>(T*, const T*, const int32_t*, const int32_t*, int, int, int, \
                                 cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace equivae::cuda
