#pragma once
// Fixtures of the convolutional model's tests: made-up colour images (SVHN-shaped, NCHW
// planes in [0, 1]) whose class shows as a coloured blob, and tiny conv configurations.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/philox.h"
#include "model/config.h"
#include "model/idx_dataset.h"

namespace equivae::test {

// n images of channels × size × size, labels i mod classes: on a grey background with pixel
// noise, class y is a blob of its own colour at its own place (around a circle), with a jitter
// of its position and size per image. Deterministic in seed.
inline Dataset coloured_blobs(int64_t n, int channels, int size, int classes = 10,
                              uint64_t seed = 1) {
  Dataset d;
  d.n = n;
  d.rows = d.cols = size;
  d.channels = channels;
  d.dim = channels * size * size;
  d.num_classes = classes;
  d.source = "coloured blobs " + std::to_string(channels) + "x" + std::to_string(size) + "x" +
             std::to_string(size);
  d.images.resize(size_t(n) * d.dim);
  d.labels.resize(n);
  const double pi = 3.14159265358979323846;
  for (int64_t i = 0; i < n; ++i) {
    const int y = int(i % classes);
    d.labels[i] = y;
    auto u = [&](uint32_t what) { return philox_uniform<double>(seed, uint64_t(i), 0, what); };
    const double angle = 2 * pi * y / classes;
    const double cx = size * (0.5 + 0.28 * std::cos(angle) + 0.06 * (u(0) - 0.5));
    const double cy = size * (0.5 + 0.28 * std::sin(angle) + 0.06 * (u(1) - 0.5));
    const double radius = size * (0.16 + 0.04 * u(2));
    for (int c = 0; c < channels; ++c) {
      const double colour = 0.5 + 0.45 * std::cos(2 * pi * (double(y) / classes + double(c) / 3));
      for (int py = 0; py < size; ++py)
        for (int px = 0; px < size; ++px) {
          const double r2 = ((px - cx) * (px - cx) + (py - cy) * (py - cy)) / (radius * radius);
          const double blob = std::exp(-r2);
          const uint32_t pixel = uint32_t((c * size + py) * size + px);
          const double noise = 0.08 * (philox_uniform<double>(seed, uint64_t(i), 1, pixel) - 0.5);
          const double value = 0.35 * (1 - blob) + colour * blob + noise;
          d.images[size_t(i) * d.dim + pixel] = float(std::clamp(value, 0.0, 1.0));
        }
    }
  }
  return d;
}

// Conv trunks on 3×8×8 images (channels 3, 6, 12 → 12 features), Gaussian likelihood,
// H = 12, d_r = 3, d_v = 2, k = 3 (B = 30), m_max = 2: small enough for finite differences.
// σ₀ = 0.5 keeps the loss near 100 nats, where central differences in double resolve
// gradients of 1e-6 (at σ₀ = 0.1 the loss is ~10⁴ and its round-off swamps them).
inline EquiVaeConfig tiny_conv_config() {
  EquiVaeConfig c;
  c.channels = 3;
  c.height = c.width = 8;
  c.input_dim = 3 * 8 * 8;
  c.architecture = Architecture::conv;
  c.conv_width = 3;
  c.likelihood = Likelihood::gaussian;
  c.gaussian_initial_sigma = 0.5;
  c.hidden = 12;
  c.latent_r = 3;
  c.latent_v = 2;
  c.k = 3;
  c.m_max = 2;
  c.seed = 11;
  return c;
}

// The same, semi-supervised: U = 3 (60 rows through encoder and decoder), weights ≠ 1.
inline EquiVaeConfig tiny_conv_semi_config() {
  EquiVaeConfig c = tiny_conv_config();
  c.unlabelled = 3;
  c.unlabelled_weight = 0.7;
  c.classifier_weight = 1.3;
  c.seed = 12;
  return c;
}

}  // namespace equivae::test
