#pragma once
// The CUDA backend's extra entry point for tests: the same backend source compiled by g++
// against the CUDA-on-CPU emulator (kernels/emu), in the library equivae_cuda_backend_emu.
// Device memory is host memory there, the kernels run as fibers, GEMMs (cuBLAS, cuBLASLt) and
// convolutions (cuDNN) run on the CPU behind the same calls, and
// a captured graph is a recorded list of the step's ops. Never chosen by the tools; never
// link it into a program that links the real CUDA runtime (the emulator defines the same
// names). make_cuda_backend and cuda_available are declared in runtime/backend.h.
#include <memory>

#include "runtime/backend.h"

namespace equivae {

template <class T>
std::unique_ptr<Backend<T>> make_emulated_cuda_backend(const CudaBackendOptions& options = {});

}  // namespace equivae
