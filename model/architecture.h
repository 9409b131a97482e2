#pragma once
// The layers of every EquiVAE network for a configuration (README "Architecture"):
//
// dense (MNIST reference; D = input_dim, H = hidden):
//   f_inv      D → H → H → d_r
//   encoder    [x ; r] (D + d_r) → H → H → 2·d_v            (no trunk)
//   decoder    [r ; v] → H → H → D logits
//   q(y|x)     D → H → H → C
// conv (SVHN; image C×S×S', w = conv_width, every convolution k4 s2 p1, F = 4w·(S/8)·(S'/8)):
//   trunk      conv C→w (S/2), conv w→2w (S/4), conv 2w→4w (S/8): F features
//   f_inv      trunk, dense F → H → d_r
//   encoder    trunk on x, then dense [features ; r] (F + d_r) → H → 2·d_v
//   decoder    dense [r ; v] → H → F, reshape [4w, S/8, S'/8], convᵀ 4w→2w, 2w→w, w→C: μ or
//              logits [C, S, S']
//   q(y|x)     trunk, dense F → H → C
// ReLU between layers, identity at each network's end (the encoder's trunk and head are one
// network: ReLU after the trunk too).
#include <vector>

#include "model/config.h"
#include "model/layer_stack.h"

namespace equivae {

struct NetworkLayers {
  std::vector<LayerSpec> finv;
  std::vector<LayerSpec> encoder_trunk;  // empty for dense: the head reads [x ; r]
  std::vector<LayerSpec> encoder_head;   // on [trunk features (or x) ; r]
  std::vector<LayerSpec> decoder;
  std::vector<LayerSpec> classifier;  // empty unless semi-supervised
  int encoder_features = 0;           // columns the head takes before r: F, or input_dim
};

NetworkLayers network_layers(const EquiVaeConfig& config);

}  // namespace equivae
