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
  // |p| ≤ max and v ≤ max are false for NaN and ±inf alone; m goes non-finite only with v
  // (through g) or p (through the step), so the two say whether any of the three did. Two
  // compares per element, no branch: the loop still vectorises.
  const T largest = std::numeric_limits<T>::max();
  int non_finite = 0;
#pragma omp parallel for simd schedule(static) reduction(| : non_finite) if (n > 262144)
  for (size_t i = 0; i < n; ++i) {
    const T g = grads[i];
    m[i] = b1 * m[i] + (T(1) - b1) * g;
    v[i] = b2 * v[i] + (T(1) - b2) * g * g;
    params[i] -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + eps);
    non_finite |= int(!(std::abs(params[i]) <= largest)) | int(!(v[i] <= largest));
  }
  if (non_finite && non_finite_t && *non_finite_t == 0) *non_finite_t = t;
}

#define INSTANTIATE(T) \
  template void adam_step<T>(T*, T*, T*, const T*, size_t, const AdamConfig&, int64_t, int64_t*);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace equivae::cpu
