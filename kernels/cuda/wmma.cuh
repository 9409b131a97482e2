#pragma once
// The tensor cores' warp-level matrix API (nvcuda::wmma): CUDA's <mma.h> under nvcc, the
// emulator's version (kernels/emu/emu_wmma.h: TF32 m16n16k8) when built as C++.
#if defined(__CUDACC__)
#include <mma.h>
#else
#include "kernels/emu/emu_wmma.h"
#endif
