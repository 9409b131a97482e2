// The small-batch tensor-core GEMM (kernels/cuda/small_gemm.cu), executed by the emulator
// (test_small_gemm) and, where nvcc was found, natively on a GPU (test_small_gemm_gpu, which
// skips without one), against a double reference: C = A·op(B) + beta·C and its epilogues over
// shapes that are not multiples of the 32 × 32 tile, padded leading dimensions, both B layouts,
// under several schedule seeds. Two references: the product of the TF32-rounded inputs in double
// (the kernel must match it to float accumulation: relative error ≤ 1e-5), and the exact product (≤
// 3e-3: what TF32 costs, METHOD's "near 3e-4" with room). Every element of C in range is written (C
// starts NaN when beta = 0), the pad columns of C are untouched, and the ReLU mask holds bit n +
// m·ld exactly where the output is > 0 (0 past N in the last byte; bytes past the row's last column
// untouched). The ReLU backward's tail (drelu_bgrad) reads a random mask: cleared cells are exactly
// 0, the bias gradient is the column sums of the result (relative error ≤ 1e-5 against the TF32
// reference), and its block counters are left zero, so the same scratch serves the next call (every
// case runs more than once). Each case runs with K in one block and split (the kernel's
// choice, and three ways), the split's counters also left zero.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cuda/ops.h"
#include "runtime/backend.h"
#include "runtime/cuda/gemm_epilogue.h"
#include "tests/gpu_ready.h"
#include "tests/op_harness.h"

#if defined(EQUIVAE_TEST_REAL_CUDA)
#include <cuda_runtime.h>
#endif

