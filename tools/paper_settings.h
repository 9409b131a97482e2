#pragma once
// The paper's settings and published test errors per data set (§3, Tables 1–2): what
// train_mnist, train_svhn and reproduce take as their defaults and compare against.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/idx_dataset.h"
#include "runtime/error.h"

namespace equivae {

struct PaperFigure {
  double mean = 0, se = 0;  // test error (%) ± standard error over 5 runs
};

struct PaperSettings {
  std::string name;    // "MNIST" or "SVHN"
  EquiVaeConfig base;  // architecture, likelihood, image geometry
  int supervised_epochs = 0;
  int latent_sup = 0, latent_semi = 0;  // both latents r and v
  int m_max_sup = 0, m_max_semi = 0;
  std::vector<int64_t> labels;         // Table 2's labelled-set sizes
  std::map<int64_t, int> semi_epochs;  // Table 2's epochs per labelled-set size
  // Table 1 (supervised): benchmark classifier, neural classifier on f_inv, distance on f_inv.
  PaperFigure benchmark, neural, distance;
  // Table 2 (semi-supervised), per labelled-set size: EquiVAE, and the benchmark classifier.
  std::map<int64_t, PaperFigure> semi_equivae, semi_benchmark;
};

inline PaperSettings mnist_paper() {
  PaperSettings p;
  p.name = "MNIST";
  p.supervised_epochs = 40;
  p.latent_sup = 16, p.latent_semi = 8;
  p.m_max_sup = 7, p.m_max_semi = 4;
  p.labels = {100, 600, 1000, 3000};
  p.semi_epochs = {{100, 20}, {600, 25}, {1000, 30}, {3000, 35}};
  p.benchmark = {0.84, 0.03}, p.neural = {0.82, 0.03}, p.distance = {0.82, 0.05};
  p.semi_equivae = {
      {100, {8.90, 0.70}}, {600, {3.99, 0.17}}, {1000, {3.34, 0.17}}, {3000, {2.23, 0.14}}};
  p.semi_benchmark = {
      {100, {21.91, 0.66}}, {600, {6.64, 0.35}}, {1000, {5.43, 0.31}}, {3000, {2.96, 0.11}}};
  return p;
}

inline PaperSettings svhn_paper() {
  PaperSettings p;
  p.name = "SVHN";
  p.base = svhn_config();
  p.supervised_epochs = 90;
  p.latent_sup = 16, p.latent_semi = 16;
  p.m_max_sup = 10, p.m_max_semi = 10;
  p.labels = {1000, 3000};
  p.semi_epochs = {{1000, 20}, {3000, 30}};
  p.benchmark = {10.04, 0.14}, p.neural = {11.97, 0.34}, p.distance = {12.30, 0.28};
  p.semi_equivae = {{1000, {37.95, 0.66}}, {3000, {24.95, 0.57}}};
  p.semi_benchmark = {{1000, {39.64, 1.47}}, {3000, {25.50, 0.91}}};
  return p;
}

// SVHN's settings for colour images, MNIST's otherwise.
inline PaperSettings paper_settings_for(int channels) {
  return channels == 3 ? svhn_paper() : mnist_paper();
}

// The paper's base configuration for the training images: a dense model takes any image
// size, a convolutional one the size it was built for.
inline EquiVaeConfig base_config_for(const PaperSettings& paper, const Dataset& train) {
  EquiVaeConfig c = paper.base;
  if (!c.convolutional()) {
    // A dense model takes any image size: it keeps the shape it trains on, which its
    // checkpoint records ("image_shape") so that inference refuses images of another shape.
    c.input_dim = train.dim;
    c.channels = train.channels;
    c.height = train.rows;
    c.width = train.cols;
  }
  const std::string mismatch = c.image_mismatch(train.dim, train.channels, train.rows, train.cols);
  check(mismatch.empty(), train.source, mismatch);
  c.classes = train.num_classes;
  return c;
}

}  // namespace equivae
