#include "model/data_splits.h"

#include <future>
#include <utility>

#include "model/svhn_dataset.h"
#include "runtime/error.h"

namespace equivae {
namespace {
// SVHN's 73,257 training images -> 70,000 train / 3,257 validation.
constexpr int64_t kSvhnValidation = 3257;
}  // namespace

DataSplits load_splits(const DataSource& src) {
  DataSplits s;
  s.bundled = src.directory.empty() && src.train_images.empty();
  int64_t validation = src.validation;
  if (s.bundled) {
    const std::string& dir = src.bundled_dir;
    Dataset all =
        load_idx(dir + "/mnist10k-images-idx3-ubyte.gz", dir + "/mnist10k-labels-idx1-ubyte.gz");
    check(all.n > 2000, all.source, "expected the bundled 10,000 digits");
    s.train = all.slice(0, all.n - 2000);
    s.test = all.slice(all.n - 2000, all.n);
    if (validation < 0) validation = 0;
  } else if (!src.directory.empty() && src.train_images.empty() && src.test_images.empty() &&
             is_svhn_dir(src.directory)) {
    const SvhnFiles files = find_svhn_files(src.directory);
    auto test = std::async(std::launch::async, [&] { return load_svhn_mat(files.test); });
    s.train = load_svhn_mat(files.train);
    s.test = test.get();
    if (validation < 0) validation = kSvhnValidation;
  } else {
    MnistFiles files;
    if (!src.directory.empty()) files = find_mnist_files(src.directory);
    if (!src.train_images.empty()) files.train_images = src.train_images;
    if (!src.train_labels.empty()) files.train_labels = src.train_labels;
    if (!src.test_images.empty()) files.test_images = src.test_images;
    if (!src.test_labels.empty()) files.test_labels = src.test_labels;
    check(!files.train_labels.empty(), "--train-labels", "is needed with --train-images");
    check(!files.test_images.empty() && !files.test_labels.empty(), "--test-images",
          "and --test-labels are needed with --train-images");
    // The two files inflate side by side (gzip inflation is serial within a file).
    auto test = std::async(std::launch::async,
                           [&] { return load_idx(files.test_images, files.test_labels); });
    s.train = load_idx(files.train_images, files.train_labels);
    s.test = test.get();
    if (validation < 0) validation = 5000;
  }
  check(validation < s.train.n, "--validation",
        std::to_string(validation) + " would leave no training examples out of " +
            std::to_string(s.train.n));
  if (validation > 0) {
    const int64_t n = s.train.n - validation;
    s.validation = s.train.slice(n, s.train.n);
    // The training rows keep their storage (a copy would be 172 MB for Fashion-MNIST).
    s.train = std::move(s.train).slice(0, n);
  }
  check(s.test.dim == s.train.dim, s.test.source,
        "test images have " + std::to_string(s.test.dim) + " pixels, training images " +
            std::to_string(s.train.dim));
  return s;
}

}  // namespace equivae
