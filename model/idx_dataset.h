#pragma once
// IDX data sets (MNIST, Fashion-MNIST): the image + label file pair, plain or
// gzip-compressed, read whole and parsed from memory with every size checked,
// so a damaged or mismatched file fails loudly instead of training on junk.
#include <cstdint>
#include <string>
#include <vector>

namespace equivae {

struct Dataset {
  std::vector<float> images;    // [n, dim] row-major, pixel / 255 in [0, 1]
  std::vector<int32_t> labels;  // [n], each in [0, num_classes)
  int64_t n = 0;
  int rows = 0, cols = 0, dim = 0;  // image height, width, channels*rows*cols
  // Colour planes per image: 1 for IDX; 3 for SVHN, each image then [channels, rows, cols]
  // row-major (channel-major planes), so image(i)[c*rows*cols + h*cols + w] is pixel (c, h, w).
  int channels = 1;
  int num_classes = 10;
  std::string source;  // human-readable origin (paths)
  // Rows [begin, end) as a new data set (throws Error on a bad range).
  Dataset slice(int64_t begin, int64_t end) const&;
  // The same from a data set given up: rows [0, end) keep its storage instead of a copy.
  Dataset slice(int64_t begin, int64_t end) &&;
  const float* image(int64_t i) const { return images.data() + i * dim; }
  // Throws Error naming `source`, the image and the pixel when a pixel is NaN, infinite or
  // outside [0, 1] (the likelihoods take pixels as intensities in [0, 1]), or when images
  // does not hold n·dim values. The file readers cannot produce such data; data sets built
  // in code can.
  void check_pixels() const;
};

// The float pixel of each byte 0..255: i / 255, with 255 exactly 1.0f (a table: nothing per
// pixel). The IDX and SVHN readers both convert through it.
const float* pixel_intensities();

// Reads an IDX image file (magic 0x00000803, uint8, dims n,rows,cols) and an IDX label
// file (magic 0x00000801, uint8, dim n). Either may be gzip-compressed: detect by the gzip
// magic bytes (1f 8b), not by the file name. Big-endian headers.
Dataset load_idx(const std::string& images_path, const std::string& labels_path,
                 int num_classes = 10);

// Images alone, for data without labels (tools/classify): labels stay empty.
Dataset load_idx_images(const std::string& images_path);

struct MnistFiles {
  std::string train_images, train_labels, test_images, test_labels;
};

// Finds the standard MNIST / Fashion-MNIST names in a directory: train-images-idx3-ubyte,
// train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each either plain or
// with .gz (also accept the dotted variants train-images.idx3-ubyte etc.). Throws Error naming the
// directory and the missing file when one is absent, and what stands in its place when a
// name is there but is not a regular file (a directory, a dangling symbolic link).
MnistFiles find_mnist_files(const std::string& dir);

// Every path in dir that find_mnist_files may pick.
std::vector<std::string> mnist_file_candidates(const std::string& dir);

}  // namespace equivae
