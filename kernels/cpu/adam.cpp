// Adam over the one flat parameter buffer (a single pass, OpenMP over chunks).
#include <cmath>
#include <limits>

#include "kernels/cpu/ops.h"

namespace equivae::cpu {

template <class T>
void adam_step(T* params, T* m, T* v, const T* grads, size_t n, const AdamConfig& config, int64_t t,
               int64_t* non_finite_t) {
  // An earlier step's update went non-finite: keep the state it left.
  if (non_finite_t && *non_finite_t != 0 && *non_finite_t < t) return;
  const T b1 = T(config.beta1), b2 = T(config.beta2), eps = T(config.eps);
  // Bias corrections folded into the step size and epsilon (as PyTorch does).
  const double bc1 = 1.0 - std::pow(config.beta1, double(t));
  const double bc2 = 1.0 - std::pow(config.beta2, double(t));
  const T step_size = T(config.lr / bc1);
  const T inv_sqrt_bc2 = T(1.0 / std::sqrt(bc2));
  // |x| ≤ max is false for NaN and ±inf alone: three compares per element, no branch, so the
  // loop still vectorises (and costs nothing next to its memory traffic).
  const T largest = std::numeric_limits<T>::max();
  int non_finite = 0;
#pragma omp parallel for simd schedule(static) reduction(| : non_finite) if (n > 262144)
  for (size_t i = 0; i < n; ++i) {
    const T g = grads[i];
    const T mi = b1 * m[i] + (T(1) - b1) * g;
    const T vi = b2 * v[i] + (T(1) - b2) * g * g;
    const T pi = params[i] - step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
    m[i] = mi;
    v[i] = vi;
    params[i] = pi;
    non_finite |= int(!(std::abs(pi) <= largest)) | int(!(std::abs(mi) <= largest)) |
                  int(!(std::abs(vi) <= largest));
  }
  if (non_finite && non_finite_t && *non_finite_t == 0) *non_finite_t = t;
}

#define INSTANTIATE(T) \
  template void adam_step<T>(T*, T*, T*, const T*, size_t, const AdamConfig&, int64_t, int64_t*);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace equivae::cpu
