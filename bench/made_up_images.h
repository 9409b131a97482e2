#pragma once
// SVHN-shaped made-up images for the step benchmarks: n images of 3×32×32 uniform pixels
// (Philox), labels i mod 10. Timing only: nothing in them is learnable.
#include <cstdint>

#include "kernels/philox.h"
#include "model/idx_dataset.h"

namespace equivae {

inline Dataset made_up_svhn_images(int64_t n) {
  Dataset d;
  d.n = n;
  d.rows = d.cols = 32;
  d.channels = 3;
  d.dim = 3 * 32 * 32;
  d.source = "made-up 3x32x32 images";
  d.images.resize(size_t(d.n) * d.dim);
  d.labels.resize(d.n);
  for (int64_t i = 0; i < d.n; ++i) {
    d.labels[i] = int32_t(i % 10);
    for (int j = 0; j < d.dim; ++j)
      d.images[size_t(i) * d.dim + j] = philox_uniform<float>(5, uint64_t(i), 0, uint32_t(j));
  }
  return d;
}

}  // namespace equivae
