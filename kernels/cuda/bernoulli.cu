// Bernoulli log-likelihood from logits with soft targets, and its gradient. Both derive
// everything from e = exp(−|l|), which never overflows:
//   softplus(l) = max(l, 0) + log1p(e),   σ(l) = (l ≥ 0 ? 1 : e) / (1 + e).
//
// Launch geometry:
// - kernel_bernoulli_ll_forward: one block of 256 threads per row (D = 784 pixels: ~3 per
//   thread, coalesced), then a block reduction (CUB under nvcc). A block per row keeps the
//   reduction in one SM without atomics, so ll is deterministic; grid = B.
// - kernel_bernoulli_ll_backward: elementwise over [B, D], 256 threads, 1-D grid-stride.
// - kernel_bernoulli_ll_forward_backward: both where dll is known before the forward (the
//   supervised step's −1/B): the forward's geometry, each thread also writing the gradient of
//   the pixels it sums, so logits and x are read once and the backward's launch is gone from
//   the step's critical path. The same expressions in the same order: bit for bit the two
//   kernels' ll and dlogits.
#include "kernels/cuda/launch.h"
#include "kernels/cuda/math.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/reduce.cuh"

namespace equivae::cuda {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_bernoulli_ll_forward(T* __restrict__ ll, const T* __restrict__ logits,
                                const T* __restrict__ x, int D) {
  grid_dependency_prologue();
  __shared__ typename BlockReduce<T, kThreads>::TempStorage storage;
  const T* l = logits + size_t(blockIdx.x) * D;
  const T* xi = x + size_t(blockIdx.x) * D;
  T acc = T(0);
  for (int j = threadIdx.x; j < D; j += kThreads) {
    const T lj = l[j];
    const T positive = lj > T(0) ? lj : T(0);
    const T magnitude = lj < T(0) ? -lj : lj;
    acc += xi[j] * lj - (positive + math::log1p_(math::exp_(-magnitude)));
  }
  const T total = BlockReduce<T, kThreads>(storage).sum(acc);
  if (threadIdx.x == 0) ll[blockIdx.x] = total;
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_bernoulli_ll_backward(T* __restrict__ dlogits, const T* __restrict__ dll,
                                 const T* __restrict__ logits, const T* __restrict__ x, int B,
                                 int D) {
  grid_dependency_prologue();
  const int total = B * D;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const T l = logits[i];
    const T magnitude = l < T(0) ? -l : l;
    const T e = math::exp_(-magnitude);
    const T sigmoid = (l >= T(0) ? T(1) : e) / (T(1) + e);
    dlogits[i] = dll[i / D] * (x[i] - sigmoid);
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_bernoulli_ll_forward_backward(T* __restrict__ ll, T* __restrict__ dlogits,
                                         const T* __restrict__ dll, const T* __restrict__ logits,
                                         const T* __restrict__ x, int D) {
  grid_dependency_prologue();
  __shared__ typename BlockReduce<T, kThreads>::TempStorage storage;
  const size_t row = size_t(blockIdx.x) * D;
  const T* l = logits + row;
  const T* xi = x + row;
  T* dl = dlogits + row;
  const T scale = dll[blockIdx.x];
  T acc = T(0);
  for (int j = threadIdx.x; j < D; j += kThreads) {
    const T lj = l[j];
    const T positive = lj > T(0) ? lj : T(0);
    const T magnitude = lj < T(0) ? -lj : lj;
    const T e = math::exp_(-magnitude);
    acc += xi[j] * lj - (positive + math::log1p_(e));
    const T sigmoid = (lj >= T(0) ? T(1) : e) / (T(1) + e);
    dl[j] = scale * (xi[j] - sigmoid);
  }
  const T total = BlockReduce<T, kThreads>(storage).sum(acc);
  if (threadIdx.x == 0) ll[blockIdx.x] = total;
}

}  // namespace

template <class T>
void bernoulli_ll_forward(T* ll, const T* logits, const T* x, int B, int D, cudaStream_t stream) {
  if (B <= 0) return;
  EQUIVAE_LAUNCH(kernel_bernoulli_ll_forward<T>, unsigned(B), kThreads, 0, stream, ll, logits, x,
                 D);
}

template <class T>
void bernoulli_ll_backward(T* dlogits, const T* dll, const T* logits, const T* x, int B, int D,
                           cudaStream_t stream) {
  const size_t total = size_t(B) * D;
  if (total == 0) return;
  EQUIVAE_LAUNCH(kernel_bernoulli_ll_backward<T>, blocks_for(total, kThreads), kThreads, 0, stream,
                 dlogits, dll, logits, x, B, D);
}

template <class T>
void bernoulli_ll_forward_backward(T* ll, T* dlogits, const T* dll, const T* logits, const T* x,
                                   int B, int D, cudaStream_t stream) {
  if (B <= 0) return;
  EQUIVAE_LAUNCH(kernel_bernoulli_ll_forward_backward<T>, unsigned(B), kThreads, 0, stream, ll,
                 dlogits, dll, logits, x, D);
}

#define INSTANTIATE(T)                                                                           \
  template void bernoulli_ll_forward<T>(T*, const T*, const T*, int, int, cudaStream_t);         \
  template void bernoulli_ll_backward<T>(T*, const T*, const T*, const T*, int, int,             \
                                         cudaStream_t);                                          \
  template void bernoulli_ll_forward_backward<T>(T*, T*, const T*, const T*, const T*, int, int, \
                                                 cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace equivae::cuda
