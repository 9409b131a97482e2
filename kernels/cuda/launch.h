#pragma once
// The project's one way to launch a kernel. Under nvcc it is `kernel<<<grid, block, shmem,
// stream>>>(args...)`; compiled as C++ (kernels/cuda/*.cu built by g++ for the emulator) it
// is the emulator's launch, which runs every CUDA thread as a fiber on the CPU.
//
//   EQUIVAE_LAUNCH(kernel_name<T>, grid, block, shmem, stream, args...);
//   equivae::cuda::launch(kernel_name<T>, grid, block, shmem, stream, args...);  // same, unnamed
//
// The macro passes the kernel's spelling along so emulator errors name it. (A kernel whose
// template arguments contain a comma needs the function form or an alias.)
//
// Dynamic shared memory: EQUIVAE_DYNAMIC_SHARED(T, name) declares `T* name` pointing at the
// block's dynamic shared memory (the `extern __shared__` array under nvcc).
//
// Programmatic dependent launch (Hopper, CudaBackendOptions::programmatic_launch): inside a
// ProgrammaticLaunch scope that is on, launches carry cudaLaunchAttributeProgrammatic-
// StreamSerialization, so a kernel may be scheduled while the kernel before it in the stream
// is still running, hiding its launch latency (a captured graph keeps these as programmatic
// edges). Every kernel therefore begins with grid_dependency_prologue(): it waits until the
// kernel before it has finished and its writes are visible (griddepcontrol.wait) before
// touching memory, then lets the next kernel be scheduled (griddepcontrol.launch_dependents),
// which then overlaps this one's work, never the wait. On sm_80, without the attribute and
// under the emulator (which runs kernels one after another) both are no-ops. A CTest check
// (kernel_prologue) fails on a kernel that does not begin so.
#include <cstddef>
#include <utility>

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#define EQUIVAE_DYNAMIC_SHARED(T, name)                                    \
  extern __shared__ __align__(16) unsigned char equivae_dynamic_shared_[]; \
  T* name = reinterpret_cast<T*>(equivae_dynamic_shared_)
#else
#include "kernels/emu/emu.h"
#define EQUIVAE_DYNAMIC_SHARED(T, name) T* name = static_cast<T*>(::emu::dynamic_shared_memory())
#endif

namespace equivae::cuda {

__device__ __forceinline__ void grid_dependency_prologue() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Whether this thread's launches are programmatic (see above), and up to how many blocks a
// programmatic launch's grid may have (0: any; a larger grid launches as usual —
// CudaBackendOptions::programmatic_max_blocks, an experiment for large batches); the backend
// sets both around the launches of each op when its option is on and the device has compute
// capability 9.0+.
inline thread_local bool t_programmatic_launch = false;
inline thread_local size_t t_programmatic_max_blocks = 0;
class ProgrammaticLaunch {
 public:
  explicit ProgrammaticLaunch(bool on, size_t max_blocks = 0)
      : before_(t_programmatic_launch), before_max_(t_programmatic_max_blocks) {
    t_programmatic_launch = on;
    t_programmatic_max_blocks = max_blocks;
  }
  ~ProgrammaticLaunch() {
    t_programmatic_launch = before_;
    t_programmatic_max_blocks = before_max_;
  }
  ProgrammaticLaunch(const ProgrammaticLaunch&) = delete;
  ProgrammaticLaunch& operator=(const ProgrammaticLaunch&) = delete;

 private:
  bool before_;
  size_t before_max_;
};
// Whether a launch of `grid` is programmatic under this thread's setting.
inline bool programmatic_for(dim3 grid) {
  const size_t blocks = size_t(grid.x) * grid.y * grid.z;
  return t_programmatic_launch &&
         (t_programmatic_max_blocks == 0 || blocks <= t_programmatic_max_blocks);
}

#if defined(__CUDACC__)
// cudaLaunchKernelEx with one launch attribute (its errors, as <<<>>>'s, show later).
template <class... P, class... A>
inline void launch_with(const cudaLaunchAttribute& attribute, void (*kernel)(P...), dim3 grid,
                        dim3 block, size_t shmem, cudaStream_t stream, A&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shmem;
  config.stream = stream;
  config.attrs = const_cast<cudaLaunchAttribute*>(&attribute);
  config.numAttrs = 1;
  cudaLaunchKernelEx(&config, kernel, std::forward<A>(args)...);
}
#endif

template <class... P, class... A>
inline void launch_named([[maybe_unused]] const char* name, void (*kernel)(P...), dim3 grid,
                         dim3 block, size_t shmem, cudaStream_t stream, A&&... args) {
#if defined(__CUDACC__)
  if (programmatic_for(grid)) {
    cudaLaunchAttribute attribute{};
    attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute.val.programmaticStreamSerializationAllowed = 1;
    launch_with(attribute, kernel, grid, block, shmem, stream, std::forward<A>(args)...);
    return;
  }
  kernel<<<grid, block, shmem, stream>>>(std::forward<A>(args)...);
#else
  ::emu::launch(name, kernel, grid, block, shmem, stream, std::forward<A>(args)...);
#endif
}

// A cooperative launch (cudaLaunchAttributeCooperative, capturable into a graph): every block
// of the grid is resident at once, which a grid-wide barrier (grid_sync.cuh) needs; the launch
// fails if the grid does not fit on the GPU at once (its owner sizes it by occupancy, as
// small_gemm_chain_blocks does). The emulator runs such a grid's blocks at once too, one OS
// thread each. Not programmatic.
template <class... P, class... A>
inline void launch_cooperative_named([[maybe_unused]] const char* name, void (*kernel)(P...),
                                     dim3 grid, dim3 block, size_t shmem, cudaStream_t stream,
                                     A&&... args) {
#if defined(__CUDACC__)
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeCooperative;
  attribute.val.cooperative = 1;
  launch_with(attribute, kernel, grid, block, shmem, stream, std::forward<A>(args)...);
#else
  ::emu::launch_grid(true, name, kernel, grid, block, shmem, stream, std::forward<A>(args)...);
#endif
}

template <class... P, class... A>
inline void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t shmem, cudaStream_t stream,
                   A&&... args) {
  launch_named("(unnamed)", kernel, grid, block, shmem, stream, std::forward<A>(args)...);
}

// Blocks for a 1-D grid-stride loop over n items: enough to cover n, at most `cap` (the loop
// picks up the rest), at least 1 (a launch with zero blocks is an error).
inline unsigned blocks_for(size_t n, unsigned threads, unsigned cap = 4096) {
  const size_t b = (n + threads - 1) / threads;
  return b == 0 ? 1u : (b > cap ? cap : unsigned(b));
}

}  // namespace equivae::cuda

#define EQUIVAE_LAUNCH(kernel, grid, block, shmem, stream, ...) \
  ::equivae::cuda::launch_named(#kernel, kernel, grid, block, shmem, stream, __VA_ARGS__)
#define EQUIVAE_LAUNCH_COOPERATIVE(kernel, grid, block, shmem, stream, ...)              \
  ::equivae::cuda::launch_cooperative_named(#kernel, kernel, grid, block, shmem, stream, \
                                            __VA_ARGS__)
