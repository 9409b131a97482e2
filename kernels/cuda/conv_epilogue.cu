// Convolution epilogues around cuDNN's convolutions (the CPU's im2col + GEMM under the
// emulator), for conv2d and conv_transpose2d alike, over NCHW tensors y[N, C, P] (P = H·W).
//
// Launch geometry:
// - kernel_conv_bias_act: elementwise over y, 256 threads, 1-D grid-stride; the channel of
//   element i is (i / P) % C (planes number fewer than 2^31: conv_check.h).
// - kernel_conv_backward_bias: grid (C, slices) of 256 threads (channel_sum.cuh): block
//   (c, s) walks channel c of the images of slice s (threads over consecutive pixels, plane
//   by plane: coalesced), masks dy by the ReLU in place and sums it; the slices' sums meet in
//   order (one launch, deterministic). At the SVHN layers (B = 160) 32–128 channels × 1–5
//   slices, and 3 × 20 for the decoder's last layer, which had walked 163,840 elements in
//   each of 3 blocks.
#include "kernels/cuda/channel_sum.cuh"
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
    // The channel: 32-bit divisions where the tensor allows (a 64-bit one costs several times).
    const size_t plane = total >> 32 ? i / size_t(P) : size_t(unsigned(i) / unsigned(P));
    const T z = b ? y[i] + b[unsigned(plane) % unsigned(C)] : y[i];
    y[i] = relu ? (z < T(0) ? T(0) : z) : z;  // NaN propagates, as on the CPU
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_conv_backward_bias(T* __restrict__ dy, T* __restrict__ db, const T* __restrict__ y,
                              int N, int C, int P, bool relu, int images_per_slice,
                              T* __restrict__ partials, unsigned* __restrict__ arrivals) {
  grid_dependency_prologue();
  __shared__ typename BlockReduce<T, kThreads>::TempStorage storage;
  EQUIVAE_SHARED(bool, last, 1);
  T acc = T(0);
  for_each_in_channel_slice<kThreads>(N, C, P, images_per_slice, [&](size_t at, int) {
    T g = dy[at];
    if (relu) {
      g = y[at] > T(0) ? g : T(0);
      dy[at] = g;
    }
    acc += g;
  });
  if (db) finish_channel_sum<T, kThreads>(acc, db, T(1), C, partials, arrivals, storage, last);
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
                        const ChannelSumScratch<T>& scratch, cudaStream_t stream) {
  if (C <= 0 || (!db && !relu)) return;
  const int slices =
      channel_sum_slices(N, C, P, db != nullptr, scratch.partial_elems, scratch.arrival_elems);
  const int per_slice = channel_slice_images(N, slices);
  EQUIVAE_LAUNCH(kernel_conv_backward_bias<T>, dim3(unsigned(C), unsigned(slices)), kThreads, 0,
                 stream, dy, db, y, N, C, P, relu, per_slice, scratch.partials, scratch.arrivals);
}

#define INSTANTIATE(T)                                                             \
  template void conv_bias_act<T>(T*, const T*, int, int, int, bool, cudaStream_t); \
  template void conv_backward_bias<T>(T*, T*, const T*, int, int, int, bool,       \
                                      const ChannelSumScratch<T>&, cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace equivae::cuda
