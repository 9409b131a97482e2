#pragma once
// What the convolutions' and the GEMMs' oneDNN routes share: the process's CPU engine, and the
// rule that a primitive oneDNN can offer only as its reference loops (far slower than the other
// route: a CPU without AVX2, say) is not taken. Only compiled with EQUIVAE_HAVE_ONEDNN.
#include <oneapi/dnnl/dnnl.hpp>
#include <string>

namespace equivae::cpu::onednn {

inline dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// Thrown by fast(): the caller falls back to its other route.
struct ReferenceOnly {};
template <class PrimitiveDesc>
const PrimitiveDesc& fast(const PrimitiveDesc& pd) {
  if (std::string(pd.impl_info_str()).rfind("ref", 0) == 0) throw ReferenceOnly{};
  return pd;
}

}  // namespace equivae::cpu::onednn
