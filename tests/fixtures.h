#pragma once
// Fixtures shared by the model tests: the bundled digits, the tiny configurations whose
// plans are small enough for finite differences, and quiet training options.
#include <cstdint>

#include "model/config.h"
#include "model/idx_dataset.h"
#include "model/trainer.h"

namespace equivae::test {

// The first n of the bundled 10,000 digits.
inline Dataset bundled_digits(int64_t n) {
  return load_idx(EQUIVAE_SOURCE_DIR "/data/mnist10k-images-idx3-ubyte.gz",
                  EQUIVAE_SOURCE_DIR "/data/mnist10k-labels-idx1-ubyte.gz")
      .slice(0, n);
}

// The same, loaded once per test binary and kept: the digits several tests of a file share.
template <int64_t N>
const Dataset& kept_digits() {
  static const Dataset data = bundled_digits(N);
  return data;
}

// Training options for a test run: `epochs` epochs, no progress lines.
inline TrainOptions quiet_options(int epochs) {
  TrainOptions options;
  options.epochs = epochs;
  options.quiet = true;
  return options;
}

// Supervised: H = 24, d_r = 3, d_v = 4, k = 4 (B = 40), m_max = 3.
inline EquiVaeConfig tiny_config() {
  EquiVaeConfig c;
  c.hidden = 24;
  c.latent_r = 3;
  c.latent_v = 4;
  c.k = 4;
  c.m_max = 3;
  c.seed = 7;
  return c;
}

// Semi-supervised: H = 20, d_r = 3, d_v = 2, k = 3, U = 4 (70 rows), weights ≠ 1.
inline EquiVaeConfig tiny_semi_config() {
  EquiVaeConfig c;
  c.hidden = 20;
  c.latent_r = 3;
  c.latent_v = 2;
  c.k = 3;
  c.m_max = 2;
  c.unlabelled = 4;
  c.unlabelled_weight = 0.7;
  c.classifier_weight = 1.3;
  c.seed = 5;
  return c;
}

}  // namespace equivae::test
