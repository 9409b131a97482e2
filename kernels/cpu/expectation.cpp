// The exact expectation over all C labels of an unlabelled item's ELBO under
// q(y|x), minus KL(q(y|x) ‖ p(y)): the semi-supervised term of eqs. 6–7.
#include <cmath>
#include <limits>

#include "kernels/cpu/ops.h"

namespace equivae::cpu {

template <class T>
void expectation_forward(T* L, T* q, const T* logits, const T* ll, const T* kl, const T* log_prior,
                         int U, int C) {
  for (int u = 0; u < U; ++u) {
    const T* l = logits + size_t(u) * C;
    T* qu = q + size_t(u) * C;
    T max_l = l[0];
    for (int y = 1; y < C; ++y) max_l = l[y] > max_l ? l[y] : max_l;
    T z = 0;
    for (int y = 0; y < C; ++y) z += std::exp(l[y] - max_l);
    const T log_z = std::log(z) + max_l;
    T acc = 0;
    for (int y = 0; y < C; ++y) {
      const T log_q = l[y] - log_z;  // exact even where q underflows to 0
      qu[y] = std::exp(log_q);
      const size_t row = size_t(u) * C + y;
      acc += qu[y] * (ll[row] - kl[row] + log_prior[y] - log_q);
    }
    L[u] = acc;
  }
}

template <class T>
void expectation_backward(T* dlogits, T* dll, T* dkl, const T* dL, const T* q, const T* ll,
                          const T* kl, const T* log_prior, int U, int C) {
  for (int u = 0; u < U; ++u) {
    const T* qu = q + size_t(u) * C;
    T* dl = dlogits + size_t(u) * C;
    // g_y = ∂L/∂q_y + 1 = elbo_y + log p(y) − log q_y; the +1 cancels in the softmax Jacobian.
    T mean_g = 0;
    for (int y = 0; y < C; ++y) {
      const size_t row = size_t(u) * C + y;
      const T log_q = std::log(qu[y] > T(0) ? qu[y] : std::numeric_limits<T>::min());
      dl[y] = ll[row] - kl[row] + log_prior[y] - log_q;  // g_y, scaled below
      mean_g += qu[y] * dl[y];
      dll[row] = dL[u] * qu[y];
      dkl[row] = -dL[u] * qu[y];
    }
    for (int y = 0; y < C; ++y) dl[y] = dL[u] * qu[y] * (dl[y] - mean_g);
  }
}

#define INSTANTIATE(T)                                                                            \
  template void expectation_forward<T>(T*, T*, const T*, const T*, const T*, const T*, int, int); \
  template void expectation_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,       \
                                        const T*, int, int);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace equivae::cpu
