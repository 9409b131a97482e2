#pragma once
// Stopping a run on request: Ctrl-C (SIGINT), SIGTERM or SIGHUP (the terminal closed) asks a
// training tool to stop at the next step, after the checkpoint being written is on disk,
// instead of dying mid-write; a second signal ends the process at once, as if there were no
// handler.
#include <csignal>

#include "runtime/error.h"

namespace equivae {

// Thrown by a training loop that stopped on request; the message says what was kept and how
// to continue. A tool exits with 128 + the signal's number, as a shell reports a killed job.
class Interrupted : public Error {
 public:
  using Error::Error;
};

// While alive, SIGINT, SIGTERM and SIGHUP set a flag (and say on stderr that the run will
// stop) instead of ending the process; the handlers it replaced come back on destruction. One
// at a time.
class StopOnSignal {
 public:
  StopOnSignal();
  ~StopOnSignal();
  StopOnSignal(const StopOnSignal&) = delete;
  StopOnSignal& operator=(const StopOnSignal&) = delete;

  // The signal that asked to stop (SIGINT, SIGTERM or SIGHUP), or 0.
  static int received();
  // Whether one did: TrainOptions::stop_requested for a run under this guard.
  static bool requested() { return received() != 0; }
  // What a first signal from now on prints on stderr (a string that outlives the guard, a
  // literal), so that it says what the tool does next; each guard starts with "stopping after
  // the current step ...".
  static void set_notice(const char* notice);

 private:
  struct sigaction old_int_ {
  }, old_term_{}, old_hup_{};
};

}  // namespace equivae
