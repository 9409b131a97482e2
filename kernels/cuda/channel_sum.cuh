#pragma once
// Per-channel sums over NCHW tensors [N, C, P] (P = H·W), split over slices of whole images:
// grid (C, slices), block (c, s) walks channel c of the images of slice s and reduces what it
// read; with one slice the block writes the channel's sum, with several it writes a partial
// sum to scratch (ChannelSumScratch, ops.h) and the channel's last block to arrive adds the
// slices up in slice order — one launch, deterministic, no atomics on values, the counters
// left at zero. channel_sum_slices (ops.h) sizes the slices. Used by the convolutions' bias
// gradient (conv_epilogue.cu) and the Gaussian likelihood's log-variance gradient
// (gaussian.cu), whose channels (3 for SVHN's images) would otherwise be 3 blocks walking
// 163,840 elements each.
#include <cstddef>
#include <cstdint>

#include "kernels/cuda/reduce.cuh"

namespace equivae::cuda {

// f(at, n) for each element of this block's channel (blockIdx.x) and slice (blockIdx.y) that
// this thread owns: at = (n·C + c)·P + p, element k = threadIdx.x, + kThreads, … of the slice
// being pixel p = k mod P of image n = n0 + k / P. The walk adds, never divides (a 64-bit
// division per element had been such loops' largest cost).
template <int kThreads, class F>
__device__ __forceinline__ void for_each_in_channel_slice(int N, int C, int P, int images_per_slice,
                                                          F&& f) {
  const int c = int(blockIdx.x), n0 = int(blockIdx.y) * images_per_slice;
  const int n1 = N - n0 < images_per_slice ? N : n0 + images_per_slice;
  const int64_t count = int64_t(n1 - n0) * P;
  const int step_n = kThreads / P, step_p = kThreads % P;
  int n = n0 + int(threadIdx.x) / P, p = int(threadIdx.x) % P;
  for (int64_t k = threadIdx.x; k < count; k += kThreads) {
    f((size_t(n) * size_t(C) + size_t(c)) * size_t(P) + size_t(p), n);
    n += step_n, p += step_p;
    if (p >= P) p -= P, ++n;
  }
}

// Every thread of the block calls it with its own part: out[c] = scale · (the channel's sum
// over every slice). storage and last (the block's __shared__ variables; last an
// EQUIVAE_SHARED(bool, last, 1)) are the caller's.
template <class T, int kThreads, class LastFlag>
__device__ __forceinline__ void finish_channel_sum(
    T part, T* out, T scale, int C, T* partials, unsigned* arrivals,
    typename BlockReduce<T, kThreads>::TempStorage& storage, LastFlag& last) {
  const int c = int(blockIdx.x), slice = int(blockIdx.y);
  const T total = BlockReduce<T, kThreads>(storage).sum(part);
  if (gridDim.y == 1) {
    if (threadIdx.x == 0) out[c] = scale * total;
    return;
  }
  if (threadIdx.x == 0) {
    partials[size_t(slice) * size_t(C) + size_t(c)] = total;
    __threadfence();  // the partial visible before the arrival that counts it
    last[0] = atomicAdd(&arrivals[c], 1u) == gridDim.y - 1;
  }
  __syncthreads();
  if (!last[0] || threadIdx.x != 0) return;
  __threadfence();
  T sum = T(0);
  for (unsigned i = 0; i < gridDim.y; ++i)
    sum += __ldcg(&partials[size_t(i) * size_t(C) + size_t(c)]);
  out[c] = scale * sum;
  arrivals[c] = 0;  // ready for the next call
}

}  // namespace equivae::cuda
