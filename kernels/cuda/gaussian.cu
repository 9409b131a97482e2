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
// - kernel_gaussian_ll_dlogvar: grid (C, slices) of 256 threads (channel_sum.cuh): block
//   (c, s) walks channel c of the rows of slice s, reduces, and the slices' sums meet in
//   order: deterministic, one launch. For SVHN (B = 160, 3 channels of 1,024 pixels) 3 × 20
//   blocks; it had been 3 blocks of 163,840 elements each (tens of µs).
#include "kernels/cuda/channel_sum.cuh"
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
    // Row and channel by 32-bit divisions where the tensor allows (a 64-bit one costs several
    // times as much, and this kernel is one division per element).
    const bool narrow = total >> 32 == 0;
    const size_t row = narrow ? size_t(unsigned(i) / unsigned(D)) : i / D;
    const int c = int(narrow ? unsigned(i - row * D) / unsigned(P) : (i - row * D) / P);
    dmu[i] = dll[row] * math::exp_(-clamp_logvar(logvar[c])) * (x[i] - mu[i]);
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_gaussian_ll_dlogvar(T* __restrict__ dlogvar, const T* __restrict__ dll,
                               const T* __restrict__ mu, const T* __restrict__ x,
                               const T* __restrict__ logvar, int B, int C, int P,
                               int rows_per_slice, T* __restrict__ partials,
                               unsigned* __restrict__ arrivals) {
  grid_dependency_prologue();
  __shared__ typename BlockReduce<T, kThreads>::TempStorage storage;
  EQUIVAE_SHARED(bool, last, 1);
  const int c = blockIdx.x;
  const T lv = logvar[c];
  // Uniform per channel: all its blocks leave together, before any barrier or arrival.
  if (lv < T(kLogVarMin) || lv > T(kLogVarMax)) {
    if (threadIdx.x == 0 && blockIdx.y == 0) dlogvar[c] = T(0);
    return;
  }
  const T inv_var = math::exp_(-lv);
  T acc = T(0);
  for_each_in_channel_slice<kThreads>(B, C, P, rows_per_slice, [&](size_t at, int row) {
    const T d = x[at] - mu[at];
    acc += dll[row] * (d * d * inv_var - T(1));
  });
  finish_channel_sum<T, kThreads>(acc, dlogvar, T(0.5), C, partials, arrivals, storage, last);
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
                          const T* logvar, int B, int C, int P, const ChannelSumScratch<T>& scratch,
                          cudaStream_t stream) {
  const size_t total = size_t(B) * C * P;
  if (total == 0) return;
  if (dmu)
    EQUIVAE_LAUNCH(kernel_gaussian_ll_dmu<T>, blocks_for(total, kThreads), kThreads, 0, stream, dmu,
                   dll, mu, x, logvar, C, P, total);
  if (!dlogvar) return;
  const int slices =
      channel_sum_slices(B, C, P, true, scratch.partial_elems, scratch.arrival_elems);
  const int per_slice = channel_slice_images(B, slices);
  EQUIVAE_LAUNCH(kernel_gaussian_ll_dlogvar<T>, dim3(unsigned(C), unsigned(slices)), kThreads, 0,
                 stream, dlogvar, dll, mu, x, logvar, B, C, P, per_slice, scratch.partials,
                 scratch.arrivals);
}

#define INSTANTIATE(T)                                                                            \
  template void gaussian_ll_forward<T>(T*, const T*, const T*, const T*, int, int, int,           \
                                       cudaStream_t);                                             \
  template void gaussian_ll_backward<T>(T*, T*, const T*, const T*, const T*, const T*, int, int, \
                                        int, const ChannelSumScratch<T>&, cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace equivae::cuda
