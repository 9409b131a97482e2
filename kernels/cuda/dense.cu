// Dense-layer epilogues around the GEMM (cuBLAS on the GPU; the CPU GEMM under emulation).
//
// Launch geometry:
// - kernel_bias_act: elementwise over y[B,out], 256 threads per block (8 warps), 1-D
//   grid-stride. At the step's shapes (160 × 512 = 81,920 elements) that is 320 blocks, over
//   two per SM on an H100; the column of element i is i % out (the kernel is bound by memory
//   traffic, not by one integer modulo).
// - kernel_relu_mask: elementwise over dy[B,out], 256 threads, 1-D grid-stride.
// - kernel_dense_backward_bias: 32 × 32 threads own 32 columns of one chunk of rows.
//   threadIdx.x walks columns so a warp reads 128 contiguous bytes of one row (coalesced);
//   threadIdx.y strides over the chunk's rows. The 32 row-partials meet in shared memory and
//   are summed in a fixed order; the ReLU mask is applied in the same pass that reads dy.
//   grid = (ceil(out / 32), chunks): one chunk per kRowsPerChunk rows, so B = 10,240 spreads
//   over hundreds of blocks instead of walking all rows in ceil(out / 32) of them. With one
//   chunk the block writes db; with several it writes partial[chunk, col] to the caller's
//   scratch and kernel_sum_chunks adds the chunks in order: db stays deterministic (no
//   atomics) and equal for every schedule.
#include <algorithm>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/shared.cuh"

namespace equivae::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kColumns = 32, kRowLanes = 32;
// 8 rows per thread: a B = 160 step is one chunk, one launch; B = 10,240 makes 40 chunks.
constexpr int kRowsPerChunk = 8 * kRowLanes, kMaxChunks = 64;

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_bias_act(T* __restrict__ y, const T* __restrict__ b, int n, int out, bool relu) {
  grid_dependency_prologue();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const T z = y[i] + b[i % out];
    y[i] = relu ? (z < T(0) ? T(0) : z) : z;  // NaN propagates, as on the CPU
  }
}

template <class T>
__global__ void __launch_bounds__(kColumns* kRowLanes)
    kernel_dense_backward_bias(T* __restrict__ dy, T* __restrict__ sums, const T* __restrict__ y,
                               int B, int out, int rows_per_chunk, bool relu) {
  grid_dependency_prologue();
  EQUIVAE_SHARED_2D(T, partial, kRowLanes, kColumns + 1);
  const int col = blockIdx.x * kColumns + threadIdx.x;
  const int begin = blockIdx.y * rows_per_chunk;
  const int end = B < begin + rows_per_chunk ? B : begin + rows_per_chunk;
  T acc = T(0);
  if (col < out) {
    for (int row = begin + threadIdx.y; row < end; row += kRowLanes) {
      const size_t k = size_t(row) * out + col;
      T g = dy[k];
      if (relu) {
        g = y[k] > T(0) ? g : T(0);
        dy[k] = g;
      }
      acc += g;
    }
  }
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < out) {
    T s = partial[0][threadIdx.x];
#pragma unroll
    for (int r = 1; r < kRowLanes; ++r) s += partial[r][threadIdx.x];
    sums[size_t(blockIdx.y) * out + col] = s;  // sums = db when there is one chunk
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_relu_mask(T* __restrict__ dy, const T* __restrict__ y, size_t n) {
  grid_dependency_prologue();
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    if (!(y[i] > T(0))) dy[i] = T(0);
}

// db[col] = Σ_chunk partial[chunk, col], chunks in order.
template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_sum_chunks(T* __restrict__ db, const T* __restrict__ partial, int chunks, int out) {
  grid_dependency_prologue();
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= out) return;
  T s = partial[col];
  for (int c = 1; c < chunks; ++c) s += partial[size_t(c) * out + col];
  db[col] = s;
}

}  // namespace

template <class T>
void dense_bias_act(T* y, const T* b, int B, int out, bool relu, cudaStream_t stream) {
  const int n = B * out;
  if (n <= 0) return;
  EQUIVAE_LAUNCH(kernel_bias_act<T>, blocks_for(size_t(n), kThreads), kThreads, 0, stream, y, b, n,
                 out, relu);
}

int dense_backward_bias_chunks(int B, int out, size_t scratch_elems) {
  if (B <= 0 || out <= 0) return 1;
  const int wanted = std::min((B + kRowsPerChunk - 1) / kRowsPerChunk, kMaxChunks);
  const int room = int(std::min<size_t>(scratch_elems / size_t(out), size_t(kMaxChunks)));
  return std::max(1, std::min(wanted, room));
}

template <class T>
void dense_backward_bias(T* dy, T* db, const T* y, int B, int out, bool relu, T* scratch,
                         size_t scratch_elems, cudaStream_t stream) {
  if (out <= 0) return;
  const int chunks = dense_backward_bias_chunks(B, out, scratch_elems);
  const int rows_per_chunk = std::max(1, (B + chunks - 1) / chunks);
  const dim3 grid(unsigned((out + kColumns - 1) / kColumns), unsigned(chunks));
  EQUIVAE_LAUNCH(kernel_dense_backward_bias<T>, grid, dim3(kColumns, kRowLanes), 0, stream, dy,
                 chunks == 1 ? db : scratch, y, B, out, rows_per_chunk, relu);
  if (chunks > 1)
    EQUIVAE_LAUNCH(kernel_sum_chunks<T>, unsigned((out + kThreads - 1) / kThreads), kThreads, 0,
                   stream, db, scratch, chunks, out);
}

template <class T>
void relu_mask(T* dy, const T* y, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  EQUIVAE_LAUNCH(kernel_relu_mask<T>, blocks_for(n, kThreads), kThreads, 0, stream, dy, y, n);
}

#define INSTANTIATE(T)                                                         \
  template void dense_bias_act<T>(T*, const T*, int, int, bool, cudaStream_t); \
  template void relu_mask<T>(T*, const T*, size_t, cudaStream_t);              \
  template void dense_backward_bias<T>(T*, T*, const T*, int, int, bool, T*, size_t, cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace equivae::cuda
