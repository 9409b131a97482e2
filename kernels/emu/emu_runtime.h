#pragma once
// The CUDA-on-CPU emulator's host-side surface: the CUDA runtime types and the few runtime
// calls the engine uses (device memory is host memory; streams are dummies; everything is
// synchronous), plus the emulator's own controls. Safe to include from ordinary host code:
// it defines no device keywords (kernels/emu/emu.h does, for the kernel sources).
//
// Never link the emulator into a program that also links the real CUDA runtime: both define
// the same global names (dim3, cudaStream_t, cudaMalloc ...).
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#error "kernels/emu is the CUDA-on-CPU emulator: it is for g++ builds only"
#endif

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return {x, y, z}; }
};

struct CUstream_st;
using cudaStream_t = CUstream_st*;

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorLaunchFailure = 719,
};
enum cudaMemcpyKind : int {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

namespace emu {

// Every emulator failure (deadlock, divergent barrier, bad launch configuration, misuse of
// a warp primitive, an exception thrown by kernel code) is reported by throwing this from
// the launch.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The schedule: threads of a block are resumed in a freshly shuffled order at every phase
// (after each barrier), from a generator seeded by this seed, the launch's ordinal since the
// seed was set, and the block index. Setting the seed resets the ordinal, so a sequence of
// launches replays exactly. Default seed: 0x5EED.
void set_schedule_seed(uint64_t seed);
uint64_t schedule_seed();

// Stack of each CUDA thread's fiber (default 64 KiB, guard page below; a kernel that
// overflows it faults instead of corrupting memory). Takes effect for new stacks.
void set_fiber_stack_size(size_t bytes);

// Shared-memory race check (on by default, as the emulator only runs in tests; the environment
// variable EQUIVAE_EMU_RACE_CHECK=0 turns it off at startup). Applies to shared memory
// declared through the checked accessors (EQUIVAE_SHARED / _2D / _3D from
// kernels/cuda/shared.cuh, BlockReduce's TempStorage, emu::dynamic_shared<T>()), including
// what cp.async (AsyncCopies) and wmma load/store_matrix_sync do through a checked pointer
// into them (`a[i] + j`); a plain `__shared__ T x[N]` stays an unchecked array, and so do a
// raw pointer taken with `&a[i][j]` and the one that EQUIVAE_DYNAMIC_SHARED
// (kernels/cuda/launch.h) gives (no kernel uses it yet). The rule, per shared word (per
// element of a static array, per 4-byte word of the dynamic buffer), within one barrier phase
// (between two __syncthreads() of the block):
//  - two different threads touch the word and at least one of them writes it: a race, unless
//    both are lanes of the same warp and a full-warp synchronisation of that warp (__syncwarp,
//    a shuffle or a vote whose mask covers every lane of the warp) separates the two accesses.
//    Partial-mask warp syncs do not order anything (conservative).
//  - accesses through atomics (atomicAdd(&s[i], v) ...) take the raw address and are not
//    tracked; nor is a raw pointer taken with &s[i].
//  - the shadow keeps the last writer and two readers per word (the second slot preferring a
//    reader of another warp than the first), so every write-read or write-write conflict with
//    the last writer is caught, and a write after reads by two or more other threads is.
//  - a cp.async's write is the issuing thread's: its issue is a write in the phase, its
//    landing (at the wait that covers it) a write in the wait's phase, and in between the word
//    is in flight: any access to it, by any thread (the issuer too), is a race.
//  - a wmma load or store is checked element by element, each element an access of the lane
//    that holds it in the fragment (kernels/emu/emu_wmma.h).
//  - a read of a word that no thread of the running block has written (an earlier block's or
//    launch's write does not count) is an uninitialised read, reported when the barrier phase
//    ends unless a write of another thread in that phase races with it (then the race is what
//    is reported). Taking a raw address (&s[i]) counts as a write, since an atomic may
//    initialise the word through it; a store of a wide element of the dynamic buffer writes
//    every 4-byte word it covers.
// A race, an uninitialised read or an out-of-bounds index throws emu::Error naming the kernel,
// the block, the thread(s), the word and, for a static array, its name and the element's
// indices. Turning the check off turns off the uninitialised-read check too; out-of-bounds
// indices are checked even with it off.
void set_race_check(bool on);
bool race_check();

// Counters since the process started (or the last reset), for tests and curiosity.
struct Stats {
  uint64_t launches = 0, blocks = 0, threads = 0, block_barriers = 0, warp_syncs = 0;
};
Stats stats();
void reset_stats();

}  // namespace emu

// ---- the CUDA runtime calls, emulated (device memory is plain host memory)
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    default:
      return "unspecified launch failure";
  }
}
inline cudaError_t cudaGetLastError() {
  return cudaSuccess;
}
inline cudaError_t cudaPeekAtLastError() {
  return cudaSuccess;
}
inline cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
template <class T>
inline cudaError_t cudaMalloc(T** p, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
inline cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
// Page-locked host memory is plain host memory here; the blocks alive and the size of the last
// one asked for are counted, so that tests see who takes such memory and gives it back.
namespace emu {
inline std::atomic<int64_t> pinned_blocks{0};       // alive now
inline std::atomic<int64_t> pinned_allocations{0};  // ever taken
inline std::atomic<size_t> last_pinned_bytes{0};
}  // namespace emu
inline cudaError_t cudaMallocHost(void** p, size_t bytes) {
  *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  if (!*p) return cudaErrorMemoryAllocation;
  ++emu::pinned_blocks;
  ++emu::pinned_allocations;
  emu::last_pinned_bytes = bytes;
  return cudaSuccess;
}
inline cudaError_t cudaFreeHost(void* p) {
  if (p) --emu::pinned_blocks;
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                                   cudaStream_t = nullptr) {
  return cudaMemcpy(dst, src, bytes, kind);
}
inline cudaError_t cudaMemset(void* p, int value, size_t bytes) {
  if (bytes) std::memset(p, value, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t = nullptr) {
  return cudaMemset(p, value, bytes);
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) {
  return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() {
  return cudaSuccess;
}
