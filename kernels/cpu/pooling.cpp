// Segmented leave-one-out mean pooling over CSR member lists.
#include <algorithm>

#include "kernels/cpu/ops.h"

namespace equivae::cpu {

template <class T>
void pool_forward(T* r, const T* e, const int32_t* offsets, const int32_t* members, int R, int d) {
  for (int i = 0; i < R; ++i) {
    T* ri = r + size_t(i) * d;
    std::fill_n(ri, d, T(0));
    const int begin = offsets[i], end = offsets[i + 1];
    for (int s = begin; s < end; ++s) {
      const T* ej = e + size_t(members[s]) * d;
      for (int c = 0; c < d; ++c) ri[c] += ej[c];
    }
    const T inv_m = T(1) / T(end - begin);
    for (int c = 0; c < d; ++c) ri[c] *= inv_m;
  }
}

template <class T>
void pool_backward(T* de, const T* dr, const int32_t* offsets, const int32_t* members, int R, int N,
                   int d) {
  std::fill_n(de, size_t(N) * d, T(0));
  // Scatter: each pooled row hands dr/m_i to every member it averaged.
  for (int i = 0; i < R; ++i) {
    const int begin = offsets[i], end = offsets[i + 1];
    const T inv_m = T(1) / T(end - begin);
    const T* dri = dr + size_t(i) * d;
    for (int s = begin; s < end; ++s) {
      T* dej = de + size_t(members[s]) * d;
      for (int c = 0; c < d; ++c) dej[c] += dri[c] * inv_m;
    }
  }
}

#define INSTANTIATE(T)                                                                   \
  template void pool_forward<T>(T*, const T*, const int32_t*, const int32_t*, int, int); \
  template void pool_backward<T>(T*, const T*, const int32_t*, const int32_t*, int, int, int);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace equivae::cpu
