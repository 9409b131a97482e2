#pragma once
// The OpenMP team the CPU backend plans its work for, made the team every parallel region gets.
//
// oneDNN's primitives (each made for a thread count) and OpenBLAS's OpenMP build split their
// work for the team they ask for and take it as given: a smaller team leaves part of a GEMM
// undone (training then goes silently wrong: 89% test error instead of 65% after an epoch) or
// has OpenBLAS wait for it forever. OMP_DYNAMIC=true, an OMP_THREAD_LIMIT below the count and
// OMP_MAX_ACTIVE_LEVELS=0 each hand out smaller teams; an OMP_NUM_THREADS of 100,000 crashes
// libgomp. So the backend runs without dynamic teams, with one active level at least, and
// with a count within the thread limit and kMaxThreads.

#include <string>

namespace equivae {

inline constexpr int kMaxThreads = 1024;  // --threads' bound too

struct OpenmpTeam {
  int threads = 1;   // what every parallel region of the backend now gets
  std::string note;  // why it is less than asked for ("" when it is not)
};

// requested > 0: that many threads; 0: OpenMP's default (OMP_NUM_THREADS, else every core).
// Sets OpenMP's and OpenBLAS's thread counts for the calling thread's later parallel regions.
OpenmpTeam settle_openmp_team(int requested);

}  // namespace equivae
