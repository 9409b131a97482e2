// Softmax cross-entropy over C classes (max-subtracted, so any finite logits are safe).
//
// Launch geometry:
// - kernel_softmax_xent_forward: one warp per row (C = 10 classes: a block per row would
//   idle 246 of 256 threads), 8 rows per 256-thread block; lanes walk the classes, the max
//   and the partition function are shuffle reductions, no shared memory. grid = ceil(B / 8).
// - kernel_softmax_xent_backward: elementwise over [B, C], 256 threads, 1-D grid-stride.
#include <cmath>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/math.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/reduce.cuh"

namespace equivae::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / 32;

// fmax, as the CPU reference uses (a NaN logit still poisons z and every probability).
struct FmaxOp {
  template <class T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return math::fmax_(a, b);
  }
};

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_softmax_xent_forward(T* __restrict__ loss, T* __restrict__ probs,
                                const T* __restrict__ logits, const int32_t* __restrict__ labels,
                                int B, int C) {
  grid_dependency_prologue();
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= B) return;  // whole warp; no block barrier follows
  const T* l = logits + size_t(row) * C;
  T max_l = T(-INFINITY);
  for (int c = lane; c < C; c += 32) max_l = math::fmax_(max_l, l[c]);
  max_l = warp_all_reduce(max_l, FmaxOp{});
  T z = T(0);
  for (int c = lane; c < C; c += 32) z += math::exp_(l[c] - max_l);
  z = warp_all_sum(z);
  const T log_z = math::log_(z) + max_l;
  for (int c = lane; c < C; c += 32) probs[size_t(row) * C + c] = math::exp_(l[c] - log_z);
  if (lane == 0) loss[row] = log_z - l[labels[row]];
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_softmax_xent_backward(T* __restrict__ dlogits, const T* __restrict__ dloss,
                                 const T* __restrict__ probs, const int32_t* __restrict__ labels,
                                 int B, int C) {
  grid_dependency_prologue();
  const int total = B * C;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int row = i / C, c = i - row * C;
    dlogits[i] = dloss[row] * (probs[i] - (c == labels[row] ? T(1) : T(0)));
  }
}

}  // namespace

template <class T>
void softmax_xent_forward(T* loss, T* probs, const T* logits, const int32_t* labels, int B, int C,
                          cudaStream_t stream) {
  if (B <= 0) return;
  const unsigned grid = unsigned((B + kRowsPerBlock - 1) / kRowsPerBlock);
  EQUIVAE_LAUNCH(kernel_softmax_xent_forward<T>, grid, kThreads, 0, stream, loss, probs, logits,
                 labels, B, C);
}

template <class T>
void softmax_xent_backward(T* dlogits, const T* dloss, const T* probs, const int32_t* labels, int B,
                           int C, cudaStream_t stream) {
  const size_t total = size_t(B) * C;
  if (total == 0) return;
  EQUIVAE_LAUNCH(kernel_softmax_xent_backward<T>, blocks_for(total, kThreads), kThreads, 0, stream,
                 dlogits, dloss, probs, labels, B, C);
}

#define INSTANTIATE(T)                                                                             \
  template void softmax_xent_forward<T>(T*, T*, const T*, const int32_t*, int, int, cudaStream_t); \
  template void softmax_xent_backward<T>(T*, const T*, const T*, const int32_t*, int, int,         \
                                         cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace equivae::cuda
