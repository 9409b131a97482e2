// Batch gather from a data set that lives on the device: out[i, :] = data[index[i], :].
// The sampler's indices are uploaded once per step (or precomputed for an epoch), so a
// step's batch costs one kernel and no host↔device copy of pixels.
//
// Launch geometry: one thread per output element, 256 per block, 1-D grid-stride. A warp
// covers 32 consecutive columns of one gathered row: coalesced reads from the data set and
// coalesced writes to the batch (the row index is a broadcast load).
#include <type_traits>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/ops.h"

namespace equivae::cuda {
namespace {

constexpr int kThreads = 256;

template <class Dst, class Src>
__global__ void __launch_bounds__(kThreads)
    kernel_gather_rows(Dst* __restrict__ out, const Src* __restrict__ data,
                       const int32_t* __restrict__ index, int B, int D, float scale) {
  grid_dependency_prologue();
  const int total = B * D;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int row = i / D, c = i - row * D;
    const Src value = data[size_t(index[row]) * D + c];
    if constexpr (std::is_same_v<Src, Dst>)
      out[i] = value;
    else
      out[i] = Dst(value) * Dst(scale);
  }
}

template <class Dst, class Src>
void enqueue(Dst* out, const Src* data, const int32_t* index, int B, int D, float scale,
             cudaStream_t stream) {
  const size_t total = size_t(B) * D;
  if (total == 0) return;
  launch_named("kernel_gather_rows", kernel_gather_rows<Dst, Src>, blocks_for(total, kThreads),
               kThreads, 0, stream, out, data, index, B, D, scale);
}

}  // namespace

void gather_rows(float* out, const float* data, const int32_t* index, int B, int D,
                 cudaStream_t stream) {
  enqueue(out, data, index, B, D, 1.0f, stream);
}
void gather_rows(float* out, const uint8_t* data, const int32_t* index, int B, int D, float scale,
                 cudaStream_t stream) {
  enqueue(out, data, index, B, D, scale, stream);
}
void gather_rows(int32_t* out, const int32_t* data, const int32_t* index, int B, int D,
                 cudaStream_t stream) {
  enqueue(out, data, index, B, D, 1.0f, stream);
}

}  // namespace equivae::cuda
