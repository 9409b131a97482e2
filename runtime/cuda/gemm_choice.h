#pragma once
// Which of a GEMM's candidate algorithms to keep, from their measured times. Pure host code,
// so it is tested on the CPU; LtGemm::tune (lt_gemm.h) measures the times on the GPU.
#include <cmath>
#include <vector>

namespace equivae {

// seconds[i]: candidate i's time (the heuristic's ranking order; infinite or NaN where it
// could not run). The heuristic's first choice (0) stays unless another candidate is faster
// by more than `margin` (a fraction of candidate 0's time): timing noise alone must not
// trade a kernel for an equal one. Candidate 0 failing, the fastest that ran wins. −1 when
// none ran.
inline int pick_fastest(const std::vector<double>& seconds, double margin) {
  int best = -1;
  for (int i = 0; i < int(seconds.size()); ++i)
    if (std::isfinite(seconds[i]) && (best < 0 || seconds[i] < seconds[best])) best = i;
  if (best <= 0 || !std::isfinite(seconds[0])) return best;
  return seconds[best] < seconds[0] * (1.0 - margin) ? best : 0;
}

// What one round of GEMM autotuning did (LtGemm::tune): plans timed, plans whose algorithm changed
// (of which `small` went to the engine's small GEMM), and the summed per-call times of the
// heuristic's choices and of the kept ones (each plan counted once, however often a step calls
// it).
struct GemmTuning {
  int timed = 0, changed = 0, small = 0;
  double heuristic_seconds = 0, chosen_seconds = 0;
  GemmTuning& operator+=(const GemmTuning& o) {
    timed += o.timed, changed += o.changed, small += o.small;
    heuristic_seconds += o.heuristic_seconds, chosen_seconds += o.chosen_seconds;
    return *this;
  }
};

}  // namespace equivae
