#pragma once
// Warp and block reductions behind the project's own helpers, so the emulator can substitute
// them: under nvcc the block reduction is CUB's cub::BlockReduce; compiled for the emulator it
// is a shuffle + shared-memory reduction with the same contract (result valid in thread 0
// only, every thread of the block must call it, 1-D blocks of kThreads threads, and a
// __syncthreads() before its TempStorage is reused).
//
// The static shared-memory declarations (EQUIVAE_SHARED…) are in shared.cuh.
#include "kernels/cuda/launch.h"
#include "kernels/cuda/shared.cuh"

#if defined(__CUDACC__)
#include <cub/block/block_reduce.cuh>
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
