// Bernoulli log-likelihood from logits with soft targets, and its gradient.
#include <cmath>

#include "kernels/cpu/ops.h"

namespace equivae::cpu {
namespace {

// softplus(l) = log(1 + e^l), stable for any l: max(l, 0) + log1p(e^−|l|).
template <class T>
inline T softplus(T l) {
  return std::fmax(l, T(0)) + std::log1p(std::exp(-std::fabs(l)));
}
// σ(l) without overflow for large |l|.
template <class T>
inline T sigmoid(T l) {
  if (l >= 0) return T(1) / (T(1) + std::exp(-l));
  const T e = std::exp(l);
  return e / (T(1) + e);
}

}  // namespace

template <class T>
void bernoulli_ll_forward(T* ll, const T* logits, const T* x, int B, int D) {
#pragma omp parallel for schedule(static) if (size_t(B) * D > 65536)
  for (int i = 0; i < B; ++i) {
    const T* l = logits + size_t(i) * D;
    const T* xi = x + size_t(i) * D;
    T acc = 0;
    for (int j = 0; j < D; ++j) acc += xi[j] * l[j] - softplus(l[j]);
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
    for (int j = 0; j < D; ++j) dl[j] = dll[i] * (xi[j] - sigmoid(l[j]));
  }
}

#define INSTANTIATE(T)                                                           \
  template void bernoulli_ll_forward<T>(T*, const T*, const T*, int, int); \
  template void bernoulli_ll_backward<T>(T*, const T*, const T*, const T*, int, int);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace equivae::cpu
