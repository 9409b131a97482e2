#include "model/evaluate.h"

#include <algorithm>
#include <limits>
#include <map>
#include <string>

#include "kernels/philox.h"
#include "runtime/error.h"

namespace equivae {

DistanceClassifier DistanceClassifier::fit(const std::vector<float>& embeddings,
                                           const std::vector<int32_t>& labels, int classes,
                                           int dim) {
  DistanceClassifier c;
  c.classes = classes;
  c.dim = dim;
  c.centroids.assign(size_t(classes) * dim, 0.0);
  std::vector<int64_t> counts(classes, 0);
  for (size_t i = 0; i < labels.size(); ++i) {
    const int y = labels[i];
    check(y >= 0 && y < classes, "distance classifier",
          "label " + std::to_string(y) + " of training example " + std::to_string(i) +
              " is outside the model's " + std::to_string(classes) + " classes");
    ++counts[y];
    for (int j = 0; j < dim; ++j) c.centroids[size_t(y) * dim + j] += embeddings[i * dim + j];
  }
  for (int y = 0; y < classes; ++y) {
    check(counts[y] > 0, "distance classifier",
          "class " + std::to_string(y) + " has no training example to form its centroid");
    for (int j = 0; j < dim; ++j) c.centroids[size_t(y) * dim + j] /= double(counts[y]);
  }
  return c;
}

int DistanceClassifier::predict(const float* embedding) const {
  int best = 0;
  double best_distance = std::numeric_limits<double>::infinity();
  for (int y = 0; y < classes; ++y) {
    double d2 = 0;
    for (int j = 0; j < dim; ++j) {
      const double diff = double(embedding[j]) - centroids[size_t(y) * dim + j];
      d2 += diff * diff;
    }
    if (d2 < best_distance) best_distance = d2, best = y;
  }
  return best;
}

double DistanceClassifier::error(const std::vector<float>& embeddings,
                                 const std::vector<int32_t>& labels) const {
  int64_t wrong = 0;
  for (size_t i = 0; i < labels.size(); ++i) wrong += predict(&embeddings[i * dim]) != labels[i];
  return labels.empty() ? 0.0 : double(wrong) / double(labels.size());
}

template <class T>
std::vector<float> embed_dataset(EquiVae<T>& model, const Dataset& data) {
  std::vector<float> out(size_t(data.n) * model.config().latent_r);
  model.embed(data, out.data());
  return out;
}

template <class T>
double distance_classifier_error(EquiVae<T>& model, const Dataset& train, const Dataset& test) {
  const int classes = model.config().classes, dim = model.config().latent_r;
  const DistanceClassifier classifier =
      DistanceClassifier::fit(embed_dataset(model, train), train.labels, classes, dim);
  return classifier.error(embed_dataset(model, test), test.labels);
}

template <class T>
double classifier_error(EquiVae<T>& model, const Dataset& data) {
  std::vector<int32_t> predicted(data.n);
  model.classify(data, predicted.data());
  int64_t wrong = 0;
  for (int64_t i = 0; i < data.n; ++i) wrong += predicted[i] != data.labels[i];
  return data.n ? double(wrong) / double(data.n) : 0.0;
}

template <class T>
std::vector<float> class_centroids(EquiVae<T>& model, const Dataset& data) {
  const int classes = model.config().classes, dim = model.config().latent_r;
  for (int32_t y : data.labels)
    check(y >= 0 && y < classes, data.source,
          "label " + std::to_string(y) + " is outside the model's " + std::to_string(classes) +
              " classes");
  DistanceClassifier fitted;
  try {
    fitted = DistanceClassifier::fit(embed_dataset(model, data), data.labels, classes, dim);
  } catch (const Error& e) {
    throw Error(data.source, e.what());
  }
  return std::vector<float>(fitted.centroids.begin(), fitted.centroids.end());
}

std::vector<float> pooled_invariants(const std::vector<float>& finv,
                                     const std::vector<int32_t>& labels, int dim, int m,
                                     uint64_t seed) {
  check(m >= 1, "pooling", "m must be at least 1, got " + std::to_string(m));
  const size_t n = labels.size();
  check(finv.size() == n * size_t(dim), "pooling", "embeddings and labels differ in count");
  std::map<int32_t, std::vector<uint32_t>> members;  // class → its rows
  for (size_t i = 0; i < n; ++i) members[labels[i]].push_back(uint32_t(i));
  std::vector<float> pooled(n * size_t(dim));
  std::vector<uint32_t> others;
  for (size_t i = 0; i < n; ++i) {
    const std::vector<uint32_t>& same = members[labels[i]];
    others.clear();
    for (uint32_t j : same)
      if (j != i) others.push_back(j);
    if (others.empty()) others.push_back(uint32_t(i));
    // A partial Fisher-Yates shuffle picks min(m, |others|) distinct rows.
    const size_t take = std::min(others.size(), size_t(m));
    for (size_t t = 0; t < take; ++t) {
      const size_t pick =
          t + philox_below(uint32_t(others.size() - t), seed, 0, uint32_t(i), uint32_t(t));
      std::swap(others[t], others[pick]);
    }
    float* out = pooled.data() + i * dim;
    for (size_t t = 0; t < take; ++t)
      for (int j = 0; j < dim; ++j) out[j] += finv[size_t(others[t]) * dim + j] / float(take);
  }
  return pooled;
}

template <class T>
std::vector<float> equivariant_means(EquiVae<T>& model, const Dataset& data,
                                     const std::vector<float>& r) {
  check(r.size() == size_t(data.n) * model.config().latent_r, data.source,
        "needs one invariant latent per image");
  std::vector<float> v(size_t(data.n) * model.config().latent_v);
  model.encode_v(data.images.data(), r.data(), data.n, v.data());
  return v;
}

template std::vector<float> class_centroids<float>(EquiVae<float>&, const Dataset&);
template std::vector<float> class_centroids<double>(EquiVae<double>&, const Dataset&);
template std::vector<float> equivariant_means<float>(EquiVae<float>&, const Dataset&,
                                                     const std::vector<float>&);
template std::vector<float> equivariant_means<double>(EquiVae<double>&, const Dataset&,
                                                      const std::vector<float>&);
template double classifier_error<float>(EquiVae<float>&, const Dataset&);
template double classifier_error<double>(EquiVae<double>&, const Dataset&);
template std::vector<float> embed_dataset<float>(EquiVae<float>&, const Dataset&);
template std::vector<float> embed_dataset<double>(EquiVae<double>&, const Dataset&);
template double distance_classifier_error<float>(EquiVae<float>&, const Dataset&, const Dataset&);
template double distance_classifier_error<double>(EquiVae<double>&, const Dataset&, const Dataset&);

}  // namespace equivae
