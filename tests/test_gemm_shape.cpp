// The row-major → column-major mapping the GPU GEMMs rely on (runtime/cuda/gemm_shape.h):
// a naive column-major GEMM that reads the mapped layouts, as cuBLASLt would, must give
// cblas's row-major product — for every transpose pair, padded leading dimensions and
// β ≠ 0. Runs on the CPU: the mapping is what a GPU build cannot check without a GPU.
#include <cblas.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "runtime/cuda/gemm_choice.h"
#include "runtime/cuda/gemm_shape.h"

namespace {

using equivae::column_major;
using equivae::ColumnMajorGemm;
using equivae::ColumnMajorOperand;
using equivae::Gemm;
using equivae::pick_fastest;

// Element (i, j) of op(X) for a column-major operand.
double element(const ColumnMajorOperand& x, const std::vector<double>& data, int i, int j) {
  return x.trans ? data[size_t(j) + size_t(i) * x.ld] : data[size_t(i) + size_t(j) * x.ld];
}

// D = op(A')·op(B') + β·C column-major, on the buffers the mapping names.
void column_major_gemm(const ColumnMajorGemm& m, const std::vector<double>& a,
                       const std::vector<double>& b, double beta, std::vector<double>& c) {
  const int K = m.a.trans ? m.a.rows : m.a.cols;  // op(A') is rows × K
  ASSERT_EQ(K, m.b.trans ? m.b.cols : m.b.rows) << "inner dimensions differ";
  ASSERT_EQ(m.a.trans ? m.a.cols : m.a.rows, m.rows);
  ASSERT_EQ(m.b.trans ? m.b.rows : m.b.cols, m.cols);
  for (int j = 0; j < m.cols; ++j)
    for (int i = 0; i < m.rows; ++i) {
      double s = 0;
      for (int k = 0; k < K; ++k) s += element(m.a, a, i, k) * element(m.b, b, k, j);
      double& out = c[size_t(i) + size_t(j) * m.ld];
      out = s + beta * out;
    }
}

std::vector<double> draw(size_t n, uint64_t seed) {
  std::vector<double> v(n);
  for (double& x : v) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    x = double(int((seed >> 33) % 17) - 8) / 4.0;  // small exact values: sums are exact
  }
  return v;
}

TEST(GemmShape, ColumnMajorMappingGivesTheRowMajorProduct) {
  const int M = 5, N = 7, K = 3;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (int pad : {0, 2})
        for (double beta : {0.0, 1.0}) {
          SCOPED_TRACE("trans_a " + std::to_string(ta) + ", trans_b " + std::to_string(tb) +
                       ", pad " + std::to_string(pad) + ", beta " + std::to_string(beta));
          // Row-major: op(A) M×K, op(B) K×N, C M×N; each stored with `pad` spare columns.
          const int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
          const std::vector<double> A = draw(size_t(ta ? K : M) * lda, 1),
                                    B = draw(size_t(tb ? N : K) * ldb, 2);
          std::vector<double> expected = draw(size_t(M) * ldc, 3), got = expected;
          cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                      M, N, K, 1.0, A.data(), lda, B.data(), ldb, beta, expected.data(), ldc);
          const Gemm g{ta, tb, M, N, K, lda, ldb, ldc, beta};
          column_major_gemm(column_major(g), B, A, beta, got);  // A' = our B, B' = our A
          EXPECT_EQ(got, expected);
        }
}

TEST(GemmShape, TheDenseLayersShapesMapAsTheBackendUsesThem) {
  // y[B,out] = x[B,in]·W[in,out]: cuBLASLt sees yᵀ(out×B) = Wᵀ·xᵀ with no transposes, the
  // bias along D's rows (out of them).
  const ColumnMajorGemm f = column_major({false, false, 160, 512, 784, 784, 512, 512, 0.0});
  EXPECT_FALSE(f.a.trans);
  EXPECT_FALSE(f.b.trans);
  EXPECT_EQ(f.a.rows, 512);
  EXPECT_EQ(f.a.cols, 784);
  EXPECT_EQ(f.b.rows, 784);
  EXPECT_EQ(f.b.cols, 160);
  EXPECT_EQ(f.rows, 512);
  EXPECT_EQ(f.cols, 160);
  // dx[B, in] = dz[B,out]·W[in,out]ᵀ: D = dxᵀ (in × B), so a bias gradient (DRELU_BGRAD)
  // runs over D's rows — the `in` features of the layer below — summing the batch.
  const ColumnMajorGemm d = column_major({false, true, 160, 784, 512, 512, 512, 784, 0.0});
  EXPECT_TRUE(d.a.trans);
  EXPECT_EQ(d.rows, 784);
  EXPECT_EQ(d.cols, 160);
}

// GEMM autotuning's choice (runtime/cuda/gemm_choice.h): the heuristic's first candidate
// stays unless another beats it by more than the margin; failed candidates never win.
TEST(GemmChoice, TheHeuristicsChoiceStaysUnlessAnotherIsClearlyFaster) {
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(pick_fastest({5.0, 4.0, 3.0}, 0.03), 2);
  EXPECT_EQ(pick_fastest({5.0, 4.9, 4.95}, 0.03), 0);  // 2% faster: noise
  EXPECT_EQ(pick_fastest({5.0, 4.8, 6.0}, 0.03), 1);   // 4% faster
  EXPECT_EQ(pick_fastest({5.0, 6.0, 7.0}, 0.03), 0);
  EXPECT_EQ(pick_fastest({5.0}, 0.03), 0);
  EXPECT_EQ(pick_fastest({inf, 7.0, 6.0}, 0.03), 2);  // the first could not run
  EXPECT_EQ(pick_fastest({nan, nan, 6.0}, 0.03), 2);
  EXPECT_EQ(pick_fastest({5.0, inf, nan, 1.0}, 0.03), 3);
  EXPECT_EQ(pick_fastest({inf, nan}, 0.03), -1);
  EXPECT_EQ(pick_fastest({}, 0.03), -1);
}

}  // namespace
