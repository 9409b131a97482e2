// Reparameterised Gaussian sample and its KL to N(0, I), fused in one pass. log σ² is
// clamped to [kLogVarMin, kLogVarMax] (kernels/cpu/logvar_clamp.h; the CUDA kernel uses the same
// range).
#include <cmath>

#include "kernels/cpu/logvar_clamp.h"
#include "kernels/cpu/ops.h"
#include "kernels/philox.h"

namespace equivae::cpu {

template <class T>
void sample_kl_forward(T* v, T* eps, T* kl, const T* mulv, int B, int d, uint64_t seed,
                       uint64_t step, uint32_t row0) {
  for (int i = 0; i < B; ++i) {
    const T* mu = mulv + size_t(i) * 2 * d;
    const T* logvar = mu + d;
    T kl_i = 0;
    for (int j = 0; j < d; ++j) {
      const T e = philox_normal<T>(seed, step, row0 + uint32_t(i), uint32_t(j));
      const T lv = clamp_logvar(logvar[j]);
      const T sigma = std::exp(T(0.5) * lv);
      eps[size_t(i) * d + j] = e;
      v[size_t(i) * d + j] = mu[j] + sigma * e;
      kl_i += mu[j] * mu[j] + sigma * sigma - T(1) - lv;
    }
    kl[i] = T(0.5) * kl_i;
  }
}

template <class T>
void sample_kl_backward(T* dmulv, const T* dv, const T* dkl, const T* mulv, const T* eps, int B,
                        int d) {
  for (int i = 0; i < B; ++i) {
    const T* mu = mulv + size_t(i) * 2 * d;
    const T* logvar = mu + d;
    T* dmu = dmulv + size_t(i) * 2 * d;
    T* dlogvar = dmu + d;
    for (int j = 0; j < d; ++j) {
      const T g = dv[size_t(i) * d + j];
      // ∂v/∂μ = 1, ∂v/∂logσ² = ½σε; ∂KL/∂μ = μ, ∂KL/∂logσ² = ½(σ² − 1); through the clamp,
      // zero for log σ² outside [kLogVarMin, kLogVarMax].
      dmu[j] = g + dkl[i] * mu[j];
      if (logvar_inside(logvar[j])) {
        const T sigma = std::exp(T(0.5) * logvar[j]);
        dlogvar[j] =
            g * T(0.5) * sigma * eps[size_t(i) * d + j] + dkl[i] * T(0.5) * (sigma * sigma - 1);
      } else {
        dlogvar[j] = T(0);
      }
    }
  }
}

#define INSTANTIATE(T)                                                                   \
  template void sample_kl_forward<T>(T*, T*, T*, const T*, int, int, uint64_t, uint64_t, \
                                     uint32_t);                                          \
  template void sample_kl_backward<T>(T*, const T*, const T*, const T*, const T*, int, int);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace equivae::cpu
