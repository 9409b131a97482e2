#pragma once
// Hyper-parameters of the supervised EquiVAE (DESIGN §1; the paper's §3 values
// as defaults: 16-D latents, m_max = 7, Adam 1e-3, k = 16 → B = 160).
#include <cstdint>
#include <string>

namespace equivae {

struct EquiVaeConfig {
  int input_dim = 784;  // pixels per image
  int hidden = 512;     // H: width of every hidden layer
  int latent_r = 16;    // d_r: invariant latent r
  int latent_v = 16;    // d_v: equivariant latent v
  int classes = 10;     // C
  int k = 16;           // items per class in a batch: B = C·k
  int m_max = 7;        // r_y pools m ~ U{1..m_max} other same-class items
  double lr = 1e-3;
  uint64_t seed = 1;
  // Semi-supervised (eqs. 5–7): U unlabelled items per step, each expanded over all C
  // labels (C·U extra rows through encoder and decoder) and a classifier q(y|x).
  int unlabelled = 0;              // U; 0: supervised
  // loss = mean_lab(−L_lab − α log q(y|x)) + w · mean_unlab(−L_unlab); the paper: α = w = 1.
  double unlabelled_weight = 1.0;  // w
  double classifier_weight = 1.0;  // α

  int batch() const { return classes * k; }
  bool semi_supervised() const { return unlabelled > 0; }
  // Rows through encoder and decoder per step: B labelled + C·U expanded unlabelled.
  int rows() const { return batch() + classes * unlabelled; }
  // Throws Error naming the first field out of range.
  void validate() const;
  // One line of "key=value" pairs; checkpoints store it and compare it on load.
  std::string describe() const;
};

}  // namespace equivae
