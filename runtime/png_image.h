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

// Images larger than this a side are a caller's bug, not a figure.
constexpr int kPngMaxSide = 1 << 15;

// Reads an 8-bit grayscale or RGB PNG, as write_png makes them: 1 or 3 channels. Throws
// Error naming the path, also for 16-bit samples or an alpha channel, which libpng would
// convert (through linear light) rather than read as stored.
Image read_png(const std::string& path);

}  // namespace equivae
