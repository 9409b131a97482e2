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

  int batch() const { return classes * k; }
  // Throws Error naming the first field out of range.
  void validate() const;
  // One line of "key=value" pairs; checkpoints store it and compare it on load.
  std::string describe() const;
};

}  // namespace equivae
