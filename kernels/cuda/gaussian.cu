// Gaussian log-likelihood with a learned log-variance per channel (or one global), and its
// gradients, with cpu::gaussian_ll_*'s contracts (kernels/cpu/ops.h). The log-variance is
// clamped to [kLogVarMin, kLogVarMax] = [−30, 20] as on the CPU; outside that range it gets a
// zero gradient; NaN propagates.
//
// Launch geometry:
// - kernel_gaussian_ll_forward: one block of 256 threads per row (a row is C·P = 3,072 values
//   for SVHN: 12 per thread, coalesced); each thread sums (x − μ)² e^{−lv_c} over its
//   elements channel by channel, then a block reduction (CUB under nvcc): deterministic, no
//   atomics. grid = B.
// - kernel_gaussian_ll_dmu: elementwise over [B, C·P], 256 threads, 1-D grid-stride.
// - kernel_gaussian_ll_dlogvar: one block of 256 threads per channel, walking that channel's
//   B·P elements in a fixed order, then a block reduction: deterministic without atomics or
//   scratch memory. grid = C (1 to 3 blocks for SVHN: ~160·1,024 elements each, tens of µs;
//   a split over more blocks would need scratch for the partial sums).
#include "kernels/cuda/launch.h"
#include "kernels/cuda/math.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/reduce.cuh"

namespace equivae::cuda {
namespace {

constexpr int kThreads = 256;
constexpr double kLogVarMin = -30.0, kLogVarMax = 20.0;
constexpr double kLog2Pi = 1.8378770664093454836;

template <class T>
__device__ __forceinline__ T clamp_logvar(T lv) {
  return lv < T(kLogVarMin) ? T(kLogVarMin) : (lv > T(kLogVarMax) ? T(kLogVarMax) : lv);
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_gaussian_ll_forward(T* __restrict__ ll, const T* __restrict__ mu,
                               const T* __restrict__ x, const T* __restrict__ logvar, int C,
                               int P) {
  grid_dependency_prologue();
  __shared__ typename BlockReduce<T, kThreads>::TempStorage storage;
  const size_t row = size_t(blockIdx.x) * C * P;
  T acc = T(0);
  for (int c = 0; c < C; ++c) {
    const T inv_var = math::exp_(-clamp_logvar(logvar[c]));
    const T* m = mu + row + size_t(c) * P;
    const T* xi = x + row + size_t(c) * P;
    T squares = T(0);
    for (int p = threadIdx.x; p < P; p += kThreads) {
      const T d = xi[p] - m[p];
      squares += d * d;
    }
    acc += squares * inv_var;
  }
  const T total = BlockReduce<T, kThreads>(storage).sum(acc);
  if (threadIdx.x == 0) {
    T constant = T(0);
    for (int c = 0; c < C; ++c) constant += T(kLog2Pi) + clamp_logvar(logvar[c]);
    ll[blockIdx.x] = T(-0.5) * (T(P) * constant + total);
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_gaussian_ll_dmu(T* __restrict__ dmu, const T* __restrict__ dll, const T* __restrict__ mu,
                           const T* __restrict__ x, const T* __restrict__ logvar, int C, int P,
                           size_t total) {
  grid_dependency_prologue();
  const size_t D = size_t(C) * P;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += size_t(gridDim.x) * blockDim.x) {
    const size_t row = i / D;
    const int c = int((i - row * D) / P);
    dmu[i] = dll[row] * math::exp_(-clamp_logvar(logvar[c])) * (x[i] - mu[i]);
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_gaussian_ll_dlogvar(T* __restrict__ dlogvar, const T* __restrict__ dll,
                               const T* __restrict__ mu, const T* __restrict__ x,
                               const T* __restrict__ logvar, int B, int C, int P) {
  grid_dependency_prologue();
  __shared__ typename BlockReduce<T, kThreads>::TempStorage storage;
  const int c = blockIdx.x;
  const T lv = logvar[c];
  // Uniform per block: the whole block leaves together, before any barrier.
  if (lv < T(kLogVarMin) || lv > T(kLogVarMax)) {
    if (threadIdx.x == 0) dlogvar[c] = T(0);
    return;
  }
  const T inv_var = math::exp_(-lv);
  const size_t count = size_t(B) * P, D = size_t(C) * P;
  T acc = T(0);
  for (size_t k = threadIdx.x; k < count; k += kThreads) {
    const size_t i = k / P, at = i * D + size_t(c) * P + (k - i * P);
    const T d = x[at] - mu[at];
    acc += dll[i] * (d * d * inv_var - T(1));
  }
  const T total = BlockReduce<T, kThreads>(storage).sum(acc);
  if (threadIdx.x == 0) dlogvar[c] = T(0.5) * total;
}

}  // namespace

template <class T>
void gaussian_ll_forward(T* ll, const T* mu, const T* x, const T* logvar, int B, int C, int P,
                         cudaStream_t stream) {
  if (B <= 0) return;
  EQUIVAE_LAUNCH(kernel_gaussian_ll_forward<T>, unsigned(B), kThreads, 0, stream, ll, mu, x, logvar,
                 C, P);
}

template <class T>
void gaussian_ll_backward(T* dmu, T* dlogvar, const T* dll, const T* mu, const T* x,
                          const T* logvar, int B, int C, int P, cudaStream_t stream) {
  const size_t total = size_t(B) * C * P;
  if (total == 0) return;
  if (dmu)
    EQUIVAE_LAUNCH(kernel_gaussian_ll_dmu<T>, blocks_for(total, kThreads), kThreads, 0, stream, dmu,
                   dll, mu, x, logvar, C, P, total);
  if (dlogvar)
    EQUIVAE_LAUNCH(kernel_gaussian_ll_dlogvar<T>, unsigned(C), kThreads, 0, stream, dlogvar, dll,
                   mu, x, logvar, B, C, P);
}

#define INSTANTIATE(T)                                                                            \
  template void gaussian_ll_forward<T>(T*, const T*, const T*, const T*, int, int, int,           \
                                       cudaStream_t);                                             \
  template void gaussian_ll_backward<T>(T*, T*, const T*, const T*, const T*, const T*, int, int, \
                                        int, cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace equivae::cuda
