// Reparameterised sampling + KL(q || N(0, I)) in one pass, and its backward.
//
// Launch geometry:
// - kernel_sample_kl_forward: one warp per row (d = 8…16 in the models: a block per row
//   would idle most of its threads), 8 rows per 256-thread block; lanes walk the row's
//   columns, draw ε from Philox at (seed, step, row0 + row, col) — a pure function of the
//   element, so the split over threads cannot change the noise — and the row's KL is a
//   shuffle reduction (no shared memory, no block barrier). grid = ceil(B / 8).
// - kernel_sample_kl_backward: elementwise over [B, d], each thread writes dμ and dlog σ² of
//   its element; 256 threads, 1-D grid-stride.
//
// log σ² is clamped to [kLogVarMin, kLogVarMax] = [−30, 20] as on the CPU
// (kernels/cpu/logvar_clamp.h): v, KL and the gradients stay finite for any log σ²; outside the
// range log σ² gets a zero gradient (the clamp's derivative); NaN propagates.
#include "kernels/cuda/launch.h"
#include "kernels/cuda/math.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/reduce.cuh"
#include "kernels/philox.h"

namespace equivae::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / 32;
constexpr double kLogVarMin = -30.0, kLogVarMax = 20.0;

template <class T>
__device__ __forceinline__ T clamp_logvar(T lv) {
  return lv < T(kLogVarMin) ? T(kLogVarMin) : (lv > T(kLogVarMax) ? T(kLogVarMax) : lv);
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_sample_kl_forward(T* __restrict__ v, T* __restrict__ eps, T* __restrict__ kl,
                             const T* __restrict__ mulv, int B, int d, uint64_t seed, uint64_t step,
                             const uint64_t* __restrict__ step_device, uint32_t row0) {
  grid_dependency_prologue();
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= B) return;  // the whole warp leaves together; no block barrier follows
  if (step_device) step = *step_device;
  const T* mu = mulv + size_t(row) * 2 * d;
  const T* logvar = mu + d;
  T part = T(0);
  for (int j = lane; j < d; j += 32) {
    const T e = philox_normal<T>(seed, step, row0 + uint32_t(row), uint32_t(j));
    const T lv = clamp_logvar(logvar[j]);
    const T sigma = math::exp_(T(0.5) * lv);
    eps[size_t(row) * d + j] = e;
    v[size_t(row) * d + j] = mu[j] + sigma * e;
    part += mu[j] * mu[j] + sigma * sigma - T(1) - lv;
  }
  part = warp_all_sum(part);
  if (lane == 0) kl[row] = T(0.5) * part;
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_sample_kl_backward(T* __restrict__ dmulv, const T* __restrict__ dv,
                              const T* __restrict__ dkl, const T* __restrict__ mulv,
                              const T* __restrict__ eps, int B, int d) {
  grid_dependency_prologue();
  const int total = B * d;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int row = i / d, j = i - row * d;
    const size_t mu_at = size_t(row) * 2 * d + j, lv_at = mu_at + d;
    const T lv = mulv[lv_at];
    const bool inside = !(lv < T(kLogVarMin) || lv > T(kLogVarMax));  // NaN: inside, stays NaN
    const T sigma = math::exp_(T(0.5) * clamp_logvar(lv));
    const T g = dv[i], k = dkl[row];
    // ∂v/∂μ = 1, ∂v/∂log σ² = ½σε; ∂KL/∂μ = μ, ∂KL/∂log σ² = ½(σ² − 1); zero through the
    // clamp outside its range.
    dmulv[mu_at] = g + k * mulv[mu_at];
    dmulv[lv_at] =
        inside ? g * T(0.5) * sigma * eps[i] + k * T(0.5) * (sigma * sigma - T(1)) : T(0);
  }
}

template <class T>
void launch_forward(T* v, T* eps, T* kl, const T* mulv, int B, int d, uint64_t seed, uint64_t step,
                    const uint64_t* step_device, uint32_t row0, cudaStream_t stream) {
  if (B <= 0) return;
  const unsigned grid = unsigned((B + kRowsPerBlock - 1) / kRowsPerBlock);
  EQUIVAE_LAUNCH(kernel_sample_kl_forward<T>, grid, kThreads, 0, stream, v, eps, kl, mulv, B, d,
                 seed, step, step_device, row0);
}

}  // namespace

template <class T>
void sample_kl_forward(T* v, T* eps, T* kl, const T* mulv, int B, int d, uint64_t seed,
                       uint64_t step, uint32_t row0, cudaStream_t stream) {
  launch_forward(v, eps, kl, mulv, B, d, seed, step, nullptr, row0, stream);
}

template <class T>
void sample_kl_forward(T* v, T* eps, T* kl, const T* mulv, int B, int d, uint64_t seed,
                       const uint64_t* step_device, uint32_t row0, cudaStream_t stream) {
  launch_forward(v, eps, kl, mulv, B, d, seed, 0, step_device, row0, stream);
}

template <class T>
void sample_kl_backward(T* dmulv, const T* dv, const T* dkl, const T* mulv, const T* eps, int B,
                        int d, cudaStream_t stream) {
  const size_t total = size_t(B) * d;
  if (total == 0) return;
  EQUIVAE_LAUNCH(kernel_sample_kl_backward<T>, blocks_for(total, kThreads), kThreads, 0, stream,
                 dmulv, dv, dkl, mulv, eps, B, d);
}

#define INSTANTIATE(T)                                                                             \
  template void sample_kl_forward<T>(T*, T*, T*, const T*, int, int, uint64_t, uint64_t, uint32_t, \
                                     cudaStream_t);                                                \
  template void sample_kl_forward<T>(T*, T*, T*, const T*, int, int, uint64_t, const uint64_t*,    \
                                     uint32_t, cudaStream_t);                                      \
  template void sample_kl_backward<T>(T*, const T*, const T*, const T*, const T*, int, int,        \
                                      cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace equivae::cuda
