// Bernoulli log-likelihood from logits with soft targets, and its gradient.
// Both passes derive everything from one e = exp(−|l|), which never overflows:
//   softplus(l) = max(l, 0) + log1p(e),   σ(l) = (l ≥ 0 ? 1 : e) / (1 + e).
#include "kernels/cpu/ops.h"
#include "kernels/cpu/vector_math.h"

namespace equivae::cpu {

template <class T>
void bernoulli_ll_forward(T* ll, const T* logits, const T* x, int B, int D) {
#pragma omp parallel for schedule(static) if (size_t(B) * D > 65536)
  for (int i = 0; i < B; ++i) {
    const T* l = logits + size_t(i) * D;
    const T* xi = x + size_t(i) * D;
    T acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int j = 0; j < D; ++j) {
      const T positive = l[j] > T(0) ? l[j] : T(0);
      const T magnitude = l[j] < T(0) ? -l[j] : l[j];
      acc += xi[j] * l[j] - (positive + vlog1p(vexp(-magnitude)));
    }
    ll[i] = acc;
  }
}

template <class T>
void bernoulli_ll_backward(T* dlogits, const T* dll, const T* logits, const T* x, int B, int D) {
#pragma omp parallel for schedule(static) if (size_t(B) * D > 65536)
  for (int i = 0; i < B; ++i) {
    const T* l = logits + size_t(i) * D;
    const T* xi = x + size_t(i) * D;
    T* dl = dlogits + size_t(i) * D;
    const T scale = dll[i];
#pragma omp simd
    for (int j = 0; j < D; ++j) {
      const T magnitude = l[j] < T(0) ? -l[j] : l[j];
      const T e = vexp(-magnitude);
      const T sigmoid = (l[j] >= T(0) ? T(1) : e) / (T(1) + e);
      dl[j] = scale * (xi[j] - sigmoid);
    }
  }
}

#define INSTANTIATE(T)                                                     \
  template void bernoulli_ll_forward<T>(T*, const T*, const T*, int, int); \
  template void bernoulli_ll_backward<T>(T*, const T*, const T*, const T*, int, int);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace equivae::cpu
