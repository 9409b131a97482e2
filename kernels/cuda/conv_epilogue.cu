// Convolution epilogues around cuDNN's convolutions (the CPU's im2col + GEMM under the
// emulator), for conv2d and conv_transpose2d alike, over NCHW tensors y[N, C, P] (P = H·W).
//
// Launch geometry:
// - kernel_conv_bias_act: elementwise over y, 256 threads, 1-D grid-stride; the channel of
//   element i is (i / P) % C.
// - kernel_conv_backward_bias: grid (C, slices), 256 threads; block (c, s) walks channel c of
//   the images of slice s (threads over consecutive pixels, plane by plane: coalesced), masks
//   dy by the ReLU in place and sums it, then a block reduction (CUB under nvcc). With one
//   slice the block writes db[c]; with several it writes its partial sum to the caller's
//   scratch and the channel's last block to arrive adds the slices up in order (a counter per
//   channel, left at zero): one pass over dy, one launch, deterministic, no atomics on values.
//   Slices hold ~8,192 of a channel's elements: at the SVHN layers (B = 160) 32–128 channels
//   × 1–5 slices, and 3 × 20 for the decoder's last layer, which had walked 163,840
//   elements in each of 3 blocks. The walk steps (image, pixel) by adding, no division per
//   element (a 64-bit division per element had been the loop's largest cost).
#include <algorithm>
#include <cstdint>

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
                              int N, int C, int P, bool relu, int images_per_slice,
                              T* __restrict__ partials, unsigned* __restrict__ arrivals) {
  grid_dependency_prologue();
  __shared__ typename BlockReduce<T, kThreads>::TempStorage storage;
  __shared__ bool last_of_channel;
  const int c = int(blockIdx.x), slice = int(blockIdx.y);
  const int n0 = slice * images_per_slice;
  const int n1 = N - n0 < images_per_slice ? N : n0 + images_per_slice;
  const int64_t count = int64_t(n1 - n0) * P;
  // Element k of the slice is pixel k mod P of image n0 + k / P; k advances by kThreads.
  const int step_n = kThreads / P, step_p = kThreads % P;
  int n = n0 + int(threadIdx.x) / P, p = int(threadIdx.x) % P;
  T acc = T(0);
  for (int64_t k = threadIdx.x; k < count; k += kThreads) {
    const size_t at = (size_t(n) * size_t(C) + size_t(c)) * size_t(P) + size_t(p);
    T g = dy[at];
    if (relu) {
      g = y[at] > T(0) ? g : T(0);
      dy[at] = g;
    }
    acc += g;
    n += step_n, p += step_p;
    if (p >= P) p -= P, ++n;
  }
  if (!db) return;  // the mask alone
  const T total = BlockReduce<T, kThreads>(storage).sum(acc);
  if (gridDim.y == 1) {
    if (threadIdx.x == 0) db[c] = total;
    return;
  }
  if (threadIdx.x == 0) {
    partials[size_t(slice) * size_t(C) + size_t(c)] = total;
    __threadfence();  // the partial visible before the arrival that counts it
    last_of_channel = atomicAdd(&arrivals[c], 1u) == gridDim.y - 1;
  }
  __syncthreads();
  if (!last_of_channel || threadIdx.x != 0) return;
  __threadfence();
  T sum = T(0);
  for (unsigned i = 0; i < gridDim.y; ++i)
    sum += __ldcg(&partials[size_t(i) * size_t(C) + size_t(c)]);
  db[c] = sum;
  arrivals[c] = 0;  // ready for the next call
}

}  // namespace

template <class T>
void conv_bias_act(T* y, const T* b, int N, int C, int P, bool relu, cudaStream_t stream) {
  const size_t total = size_t(N) * C * P;
  if (total == 0 || (!b && !relu)) return;
  EQUIVAE_LAUNCH(kernel_conv_bias_act<T>, blocks_for(total, kThreads), kThreads, 0, stream, y, b, C,
                 P, total, relu);
}

namespace {
// Elements of one channel per slice (32 per thread), and the most slices a call makes.
constexpr int64_t kSliceElements = 32 * kThreads;
constexpr int kMaxSlices = 64;
}  // namespace

int conv_backward_bias_slices(int N, int C, int P, bool db, size_t partial_elems,
                              size_t arrival_elems) {
  if (N <= 0 || C <= 0 || P <= 0) return 1;
  int slices = int(std::min<int64_t>((int64_t(N) * P + kSliceElements - 1) / kSliceElements,
                                     std::min(N, kMaxSlices)));
  // Summing the slices needs room for their partials and a counter per channel.
  if (db) slices = arrival_elems < size_t(C) ? 1 : int(std::min<size_t>(slices, partial_elems / C));
  slices = std::max(slices, 1);
  const int per_slice = (N + slices - 1) / slices;
  return (N + per_slice - 1) / per_slice;  // no empty slice
}

template <class T>
void conv_backward_bias(T* dy, T* db, const T* y, int N, int C, int P, bool relu,
                        const ConvBiasScratch<T>& scratch, cudaStream_t stream) {
  if (C <= 0 || (!db && !relu)) return;
  const int slices = conv_backward_bias_slices(N, C, P, db != nullptr, scratch.partial_elems,
                                               scratch.arrival_elems);
  const int per_slice = N > 0 ? (N + slices - 1) / slices : 1;
  EQUIVAE_LAUNCH(kernel_conv_backward_bias<T>, dim3(unsigned(C), unsigned(slices)), kThreads, 0,
                 stream, dy, db, y, N, C, P, relu, per_slice, scratch.partials, scratch.arrivals);
}

#define INSTANTIATE(T)                                                             \
  template void conv_bias_act<T>(T*, const T*, int, int, int, bool, cudaStream_t); \
  template void conv_backward_bias<T>(T*, T*, const T*, int, int, int, bool,       \
                                      const ConvBiasScratch<T>&, cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace equivae::cuda
