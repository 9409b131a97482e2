#include "model/evaluate.h"

#include <limits>
#include <string>

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
  model.embed(data.images.data(), data.n, out.data());
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
  model.classify(data.images.data(), data.n, predicted.data());
  int64_t wrong = 0;
  for (int64_t i = 0; i < data.n; ++i) wrong += predicted[i] != data.labels[i];
  return data.n ? double(wrong) / double(data.n) : 0.0;
}

template double classifier_error<float>(EquiVae<float>&, const Dataset&);
template double classifier_error<double>(EquiVae<double>&, const Dataset&);
template std::vector<float> embed_dataset<float>(EquiVae<float>&, const Dataset&);
template std::vector<float> embed_dataset<double>(EquiVae<double>&, const Dataset&);
template double distance_classifier_error<float>(EquiVae<float>&, const Dataset&, const Dataset&);
template double distance_classifier_error<double>(EquiVae<double>&, const Dataset&, const Dataset&);

}  // namespace equivae
