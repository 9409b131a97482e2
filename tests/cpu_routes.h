#pragma once
// The float routes of the CPU's dense GEMMs and convolutions that this build has
// (kernels/cpu/ops.h: GemmRoute, ConvRoute), for tests that run on each.
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cpu/ops.h"

namespace equivae::test {

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

// The float convolutions' paths: im2col with its GEMMs on each GEMM route, and oneDNN's
// convolutions.
struct ConvPath {
  cpu::ConvRoute conv;
  cpu::GemmRoute gemm;
  std::string name() const {
    return conv == cpu::ConvRoute::im2col ? std::string("im2col + ") + route_name(gemm)
                                          : route_name(conv);
  }
};
inline std::vector<ConvPath> conv_paths() {
  std::vector<ConvPath> paths;
  for (cpu::GemmRoute gemm : gemm_routes()) paths.push_back({cpu::ConvRoute::im2col, gemm});
  if (cpu::onednn_built()) paths.push_back({cpu::ConvRoute::onednn, cpu::GemmRoute::automatic});
  return paths;
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

// Sets both routes of a convolution path for a scope.
struct ConvPathScope {
  explicit ConvPathScope(const ConvPath& path) : conv(path.conv), gemm(path.gemm) {}
  RouteScope<cpu::ConvRoute> conv;
  RouteScope<cpu::GemmRoute> gemm;
};

}  // namespace equivae::test
