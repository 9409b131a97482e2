#pragma once
// The CUDA backend's own small kernels (the op kernels are kernels/cuda's): fill, and the
// device-step bookkeeping of runtime/cuda/device_step.h (slot selection with the batch
// gathers, metric means with the counter advance). Launchers enqueue on `stream` and return; built
// by nvcc for the GPU and by g++ for the emulator, like kernels/cuda.
#include <cstddef>
#include <cstdint>

#include "kernels/cuda/ops.h"  // the CUDA runtime types (real or emulated)
#include "runtime/cuda/device_step.h"

namespace equivae::cuda {

// dst[0 .. n) = value
template <class T>
void fill(T* dst, T value, size_t n, cudaStream_t stream);
// A step's batch gathers for one launch: gather g writes out[g][i, :] = data[g][index[i], :],
// index = the slot's ints from offset[g] on, for rows[g] rows of D[g] floats. (The launcher
// fills first_block: the blocks of each part of the grid.)
struct GatherList {
  float* out[kMaxSlotGathers] = {};
  const float* data[kMaxSlotGathers] = {};
  int32_t offset[kMaxSlotGathers] = {}, rows[kMaxSlotGathers] = {}, D[kMaxSlotGathers] = {};
  int count = 0;
  // Blocks [0, first_block[0]) copy the slot; blocks [first_block[g], first_block[g + 1]) run
  // gather g (an empty range for g ≥ count).
  int32_t first_block[kMaxSlotGathers + 1] = {};
};
// Copies slot (counters->step − counters->first_step) of slots into layout's buffers and runs
// the gathers (their indices read from that slot), in one launch.
void load_step(const SlotLayout& layout, const int32_t* slots, const DeviceCounters* counters,
               const GatherList& gathers, cudaStream_t stream);
// table[(step − first_step)·kMetricWidth + j] = mean of set.values[j] (double accumulation),
// then counters->step += 1, counters->t += 1, in one launch.
template <class T>
void finish_step(double* table, const MeanSet<T>& set, DeviceCounters* counters,
                 cudaStream_t stream);

}  // namespace equivae::cuda
