// Convolution epilogues around cuDNN's convolutions (the CPU's im2col + GEMM under the
// emulator), for conv2d and conv_transpose2d alike, over NCHW tensors y[N, C, P] (P = H·W).
//
// Launch geometry:
// - kernel_conv_bias_act: elementwise over y, 256 threads, 1-D grid-stride; the channel of
//   element i is (i / P) % C.
// - kernel_conv_backward_bias: one block of 256 threads per channel; the block walks its
//   channel's N·P elements (plane by plane, threads over consecutive pixels: coalesced),
//   masks dy by the ReLU in place and sums it, then a block reduction (CUB under nvcc). One
//   pass over dy for both, deterministic, no atomics. grid = C (32 to 128 blocks at the SVHN
//   layers; 3 for the decoder's last layer, which then walks 160·1,024 elements per block).
#include "kernels/cuda/launch.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/reduce.cuh"

namespace equivae::cuda {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_conv_bias_act(T* __restrict__ y, const T* __restrict__ b, int C, int P, size_t total,
                         bool relu) {
  grid_dependency_prologue();
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += size_t(gridDim.x) * blockDim.x) {
    const T z = b ? y[i] + b[(i / P) % C] : y[i];
    y[i] = relu ? (z < T(0) ? T(0) : z) : z;  // NaN propagates, as on the CPU
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_conv_backward_bias(T* __restrict__ dy, T* __restrict__ db, const T* __restrict__ y,
                              int N, int C, int P, bool relu) {
  grid_dependency_prologue();
  __shared__ typename BlockReduce<T, kThreads>::TempStorage storage;
  const int c = blockIdx.x;
  const size_t count = size_t(N) * P;
  T acc = T(0);
  for (size_t k = threadIdx.x; k < count; k += kThreads) {
    const size_t n = k / P, at = (n * C + c) * P + (k - n * P);
    T g = dy[at];
    if (relu) {
      g = y[at] > T(0) ? g : T(0);
      dy[at] = g;
    }
    acc += g;
  }
  const T total = BlockReduce<T, kThreads>(storage).sum(acc);
  if (threadIdx.x == 0 && db) db[c] = total;
}

}  // namespace

template <class T>
void conv_bias_act(T* y, const T* b, int N, int C, int P, bool relu, cudaStream_t stream) {
  const size_t total = size_t(N) * C * P;
  if (total == 0 || (!b && !relu)) return;
  EQUIVAE_LAUNCH(kernel_conv_bias_act<T>, blocks_for(total, kThreads), kThreads, 0, stream, y, b, C,
                 P, total, relu);
}

template <class T>
void conv_backward_bias(T* dy, T* db, const T* y, int N, int C, int P, bool relu,
                        cudaStream_t stream) {
  if (C <= 0 || (!db && !relu)) return;
  EQUIVAE_LAUNCH(kernel_conv_backward_bias<T>, unsigned(C), kThreads, 0, stream, dy, db, y, N, C, P,
                 relu);
}

#define INSTANTIATE(T)                                                             \
  template void conv_bias_act<T>(T*, const T*, int, int, int, bool, cudaStream_t); \
  template void conv_backward_bias<T>(T*, T*, const T*, int, int, int, bool, cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace equivae::cuda
