#pragma once
// 8-bit PNG files through libpng's simplified API: grayscale or RGB images, written
// atomically (runtime/atomic_file.h) and read back with every libpng fault as an Error.
#include <cstdint>
#include <string>
#include <vector>

namespace equivae {

struct Image {
  int width = 0, height = 0;
  int channels = 1;             // 1: grayscale, 3: RGB
  std::vector<uint8_t> pixels;  // [height, width, channels] row-major, interleaved
  uint8_t at(int y, int x, int c = 0) const {
    return pixels[(size_t(y) * width + x) * channels + c];
  }
};

// Throws Error naming the path when the image is malformed (size, channels, pixel count)
// or the file cannot be written; a previous file at path stays intact on failure.
void write_png(const std::string& path, const Image& image);

// Reads a PNG as stored: grayscale files give 1 channel, colour files 3 (alpha dropped,
// composited on black), 16-bit samples reduced to 8. Throws Error naming the path.
Image read_png(const std::string& path);

}  // namespace equivae
