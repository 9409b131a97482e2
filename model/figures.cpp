#include "model/figures.h"

#include <algorithm>
#include <string>

#include "kernels/philox.h"
#include "model/evaluate.h"
#include "runtime/error.h"

namespace equivae {
namespace {

// Philox streams (the counter's step word) of the figures' random draws.
constexpr uint64_t kPriorStream = 0xF164'0001, kInterpolationStream = 0xF164'0002,
                   kStyleStream = 0xF164'0003;

std::vector<float> repeat_rows(const float* row, int dim, int times) {
  std::vector<float> out(size_t(times) * dim);
  for (int i = 0; i < times; ++i) std::copy(row, row + dim, out.begin() + size_t(i) * dim);
  return out;
}

}  // namespace

Tiles side_by_side(const std::vector<Tiles>& panels, float fill) {
  check(!panels.empty(), "figure", "no panels to place side by side");
  Tiles out;
  out.rows = panels.front().rows;
  out.dim = panels.front().dim;
  for (const Tiles& p : panels) {
    check(p.rows == out.rows && p.dim == out.dim, "figure", "panels differ in height or tile size");
    out.cols += p.cols;
  }
  out.cols += int(panels.size()) - 1;
  out.pixels.assign(size_t(out.rows) * out.cols * out.dim, fill);
  int col0 = 0;
  for (const Tiles& p : panels) {
    for (int i = 0; i < p.rows; ++i)
      for (int j = 0; j < p.cols; ++j)
        std::copy(p.tile(i, j), p.tile(i, j) + p.dim, out.tile(i, col0 + j));
    col0 += p.cols + 1;
  }
  return out;
}

template <class T>
FigureMaker<T>::FigureMaker(EquiVae<T>& model, const Dataset& data, uint64_t seed)
    : model_(model),
      data_(data),
      seed_(seed),
      C_(model.config().classes),
      dr_(model.config().latent_r),
      dv_(model.config().latent_v),
      D_(model.config().input_dim) {
  check(data.dim == D_, data.source,
        "images have " + std::to_string(data.dim) + " values, the model expects " +
            std::to_string(D_));
  by_class_.resize(C_);
  for (int64_t i = 0; i < data.n; ++i) {
    const int32_t y = data.labels[i];
    check(y >= 0 && y < C_, data.source,
          "label " + std::to_string(y) + " is outside the model's " + std::to_string(C_) +
              " classes");
    by_class_[y].push_back(i);
  }
  for (int y = 0; y < C_; ++y)
    check(by_class_[y].size() >= 2, data.source,
          "class " + std::to_string(y) + " has " + std::to_string(by_class_[y].size()) +
              " images; the figures need at least 2 of every class");
  centroids_ = class_centroids(model, data);
}

template <class T>
std::vector<int64_t> FigureMaker<T>::pick(int y, int count, uint64_t stream) {
  std::vector<int64_t> pool = by_class_[y];
  for (int t = 0; t < count; ++t) {  // partial Fisher-Yates: count distinct images
    const size_t j =
        t + philox_below(uint32_t(pool.size() - t), seed_, stream, uint32_t(y), uint32_t(t));
    std::swap(pool[t], pool[j]);
  }
  pool.resize(count);
  return pool;
}

template <class T>
Tiles FigureMaker<T>::decode_tiles(int rows, int cols, const std::vector<float>& r,
                                   const std::vector<float>& v) {
  Tiles tiles;
  tiles.rows = rows;
  tiles.cols = cols;
  tiles.dim = D_;
  tiles.pixels.resize(size_t(rows) * cols * D_);
  model_.decode(r.data(), v.data(), int64_t(rows) * cols, tiles.pixels.data());
  return tiles;
}

template <class T>
Tiles FigureMaker<T>::prior_samples(int samples) {
  check(samples >= 1, "prior samples", "needs at least one sample per class");
  std::vector<float> r, v(size_t(C_) * samples * dv_);
  for (int y = 0; y < C_; ++y) {
    const std::vector<float> rows = repeat_rows(&centroids_[size_t(y) * dr_], dr_, samples);
    r.insert(r.end(), rows.begin(), rows.end());
  }
  for (size_t row = 0; row < size_t(C_) * samples; ++row)
    for (int j = 0; j < dv_; ++j)
      v[row * dv_ + j] = philox_normal<float>(seed_, kPriorStream, uint32_t(row), uint32_t(j));
  return decode_tiles(C_, samples, r, v);
}

template <class T>
Tiles FigureMaker<T>::interpolations(int steps) {
  check(steps >= 2, "interpolations", "needs at least 2 steps (both ends)");
  const int cols = steps + 2;
  Tiles out;
  out.rows = C_;
  out.cols = cols;
  out.dim = D_;
  out.pixels.resize(size_t(C_) * cols * D_);
  for (int y = 0; y < C_; ++y) {
    const std::vector<int64_t> ab = pick(y, 2, kInterpolationStream);
    const float* ry = &centroids_[size_t(y) * dr_];
    std::vector<float> images(size_t(2) * D_), r = repeat_rows(ry, dr_, 2), ends(size_t(2) * dv_);
    for (int e = 0; e < 2; ++e)
      std::copy(data_.image(ab[e]), data_.image(ab[e]) + D_, images.begin() + size_t(e) * D_);
    model_.encode_v(images.data(), r.data(), 2, ends.data());
    std::vector<float> v(size_t(steps) * dv_);
    for (int s = 0; s < steps; ++s) {
      const float t = float(s) / float(steps - 1);
      for (int j = 0; j < dv_; ++j)
        v[size_t(s) * dv_ + j] = (1 - t) * ends[j] + t * ends[size_t(dv_) + j];
    }
    const Tiles row = decode_tiles(1, steps, repeat_rows(ry, dr_, steps), v);
    std::copy(images.begin(), images.begin() + D_, out.tile(y, 0));
    std::copy(row.pixels.begin(), row.pixels.end(), out.tile(y, 1));
    std::copy(images.begin() + D_, images.end(), out.tile(y, cols - 1));
  }
  return out;
}

template <class T>
Tiles FigureMaker<T>::style_swap() {
  // One image x^j per class and its style v^j = mean q(v | r̄_j, x^j).
  std::vector<float> sources(size_t(C_) * D_), styles(size_t(C_) * dv_);
  for (int j = 0; j < C_; ++j) {
    const int64_t index = pick(j, 1, kStyleStream)[0];
    std::copy(data_.image(index), data_.image(index) + D_, sources.begin() + size_t(j) * D_);
  }
  model_.encode_v(sources.data(), centroids_.data(), C_, styles.data());
  std::vector<float> r, v;
  for (int i = 0; i < C_; ++i) {
    const std::vector<float> rows = repeat_rows(&centroids_[size_t(i) * dr_], dr_, C_);
    r.insert(r.end(), rows.begin(), rows.end());
    v.insert(v.end(), styles.begin(), styles.end());
  }
  const Tiles swapped = decode_tiles(C_, C_, r, v);
  Tiles out;
  out.rows = C_ + 1;
  out.cols = C_;
  out.dim = D_;
  out.pixels = sources;
  out.pixels.insert(out.pixels.end(), swapped.pixels.begin(), swapped.pixels.end());
  return out;
}

template <class T>
Tiles FigureMaker<T>::invariant_grid(int n) {
  check(dr_ == 2, "invariant grid",
        "needs a 2-D invariant latent (train with --latent 2); this model has d_r = " +
            std::to_string(dr_));
  check(n >= 2, "invariant grid", "needs at least 2 points a side");
  const std::vector<float> finv = embed_dataset(model_, data_);  // [N, 2]
  float low[2], high[2];
  for (int c = 0; c < 2; ++c) {
    std::vector<float> values(size_t(data_.n));
    for (int64_t i = 0; i < data_.n; ++i) values[i] = finv[size_t(i) * 2 + c];
    std::sort(values.begin(), values.end());
    low[c] = values[size_t(0.01 * double(values.size() - 1))];
    high[c] = values[size_t(0.99 * double(values.size() - 1) + 0.5)];
  }
  std::vector<float> r(size_t(n) * n * 2), v(size_t(n) * n * dv_, 0.0f);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      float* p = &r[(size_t(i) * n + j) * 2];
      p[0] = low[0] + (high[0] - low[0]) * float(j) / float(n - 1);
      p[1] = high[1] - (high[1] - low[1]) * float(i) / float(n - 1);
    }
  }
  return decode_tiles(n, n, r, v);
}

template <class T>
Tiles FigureMaker<T>::equivariant_grid(int y, int n, double extent) {
  check(dv_ == 2, "equivariant grid",
        "needs a 2-D equivariant latent (train with --latent 2); this model has d_v = " +
            std::to_string(dv_));
  check(y >= 0 && y < C_, "equivariant grid", "class " + std::to_string(y) + " out of range");
  check(n >= 2 && extent > 0, "equivariant grid", "needs at least 2 points a side, extent > 0");
  const std::vector<float> r = repeat_rows(&centroids_[size_t(y) * dr_], dr_, n * n);
  std::vector<float> v(size_t(n) * n * 2);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      float* p = &v[(size_t(i) * n + j) * 2];
      p[0] = float(-extent + 2 * extent * j / (n - 1));
      p[1] = float(extent - 2 * extent * i / (n - 1));
    }
  }
  return decode_tiles(n, n, r, v);
}

template class FigureMaker<float>;
template class FigureMaker<double>;

}  // namespace equivae
