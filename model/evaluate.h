#pragma once
// The paper's distance classifier (§3.1): p(y|x) ∝ exp(−‖f_inv(x) − r̄_y‖²), with
// r̄_y the mean f_inv over the training examples of class y.
#include <vector>

#include "model/equivae.h"
#include "model/idx_dataset.h"

namespace equivae {

struct DistanceClassifier {
  int classes = 0, dim = 0;
  std::vector<double> centroids;  // [classes, dim] r̄_y

  // Centroids from embeddings[n, dim] and their labels; throws Error if a class has no example.
  static DistanceClassifier fit(const std::vector<float>& embeddings,
                                const std::vector<int32_t>& labels, int classes, int dim);
  int predict(const float* embedding) const;  // argmin_y ‖e − r̄_y‖²
  // Fraction of rows of embeddings[n, dim] whose prediction differs from labels.
  double error(const std::vector<float>& embeddings, const std::vector<int32_t>& labels) const;
};

// f_inv of every image of data: [n, d_r].
template <class T>
std::vector<float> embed_dataset(EquiVae<T>& model, const Dataset& data);

// Distance-classifier test error: centroids from train, error on test.
template <class T>
double distance_classifier_error(EquiVae<T>& model, const Dataset& train, const Dataset& test);

// Error of argmax q(y|x) (semi-supervised models) on data.
template <class T>
double classifier_error(EquiVae<T>& model, const Dataset& data);

}  // namespace equivae
