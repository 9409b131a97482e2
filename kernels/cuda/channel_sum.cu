// Host side of the per-channel sums split over image slices (channel_sum.cuh): how many
// slices a call makes.
#include <algorithm>
#include <cstdint>

#include "kernels/cuda/ops.h"

namespace equivae::cuda {
namespace {
// Elements of one channel per slice (32 per thread of a 256-thread block).
constexpr int64_t kSliceElements = 32 * 256;
}  // namespace

int channel_sum_slices(int N, int C, int P, bool sums, size_t partial_elems, size_t arrival_elems) {
  if (N <= 0 || C <= 0 || P <= 0) return 1;
  int slices = int(std::min<int64_t>((int64_t(N) * P + kSliceElements - 1) / kSliceElements,
                                     std::min(N, kMaxChannelSumSlices)));
  // Summing the slices needs room for their partials and a counter per channel.
  if (sums)
    slices = arrival_elems < size_t(C) ? 1 : int(std::min<size_t>(slices, partial_elems / C));
  slices = std::max(slices, 1);
  const int per_slice = channel_slice_images(N, slices);
  return (N + per_slice - 1) / per_slice;  // no empty slice
}

}  // namespace equivae::cuda
