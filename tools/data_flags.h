#pragma once
// The data flags the tools share, and the splits they select.
#include <cstdint>

#include "model/data_splits.h"
#include "runtime/flags.h"

#ifndef EQUIVAE_DATA_DIR
#define EQUIVAE_DATA_DIR "data"
#endif

namespace equivae {

inline void declare_data_flags(Flags& f, const std::string& validation_help) {
  f.add("data", "",
        "directory with the standard MNIST / Fashion-MNIST file names "
        "(train-images-idx3-ubyte[.gz], t10k-...), or SVHN's train_32x32.mat and "
        "test_32x32.mat; or name the four files with the flags below instead");
  f.add("train-images", "", "IDX image file to train on (with --train-labels)");
  f.add("train-labels", "", "IDX label file to train on");
  f.add("test-images", "", "IDX image file to test on (with --test-labels)");
  f.add("test-labels", "", "IDX label file to test on");
  f.add("validation", "auto", validation_help);
}

// What the data flags name. bundled_validation: the validation size for the bundled digits
// when --validation is auto.
inline DataSource data_source(const Flags& f, int64_t bundled_validation) {
  DataSource src;
  src.bundled_dir = EQUIVAE_DATA_DIR;
  src.directory = f.get("data");
  src.train_images = f.get("train-images");
  src.train_labels = f.get("train-labels");
  src.test_images = f.get("test-images");
  src.test_labels = f.get("test-labels");
  if (f.get("validation") != "auto")
    src.validation = f.get_int("validation", 0, INT64_MAX);
  else if (src.bundled())
    src.validation = bundled_validation;
  return src;
}

inline DataSplits load_data(const Flags& f, int64_t bundled_validation) {
  return load_splits(data_source(f, bundled_validation));
}

}  // namespace equivae
