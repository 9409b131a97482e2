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

#include "kernels/cpu/ops.h"
#include "runtime/cuda/gemm_choice.h"
#include "runtime/cuda/gemm_epilogue.h"
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

// The epilogues' contract (runtime/cuda/gemm_epilogue.h), which the emulated build runs in
// cuBLASLt's place: the forward's bias + ReLU, with its mask, is the CPU's dense forward; the
// backward's DRELU_BGRAD, reading that mask, is the CPU's ReLU mask and bias gradient, bit for
// bit. C has spare columns (ldc > N) that no epilogue may touch, and the mask is laid out as
// cuBLASLt's: bit n + m·ld, ld = N rounded up to 128.
TEST(GemmEpilogue, ReluMaskRoundTripIsTheCpuDenseLayer) {
  const int M = 9, N = 131, K = 6, ldc = N + 3;
  const int64_t ld = equivae::lt_relu_mask_ld(N);
  EXPECT_EQ(ld, 256);
  EXPECT_EQ(equivae::lt_relu_mask_ld(128), 128);
  EXPECT_EQ(equivae::lt_relu_mask_bytes(M, N), size_t(256 / 8 * M));
  std::vector<float> x(size_t(M) * K), W(size_t(K) * N), b(N), dy(size_t(M) * N);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i * 7 % 11) - 5) / 4;
  for (size_t i = 0; i < W.size(); ++i) W[i] = float(int(i * 5 % 13) - 6) / 8;
  for (size_t i = 0; i < b.size(); ++i) b[i] = float(int(i % 5) - 2) / 8;
  for (size_t i = 0; i < dy.size(); ++i) dy[i] = float(int(i * 3 % 7) - 3) / 2;

  std::vector<float> y(size_t(M) * N);  // the CPU's dense layer
  equivae::cpu::dense_forward(y.data(), x.data(), W.data(), b.data(), M, K, N, true);
  std::vector<float> dz = dy, db(N);
  equivae::cpu::relu_bias_backward(dz.data(), db.data(), y.data(), M, N, true);

  const float kSpare = -99.f;
  std::vector<float> c(size_t(M) * ldc, kSpare);  // the GEMM, then its epilogue
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.f, x.data(), K, W.data(), N,
              0.f, c.data(), ldc);
  std::vector<uint8_t> mask(equivae::lt_relu_mask_bytes(M, N), 0xA5);  // stale bits to clear
  equivae::apply_epilogue({equivae::GemmEpilogue::relu_aux_bias, b.data(), mask.data(), ld},
                          c.data(), M, N, ldc);
  int positive = 0;
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      const size_t k = size_t(n) + size_t(m) * size_t(ld);
      const bool bit = (mask[k / 8] >> (k % 8)) & 1u;
      ASSERT_EQ(c[size_t(m) * ldc + n], y[size_t(m) * N + n]) << m << "," << n;
      ASSERT_EQ(bit, y[size_t(m) * N + n] > 0) << "mask bit of " << m << "," << n;
      positive += bit;
    }
  EXPECT_GT(positive, M * N / 4);
  EXPECT_LT(positive, M * N * 3 / 4);

  std::vector<float> g(size_t(M) * ldc, kSpare), dbg(N, kSpare);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) g[size_t(m) * ldc + n] = dy[size_t(m) * N + n];
  equivae::apply_epilogue({equivae::GemmEpilogue::drelu_bgrad, dbg.data(), mask.data(), ld},
                          g.data(), M, N, ldc);
  for (int m = 0; m < M; ++m) {
    for (int n = 0; n < N; ++n) ASSERT_EQ(g[size_t(m) * ldc + n], dz[size_t(m) * N + n]);
    for (int n = N; n < ldc; ++n) ASSERT_EQ(g[size_t(m) * ldc + n], kSpare) << "spare column";
  }
  EXPECT_EQ(dbg, db);
  // drelu: the same masked gradient, and no bias gradient (its pointer is not handed on).
  std::vector<float> h(size_t(M) * ldc, kSpare);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) h[size_t(m) * ldc + n] = dy[size_t(m) * N + n];
  equivae::apply_epilogue({equivae::GemmEpilogue::drelu, nullptr, mask.data(), ld}, h.data(), M, N,
                          ldc);
  EXPECT_EQ(h, g);
}

// cuBLASLt is handed only the pointers an epilogue uses (a bias with no bias epilogue made
// cublasLtMatmul refuse the GEMM on an H200).
TEST(GemmEpilogue, OnlyThePointersAnEpilogueUsesAreKept) {
  using equivae::GemmEpilogue;
  float bias = 0.0f;
  uint8_t mask = 0;
  const auto kept = [&](GemmEpilogue kind) {
    return equivae::with_used_pointers({kind, &bias, &mask, 128});
  };
  const equivae::LtEpilogue none = kept(GemmEpilogue::none);
  EXPECT_EQ(none.bias, nullptr);
  EXPECT_EQ(none.aux, nullptr);
  EXPECT_EQ(none.aux_ld, 0);
  for (GemmEpilogue kind : {GemmEpilogue::bias, GemmEpilogue::relu_bias}) {
    const equivae::LtEpilogue e = kept(kind);
    EXPECT_EQ(e.bias, &bias);
    EXPECT_EQ(e.aux, nullptr) << "no mask without an aux epilogue";
    EXPECT_EQ(e.aux_ld, 0);
  }
  for (GemmEpilogue kind : {GemmEpilogue::relu_aux_bias, GemmEpilogue::drelu_bgrad}) {
    const equivae::LtEpilogue e = kept(kind);
    EXPECT_EQ(e.bias, &bias);
    EXPECT_EQ(e.aux, &mask);
    EXPECT_EQ(e.aux_ld, 128);
    EXPECT_EQ(e.kind, kind);
  }
  const equivae::LtEpilogue drelu = kept(GemmEpilogue::drelu);
  EXPECT_EQ(drelu.bias, nullptr) << "DRELU has no bias gradient";
  EXPECT_EQ(drelu.aux, &mask);
  EXPECT_EQ(drelu.aux_ld, 128);
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
