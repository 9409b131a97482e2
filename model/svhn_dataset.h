#pragma once
// SVHN (Street View House Numbers, cropped digits) in its official MATLAB files
// train_32x32.mat, test_32x32.mat and extra_32x32.mat: MAT 5 / v7 files (the data elements
// usually zlib-compressed) holding
//   X  32x32x3xN uint8, column-major: X(h, w, c, n) is row h, column w, colour c of image n
//   y  Nx1 (or 1xN) labels 1..10, 10 standing for the digit 0; stored as double or uint8
// Read with libmatio, after a scan of our own that checks every element header, bound and
// compressed stream first, so a damaged file fails with its path and fault instead of
// reaching libmatio (which reads short or lying data silently) or allocating what a lying
// header declares.
#include <string>

#include "model/idx_dataset.h"

namespace equivae {

// Loads X and y from one SVHN .mat file. Images come back as [n, 3072] floats in [0, 1]
// (pixel / 255), each row channel-major: three 32x32 planes (R, G, B), each row-major,
//   image(i)[c * 1024 + h * 32 + w] = X(h, w, c, i) / 255        (C, H, W: a conv layer's layout)
// with channels = 3, rows = cols = 32, dim = 3072; labels 0..9 (y = 10 becomes 0).
// Throws Error naming the file and the fault: not a MAT 5 file (or a v7.3 / HDF5 one), an
// empty or truncated file, a corrupt or truncated compressed element, X or y missing or
// duplicated, X not 32x32x3xN uint8, y not a vector of N double or uint8 labels in 1..10.
// Other variables may be present (numeric or char arrays; cells, structs and objects are
// refused). Little- and big-endian files both load.
Dataset load_svhn_mat(const std::string& path);

struct SvhnFiles {
  std::string train, test;  // train_32x32.mat, test_32x32.mat
};

// Finds train_32x32.mat and test_32x32.mat in a directory; throws Error naming the directory
// and the missing file (and what stands in its place, a directory say).
SvhnFiles find_svhn_files(const std::string& dir);

// Their paths in dir, whether they are there or not.
SvhnFiles svhn_file_paths(const std::string& dir);

// "" when dir's train_32x32.mat is a regular file or absent; else why the directory was not
// read as SVHN's ("train_32x32.mat is there but is a directory, not a regular file").
std::string svhn_file_unusable(const std::string& dir);

// Whether a directory holds train_32x32.mat (an SVHN directory rather than an MNIST one).
bool is_svhn_dir(const std::string& dir);

}  // namespace equivae
