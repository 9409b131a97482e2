#include "model/data_splits.h"

#include <filesystem>
#include <future>
#include <utility>

#include "model/config.h"
#include "model/svhn_dataset.h"
#include "runtime/error.h"

namespace equivae {
namespace {
// SVHN's 73,257 training images -> 70,000 train / 3,257 validation.
constexpr int64_t kSvhnValidation = 3257;

// A directory whose train_32x32.mat is not a file to read (a directory, a dangling link) is
// searched for MNIST's files: when they are missing too, the error says why it was not SVHN.
MnistFiles find_mnist_files_or_say_why_not_svhn(const std::string& dir) {
  try {
    return find_mnist_files(dir);
  } catch (const Error& e) {
    const std::string not_svhn = svhn_file_unusable(dir);
    if (not_svhn.empty()) throw;
    throw Error("", std::string(e.what()) + "; " + not_svhn + ", so it was not read as SVHN's");
  }
}

}  // namespace

DataSplits load_splits(const DataSource& src) {
  // A directory holds either kind: a missing one is not MNIST's alone to name.
  std::error_code ec;
  check(src.directory.empty() || std::filesystem::exists(src.directory, ec), src.directory,
        "does not exist (looking for MNIST's IDX files or SVHN's train_32x32.mat and "
        "test_32x32.mat)");
  DataSplits s;
  s.bundled = src.bundled();
  if (s.bundled) {
    const std::string& dir = src.bundled_dir;
    Dataset all =
        load_idx(dir + "/mnist10k-images-idx3-ubyte.gz", dir + "/mnist10k-labels-idx1-ubyte.gz");
    check(all.n > 2000, all.source, "expected the bundled 10,000 digits");
    s.train = all.slice(0, all.n - 2000);
    s.test = all.slice(all.n - 2000, all.n);
    s.auto_validation = 0;
  } else if (!src.directory.empty() && src.train_images.empty() && src.train_labels.empty() &&
             src.test_images.empty() && src.test_labels.empty() && is_svhn_dir(src.directory)) {
    const SvhnFiles files = find_svhn_files(src.directory);
    auto test = std::async(std::launch::async, [&] { return load_svhn_mat(files.test); });
    s.train = load_svhn_mat(files.train);
    s.test = test.get();
    s.auto_validation = kSvhnValidation;
  } else {
    // A directory or the files one by one, not both: the user's training files with --data's
    // test files (or the reverse) would train on one data set and test on another.
    const std::string* named[] = {&src.train_images, &src.train_labels, &src.test_images,
                                  &src.test_labels};
    const char* flag[] = {"--train-images", "--train-labels", "--test-images", "--test-labels"};
    for (int i = 0; i < 4; ++i)
      check(src.directory.empty() || named[i]->empty(), flag[i],
            std::string("cannot be combined with --data (give the directory or the four "
                        "files, not both)"));
    // An image file and its labels come together: one set's labels for another's images
    // would pair by index alone.
    auto paired = [](const std::string& images, const std::string& labels, const char* split) {
      const std::string im = std::string("--") + split + "-images";
      const std::string lb = std::string("--") + split + "-labels";
      check(images.empty() == labels.empty(), images.empty() ? lb : im,
            "needs " + (images.empty() ? im : lb) + " (an image file and its labels go together)");
    };
    paired(src.train_images, src.train_labels, "train");
    paired(src.test_images, src.test_labels, "test");
    // What is left without --data or training files: a test pair alone.
    check(!src.directory.empty() || !src.train_images.empty(), "--test-images",
          "needs --train-images and --train-labels or --data DIR (the bundled digits are used "
          "only when no data flag is given)");
    check(!src.directory.empty() || !src.test_images.empty(), "--train-images",
          "needs --test-images and --test-labels (or --data DIR instead of the four files)");
    MnistFiles files;
    if (!src.directory.empty()) {
      files = find_mnist_files_or_say_why_not_svhn(src.directory);
    } else {
      files = {src.train_images, src.train_labels, src.test_images, src.test_labels};
    }
    // The two files inflate side by side (gzip inflation is serial within a file).
    auto test = std::async(std::launch::async,
                           [&] { return load_idx(files.test_images, files.test_labels); });
    s.train = load_idx(files.train_images, files.train_labels);
    s.test = test.get();
    s.auto_validation = 5000;
  }
  if (src.validation < 0)
    hold_out_auto_validation(s);
  else
    hold_out_validation(s, src.validation);
  auto shape = [](const Dataset& d) { return shape_text(d.channels, d.rows, d.cols); };
  check(s.test.channels == s.train.channels && s.test.rows == s.train.rows &&
            s.test.cols == s.train.cols,
        s.test.source,
        "test images are " + shape(s.test) + ", training images " + shape(s.train) +
            " (channels x height x width)");
  return s;
}

void hold_out_auto_validation(DataSplits& s) {
  const char* kind = s.bundled                              ? "the bundled digits"
                     : s.auto_validation == kSvhnValidation ? "SVHN data"
                                                            : "MNIST-format files";
  check(s.auto_validation < s.train.n, "--validation",
        "auto holds out " + std::to_string(s.auto_validation) + ", the default for " + kind +
            ", which would leave no training examples out of " + std::to_string(s.train.n) +
            ": give --validation N with N below " + std::to_string(s.train.n) + " (0: none)");
  hold_out_validation(s, s.auto_validation);
}

std::vector<NamedPath> data_source_files(const DataSource& src) {
  if (src.bundled())
    return {{"the bundled digits", src.bundled_dir + "/mnist10k-images-idx3-ubyte.gz"},
            {"the bundled digits", src.bundled_dir + "/mnist10k-labels-idx1-ubyte.gz"}};
  std::vector<NamedPath> files = {{"--train-images", src.train_images},
                                  {"--train-labels", src.train_labels},
                                  {"--test-images", src.test_images},
                                  {"--test-labels", src.test_labels}};
  if (src.directory.empty()) return files;
  const SvhnFiles svhn = svhn_file_paths(src.directory);
  for (const std::string& path : mnist_file_candidates(src.directory))
    files.push_back({"--data", path});
  files.push_back({"--data", svhn.train});
  files.push_back({"--data", svhn.test});
  return files;
}

void hold_out_validation(DataSplits& s, int64_t validation) {
  check(s.validation.n == 0, "--validation", "a validation split is already held out");
  check(validation < s.train.n, "--validation",
        std::to_string(validation) + " would leave no training examples out of " +
            std::to_string(s.train.n) + " (--validation N holds out fewer)");
  if (validation == 0) return;
  const int64_t n = s.train.n - validation;
  s.validation = s.train.slice(n, s.train.n);
  // The training rows keep their storage (a copy would be 172 MB for Fashion-MNIST).
  s.train = std::move(s.train).slice(0, n);
}

}  // namespace equivae
