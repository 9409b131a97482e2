// Inverted dropout with a counter-based mask: element i of the draw at (seed, step, stream)
// is kept iff its Philox uniform is ≥ rate, so the mask depends on nothing but those four
// numbers (any thread split, either precision, a replayed step all see the same mask).
#include <algorithm>

#include "kernels/cpu/ops.h"
#include "kernels/philox.h"

namespace equivae::cpu {

template <class T>
void dropout_forward(T* y, T* mask, const T* x, size_t n, T rate, uint64_t seed, uint64_t step,
                     uint32_t stream) {
  if (!(rate > T(0))) {  // rate 0 (or NaN): the identity
    std::copy(x, x + n, y);
    std::fill(mask, mask + n, T(1));
    return;
  }
  // The keep decision is made in double for both T, so float and double masks agree.
  const double drop = double(rate);
  const T scale = drop < 1.0 ? T(1.0 / (1.0 - drop)) : T(0);  // rate ≥ 1 drops everything
#pragma omp parallel for schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; ++i) {
    const bool keep = philox_uniform<double>(seed, step, stream, uint32_t(i)) >= drop;
    const T m = keep ? scale : T(0);
    mask[i] = m;
    y[i] = x[i] * m;
  }
}

template <class T>
void dropout_backward(T* dx, const T* dy, const T* mask, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 262144)
  for (size_t i = 0; i < n; ++i) dx[i] = dy[i] * mask[i];
}

#define INSTANTIATE(T)                                                                         \
  template void dropout_forward<T>(T*, T*, const T*, size_t, T, uint64_t, uint64_t, uint32_t); \
  template void dropout_backward<T>(T*, const T*, const T*, size_t);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace equivae::cpu
