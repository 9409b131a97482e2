#include "model/architecture.h"

namespace equivae {
namespace {

std::vector<LayerSpec> dense_stack(const std::vector<int>& widths) {
  std::vector<LayerSpec> specs;
  for (size_t l = 0; l + 1 < widths.size(); ++l)
    specs.push_back(LayerSpec::dense(widths[l], widths[l + 1]));
  return specs;
}

// Three k4 s2 p1 convolutions, each halving the image: C×S×S' → 4w × S/8 × S'/8.
std::vector<LayerSpec> conv_trunk(const EquiVaeConfig& c) {
  const int w = c.conv_width;
  return {LayerSpec::conv2d(c.channels, c.height, c.width, w, 4, 2, 1),
          LayerSpec::conv2d(w, c.height / 2, c.width / 2, 2 * w, 4, 2, 1),
          LayerSpec::conv2d(2 * w, c.height / 4, c.width / 4, 4 * w, 4, 2, 1)};
}

std::vector<LayerSpec> concat(std::vector<LayerSpec> a, const std::vector<LayerSpec>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

NetworkLayers network_layers(const EquiVaeConfig& c) {
  c.validate();
  const int D = c.input_dim, H = c.hidden, dr = c.latent_r, dv = c.latent_v;
  NetworkLayers n;
  if (!c.convolutional()) {
    n.finv = dense_stack({D, H, H, dr});
    n.encoder_head = dense_stack({D + dr, H, H, 2 * dv});
    n.decoder = dense_stack({dr + dv, H, H, D});
    if (c.semi_supervised()) n.classifier = dense_stack({D, H, H, c.classes});
    n.encoder_features = D;
    return n;
  }
  const std::vector<LayerSpec> trunk = conv_trunk(c);
  const int F = trunk.back().out, w = c.conv_width, h8 = c.height / 8, w8 = c.width / 8;
  n.finv = concat(trunk, dense_stack({F, H, dr}));
  n.encoder_trunk = trunk;
  n.encoder_head = dense_stack({F + dr, H, 2 * dv});
  n.decoder = concat(dense_stack({dr + dv, H, F}),
                     {LayerSpec::conv_transpose2d(4 * w, h8, w8, 2 * w, 4, 2, 1),
                      LayerSpec::conv_transpose2d(2 * w, 2 * h8, 2 * w8, w, 4, 2, 1),
                      LayerSpec::conv_transpose2d(w, 4 * h8, 4 * w8, c.channels, 4, 2, 1)});
  if (c.semi_supervised()) n.classifier = concat(trunk, dense_stack({F, H, c.classes}));
  n.encoder_features = F;
  return n;
}

}  // namespace equivae
