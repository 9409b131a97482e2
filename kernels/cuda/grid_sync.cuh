#pragma once
// A grid-wide barrier for persistent kernels: every block of a cooperative launch
// (launch_cooperative, launch.h) arrives, and none leaves before all have arrived; every write
// made before it by any block is visible after it to every block.
//
// Why our own and not cooperative_groups::this_grid().sync(): the emulator runs it as it is
// (its atomics, fences and spin are the emulator's), so the tests execute the barrier the GPU
// executes. The state is two counters in device memory, zero before the first launch and left
// so by every barrier: `arrived` (blocks at the current barrier) and `generation` (barriers
// passed). Thread 0 of each block reads the generation, then arrives; the last to arrive
// resets `arrived` and advances the generation, which releases the others.
#include "kernels/cuda/launch.h"
#include "kernels/cuda/ops.h"  // GridBarrier

#if !defined(__CUDACC__)
#include <atomic>
#endif

namespace equivae::cuda {

__device__ __forceinline__ unsigned load_acquire(unsigned* p) {
#if defined(__CUDA_ARCH__)
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
#elif defined(__CUDACC__)
  return *p;  // host pass of nvcc: never executed
#else
  return std::atomic_ref<unsigned>(*p).load(std::memory_order_acquire);
#endif
}

__device__ __forceinline__ void spin_pause() {
#if defined(__CUDA_ARCH__)
  __nanosleep(32);
#elif !defined(__CUDACC__)
  ::emu::detail::grid_spin_wait();
#endif
}

__device__ __forceinline__ void grid_barrier(GridBarrier barrier) {
  __syncthreads();  // the block's writes are done before its thread 0 arrives
  if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
    const unsigned blocks = gridDim.x * gridDim.y * gridDim.z;
    const unsigned generation = load_acquire(barrier.generation);
    __threadfence();  // this block's writes, before its arrival, to the whole GPU
    if (atomicAdd(barrier.arrived, 1u) == blocks - 1) {
      atomicExch(barrier.arrived, 0u);  // ready for the next barrier, before anyone passes
      __threadfence();
      atomicAdd(barrier.generation, 1u);
    } else {
      while (load_acquire(barrier.generation) == generation) spin_pause();
    }
    __threadfence();  // the others' writes, seen by this block's reads after the barrier
  }
  __syncthreads();
}

}  // namespace equivae::cuda
