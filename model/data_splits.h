#pragma once
// Train / validation / test splits for the tools: the bundled 10,000 digits (first
// 8,000 train, last 2,000 test), a directory with the standard MNIST file names, an SVHN
// directory (train_32x32.mat, test_32x32.mat), or explicit IDX files; the last `validation`
// training examples become the validation set.
#include <cstdint>
#include <string>

#include "model/idx_dataset.h"
#include "runtime/path_checks.h"

namespace equivae {

struct DataSplits {
  Dataset train, validation, test;
  bool bundled = false;
  // What DataSource::validation = −1 holds out of this kind of training file: 0 for the
  // bundled digits, 3257 for SVHN, 5000 for MNIST-format files.
  int64_t auto_validation = 0;
};

struct DataSource {
  std::string bundled_dir;  // where mnist10k-*.gz live (used when nothing else is given)
  std::string directory;    // standard MNIST names, or SVHN's when train_32x32.mat is there
  std::string train_images, train_labels, test_images, test_labels;  // explicit files
  // −1: 0 for the bundled digits, 3257 for SVHN (its 73,257 -> 70,000 / 3,257), 5000 otherwise
  // (the paper's 55k/5k).
  int64_t validation = -1;
  // The bundled digits are read only when no data flag names anything: a test or label file
  // given alone is an error, not ignored.
  bool bundled() const {
    return directory.empty() && train_images.empty() && train_labels.empty() &&
           test_images.empty() && test_labels.empty();
  }
};

// Throws Error naming the file or flag at fault.
DataSplits load_splits(const DataSource& source);

// The files load_splits may read, each with the flag that names it ("--data" for the files in
// the directory, whichever of its names are there or not): no output may be one of them.
std::vector<NamedPath> data_source_files(const DataSource& source);

// Moves the last `validation` training examples to s.validation (which must be empty); throws
// Error naming --validation when that would leave no training example.
void hold_out_validation(DataSplits& s, int64_t validation);
// The same with s.auto_validation (--validation auto), whose error says that the count was
// the automatic default for this kind of data and how to give another.
void hold_out_auto_validation(DataSplits& s);

}  // namespace equivae
