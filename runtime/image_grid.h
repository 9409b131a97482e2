#pragma once
// Lays tiles (small images as floats in [0, 1]) out as one picture: rows x cols tiles
// separated and framed by a gutter, each pixel optionally repeated scale x scale times.
// Grayscale tiles give a 1-channel image, RGB tiles a 3-channel one.
#include <cstdint>
#include <vector>

#include "runtime/png_image.h"

namespace equivae {

struct GridLayout {
  int rows = 0, cols = 0;                   // tiles
  int channels = 1, height = 0, width = 0;  // one tile: [channels, height, width] planes
  int gutter = 2;                           // pixels between tiles and around the grid
  float gutter_value = 1.0f;                // in [0, 1]: white
  int scale = 1;                            // nearest-neighbour upscaling

  int tile_size() const { return channels * height * width; }
};

// tiles[rows * cols, channels * height * width], tile (i, j) at i * cols + j, channel-major
// planes (the layout the data sets and the decoder use). Values are clamped to [0, 1] and
// rounded to 8 bits; a non-finite value or a bad layout throws Error.
Image tile_grid(const std::vector<float>& tiles, const GridLayout& layout);

}  // namespace equivae
