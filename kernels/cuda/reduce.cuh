#pragma once
// Warp and block reductions behind the project's own helpers, so the emulator can substitute
// them: under nvcc the block reduction is CUB's cub::BlockReduce; compiled for the emulator it
// is a shuffle + shared-memory reduction with the same contract (result valid in thread 0
// only, every thread of the block must call it, 1-D blocks of kThreads threads, and a
// __syncthreads() before its TempStorage is reused).
//
// Also the project's static shared-memory declarations, so the emulator can check them:
//   EQUIVAE_SHARED(T, name, N);             // __shared__ T name[N]
//   EQUIVAE_SHARED_2D(T, name, M, N);       // __shared__ T name[M][N]
//   EQUIVAE_SHARED_3D(T, name, L, M, N);    // __shared__ T name[L][M][N]
//   EQUIVAE_SHARED_2D(T, name, M, N) __align__(32);   // an alignment goes after it
// Under nvcc they are exactly those plain declarations; compiled for the emulator they are
// emu::SharedArray / SharedArray2D / SharedArray3D, whose accesses are bounds-checked and
// race-checked (the rule: kernels/emu/emu_runtime.h, emu::set_race_check), and whose errors
// name the array. Use them instead of a bare __shared__ array in kernels/cuda/. A pointer into
// a 2-D or 3-D array that cp.async (async_copy.cuh) or wmma load/store should check is written
// `name[i] + j` (`name[s][i] + j`), not `&name[i][j]`: the former is the emulator's checked
// emu::SharedPtr, the latter a raw address that nothing tracks.
#include "kernels/cuda/launch.h"

#if defined(__CUDACC__)
#include <cub/block/block_reduce.cuh>
#define EQUIVAE_SHARED(T, name, N) __shared__ T name[N]
#define EQUIVAE_SHARED_2D(T, name, M, N) __shared__ T name[M][N]
#define EQUIVAE_SHARED_3D(T, name, L, M, N) __shared__ T name[L][M][N]
#else
#define EQUIVAE_SHARED(T, name, N) __shared__ ::emu::SharedArray<T, (N), #name> name
#define EQUIVAE_SHARED_2D(T, name, M, N) __shared__ ::emu::SharedArray2D<T, (M), (N), #name> name
#define EQUIVAE_SHARED_3D(T, name, L, M, N) \
  __shared__ ::emu::SharedArray3D<T, (L), (M), (N), #name> name
#endif

namespace equivae::cuda {

struct SumOp {
  template <class T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return a + b;
  }
};
// NaN-propagating max (a NaN anywhere in a row should surface, not vanish).
struct MaxOp {
  template <class T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return (a > b || a != a) ? a : b;
  }
};

constexpr unsigned kFullWarp = 0xffffffffu;

// Butterfly reduction over the 32 lanes of a full warp; every lane gets the result.
template <class T, class Op>
__device__ __forceinline__ T warp_all_reduce(T v, Op op) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = op(v, __shfl_xor_sync(kFullWarp, v, offset));
  return v;
}
template <class T>
__device__ __forceinline__ T warp_all_sum(T v) {
  return warp_all_reduce(v, SumOp{});
}
template <class T>
__device__ __forceinline__ T warp_all_max(T v) {
  return warp_all_reduce(v, MaxOp{});
}

template <class T, int kThreads>
class BlockReduce {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps, at most 1024 threads");

 public:
#if defined(__CUDACC__)
  using Cub = cub::BlockReduce<T, kThreads>;
  using TempStorage = typename Cub::TempStorage;
#else
  struct TempStorage {  // checked by the emulator's race check
    ::emu::SharedArray<T, kThreads / 32> warp_partial;
  };
#endif

  __device__ explicit BlockReduce(TempStorage& storage) : storage_(storage) {}

  template <class Op>
  __device__ T reduce(T v, Op op) {
#if defined(__CUDACC__)
    return Cub(storage_).Reduce(v, op);
#else
    v = warp_all_reduce(v, op);
    const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) storage_.warp_partial[warp] = v;
    __syncthreads();
    if (threadIdx.x != 0) return v;  // undefined outside thread 0, as with CUB
    T r = storage_.warp_partial[0];
    for (int w = 1; w < kThreads / 32; ++w) r = op(r, T(storage_.warp_partial[w]));
    return r;
#endif
  }
  __device__ T sum(T v) {
    return reduce(v, SumOp{});
  }
  __device__ T max(T v) {
    return reduce(v, MaxOp{});
  }

 private:
  TempStorage& storage_;
};

}  // namespace equivae::cuda
