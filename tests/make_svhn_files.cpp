// make_svhn_files DIR N_TRAIN N_TEST: writes DIR/train_32x32.mat and DIR/test_32x32.mat in
// SVHN's format (X 32x32x3xN uint8 column-major, y Nx1 double, labels 1..10 with 10 for the
// digit 0, zlib-compressed) holding made-up coloured blobs (tests/conv_fixtures.h), so the
// train_svhn command-line test runs the real reader on files shaped like the real ones.
#include <matio.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "conv_fixtures.h"

namespace {

bool write(const std::string& path, const equivae::Dataset& d) {
  const size_t n = size_t(d.n);
  std::vector<uint8_t> x(size_t(32) * 32 * 3 * n);
  for (size_t i = 0; i < n; ++i)  // engine row: c·1024 + h·32 + w; file: h + 32 w + 1024 c + 3072 i
    for (int c = 0; c < 3; ++c)
      for (int h = 0; h < 32; ++h)
        for (int w = 0; w < 32; ++w)
          x[size_t(h) + 32 * size_t(w) + 1024 * size_t(c) + 3072 * i] =
              uint8_t(std::lround(255 * d.images[i * 3072 + size_t(c) * 1024 + h * 32 + w]));
  std::vector<double> y(n);
  for (size_t i = 0; i < n; ++i) y[i] = d.labels[i] == 0 ? 10 : d.labels[i];
  mat_t* mat = Mat_CreateVer(path.c_str(), nullptr, MAT_FT_MAT5);
  if (!mat) return false;
  size_t xdims[4] = {32, 32, 3, n}, ydims[2] = {n, 1};
  matvar_t* vx = Mat_VarCreate("X", MAT_C_UINT8, MAT_T_UINT8, 4, xdims, x.data(), 0);
  matvar_t* vy = Mat_VarCreate("y", MAT_C_DOUBLE, MAT_T_DOUBLE, 2, ydims, y.data(), 0);
  const bool ok = vx && vy && Mat_VarWrite(mat, vx, MAT_COMPRESSION_ZLIB) == 0 &&
                  Mat_VarWrite(mat, vy, MAT_COMPRESSION_ZLIB) == 0;
  if (vx) Mat_VarFree(vx);
  if (vy) Mat_VarFree(vy);
  return Mat_Close(mat) == 0 && ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: make_svhn_files DIR N_TRAIN N_TEST\n");
    return 2;
  }
  const std::string dir = argv[1];
  const auto train = equivae::test::coloured_blobs(std::atoll(argv[2]), 3, 32, 10, 1);
  const auto test = equivae::test::coloured_blobs(std::atoll(argv[3]), 3, 32, 10, 2);
  if (!write(dir + "/train_32x32.mat", train) || !write(dir + "/test_32x32.mat", test)) {
    std::fprintf(stderr, "make_svhn_files: cannot write the files in %s\n", dir.c_str());
    return 1;
  }
  return 0;
}
