#pragma once
// How long OpenMP's idle threads spin before they sleep, for the tools.
//
// libgomp (GCC's OpenMP runtime, under the CPU backend, OpenBLAS and oneDNN alike) lets a
// thread that waits at a barrier spin for up to 300,000 rounds before it sleeps, unless
// OMP_WAIT_POLICY or GOMP_SPINCOUNT say otherwise. On cores busy with other work that spin
// holds a core the awaited thread needs: on the 2-core development machine the supervised
// step took 15–17 ms beside one busy process and 22–363 ms beside another OpenMP job, against
// 9–12 ms with GOMP_SPINCOUNT=1000, and 4.7–4.9 ms idle either way (OMP_WAIT_POLICY=passive:
// 9–10 ms loaded, but 7.0–7.2 ms idle). libgomp reads these variables once, when it loads,
// before main, and before libc has set up the environment that an executable's
// .preinit_array could change: so a tool runs itself again with the short spin set.

namespace equivae {

// The spin count the tools run with when the user set neither variable.
inline constexpr const char* kToolOpenmpSpinCount = "1000";

// Unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set (the user's choice stands), or the process
// runs under valgrind (whose exec'd program would run without it), sets GOMP_SPINCOUNT and
// replaces the process by the same program with the same argv (about 70 ms, the binary's
// start-up, on the development machine). Returns only when it does not: then the run goes on
// as it is.
void rerun_with_short_openmp_spin(char** argv);

}  // namespace equivae
