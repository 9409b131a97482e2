#pragma once
// Central differences of a dense EquiVAE plan's loss (double) at probed parameters, against the
// gradients of its backward.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "model/equivae.h"

namespace equivae::test {

// Probes of every dense layer: `weights` spread elements of W (s · 7919 mod its size), then the
// bias element at b.size() / bias_divisor.
inline std::vector<size_t> dense_layer_probes(EquiVae<double>& model, size_t weights,
                                              size_t bias_divisor) {
  std::vector<size_t> probes;
  for (DenseLayer<double>* layer : model.all_layers()) {
    const size_t w0 = size_t(layer->W.data - model.parameters());
    const size_t b0 = size_t(layer->b.data - model.parameters());
    for (size_t s = 0; s < weights; ++s) probes.push_back(w0 + (s * 7919) % layer->W.size());
    probes.push_back(b0 + layer->b.size() / bias_divisor);
  }
  return probes;
}

struct FiniteDifferences {
  double worst = 0;  // largest |numeric − grads[p]| / (1e-4 + |numeric|)
  int nonzero = 0;   // probes whose numeric gradient exceeds 1e-9 in magnitude
};

// (loss(w + h) − loss(w − h)) / 2h at each probed parameter, the parameter restored after.
template <class Loss>
FiniteDifferences central_differences(EquiVae<double>& model, const std::vector<size_t>& probes,
                                      const std::vector<double>& grads, double h, Loss loss) {
  FiniteDifferences fd;
  for (size_t p : probes) {
    double& w = model.parameters()[p];
    const double saved = w;
    w = saved + h;
    const double up = loss();
    w = saved - h;
    const double down = loss();
    w = saved;
    const double numeric = (up - down) / (2 * h);
    fd.worst = std::max(fd.worst, std::fabs(numeric - grads[p]) / (1e-4 + std::fabs(numeric)));
    fd.nonzero += std::fabs(numeric) > 1e-9;
  }
  return fd;
}

}  // namespace equivae::test
