#include "model/divergence.h"

#include <cmath>
#include <cstdio>
#include <vector>

namespace equivae {
namespace {

// %g of a value; NaN as "nan" whatever its sign bit.
std::string number(double value) {
  if (std::isnan(value)) return "nan";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", value);
  return buf;
}

// "(element i of n = value)" for the first non-finite element, else empty.
template <class V>
std::string first_bad_element(const V* data, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (std::isfinite(double(data[i]))) continue;
    return " (element " + std::to_string(i) + " of " + std::to_string(n) + " = " +
           number(double(data[i])) + ")";
  }
  return {};
}

}  // namespace

std::string non_finite_loss_terms(const StepMetrics& m) {
  std::string out;
  auto term = [&](const char* name, double value) {
    if (std::isfinite(value)) return;
    if (!out.empty()) out += ", ";
    out += name + std::string(" = ") + number(value);
  };
  term("reconstruction log p(x|r,v)", m.recon);
  term("KL", m.kl);
  term("classifier -log q(y|x)", m.classifier_nll);
  term("unlabelled bound L_unlab", m.unlabelled_bound);
  return out;
}

template <class T>
std::string first_non_finite_tensor(EquiVae<T>& model) {
  // The checkpoint's tensors: every layer's weight and bias in all_layers() order, then the
  // Adam moments.
  const Checkpoint ckpt = model.to_checkpoint();
  const std::vector<DenseLayer<T>*> layers = model.all_layers();
  const size_t parameter_tensors = 2 * layers.size();
  for (size_t i = 0; i < parameter_tensors && i < ckpt.tensors.size(); ++i) {
    const NamedTensor& t = ckpt.tensors[i];
    const std::string bad = first_bad_element(t.data.data(), t.data.size());
    if (!bad.empty()) return "parameter " + t.name + bad;
  }
  std::vector<T> host;
  for (size_t l = 0; l < layers.size(); ++l) {
    const Tensor<T>* grads[2] = {&layers[l]->dW, &layers[l]->db};
    for (int g = 0; g < 2; ++g) {
      host.resize(grads[g]->size());
      model.backend().download(host.data(), grads[g]->data, host.size() * sizeof(T));
      const std::string bad = first_bad_element(host.data(), host.size());
      if (!bad.empty()) return "gradient of " + ckpt.tensors[2 * l + g].name + bad;
    }
  }
  for (size_t i = parameter_tensors; i < ckpt.tensors.size(); ++i) {
    const NamedTensor& t = ckpt.tensors[i];
    const std::string bad = first_bad_element(t.data.data(), t.data.size());
    if (!bad.empty()) return "Adam moment " + t.name + bad;
  }
  return {};
}

template std::string first_non_finite_tensor<float>(EquiVae<float>&);
template std::string first_non_finite_tensor<double>(EquiVae<double>&);

}  // namespace equivae
