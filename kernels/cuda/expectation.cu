// The exact expectation over all C labels of an unlabelled item's ELBO under q(y|x), minus
// KL(q(y|x) ‖ p(y)) (eqs. 6–7), and its backward; the CUDA counterpart of
// cpu::expectation_forward/backward.
//
// Launch geometry: one warp per unlabelled item u (C = 10 labels: a block per item would idle
// most of its threads), 8 items per 256-thread block; lanes walk the labels, the softmax max,
// partition function, expectation and the backward's Σ_y q_y g_y are shuffle reductions (no
// shared memory, no block barrier). grid = ceil(U / 8). The lane loops run once for C ≤ 32
// and stay rolled (`#pragma unroll 1`): unrolled, the double instantiation spilled 16 bytes
// around its exp/log calls on sm_90.
#include <cfloat>
#include <cmath>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/math.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/reduce.cuh"

namespace equivae::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kItemsPerBlock = kThreads / 32;

__device__ __forceinline__ float smallest_normal(float) {
  return FLT_MIN;
}
__device__ __forceinline__ double smallest_normal(double) {
  return DBL_MIN;
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_expectation_forward(T* __restrict__ L, T* __restrict__ q, const T* __restrict__ logits,
                               const T* __restrict__ ll, const T* __restrict__ kl,
                               const T* __restrict__ log_prior, int U, int C) {
  grid_dependency_prologue();
  const int u = blockIdx.x * kItemsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (u >= U) return;  // the whole warp leaves together; no block barrier follows
  const T* l = logits + size_t(u) * C;
  T max_l = T(-INFINITY);
  for (int y = lane; y < C; y += 32) max_l = l[y] > max_l ? l[y] : max_l;
  max_l = warp_all_max(max_l);
  T z = T(0);
#pragma unroll 1
  for (int y = lane; y < C; y += 32) z += math::exp_(l[y] - max_l);
  const T log_z = math::log_(warp_all_sum(z)) + max_l;
  T acc = T(0);
#pragma unroll 1
  for (int y = lane; y < C; y += 32) {
    const size_t row = size_t(u) * C + y;
    const T log_q = l[y] - log_z;  // exact even where q underflows to 0
    const T qy = math::exp_(log_q);
    q[row] = qy;
    acc += qy * (ll[row] - kl[row] + log_prior[y] - log_q);
  }
  acc = warp_all_sum(acc);
  if (lane == 0) L[u] = acc;
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_expectation_backward(T* __restrict__ dlogits, T* __restrict__ dll, T* __restrict__ dkl,
                                const T* __restrict__ dL, const T* __restrict__ q,
                                const T* __restrict__ ll, const T* __restrict__ kl,
                                const T* __restrict__ log_prior, int U, int C) {
  grid_dependency_prologue();
  const int u = blockIdx.x * kItemsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (u >= U) return;  // whole warp
  const T scale = dL[u];
  // g_y = elbo_y + log p(y) − log q_y; the +1 of ∂L/∂q_y cancels in the softmax Jacobian.
  auto g_of = [&](size_t row, int y, T qy) {
    const T log_q = math::log_(qy > T(0) ? qy : smallest_normal(T(0)));
    return ll[row] - kl[row] + log_prior[y] - log_q;
  };
  T mean_g = T(0);
  for (int y = lane; y < C; y += 32) {
    const size_t row = size_t(u) * C + y;
    const T qy = q[row];
    mean_g += qy * g_of(row, y, qy);
    dll[row] = scale * qy;
    dkl[row] = -scale * qy;
  }
  mean_g = warp_all_sum(mean_g);
  for (int y = lane; y < C; y += 32) {
    const size_t row = size_t(u) * C + y;
    const T qy = q[row];
    dlogits[row] = scale * qy * (g_of(row, y, qy) - mean_g);
  }
}

unsigned grid_for(int U) {
  return unsigned((U + kItemsPerBlock - 1) / kItemsPerBlock);
}

}  // namespace

template <class T>
void expectation_forward(T* L, T* q, const T* logits, const T* ll, const T* kl, const T* log_prior,
                         int U, int C, cudaStream_t stream) {
  if (U <= 0) return;
  EQUIVAE_LAUNCH(kernel_expectation_forward<T>, grid_for(U), kThreads, 0, stream, L, q, logits, ll,
                 kl, log_prior, U, C);
}

template <class T>
void expectation_backward(T* dlogits, T* dll, T* dkl, const T* dL, const T* q, const T* ll,
                          const T* kl, const T* log_prior, int U, int C, cudaStream_t stream) {
  if (U <= 0) return;
  EQUIVAE_LAUNCH(kernel_expectation_backward<T>, grid_for(U), kThreads, 0, stream, dlogits, dll,
                 dkl, dL, q, ll, kl, log_prior, U, C);
}

#define INSTANTIATE(T)                                                                           \
  template void expectation_forward<T>(T*, T*, const T*, const T*, const T*, const T*, int, int, \
                                       cudaStream_t);                                            \
  template void expectation_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,      \
                                        const T*, int, int, cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace equivae::cuda
