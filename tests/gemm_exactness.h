#pragma once
// Whether the GEMM of the process's current route (float: GemmRoute; double: OpenBLAS) gives a
// row of C the same bits wherever
// that row sits in A, and in a product of any number of rows — what "bit for bit" comparisons
// between a batch and the same rows computed elsewhere (inference in chunks, one decoded row)
// rest on. oneDNN's brgemm kernels do; OpenBLAS's Haswell kernels (AVX2 CPUs, and a Zen 5 EPYC,
// which OpenBLAS 0.3.21 runs on them) do not: a 160 × 784 · 784 × 512 product with its rows
// rotated changed 136 of its 160 rows there, on one thread. Where they do not, such tests
// compare within a float tolerance instead.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/philox.h"

namespace equivae::test {

template <class T = float>
bool gemm_rows_exact_anywhere() {
  const int M = 160, K = 784, N = 512, shift = 7;
  std::vector<T> A(size_t(M) * K), B(size_t(K) * N), moved(A.size());
  for (size_t i = 0; i < A.size(); ++i) A[i] = philox_uniform<T>(0xE8, 1, 0, uint32_t(i));
  for (size_t i = 0; i < B.size(); ++i) B[i] = philox_uniform<T>(0xE8, 2, 0, uint32_t(i));
  for (int r = 0; r < M; ++r)
    std::copy_n(&A[size_t(r) * K], K, &moved[size_t((r + shift) % M) * K]);
  std::vector<T> C(size_t(M) * N), C_moved(C.size()), row(N);
  cpu::dense_gemm(CblasNoTrans, CblasNoTrans, M, N, K, A.data(), K, B.data(), N, T(0), C.data(), N);
  cpu::dense_gemm(CblasNoTrans, CblasNoTrans, M, N, K, moved.data(), K, B.data(), N, T(0),
                  C_moved.data(), N);
  for (int r = 0; r < M; ++r) {
    const T* c = &C[size_t(r) * N];
    if (std::memcmp(c, &C_moved[size_t((r + shift) % M) * N], N * sizeof(T)) != 0) return false;
    if (r % 37 == 5) {  // the same row alone, as a one-row product
      cpu::dense_gemm(CblasNoTrans, CblasNoTrans, 1, N, K, &A[size_t(r) * K], K, B.data(), N, T(0),
                      row.data(), N);
      if (std::memcmp(c, row.data(), N * sizeof(T)) != 0) return false;
    }
  }
  return true;
}

// got == expected bit for bit where the GEMM route is exact (above), else within 1e-5 of the
// largest magnitude in expected.
inline void expect_same_rows(const std::vector<float>& got, const std::vector<float>& expected,
                             bool exact, const std::string& what) {
  ASSERT_EQ(got.size(), expected.size()) << what;
  if (exact) {
    EXPECT_EQ(got, expected) << what;
    return;
  }
  float scale = 0;
  for (float v : expected) scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], expected[i], 1e-5f * scale) << what << ", element " << i;
}

}  // namespace equivae::test
