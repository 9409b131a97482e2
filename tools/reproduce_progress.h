#pragma once
// reproduce's progress on stderr: on a terminal a live line per EquiVAE epoch, and a line per
// finished run, each with the time elapsed and the ETA of the whole reproduction.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

#include "runtime/clock.h"

namespace equivae::reproduce {

// "m:ss", from an hour "h:mm:ss".
inline std::string format_duration(double seconds) {
  const long s = std::lround(std::max(0.0, seconds));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

// Progress over the whole reproduction: EquiVAE epochs to train are the unit of work (the
// classifiers' time is folded into the measured rate), so the ETA is the time per epoch so
// far times the epochs left.
class Progress {
 public:
  Progress(int runs, int64_t epochs, bool quiet)
      : runs_(runs), total_(epochs), quiet_(quiet), live_(!quiet && isatty(STDERR_FILENO)) {}
  // A resumed run skips the epochs its checkpoint holds.
  void skip(int64_t epochs) { total_ -= epochs; }
  void epoch_done(int run, const std::string& what, int epoch, int epochs, double elbo) {
    ++done_;
    if (!live_) return;
    std::fprintf(stderr, "\r\033[Krun %d/%d  %s  epoch %d/%d  ELBO %.2f  elapsed %s  ETA %s", run,
                 runs_, what.c_str(), epoch, epochs, elbo, format_duration(elapsed()).c_str(),
                 eta().c_str());
  }
  // A line that is not progress (said even with --quiet), clearing the live line first.
  void note(const std::string& text) const {
    std::fprintf(stderr, "%snote: %s\n", live_ ? "\r\033[K" : "", text.c_str());
  }
  // The finished run's result line, with the ETA of the rest.
  void run_done(int run, const std::string& result) {
    if (quiet_) return;
    std::fprintf(stderr, "%srun %d/%d  %s  elapsed %s  ETA %s\n", live_ ? "\r\033[K" : "", run,
                 runs_, result.c_str(), format_duration(elapsed()).c_str(), eta().c_str());
  }

 private:
  double elapsed() const { return seconds_since(start_); }
  std::string eta() const {
    if (done_ == 0) return "--";
    return format_duration(elapsed() / double(done_) *
                           double(std::max<int64_t>(0, total_ - done_)));
  }
  int runs_;
  int64_t total_, done_ = 0;
  bool quiet_, live_;
  Clock::time_point start_ = Clock::now();
};

}  // namespace equivae::reproduce
