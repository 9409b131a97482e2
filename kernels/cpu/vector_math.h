#pragma once
// exp and log1p that GCC can vectorise inside `#pragma omp simd` loops. glibc's
// libmvec holds SIMD versions of expf/log1pf (≤ 4 ulp) but math.h announces them
// only under -ffast-math, which would also drop NaN/Inf semantics; declaring them
// here (with -fno-math-errno) gets the vector calls and keeps IEEE behaviour.
// Double stays on scalar libm: it is the reference the float path is tested against.
#include <cmath>

#if defined(__GLIBC__) && defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
extern "C" {
#pragma omp declare simd notinbranch
float expf(float) noexcept;
#pragma omp declare simd notinbranch
float log1pf(float) noexcept;
}
#endif

namespace equivae::cpu {

inline float vexp(float x) {
  return expf(x);
}
inline double vexp(double x) {
  return std::exp(x);
}
inline float vlog1p(float x) {
  return log1pf(x);
}
inline double vlog1p(double x) {
  return std::log1p(x);
}

}  // namespace equivae::cpu
