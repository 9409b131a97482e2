#pragma once
// The float GEMM routes this build has (kernels/cpu/ops.h: GemmRoute), for tests that run on each.
#include <vector>

#include "kernels/cpu/ops.h"

namespace equivae::test {

inline std::vector<cpu::GemmRoute> gemm_routes() {
  if (cpu::onednn_built()) return {cpu::GemmRoute::openblas, cpu::GemmRoute::onednn};
  return {cpu::GemmRoute::openblas};
}
inline const char* gemm_route_name(cpu::GemmRoute route) {
  return route == cpu::GemmRoute::openblas ? "openblas"
         : route == cpu::GemmRoute::onednn ? "onednn"
                                           : "auto";
}
// Sets the process's GEMM route for a scope.
struct GemmRouteScope {
  explicit GemmRouteScope(cpu::GemmRoute route) { cpu::set_gemm_route(route); }
  ~GemmRouteScope() { cpu::set_gemm_route(cpu::GemmRoute::automatic); }
};

}  // namespace equivae::test
