#include "runtime/openmp_threads.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>

namespace equivae {

OpenmpTeam settle_openmp_team(int requested) {
  omp_set_dynamic(0);
  if (omp_get_max_active_levels() < 1) omp_set_max_active_levels(1);
  const int asked = std::max(1, requested > 0 ? requested : omp_get_max_threads());
  // Where the count came from, for the note.
  const char* env = std::getenv("OMP_NUM_THREADS");
  const std::string source = requested > 0 ? "--threads " + std::to_string(asked)
                             : env         ? "OMP_NUM_THREADS=" + std::string(env)
                                           : "the " + std::to_string(asked) + " cores";
  OpenmpTeam team;
  team.threads = std::min(asked, kMaxThreads);
  if (const int limit = omp_get_thread_limit(); team.threads > limit) {
    team.threads = std::max(1, limit);
    team.note = "OMP_THREAD_LIMIT=" + std::to_string(limit) + " caps " + source + " at " +
                std::to_string(team.threads) + " thread" + (team.threads == 1 ? "" : "s");
  } else if (asked > kMaxThreads) {
    team.note = source + " is capped at " + std::to_string(kMaxThreads) + " threads";
  }
  omp_set_num_threads(team.threads);
  openblas_set_num_threads(team.threads);
  return team;
}

}  // namespace equivae
