#pragma once
// The paper's generative figures (§3.1, Figures 4 and 5) as tiles of pixel means decoded by
// a trained model; runtime/image_grid.h lays them out and tools/figures writes the PNGs.
// Every figure draws from one data set (the validation images in the paper) and is
// deterministic in the seed: random images and prior samples come from Philox(seed).
//
//   r̄_y  = mean f_inv over the data set's images of class y (Fig. 4's fixed r_y)
//   v(x) = mean of q(v | r̄_y, x) for an image x of class y
#include <cstdint>
#include <vector>

#include "model/equivae.h"
#include "model/idx_dataset.h"

namespace equivae {

struct Tiles {
  int rows = 0, cols = 0, dim = 0;  // dim: pixels of one tile (channels × height × width)
  std::vector<float> pixels;        // [rows, cols, dim], values in [0, 1]
  float* tile(int i, int j) { return pixels.data() + (size_t(i) * cols + j) * dim; }
  const float* tile(int i, int j) const { return pixels.data() + (size_t(i) * cols + j) * dim; }
};

// Panels side by side, one column of fill between neighbours (all panels as tall).
Tiles side_by_side(const std::vector<Tiles>& panels, float fill);

template <class T>
class FigureMaker {
 public:
  // Throws Error naming data when a class has fewer than two images or the images do not
  // fit the model.
  FigureMaker(EquiVae<T>& model, const Dataset& data, uint64_t seed);

  // Fig. 4 left: row y holds `samples` decodes of (r̄_y, v), v ~ N(0, I).
  Tiles prior_samples(int samples);
  // Fig. 4 middle: row y interpolates v linearly between two images a, b of class y at r̄_y:
  // [x_a, decode(t = 0), ..., decode(t = 1), x_b] with `steps` decodes.
  Tiles interpolations(int steps);
  // Fig. 4 right: one image x^j per class; row 0 shows them, row 1 + i decodes
  // (r̄_i, v(x^j)) for every j: each row one class, each column one style.
  Tiles style_swap();
  // Fig. 5 middle (needs d_r = 2): decodes at v = 0 over an n × n grid of r spanning the
  // data set's f_inv (its 1st to 99th percentile in each coordinate); r_0 grows to the
  // right, r_1 upwards.
  Tiles invariant_grid(int n);
  // Fig. 5 right (needs d_v = 2): decodes at r̄_y over an n × n grid of v in
  // [−extent, extent]²; v_0 grows to the right, v_1 upwards.
  Tiles equivariant_grid(int y, int n, double extent);

  const std::vector<float>& centroids() const { return centroids_; }  // [C, d_r]

 private:
  std::vector<int64_t> pick(int y, int count, uint64_t stream);  // distinct images of class y
  Tiles decode_tiles(int rows, int cols, const std::vector<float>& r, const std::vector<float>& v);

  EquiVae<T>& model_;
  const Dataset& data_;
  uint64_t seed_;
  int C_, dr_, dv_, D_;
  std::vector<float> centroids_;                // r̄_y [C, d_r]
  std::vector<std::vector<int64_t>> by_class_;  // image indices of each class
};

}  // namespace equivae
