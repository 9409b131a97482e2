// Softmax cross-entropy over C classes (max-subtracted, so any logits are finite).
#include <cmath>

#include "kernels/cpu/ops.h"

namespace equivae::cpu {

template <class T>
void softmax_xent_forward(T* loss, T* probs, const T* logits, const int32_t* labels, int B, int C) {
  for (int i = 0; i < B; ++i) {
    const T* l = logits + size_t(i) * C;
    T* p = probs + size_t(i) * C;
    T max_l = l[0];
    for (int c = 1; c < C; ++c) max_l = std::fmax(max_l, l[c]);
    T z = 0;
    for (int c = 0; c < C; ++c) z += std::exp(l[c] - max_l);
    const T log_z = std::log(z) + max_l;
    for (int c = 0; c < C; ++c) p[c] = std::exp(l[c] - log_z);
    loss[i] = log_z - l[labels[i]];
  }
}

template <class T>
void softmax_xent_backward(T* dlogits, const T* dloss, const T* probs, const int32_t* labels, int B,
                           int C) {
  for (int i = 0; i < B; ++i) {
    const T* p = probs + size_t(i) * C;
    T* dl = dlogits + size_t(i) * C;
    for (int c = 0; c < C; ++c) dl[c] = dloss[i] * (p[c] - (c == labels[i] ? T(1) : T(0)));
  }
}

#define INSTANTIATE(T)                                                               \
  template void softmax_xent_forward<T>(T*, T*, const T*, const int32_t*, int, int); \
  template void softmax_xent_backward<T>(T*, const T*, const T*, const int32_t*, int, int);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace equivae::cpu