namespace equivae::test {
namespace {

using cuda::GemmTail;

#if defined(EQUIVAE_TEST_REAL_CUDA)
// A device copy of a host buffer, copied back on request, freed at the end of its scope.
template <class T>
class DeviceCopy {
 public:
  explicit DeviceCopy(const std::vector<T>& host) : bytes_(host.size() * sizeof(T)) {
    EXPECT_EQ(cudaMalloc(&p_, bytes_ ? bytes_ : 1), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p_, host.data(), bytes_, cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceCopy() { cudaFree(p_); }
  DeviceCopy(const DeviceCopy&) = delete;
  DeviceCopy& operator=(const DeviceCopy&) = delete;
  T* get() const { return static_cast<T*>(p_); }
  void back(std::vector<T>& host) const {
    EXPECT_EQ(cudaMemcpy(host.data(), p_, bytes_, cudaMemcpyDeviceToHost), cudaSuccess);
  }

 private:
  void* p_ = nullptr;
  size_t bytes_;
};
#endif

// The buffers of one call, on the host.
struct Buffers {
  std::vector<float> A, B, bias, C, db, partials, split_partials;
  std::vector<uint8_t> mask;  // written (relu_mask_bias) or read (drelu_bgrad)
  std::vector<unsigned> arrivals, split_arrivals;
};

// One call of the kernel: under the emulator on the host buffers themselves (its device
// memory is host memory); on a GPU through device copies of every buffer, the written ones
// copied back.
void call_small_gemm(Buffers& h, int M, int N, int K, int lda, int ldb, int ldc, bool trans_b,
                     float beta, GemmTail kind, int64_t mask_ld, int splits) {
#if defined(EQUIVAE_TEST_REAL_CUDA)
  const DeviceCopy<float> A(h.A), B(h.B), bias(h.bias), C(h.C), db(h.db), partials(h.partials),
      split_partials(h.split_partials);
  const DeviceCopy<uint8_t> mask(h.mask);
  const DeviceCopy<unsigned> arrivals(h.arrivals), split_arrivals(h.split_arrivals);
  cuda::small_gemm_tf32(
      A.get(), B.get(), C.get(), M, N, K, lda, ldb, ldc, trans_b, beta,
      {kind, bias.get(), mask.get(), mask_ld, db.get(), partials.get(), arrivals.get()}, nullptr,
      {splits, split_partials.get(), split_arrivals.get(), h.split_partials.size(),
       h.split_arrivals.size()});
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  C.back(h.C);
  mask.back(h.mask);
  db.back(h.db);
  arrivals.back(h.arrivals);
  split_arrivals.back(h.split_arrivals);
#else
  cuda::small_gemm_tf32(h.A.data(), h.B.data(), h.C.data(), M, N, K, lda, ldb, ldc, trans_b, beta,
                        {kind, h.bias.data(), h.mask.data(), mask_ld, h.db.data(),
                         h.partials.data(), h.arrivals.data()},
                        nullptr,
                        {splits, h.split_partials.data(), h.split_arrivals.data(),
                         h.split_partials.size(), h.split_arrivals.size()});
#endif
}

struct Case {
  int M, N, K;
  bool trans_b;
  float beta;
  GemmTail tail;
  int seeds;  // schedule seeds run (the step's shapes take one: the emulator's MMA is slow)
};

std::string describe(const Case& c, bool aligned, int splits) {
  return std::to_string(c.M) + "x" + std::to_string(c.N) + "x" + std::to_string(c.K) +
         (c.trans_b ? " NT" : " NN") + " beta " + std::to_string(c.beta) + " tail " +
         std::to_string(int(c.tail)) + (aligned ? " aligned" : " odd leading dimensions") +
         " splits " + std::to_string(splits);
}

// Round to TF32 (11 significant bits, nearest, ties away from zero), written independently of
// the emulator's bit arithmetic.
double tf32(float v) {
  if (v == 0.0f || !std::isfinite(v)) return v;
  int e;
  const double m = std::frexp(double(v), &e);  // |m| in [0.5, 1)
  return std::ldexp(std::round(m * 2048.0), e - 11);
}

// aligned: leading dimensions rounded up to a multiple of 4 floats (the kernel's 16-byte copies),
// else padded to odd sizes (its 4-byte copies). splits: SmallGemmSplit's (0: the kernel's
// choice, 1: all of K in one block); its scratch starts NaN.
void run_case(const Case& c, bool aligned, int splits) {
  const auto describe = [&](const Case& d, bool a) { return test::describe(d, a, splits); };
  const auto pad = [&](int n, int odd) { return aligned ? (n + 3) / 4 * 4 : n + odd; };
  const int lda = pad(c.K, 3), ldb = pad(c.trans_b ? c.K : c.N, 5), ldc = c.N + 2;
  const int64_t mask_ld = lt_relu_mask_ld(c.N);
  const bool bgrad = c.tail == GemmTail::drelu_bgrad;
  const bool drelu = bgrad || c.tail == GemmTail::drelu;
  std::vector<uint8_t> below(size_t(c.M) * size_t(mask_ld / 8));  // drelu's input mask
  for (size_t i = 0; i < below.size(); ++i) below[i] = uint8_t(random_in(15, i, 0, 256));
  const auto kept = [&](int m, int n) {
    const size_t bit = size_t(n) + size_t(m) * size_t(mask_ld);
    return ((below[bit / 8] >> (bit % 8)) & 1) != 0;
  };
  Buffers h;
  h.partials.resize(cuda::small_gemm_partials(c.M, c.N));
  h.arrivals.assign(cuda::small_gemm_arrivals(c.N), 0u);  // kept across the calls below
  const size_t tiles = size_t((c.M + 31) / 32) * size_t((c.N + 31) / 32);
  h.split_partials.assign(tiles * 8 * 32 * 32, NAN);
  h.split_arrivals.assign(tiles, 0u);  // kept across the calls below too
  const int b_rows = c.trans_b ? c.N : c.K;
  std::vector<float>&A = h.A, &B = h.B, &bias = h.bias;
  A.resize(size_t(c.M) * lda), B.resize(size_t(b_rows) * ldb), bias.resize(size_t(c.N));
  for (size_t i = 0; i < A.size(); ++i) A[i] = float(random_in(11, i, -1, 1));
  for (size_t i = 0; i < B.size(); ++i) B[i] = float(random_in(12, i, -1, 1));
  for (size_t i = 0; i < bias.size(); ++i) bias[i] = float(random_in(13, i, -0.5, 0.5));
  std::vector<float> C0(size_t(c.M) * ldc);
  for (size_t i = 0; i < C0.size(); ++i)
    C0[i] = (i % size_t(ldc)) >= size_t(c.N) ? 12345.0f  // pad: must stay
            : c.beta == 0.0f                 ? NAN       // must be written
                                             : float(random_in(14, i, -1, 1));
  const auto a = [&](int m, int k) { return A[size_t(m) * lda + size_t(k)]; };
  const auto b = [&](int k, int n) {
    return c.trans_b ? B[size_t(n) * ldb + size_t(k)] : B[size_t(k) * ldb + size_t(n)];
  };
  const bool relu = c.tail == GemmTail::relu_bias || c.tail == GemmTail::relu_mask_bias;
  std::vector<double> rounded(size_t(c.M) * c.N), exact(rounded.size());
  for (int m = 0; m < c.M; ++m)
    for (int n = 0; n < c.N; ++n) {
      double sr = 0, se = 0;
      for (int k = 0; k < c.K; ++k) {
        sr += tf32(a(m, k)) * tf32(b(k, n));
        se += double(a(m, k)) * double(b(k, n));
      }
      const bool biased = c.tail != GemmTail::none && !drelu;
      const double add = (c.beta != 0.0f ? double(c.beta) * C0[size_t(m) * ldc + n] : 0.0) +
                         (biased ? double(bias[size_t(n)]) : 0.0);
      sr += add, se += add;
      if (relu) sr = std::max(sr, 0.0), se = std::max(se, 0.0);
      if (drelu && !kept(m, n)) sr = se = 0.0;
      rounded[size_t(m) * c.N + n] = sr, exact[size_t(m) * c.N + n] = se;
    }

  for (int s = 1; s <= c.seeds; ++s) {
#if !defined(EQUIVAE_TEST_REAL_CUDA)
    emu::set_schedule_seed(uint64_t(s));
#endif
    h.C = C0;
    std::fill(h.split_partials.begin(), h.split_partials.end(), NAN);  // a partial not written
    // drelu(_bgrad) reads the mask below; the other tails may write theirs over 0xA5 bytes.
    h.mask = drelu ? below : std::vector<uint8_t>(size_t(c.M) * size_t(mask_ld / 8), 0xA5);
    h.db.assign(size_t(c.N), NAN);
    call_small_gemm(h, c.M, c.N, c.K, lda, ldb, ldc, c.trans_b, c.beta, c.tail, mask_ld, splits);
    if (::testing::Test::HasFatalFailure()) return;
    for (unsigned v : h.split_arrivals)
      ASSERT_EQ(v, 0u) << describe(c, aligned) << ": split counters left set";
    const std::vector<float>&C = h.C, &db = h.db;
    const std::vector<uint8_t>& mask = h.mask;
    const std::vector<unsigned>& arrivals = h.arrivals;
    double err_r = 0, err_e = 0, norm = 0;
    for (int m = 0; m < c.M; ++m)
      for (int n = 0; n < ldc; ++n) {
        const float got = C[size_t(m) * ldc + n];
        if (n >= c.N) {
          ASSERT_EQ(got, 12345.0f)
              << describe(c, aligned) << ": pad column " << n << " of row " << m;
          continue;
        }
        ASSERT_TRUE(std::isfinite(got)) << describe(c, aligned) << ": C[" << m << "," << n << "]";
        const size_t i = size_t(m) * c.N + n;
        err_r += std::pow(got - rounded[i], 2), err_e += std::pow(got - exact[i], 2);
        if (drelu && !kept(m, n)) {
          ASSERT_EQ(got, 0.0f) << describe(c, aligned) << ": masked C[" << m << "," << n << "]";
        }
        norm += exact[i] * exact[i];
        if (c.tail != GemmTail::relu_mask_bias) continue;
        const size_t bit = size_t(n) + size_t(m) * size_t(mask_ld);
        ASSERT_EQ((mask[bit / 8] >> (bit % 8)) & 1, got > 0.0f ? 1 : 0)
            << describe(c, aligned) << ": mask bit of C[" << m << "," << n << "]";
      }
    EXPECT_LE(std::sqrt(err_r / norm), 1e-5) << describe(c, aligned) << " vs TF32-rounded inputs";
    if (drelu && !bgrad) {
      for (int n = 0; n < c.N; ++n) {
        ASSERT_TRUE(std::isnan(db[size_t(n)])) << describe(c, aligned) << ": db written by drelu";
      }
    }
    if (bgrad) {
      double db_err = 0, db_norm = 0;
      for (int n = 0; n < c.N; ++n) {
        double want = 0;
        for (int m = 0; m < c.M; ++m) want += rounded[size_t(m) * c.N + n];
        db_err += std::pow(db[size_t(n)] - want, 2), db_norm += want * want;
      }
      EXPECT_LE(std::sqrt(db_err / db_norm), 1e-5) << describe(c, aligned) << ": bias gradient";
      for (unsigned v : arrivals)
        ASSERT_EQ(v, 0u) << describe(c, aligned) << ": block counters left set";
    }
    EXPECT_LE(std::sqrt(err_e / norm), 3e-3) << describe(c, aligned) << " vs the exact product";
    if (drelu) {
      EXPECT_EQ(mask, below) << describe(c, aligned) << ": the mask it reads was written";
      continue;
    }
    for (int m = 0; m < c.M; ++m)
      for (int64_t byte = 0; byte < mask_ld / 8; ++byte) {
        const uint8_t v = mask[size_t(m) * size_t(mask_ld / 8) + size_t(byte)];
        if (c.tail != GemmTail::relu_mask_bias || byte * 8 >= c.N) {  // written by no one else
          ASSERT_EQ(v, 0xA5) << describe(c, aligned) << ": mask byte " << byte << " of row " << m;
        } else if (byte * 8 + 8 > c.N) {
          ASSERT_EQ(v >> (c.N - byte * 8), 0) << describe(c, aligned) << ": bits past N";
        }
      }
  }
}

TEST(SmallGemm, RaggedShapesEveryTailBothLayouts) {
  if (!gpu_ready()) GTEST_SKIP() << "no CUDA device: the GPU build of this test needs one";
  const Case cases[] = {
      {37, 45, 70, false, 0.0f, GemmTail::relu_mask_bias, 3},
      {37, 45, 70, true, 1.0f, GemmTail::relu_bias, 3},
      {5, 3, 1, false, 0.0f, GemmTail::bias, 3},
      {64, 10, 16, true, 0.0f, GemmTail::none, 3},
      {33, 129, 200, true, 0.0f, GemmTail::bias, 2},
      {40, 100, 33, false, 1.0f, GemmTail::relu_mask_bias, 2},
      {37, 45, 70, true, 0.0f, GemmTail::drelu_bgrad, 3},
      {70, 33, 9, true, 1.0f, GemmTail::drelu_bgrad, 2},
      {70, 33, 100, true, 1.0f, GemmTail::drelu_bgrad, 2},  // four stages: split with beta
      {37, 45, 70, true, 0.0f, GemmTail::drelu, 2},
      {70, 33, 100, true, 1.0f, GemmTail::drelu, 2},
  };
  for (const int splits : {1, 0, 3})  // all of K in a block; the kernel's choice; three ways
    for (const Case& c : cases)
      for (const bool aligned : {true, false}) run_case(c, aligned, splits);
}

// The training step's shapes at B = 160 (its operands are 16-byte aligned): the encoder's first
// layer (x part, K = 784), a hidden layer, the accumulating r part of a two-input layer, and
// input gradients.
TEST(SmallGemm, TrainingStepShapes) {
  if (!gpu_ready()) GTEST_SKIP() << "no CUDA device: the GPU build of this test needs one";
  const Case cases[] = {
      {160, 512, 784, false, 0.0f, GemmTail::none, 1},
      {160, 512, 512, false, 0.0f, GemmTail::relu_mask_bias, 1},
      {160, 512, 16, false, 1.0f, GemmTail::relu_bias, 1},
      {160, 512, 512, true, 0.0f, GemmTail::none, 1},
      {160, 512, 512, true, 0.0f, GemmTail::drelu_bgrad, 2},
  };
  for (const int splits : {1, 0})  // the kernel's choice: as the backend runs them
    for (const Case& c : cases) run_case(c, /*aligned=*/true, splits);  // the engine's layouts
}

}  // namespace
}  // namespace equivae::test
