#pragma once
// Precision-generic math for the kernels: float → the CUDA single-precision functions (libm's
// under the emulator), double → the double ones. No fast-math intrinsics: results stay within
// a few ulp of the CPU reference.
#include <cfloat>
#include <cmath>

#include "kernels/cuda/launch.h"

namespace equivae::cuda::math {

__device__ __forceinline__ float exp_(float x) {
  return expf(x);
}
__device__ __forceinline__ double exp_(double x) {
  return exp(x);
}
__device__ __forceinline__ float log_(float x) {
  return logf(x);
}
__device__ __forceinline__ double log_(double x) {
  return log(x);
}
__device__ __forceinline__ float log1p_(float x) {
  return log1pf(x);
}
__device__ __forceinline__ double log1p_(double x) {
  return log1p(x);
}
__device__ __forceinline__ float sqrt_(float x) {
  return sqrtf(x);
}
__device__ __forceinline__ double sqrt_(double x) {
  return sqrt(x);
}
__device__ __forceinline__ float fmax_(float a, float b) {
  return fmaxf(a, b);
}
__device__ __forceinline__ double fmax_(double a, double b) {
  return fmax(a, b);
}
// Neither NaN nor ±inf: |x| ≤ the largest finite value (false for NaN), no branch.
__device__ __forceinline__ bool finite_(float x) {
  return fabsf(x) <= FLT_MAX;
}
__device__ __forceinline__ bool finite_(double x) {
  return fabs(x) <= DBL_MAX;
}

}  // namespace equivae::cuda::math
