#include "runtime/png_image.h"

#include <png.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "runtime/atomic_file.h"
#include "runtime/error.h"
#include "runtime/path_checks.h"

namespace equivae {
namespace {

png_image blank_png_image() {
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  return image;
}

}  // namespace

void write_png(const std::string& path, const Image& image) {
  check(image.channels == 1 || image.channels == 3, path,
        "PNG images here have 1 (gray) or 3 (RGB) channels, got " + std::to_string(image.channels));
  check(image.width > 0 && image.height > 0 && image.width <= kPngMaxSide &&
            image.height <= kPngMaxSide,
        path, "bad image size " + std::to_string(image.width) + "x" + std::to_string(image.height));
  const size_t want = size_t(image.width) * image.height * image.channels;
  check(image.pixels.size() == want, path,
        "image holds " + std::to_string(image.pixels.size()) + " samples, " +
            std::to_string(image.width) + "x" + std::to_string(image.height) + "x" +
            std::to_string(image.channels) + " needs " + std::to_string(want));

  png_image png = blank_png_image();
  png.width = png_uint_32(image.width);
  png.height = png_uint_32(image.height);
  png.format = image.channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  // First call measures, second encodes into memory; then one atomic write.
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&png, nullptr, &size, 0, image.pixels.data(), 0, nullptr))
    throw Error(path, std::string("libpng cannot encode the image: ") + png.message);
  std::vector<uint8_t> encoded(size);
  if (!png_image_write_to_memory(&png, encoded.data(), &size, 0, image.pixels.data(), 0, nullptr))
    throw Error(path, std::string("libpng cannot encode the image: ") + png.message);
  encoded.resize(size);
  write_file_atomically(path, encoded.data(), encoded.size());
}

Image read_png(const std::string& path) {
  check_input_file(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, std::string("cannot open: ") + std::strerror(errno));
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                   std::istreambuf_iterator<char>());
  check(!bytes.empty(), path, "empty file, not a PNG");

  png_image png = blank_png_image();
  if (!png_image_begin_read_from_memory(&png, bytes.data(), bytes.size()))
    throw Error(path, std::string("not a readable PNG: ") + png.message);
  // png_image_begin_read allocated; every refusal from here frees it.
  auto refuse = [&](const std::string& why) {
    png_image_free(&png);
    throw Error(path, why);
  };
  if (png.width > png_uint_32(kPngMaxSide) || png.height > png_uint_32(kPngMaxSide))
    refuse("image of " + std::to_string(png.width) + "x" + std::to_string(png.height) +
           " is larger than " + std::to_string(kPngMaxSide) + " pixels a side");
  if (png.format & (PNG_FORMAT_FLAG_LINEAR | PNG_FORMAT_FLAG_ALPHA))
    refuse(std::string("has ") +
           (png.format & PNG_FORMAT_FLAG_LINEAR ? "16-bit samples" : "an alpha channel") +
           ": only 8-bit grayscale or RGB PNGs are read");
  const bool colour = (png.format & PNG_FORMAT_FLAG_COLOR) != 0;
  png.format = colour ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  Image image;
  image.width = int(png.width);
  image.height = int(png.height);
  image.channels = colour ? 3 : 1;
  image.pixels.resize(PNG_IMAGE_SIZE(png));
  if (!png_image_finish_read(&png, nullptr, image.pixels.data(), 0, nullptr)) {
    png_image_free(&png);
    throw Error(path, std::string("corrupt PNG: ") + png.message);
  }
  return image;
}

}  // namespace equivae
