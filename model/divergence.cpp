#include "model/divergence.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

namespace equivae {

std::string format_number(double value) {
  if (std::isnan(value)) return "nan";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", value);
  return buf;
}

namespace {

// The index of the first non-finite element, n when there is none.
template <class V>
size_t first_bad_index(const V* data, size_t n) {
  size_t i = 0;
  while (i < n && std::isfinite(double(data[i]))) ++i;
  return i;
}

// " (element i of n = value)"
std::string element(size_t i, size_t n, double value) {
  return " (element " + std::to_string(i) + " of " + std::to_string(n) + " = " +
         format_number(value) + ")";
}

// " (element i of n = value)" for the first non-finite element, else empty.
template <class V>
std::string first_bad_element(const V* data, size_t n) {
  const size_t i = first_bad_index(data, n);
  return i < n ? element(i, n, double(data[i])) : std::string();
}

}  // namespace

std::string non_finite_loss_terms(const StepMetrics& m) {
  std::string out;
  auto term = [&](const char* name, double value) {
    if (std::isfinite(value)) return;
    if (!out.empty()) out += ", ";
    out += name + std::string(" = ") + format_number(value);
  };
  term("reconstruction log p(x|r,v)", m.recon);
  term("KL", m.kl);
  term("classifier -log q(y|x)", m.classifier_nll);
  term("unlabelled bound L_unlab", m.unlabelled_bound);
  return out;
}

namespace {
// No element NaN or infinite (all exponent bits set marks both): one pass without an early
// exit, which the compiler vectorises; the slow search runs only where this fails.
bool all_finite(const float* data, size_t n) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, data + i, sizeof bits);
    bad |= uint32_t((bits & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

// The first non-finite tensor of ckpt's [begin, end), named "<kind> <name> (element …)".
std::string first_bad_tensor(const Checkpoint& ckpt, size_t begin, size_t end,
                             const std::string& kind) {
  for (size_t i = begin; i < end && i < ckpt.tensors.size(); ++i) {
    const NamedTensor& t = ckpt.tensors[i];
    if (all_finite(t.data.data(), t.data.size())) continue;
    const std::string bad = first_bad_element(t.data.data(), t.data.size());
    if (!bad.empty()) return kind + " " + t.name + bad;
  }
  return {};
}

// The first non-finite element of Adam's moments (ckpt's tensors after the parameters'),
// named within the parameter it belongs to: "Adam moment adam.v of finv.0.weight (element 7
// of 401408 = inf)"; by its flat index where it lies in no parameter (alignment padding).
template <class T>
std::string first_bad_moment(const Checkpoint& ckpt, const std::vector<NamedParameter<T>>& params,
                             const T* parameter_region) {
  for (size_t k = params.size(); k < ckpt.tensors.size(); ++k) {
    const NamedTensor& t = ckpt.tensors[k];
    if (all_finite(t.data.data(), t.data.size())) continue;
    const size_t i = first_bad_index(t.data.data(), t.data.size());
    if (i == t.data.size()) continue;
    const double value = t.data[i];
    for (const NamedParameter<T>& p : params) {
      const size_t offset = size_t(p.value - parameter_region);
      if (i >= offset && i < offset + p.size)
        return "Adam moment " + t.name + " of " + p.name + element(i - offset, p.size, value);
    }
    return "Adam moment " + t.name + element(i, t.data.size(), value);
  }
  return {};
}
}  // namespace

std::string first_non_finite_state(const Checkpoint& ckpt, size_t parameters) {
  std::string bad = first_bad_tensor(ckpt, 0, parameters, "parameter");
  if (bad.empty()) bad = first_bad_tensor(ckpt, parameters, ckpt.tensors.size(), "Adam moment");
  return bad;
}

namespace {
// The first non-finite tensor of the parameters, then (with_gradients) the last backward's
// gradients, then Adam's moments.
template <class T>
std::string first_non_finite(EquiVae<T>& model, bool with_gradients) {
  // The checkpoint's tensors: the named parameters in order, then the Adam moments.
  const Checkpoint ckpt = model.to_checkpoint();
  const std::vector<NamedParameter<T>> params = model.named_parameters();
  if (std::string bad = first_bad_tensor(ckpt, 0, params.size(), "parameter"); !bad.empty())
    return bad;
  std::vector<T> host;
  if (with_gradients)
    for (const NamedParameter<T>& p : params) {
      host.resize(p.size);
      model.backend().download(host.data(), p.grad, host.size() * sizeof(T));
      const std::string bad = first_bad_element(host.data(), host.size());
      if (!bad.empty()) return "gradient of " + p.name + bad;
    }
  return first_bad_moment(ckpt, params, model.parameters());
}
}  // namespace

template <class T>
std::string first_non_finite_tensor(EquiVae<T>& model) {
  return first_non_finite(model, /*with_gradients=*/true);
}

template <class T>
std::string first_non_finite_state(EquiVae<T>& model) {
  return first_non_finite(model, /*with_gradients=*/false);
}

template std::string first_non_finite_tensor<float>(EquiVae<float>&);
template std::string first_non_finite_tensor<double>(EquiVae<double>&);
template std::string first_non_finite_state<float>(EquiVae<float>&);
template std::string first_non_finite_state<double>(EquiVae<double>&);

}  // namespace equivae
