#include "runtime/interrupt.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

namespace equivae {
namespace {

constexpr char kStepNotice[] =
    "\nstopping after the current step (the checkpoint being written is finished first); "
    "press Ctrl-C again to quit at once\n";

// The handler runs on whichever thread the signal lands on (the checkpoint writer's, the data
// loader's, an OpenMP worker's) while the training thread polls: a lock-free atomic, which a
// handler may touch, rather than a volatile sig_atomic_t, which is safe only for a handler on
// the polling thread itself.
std::atomic<int> g_received{0};
static_assert(std::atomic<int>::is_always_lock_free);
std::atomic<bool> g_installed{false};
std::atomic<const char*> g_notice{kStepNotice};  // lock-free: read in the handler

void on_signal(int sig) {
  // The interrupted thread may be between a failed call and reading errno for its message.
  const int saved_errno = errno;
  // The first signal claims the flag; any later one, even on another thread at the same moment,
  // ends the process now, as the default action would.
  if (int none = 0; !g_received.compare_exchange_strong(none, sig)) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  // Only async-signal-safe calls here: write(2) and strlen, not stdio.
  const char* notice = g_notice.load();
  ssize_t ignored = ::write(STDERR_FILENO, notice, std::strlen(notice));
  (void)ignored;
  errno = saved_errno;
}

}  // namespace

StopOnSignal::StopOnSignal() {
  check(!g_installed.exchange(true), "signals", "StopOnSignal is already installed");
  g_received = 0;
  g_notice = kStepNotice;
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // file writes and waits go on where the signal met them
  sigaction(SIGINT, &action, &old_int_);
  sigaction(SIGTERM, &action, &old_term_);
  // A closed terminal stops the run as SIGTERM does, unless the run ignores it (nohup).
  sigaction(SIGHUP, nullptr, &old_hup_);
  if (old_hup_.sa_handler != SIG_IGN) sigaction(SIGHUP, &action, nullptr);
}

StopOnSignal::~StopOnSignal() {
  sigaction(SIGINT, &old_int_, nullptr);
  sigaction(SIGTERM, &old_term_, nullptr);
  sigaction(SIGHUP, &old_hup_, nullptr);
  g_installed = false;
}

int StopOnSignal::received() {
  return g_received;
}

void StopOnSignal::set_notice(const char* notice) {
  g_notice = notice;
}

}  // namespace equivae
