#pragma once
// What every tool does first and last: run itself with a short OpenMP spin
// (runtime/openmp_spin.h), parse its flags (or print its help), and turn an
// exception (equivae::Error names the file or flag at fault) into "NAME: error: ..." on
// stderr and exit status 1 — or, for a run stopped by Ctrl-C, SIGTERM or SIGHUP
// (Interrupted), "NAME: interrupted: ..." and 128 + the signal's number. SIGPIPE is ignored: a
// reader of stdout that goes away (| head) makes writes fail, which the tools survive, instead
// of ending a run silently.
#include <csignal>
#include <cstdio>
#include <exception>
#include <string>

#include "runtime/flags.h"
#include "runtime/interrupt.h"
#include "runtime/openmp_spin.h"

namespace equivae {

inline int run_tool(const char* name, int (*run)(int, char**), int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  rerun_with_short_openmp_spin(argv);
  try {
    return run(argc, argv);
  } catch (const Interrupted& e) {  // stopped on request: 128 + the signal, as a shell says
    std::fprintf(stderr, "%s: interrupted: %s\n", name, e.what());
    const int sig = StopOnSignal::received();
    return 128 + (sig != 0 ? sig : SIGINT);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", name, e.what());
    return 1;
  }
}

// Parses argv; with --help prints the help after `usage` and returns false (the tool exits 0).
inline bool parse_flags_or_help(Flags& flags, int argc, char** argv, const std::string& usage) {
  flags.parse(argc, argv);
  if (!flags.get_switch("help")) return true;
  std::printf("%s", flags.help(usage).c_str());
  return false;
}

}  // namespace equivae
