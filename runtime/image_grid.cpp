#include "runtime/image_grid.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "runtime/error.h"

namespace equivae {
namespace {

uint8_t to_byte(float value) {
  return uint8_t(std::lround(255.0f * std::clamp(value, 0.0f, 1.0f)));
}

}  // namespace

Image tile_grid(const std::vector<float>& tiles, const GridLayout& g) {
  const std::string ctx = "image grid";
  check(g.rows > 0 && g.cols > 0, ctx,
        "needs at least one tile, got " + std::to_string(g.rows) + "x" + std::to_string(g.cols));
  check(g.channels == 1 || g.channels == 3, ctx,
        "tiles have 1 or 3 channels, got " + std::to_string(g.channels));
  check(g.height > 0 && g.width > 0 && g.gutter >= 0 && g.scale >= 1 && g.scale <= 64, ctx,
        "bad tile size, gutter or scale");
  const size_t tile = size_t(g.tile_size());
  check(tiles.size() == size_t(g.rows) * g.cols * tile, ctx,
        "holds " + std::to_string(tiles.size()) + " values, " + std::to_string(g.rows) + "x" +
            std::to_string(g.cols) + " tiles of " + std::to_string(tile) + " need " +
            std::to_string(size_t(g.rows) * g.cols * tile));
  for (size_t i = 0; i < tiles.size(); ++i)
    check(std::isfinite(tiles[i]), ctx,
          "tile " + std::to_string(i / tile) + " has a non-finite value");
  check(std::isfinite(g.gutter_value), ctx, "non-finite gutter value");

  const int cell_h = g.height * g.scale, cell_w = g.width * g.scale;
  Image image;
  image.channels = g.channels;
  image.width = g.cols * (cell_w + g.gutter) + g.gutter;
  image.height = g.rows * (cell_h + g.gutter) + g.gutter;
  image.pixels.assign(size_t(image.width) * image.height * g.channels, to_byte(g.gutter_value));
  const size_t plane = size_t(g.height) * g.width;
  for (int i = 0; i < g.rows; ++i) {
    for (int j = 0; j < g.cols; ++j) {
      const float* src = tiles.data() + (size_t(i) * g.cols + j) * tile;
      const int top = g.gutter + i * (cell_h + g.gutter);
      const int left = g.gutter + j * (cell_w + g.gutter);
      for (int y = 0; y < cell_h; ++y) {
        uint8_t* row = image.pixels.data() + (size_t(top + y) * image.width + left) * g.channels;
        for (int x = 0; x < cell_w; ++x)
          for (int c = 0; c < g.channels; ++c)
            row[size_t(x) * g.channels + c] =
                to_byte(src[c * plane + size_t(y / g.scale) * g.width + x / g.scale]);
      }
    }
  }
  return image;
}

}  // namespace equivae
