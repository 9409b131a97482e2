#pragma once
// The paper's distance classifier (§3.1): p(y|x) ∝ exp(−‖f_inv(x) − r̄_y‖²), with
// r̄_y the mean f_inv over the training examples of class y.
#include <cstdint>
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

// ---- Latents of a data set, for the figures and tools/embed.

// r̄_y: the mean f_inv over data's images of each class y, [classes, d_r] (from the
// distance classifier's centroids); throws Error naming data when a class has no image.
template <class T>
std::vector<float> class_centroids(EquiVae<T>& model, const Dataset& data);

// The invariant latent as training forms it (eq. 2): for each row i, the mean of
// finv[n, dim] over m other rows of the same class, drawn from Philox(seed) (all others
// when the class has no more than m). Rows alone in their class keep their own f_inv.
std::vector<float> pooled_invariants(const std::vector<float>& finv,
                                     const std::vector<int32_t>& labels, int dim, int m,
                                     uint64_t seed);

// Means of q(v | r_i, x_i) for every image of data and r[n, d_r] → [n, d_v].
template <class T>
std::vector<float> equivariant_means(EquiVae<T>& model, const Dataset& data,
                                     const std::vector<float>& r);

}  // namespace equivae
