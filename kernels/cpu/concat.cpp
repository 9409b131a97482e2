// Column concat [a ; b] and its backward split.
#include <algorithm>

#include "kernels/cpu/ops.h"

namespace equivae::cpu {

template <class T>
void concat_forward(T* out, const T* a, const T* b, int B, int na, int nb) {
  const int n = na + nb;
  for (int i = 0; i < B; ++i) {
    std::copy_n(a + size_t(i) * na, na, out + size_t(i) * n);
    std::copy_n(b + size_t(i) * nb, nb, out + size_t(i) * n + na);
  }
}

namespace {
template <class T>
void split_part(T* dst, const T* dout, int B, int n, int offset, int width, bool accumulate) {
  if (!dst) return;
  for (int i = 0; i < B; ++i) {
    const T* src = dout + size_t(i) * n + offset;
    T* d = dst + size_t(i) * width;
    if (accumulate) {
      for (int j = 0; j < width; ++j) d[j] += src[j];
    } else {
      std::copy_n(src, width, d);
    }
  }
}
}  // namespace

template <class T>
void concat_backward(T* da, T* db, const T* dout, int B, int na, int nb, bool accumulate_a,
                     bool accumulate_b) {
  split_part(da, dout, B, na + nb, 0, na, accumulate_a);
  split_part(db, dout, B, na + nb, na, nb, accumulate_b);
}

#define INSTANTIATE(T)                                                    \
  template void concat_forward<T>(T*, const T*, const T*, int, int, int); \
  template void concat_backward<T>(T*, T*, const T*, int, int, int, bool, bool);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace equivae::cpu
