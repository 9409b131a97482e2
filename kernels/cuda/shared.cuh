#pragma once
// The project's static shared-memory declarations, so the emulator can check them:
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
#define EQUIVAE_SHARED(T, name, N) __shared__ T name[N]
#define EQUIVAE_SHARED_2D(T, name, M, N) __shared__ T name[M][N]
#define EQUIVAE_SHARED_3D(T, name, L, M, N) __shared__ T name[L][M][N]
#else
#define EQUIVAE_SHARED(T, name, N) __shared__ ::emu::SharedArray<T, (N), #name> name
#define EQUIVAE_SHARED_2D(T, name, M, N) __shared__ ::emu::SharedArray2D<T, (M), (N), #name> name
#define EQUIVAE_SHARED_3D(T, name, L, M, N) \
  __shared__ ::emu::SharedArray3D<T, (L), (M), (N), #name> name
#endif
