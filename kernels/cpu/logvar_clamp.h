#pragma once
// The clamp of a log-variance (the KL's log σ², the Gaussian likelihood's learned lv):
// σ² ∈ [e^−30, e^20] ≈ [9.4e−14, 4.9e8], so σ² and ½ log σ² are finite in float and
// σ² − 1 − log σ² stays far from overflow. The CUDA kernels clamp to the same range.
namespace equivae::cpu {

constexpr double kLogVarMin = -30.0, kLogVarMax = 20.0;

// NaN passes through (it must surface, not be clamped away).
template <class T>
inline T clamp_logvar(T lv) {
  return lv < T(kLogVarMin) ? T(kLogVarMin) : (lv > T(kLogVarMax) ? T(kLogVarMax) : lv);
}
// Whether the clamp passes lv through (its derivative is 1 there, 0 outside; NaN counts as
// inside so that the gradient stays NaN).
template <class T>
inline bool logvar_inside(T lv) {
  return !(lv < T(kLogVarMin) || lv > T(kLogVarMax));
}

}  // namespace equivae::cpu
