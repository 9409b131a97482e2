// The figure and latent files: PNG round trips through libpng (gray and RGB) and their
// faults, the tile grid's layout, and the .npy writer byte for byte.
#include <gtest/gtest.h>
#include <png.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "runtime/atomic_file.h"
#include "runtime/error.h"
#include "runtime/image_grid.h"
#include "runtime/npy_file.h"
#include "runtime/png_image.h"
#include "tests/error_checks.h"
#include "tests/scratch_files.h"

namespace equivae {
namespace {

namespace fs = std::filesystem;
using test::error_of;

std::string scratch(const std::string& name) {
  return test::build_tree_file("test_image_files", name);
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

Image pattern_image(int width, int height, int channels) {
  Image image;
  image.width = width;
  image.height = height;
  image.channels = channels;
  image.pixels.resize(size_t(width) * height * channels);
  for (size_t i = 0; i < image.pixels.size(); ++i) image.pixels[i] = uint8_t((i * 37 + 11) % 256);
  return image;
}

bool no_temp_files_beside(const std::string& path) {
  for (const auto& entry : fs::directory_iterator(fs::path(path).parent_path()))
    if (entry.path().filename().string().rfind(fs::path(path).filename().string() + ".tmp", 0) == 0)
      return false;
  return true;
}

TEST(Png, GrayAndRgbRoundTripExactly) {
  for (int channels : {1, 3}) {
    const std::string path = scratch("round_trip_" + std::to_string(channels) + ".png");
    const Image image = pattern_image(37, 23, channels);
    write_png(path, image);
    const Image back = read_png(path);
    EXPECT_EQ(back.width, 37);
    EXPECT_EQ(back.height, 23);
    EXPECT_EQ(back.channels, channels);
    EXPECT_EQ(back.pixels, image.pixels);
    EXPECT_TRUE(no_temp_files_beside(path));
  }
}

TEST(Png, WritesTheFileAPngReaderRecognises) {
  const std::string path = scratch("signature.png");
  write_png(path, pattern_image(4, 4, 1));
  const std::vector<uint8_t> bytes = read_bytes(path);
  const uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  ASSERT_GT(bytes.size(), 8u);
  EXPECT_EQ(std::memcmp(bytes.data(), signature, 8), 0);
}

TEST(Png, RefusesMalformedImagesAndKeepsTheOldFile) {
  const std::string path = scratch("keep.png");
  write_png(path, pattern_image(5, 5, 1));
  const std::vector<uint8_t> before = read_bytes(path);
  Image two_channels = pattern_image(5, 5, 2);
  EXPECT_NE(error_of([&] { write_png(path, two_channels); }).find("1 (gray) or 3 (RGB)"),
            std::string::npos);
  Image short_image = pattern_image(5, 5, 1);
  short_image.pixels.pop_back();
  EXPECT_NE(error_of([&] { write_png(path, short_image); }).find("holds 24 samples"),
            std::string::npos);
  EXPECT_EQ(read_bytes(path), before);
}

TEST(Png, UnwritableDirectoryNamesThePath) {
  const std::string path = scratch("no-such-dir/figure.png");
  const std::string message = error_of([&] { write_png(path, pattern_image(3, 3, 1)); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("cannot create temp file"), std::string::npos) << message;
}

TEST(Png, ReaderNamesTheFileAndTheFault) {
  const std::string missing = scratch("missing.png");
  fs::remove(missing);
  EXPECT_NE(error_of([&] { read_png(missing); }).find(missing + ": cannot open"),
            std::string::npos);

  const std::string empty = scratch("empty.png");
  write_bytes(empty, {});
  EXPECT_NE(error_of([&] { read_png(empty); }).find("empty file"), std::string::npos);

  const std::string text = scratch("text.png");
  write_bytes(text, {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd', '!'});
  EXPECT_NE(error_of([&] { read_png(text); }).find("not a readable PNG"), std::string::npos);

  // A valid file cut short: the header reads, the pixel data does not.
  const std::string whole = scratch("whole.png"), cut = scratch("cut.png");
  write_png(whole, pattern_image(64, 64, 3));
  std::vector<uint8_t> bytes = read_bytes(whole);
  bytes.resize(bytes.size() / 2);
  write_bytes(cut, bytes);
  const std::string message = error_of([&] { read_png(cut); });
  EXPECT_EQ(message.rfind(cut + ": ", 0), 0u) << message;
  EXPECT_NE(message, "(no error)");
}

TEST(Png, ReaderRefusesWhatItWouldConvertRatherThanRead) {
  // 16-bit grey 0x8080 would come back as 186 (libpng takes it as linear light), grey + alpha
  // (255, 128) as 186 too (composited in linear light): both are refused, not altered.
  auto write_with_libpng = [](const std::string& path, png_uint_32 format,
                              const std::vector<uint16_t>& samples) {
    png_image png;
    std::memset(&png, 0, sizeof png);
    png.version = PNG_IMAGE_VERSION;
    png.width = 1;
    png.height = 1;
    png.format = format;
    if (format & PNG_FORMAT_FLAG_LINEAR) {
      ASSERT_TRUE(png_image_write_to_file(&png, path.c_str(), 0, samples.data(), 0, nullptr));
    } else {
      const std::vector<uint8_t> bytes(samples.begin(), samples.end());
      ASSERT_TRUE(png_image_write_to_file(&png, path.c_str(), 0, bytes.data(), 0, nullptr));
    }
  };
  const std::string deep = scratch("grey16.png"), alpha = scratch("grey_alpha.png");
  write_with_libpng(deep, PNG_FORMAT_LINEAR_Y, {0x8080});
  write_with_libpng(alpha, PNG_FORMAT_GA, {255, 128});
  EXPECT_NE(error_of([&] { read_png(deep); }).find(deep + ": has 16-bit samples"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_png(alpha); }).find(alpha + ": has an alpha channel"),
            std::string::npos);
}

TEST(ImageGrid, PlacesTilesGuttersAndScale) {
  GridLayout g;
  g.rows = 2;
  g.cols = 3;
  g.height = 2;
  g.width = 3;
  g.gutter = 1;
  g.gutter_value = 1.0f;
  g.scale = 2;
  // Tile t holds the value t / 10 everywhere except pixel (1, 2), which holds 0.
  std::vector<float> tiles(6 * 6);
  for (int t = 0; t < 6; ++t)
    for (int p = 0; p < 6; ++p) tiles[size_t(t) * 6 + p] = p == 5 ? 0.0f : float(t) / 10;
  const Image image = tile_grid(tiles, g);
  EXPECT_EQ(image.channels, 1);
  EXPECT_EQ(image.width, 3 * (3 * 2 + 1) + 1);
  EXPECT_EQ(image.height, 2 * (2 * 2 + 1) + 1);
  EXPECT_EQ(image.at(0, 0), 255);  // gutter
  EXPECT_EQ(image.at(5, 7), 255);  // gutter between the rows of tiles
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) {
      const int top = 1 + i * 5, left = 1 + j * 7;
      const uint8_t value = uint8_t(std::lround(255.0 * (i * 3 + j) / 10));
      EXPECT_EQ(image.at(top, left), value) << i << "," << j;
      EXPECT_EQ(image.at(top + 1, left + 1), value);  // the same source pixel, scaled
      EXPECT_EQ(image.at(top + 3, left + 5), 0);      // source pixel (1, 2)
      EXPECT_EQ(image.at(top + 2, left + 4), 0);
    }
  }
}

TEST(ImageGrid, RgbPlanesBecomeInterleavedPixels) {
  GridLayout g;
  g.rows = g.cols = 1;
  g.channels = 3;
  g.height = 1;
  g.width = 2;
  g.gutter = 0;
  // [C, H, W] planes: red (1, 0), green (0, 1), blue (0.2, 0.4).
  const Image image = tile_grid({1.0f, 0.0f, 0.0f, 1.0f, 0.2f, 0.4f}, g);
  ASSERT_EQ(image.channels, 3);
  EXPECT_EQ(image.pixels, (std::vector<uint8_t>{255, 0, 51, 0, 255, 102}));
}

TEST(ImageGrid, ClampsAndRefusesNonFiniteOrMisSizedTiles) {
  GridLayout g;
  g.rows = g.cols = 1;
  g.height = g.width = 1;
  g.gutter = 0;
  EXPECT_EQ(tile_grid({-3.0f}, g).pixels[0], 0);
  EXPECT_EQ(tile_grid({7.0f}, g).pixels[0], 255);
  EXPECT_NE(error_of([&] { tile_grid({std::nanf("")}, g); }).find("tile 0 has a non-finite"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              tile_grid({0.1f, 0.2f}, g);
            }).find("holds 2 values"),
            std::string::npos);
}

// ---- .npy: the bytes numpy.lib.format reads, checked without numpy.

struct NpyParts {
  std::string magic, header;
  int major = 0, minor = 0;
  std::vector<uint8_t> data;
};

NpyParts split_npy(const std::vector<uint8_t>& bytes) {
  NpyParts p;
  p.magic.assign(bytes.begin(), bytes.begin() + 6);
  p.major = bytes[6];
  p.minor = bytes[7];
  const size_t length = size_t(bytes[8]) | size_t(bytes[9]) << 8;
  p.header.assign(bytes.begin() + 10, bytes.begin() + 10 + std::ptrdiff_t(length));
  p.data.assign(bytes.begin() + 10 + std::ptrdiff_t(length), bytes.end());
  return p;
}

TEST(Npy, FloatMatrixBytes) {
  const std::string path = scratch("matrix.npy");
  const std::vector<float> values = {1.5f, -2.0f, 0.0f, 3.25f, 1e-20f, -0.0f};
  write_npy(path, values, {2, 3});
  const std::vector<uint8_t> bytes = read_bytes(path);
  const NpyParts p = split_npy(bytes);
  EXPECT_EQ(p.magic, "\x93NUMPY");
  EXPECT_EQ(p.major, 1);
  EXPECT_EQ(p.minor, 0);
  EXPECT_EQ((10 + p.header.size()) % 64, 0u) << "data must start 64-byte aligned";
  EXPECT_EQ(p.header.rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 0), 0u)
      << p.header;
  EXPECT_EQ(p.header.back(), '\n');
  ASSERT_EQ(p.data.size(), values.size() * 4);
  for (size_t i = 0; i < values.size(); ++i) {
    uint32_t expected;
    std::memcpy(&expected, &values[i], 4);
    const uint32_t got = uint32_t(p.data[4 * i]) | uint32_t(p.data[4 * i + 1]) << 8 |
                         uint32_t(p.data[4 * i + 2]) << 16 | uint32_t(p.data[4 * i + 3]) << 24;
    EXPECT_EQ(got, expected) << "element " << i << " little-endian, bit for bit";
  }
  EXPECT_TRUE(no_temp_files_beside(path));
}

TEST(Npy, Int32VectorAndShapes) {
  const std::string path = scratch("labels.npy");
  write_npy(path, std::vector<int32_t>{7, -1, 65536}, {3});
  const NpyParts p = split_npy(read_bytes(path));
  EXPECT_EQ(p.header.rfind("{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", 0), 0u)
      << p.header;
  EXPECT_EQ(p.data, (std::vector<uint8_t>{7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0}));
  EXPECT_NE(npy_header("<f4", {}).find("'shape': (), }"), std::string::npos);
  EXPECT_NE(npy_header("<f4", {0, 4}).find("'shape': (0, 4), }"), std::string::npos);
  EXPECT_NE(npy_header("<f4", {2, 3, 4}).find("'shape': (2, 3, 4), }"), std::string::npos);
  for (const auto& shape : std::vector<std::vector<int64_t>>{{}, {1}, {123456789, 16}})
    EXPECT_EQ(npy_header("<f4", shape).size() % 64, 0u);
}

TEST(Npy, DoubleVectorBytes) {
  const std::string path = scratch("doubles.npy");
  const std::vector<double> values = {0.1, -1e300};
  write_npy(path, values, {2});
  const NpyParts p = split_npy(read_bytes(path));
  EXPECT_EQ(p.header.rfind("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 0), 0u)
      << p.header;
  ASSERT_EQ(p.data.size(), 16u);
  for (size_t i = 0; i < values.size(); ++i) {
    uint64_t expected, got = 0;
    std::memcpy(&expected, &values[i], 8);
    for (int b = 7; b >= 0; --b) got = got << 8 | p.data[8 * i + size_t(b)];
    EXPECT_EQ(got, expected) << "element " << i << " little-endian, bit for bit";
  }
}

TEST(Npy, RefusesAShapeThatDoesNotMatchTheData) {
  const std::string path = scratch("bad_shape.npy");
  EXPECT_NE(error_of([&] {
              write_npy(path, std::vector<float>(5), {2, 3});
            }).find("array shape holds 6 elements, data has 5"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(path));
}

TEST(AtomicFile, ReplacesTheWholeFile) {
  const std::string path = scratch("atomic.txt");
  write_file_atomically(path, "a long first version", 20);
  write_file_atomically(path, "short", 5);
  const std::vector<uint8_t> bytes = read_bytes(path);
  EXPECT_EQ(std::string(bytes.begin(), bytes.end()), "short");
  EXPECT_TRUE(no_temp_files_beside(path));
}

}  // namespace
}  // namespace equivae
