// Segmented leave-one-out mean pooling over CSR member lists.
#include <algorithm>
#include <vector>

#include "kernels/cpu/ops.h"

namespace equivae::cpu {

// Rows in parallel from this many values on (the semi-supervised step's row expansion copies
// 1,160 × 512 of them; r itself is 1,160 × 8).
constexpr size_t kParallelValues = 65536;

template <class T>
void pool_forward(T* r, const T* e, const int32_t* offsets, const int32_t* members, int R, int d) {
#pragma omp parallel for schedule(static) if (size_t(R) * d >= kParallelValues)
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

template <class T>
void pool_backward_gather(T* de, const T* dr, const int32_t* offsets, const int32_t* inv_offsets,
                          const int32_t* inv_rows, int N, int d) {
  // Item j adds the rows that pooled it in increasing order, each dr/m_i computed as the
  // scatter computes it: the same additions in the same order.
#pragma omp parallel for schedule(static) if (size_t(N) * d >= kParallelValues)
  for (int j = 0; j < N; ++j) {
    T* dej = de + size_t(j) * d;
    std::fill_n(dej, d, T(0));
    for (int s = inv_offsets[j]; s < inv_offsets[j + 1]; ++s) {
      const int i = inv_rows[s];
      const T inv_m = T(1) / T(offsets[i + 1] - offsets[i]);
      const T* dri = dr + size_t(i) * d;
      for (int c = 0; c < d; ++c) dej[c] += dri[c] * inv_m;
    }
  }
}

void pool_transpose(const int32_t* offsets, const int32_t* members, int R, int N,
                    int32_t* inv_offsets, int32_t* inv_rows) {
  std::fill_n(inv_offsets, size_t(N) + 1, 0);
  for (int s = 0; s < offsets[R]; ++s) ++inv_offsets[members[s] + 1];
  for (int j = 0; j < N; ++j) inv_offsets[j + 1] += inv_offsets[j];
  std::vector<int32_t> next(inv_offsets, inv_offsets + N);
  for (int i = 0; i < R; ++i)
    for (int s = offsets[i]; s < offsets[i + 1]; ++s) inv_rows[next[members[s]]++] = i;
}

#define INSTANTIATE(T)                                                                         \
  template void pool_forward<T>(T*, const T*, const int32_t*, const int32_t*, int, int);       \
  template void pool_backward<T>(T*, const T*, const int32_t*, const int32_t*, int, int, int); \
  template void pool_backward_gather<T>(T*, const T*, const int32_t*, const int32_t*,          \
                                        const int32_t*, int, int);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace equivae::cpu
