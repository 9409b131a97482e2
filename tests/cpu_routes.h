#pragma once
// The float routes of the CPU's convolutions and dense GEMMs that this build has
// (kernels/cpu/ops.h: ConvRoute, GemmRoute), for tests that run on each.
#include <type_traits>
#include <vector>

#include "kernels/cpu/ops.h"

namespace equivae::test {

inline std::vector<cpu::ConvRoute> conv_routes() {
  if (cpu::onednn_built()) return {cpu::ConvRoute::im2col, cpu::ConvRoute::onednn};
  return {cpu::ConvRoute::im2col};
}
inline std::vector<cpu::GemmRoute> gemm_routes() {
  if (cpu::onednn_built()) return {cpu::GemmRoute::openblas, cpu::GemmRoute::onednn};
  return {cpu::GemmRoute::openblas};
}
inline const char* route_name(cpu::ConvRoute route) {
  return route == cpu::ConvRoute::im2col   ? "im2col"
         : route == cpu::ConvRoute::onednn ? "onednn"
                                           : "auto";
}
inline const char* route_name(cpu::GemmRoute route) {
  return route == cpu::GemmRoute::openblas ? "openblas"
         : route == cpu::GemmRoute::onednn ? "onednn"
                                           : "auto";
}

// Sets the process's route for a scope; automatic again after it.
template <class Route>
struct RouteScope {
  explicit RouteScope(Route route) { set(route); }
  ~RouteScope() { set(Route::automatic); }
  static void set(Route route) {
    if constexpr (std::is_same_v<Route, cpu::ConvRoute>)
      cpu::set_conv_route(route);
    else
      cpu::set_gemm_route(route);
  }
};

}  // namespace equivae::test
