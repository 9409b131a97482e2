// The CUDA backend's bookkeeping kernels (see step_kernels.h).
//
// Launch geometry:
// - kernel_fill: elementwise, 256 threads, 1-D grid-stride.
// - kernel_load_step: 256 threads, a 1-D grid cut into ranges of blocks sized to their work:
//   the first range copies the slot's segments (a few thousand int32: a few blocks,
//   grid-stride), range 1 + g runs gather g (one thread per output element, grid-stride over
//   the range: a warp covers 32 consecutive columns of one row, coalesced). The slot index is
//   read from the counters, so the launch's arguments are the same every step (graph replay);
//   the gathers read their row indices from the slot table itself, so no block waits for
//   another.
// - kernel_finish_step: one warp per recorded vector (kMetricWidth warps, one block); lanes
//   stride over the vector in double and meet in a shuffle reduction, no shared memory; after
//   a barrier (every warp has read the step) thread 0 advances the counters.
#include "kernels/cuda/launch.h"
#include "kernels/cuda/reduce.cuh"
#include "runtime/cuda/step_kernels.h"

namespace equivae::cuda {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void __launch_bounds__(kThreads) kernel_fill(T* __restrict__ dst, T value, size_t n) {
  grid_dependency_prologue();
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    dst[i] = value;
}

__global__ void __launch_bounds__(kThreads)
    kernel_load_step(SlotLayout layout, const int32_t* __restrict__ slots, size_t slot_ints,
                     const DeviceCounters* __restrict__ counters, GatherList gathers) {
  grid_dependency_prologue();
  const uint64_t index = counters->step - counters->first_step;
  const int32_t* slot = slots + index * slot_ints;
  const int32_t b = int32_t(blockIdx.x);
  if (b < gathers.first_block[0]) {  // the slot's segments to their buffers
    const size_t start = size_t(b) * blockDim.x + threadIdx.x,
                 stride = size_t(gathers.first_block[0]) * blockDim.x;
    const int32_t* src = slot;
    for (int s = 0; s < kSlotSegments; ++s) {
      int32_t* dst = layout.dst[s];
      const size_t n = size_t(layout.count[s]);
      if (dst)
        for (size_t i = start; i < n; i += stride) dst[i] = src[i];
      src += n;
    }
    return;
  }
  // This block's gather, picked with compile-time indices (a run-time index into the
  // parameter struct would copy it to local memory).
  float* out = nullptr;
  const float* data = nullptr;
  int32_t offset = 0, rows = 0, D = 1, begin = 0, end = 0;
#pragma unroll
  for (int j = 0; j < kMaxSlotGathers; ++j)
    if (b >= gathers.first_block[j] && b < gathers.first_block[j + 1])
      out = gathers.out[j], data = gathers.data[j], offset = gathers.offset[j],
      rows = gathers.rows[j], D = gathers.D[j], begin = gathers.first_block[j],
      end = gathers.first_block[j + 1];
  const int32_t* rows_index = slot + offset;
  const size_t total = size_t(rows) * size_t(D), stride = size_t(end - begin) * blockDim.x;
  for (size_t i = size_t(b - begin) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const size_t row = i / size_t(D), c = i - row * size_t(D);
    out[i] = data[size_t(rows_index[row]) * size_t(D) + c];
  }
}

template <class T>
__global__ void __launch_bounds__(32 * kMetricWidth)
    kernel_finish_step(double* __restrict__ table, MeanSet<T> set,
                       DeviceCounters* __restrict__ counters) {
  grid_dependency_prologue();
  const int w = int(threadIdx.x / 32), lane = int(threadIdx.x % 32);
  // Select with compile-time indices: a run-time index into the parameter struct would copy
  // it to local memory.
  const T* values = nullptr;
  int n = 0;
#pragma unroll
  for (int j = 0; j < kMetricWidth; ++j)
    if (j == w) values = set.values[j], n = set.count[j];
  double s = 0;
  if (values)
    for (int i = lane; i < n; i += 32) s += double(values[i]);
  s = warp_all_sum(s);
  if (lane == 0) {
    const uint64_t index = counters->step - counters->first_step;
    table[index * kMetricWidth + w] = values && n > 0 ? s / double(n) : 0.0;
  }
  __syncthreads();  // every warp has read the step
  if (threadIdx.x == 0) {
    counters->step += 1;
    counters->t += 1;
  }
}

}  // namespace

template <class T>
void fill(T* dst, T value, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  EQUIVAE_LAUNCH(kernel_fill<T>, blocks_for(n, kThreads), kThreads, 0, stream, dst, value, n);
}

void load_step(const SlotLayout& layout, const int32_t* slots, const DeviceCounters* counters,
               const GatherList& gathers, cudaStream_t stream) {
  size_t widest = 0;
  for (int s = 0; s < kSlotSegments; ++s)
    widest = widest > size_t(layout.count[s]) ? widest : size_t(layout.count[s]);
  GatherList list = gathers;
  int32_t blocks = int32_t(blocks_for(widest, kThreads, 64));
  for (int g = 0; g < kMaxSlotGathers; ++g) {
    list.first_block[g] = blocks;
    if (g < list.count)
      blocks += int32_t(blocks_for(size_t(list.rows[g]) * size_t(list.D[g]), kThreads, 2048));
  }
  list.first_block[kMaxSlotGathers] = blocks;
  EQUIVAE_LAUNCH(kernel_load_step, unsigned(blocks), kThreads, 0, stream, layout, slots,
                 layout.ints(), counters, list);
}

template <class T>
void finish_step(double* table, const MeanSet<T>& set, DeviceCounters* counters,
                 cudaStream_t stream) {
  EQUIVAE_LAUNCH(kernel_finish_step<T>, 1, 32 * kMetricWidth, 0, stream, table, set, counters);
}

#define INSTANTIATE(T)                                \
  template void fill<T>(T*, T, size_t, cudaStream_t); \
  template void finish_step<T>(double*, const MeanSet<T>&, DeviceCounters*, cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace equivae::cuda
