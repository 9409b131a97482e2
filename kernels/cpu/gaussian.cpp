// Gaussian log-likelihood with a learned log-variance per channel (or one global), and its
// gradients to the mean and to the log-variance. lv is clamped to [kLogVarMin, kLogVarMax],
// the range sample_kl uses for log σ² (kernels/cpu/logvar_clamp.h; kernels/cuda/gaussian.cu clamps
// identically).
#include <cmath>

#include "kernels/cpu/logvar_clamp.h"
#include "kernels/cpu/ops.h"

namespace equivae::cpu {
namespace {

constexpr double kLog2Pi = 1.8378770664093454836;  // log 2π

}  // namespace

template <class T>
void gaussian_ll_forward(T* ll, const T* mu, const T* x, const T* logvar, int B, int C, int P) {
  const size_t D = size_t(C) * P;
#pragma omp parallel for schedule(static) if (size_t(B) * D > 65536)
  for (int i = 0; i < B; ++i) {
    T total = T(0);
    for (int c = 0; c < C; ++c) {
      const T lv = clamp_logvar(logvar[c]), inv_var = std::exp(-lv);
      const T* m = mu + size_t(i) * D + size_t(c) * P;
      const T* xi = x + size_t(i) * D + size_t(c) * P;
      T squares = T(0);
#pragma omp simd reduction(+ : squares)
      for (int p = 0; p < P; ++p) {
        const T d = xi[p] - m[p];
        squares += d * d;
      }
      total += T(P) * (T(kLog2Pi) + lv) + squares * inv_var;
    }
    ll[i] = T(-0.5) * total;
  }
}

template <class T>
void gaussian_ll_backward(T* dmu, T* dlogvar, const T* dll, const T* mu, const T* x,
                          const T* logvar, int B, int C, int P) {
  const size_t D = size_t(C) * P;
  if (dmu) {
#pragma omp parallel for schedule(static) if (size_t(B) * D > 65536)
    for (int i = 0; i < B; ++i)
      for (int c = 0; c < C; ++c) {
        const T scale = dll[i] * std::exp(-clamp_logvar(logvar[c]));
        const size_t at = size_t(i) * D + size_t(c) * P;
#pragma omp simd
        for (int p = 0; p < P; ++p) dmu[at + p] = scale * (x[at + p] - mu[at + p]);
      }
  }
  if (dlogvar) {
    // Per channel, rows in order: deterministic whatever the thread count. The per-element
    // form ½((x − μ)² e^{−lv} − 1) avoids the cancellation of ½(e^{−lv} Σ d² − P) near a fit.
#pragma omp parallel for schedule(static) if (size_t(B) * D > 65536)
    for (int c = 0; c < C; ++c) {
      const T lv = logvar[c];
      if (!logvar_inside(lv)) {
        dlogvar[c] = T(0);
        continue;
      }
      const T inv_var = std::exp(-lv);
      T acc = T(0);
      for (int i = 0; i < B; ++i) {
        const size_t at = size_t(i) * D + size_t(c) * P;
        T part = T(0);
#pragma omp simd reduction(+ : part)
        for (int p = 0; p < P; ++p) {
          const T d = x[at + p] - mu[at + p];
          part += d * d * inv_var - T(1);
        }
        acc += dll[i] * part;
      }
      dlogvar[c] = T(0.5) * acc;
    }
  }
}

#define INSTANTIATE(T)                                                                            \
  template void gaussian_ll_forward<T>(T*, const T*, const T*, const T*, int, int, int);          \
  template void gaussian_ll_backward<T>(T*, T*, const T*, const T*, const T*, const T*, int, int, \
                                        int);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace equivae::cpu
