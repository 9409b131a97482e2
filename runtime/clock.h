#pragma once
// Wall time for progress lines and logs: the steady clock, in seconds.
#include <chrono>

namespace equivae {

using Clock = std::chrono::steady_clock;

// Seconds from `start` to now.
inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace equivae
