// The dense layers' GEMM routes (kernels/cpu/blas.h: dense_gemm; ops.h: GemmRoute): oneDNN's
// matmul and OpenBLAS against a double product over every transpose, leading dimensions wider
// than the rows, beta 0 and 1 and ragged shapes; where the oneDNN route is taken and where it
// hands the GEMM to OpenBLAS; thread-count and concurrency independence; the routes' names.
// (The dense ops themselves run on both routes in test_ops.cpp's harness.)
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/gemm_onednn.h"
#include "kernels/cpu/ops.h"
#include "tests/cpu_routes.h"

namespace equivae::test {
namespace {

// C[M,N] = op(A)·op(B) + beta·C with A, B, C in padded row-major storage.
struct GemmCase {
  bool ta, tb;
  int M, N, K;
  int pad = 0;  // extra columns in each leading dimension
  float beta = 0;

  int lda() const { return (ta ? M : K) + pad; }
  int ldb() const { return (tb ? K : N) + pad; }
  int ldc() const { return N + pad; }
  size_t a_size() const { return size_t(ta ? K : M) * lda(); }
  size_t b_size() const { return size_t(tb ? N : K) * ldb(); }
  size_t c_size() const { return size_t(M) * ldc(); }
  float a(const std::vector<float>& A, int i, int k) const {
    return ta ? A[size_t(k) * lda() + i] : A[size_t(i) * lda() + k];
  }
  float b(const std::vector<float>& B, int k, int j) const {
    return tb ? B[size_t(j) * ldb() + k] : B[size_t(k) * ldb() + j];
  }
};

struct Operands {
  std::vector<float> A, B, C;
};
Operands random_operands(const GemmCase& g, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  Operands o{std::vector<float>(g.a_size()), std::vector<float>(g.b_size()),
             std::vector<float>(g.c_size())};
  for (auto* v : {&o.A, &o.B, &o.C})
    for (float& x : *v) x = u(rng);
  return o;
}

// The product on the process's current route; the padding columns of C are left as they were.
std::vector<float> run(const GemmCase& g, const Operands& o) {
  std::vector<float> C = o.C;
  cpu::dense_gemm(g.ta ? CblasTrans : CblasNoTrans, g.tb ? CblasTrans : CblasNoTrans, g.M, g.N, g.K,
                  o.A.data(), g.lda(), o.B.data(), g.ldb(), g.beta, C.data(), g.ldc());
  return C;
}

// Largest |C − C_double| relative to the row's Σ|a·b| (the product's own rounding scale), and
// whether the padding is untouched.
void expect_matches_double(const GemmCase& g, const Operands& o, const std::vector<float>& C) {
  double worst = 0;
  for (int i = 0; i < g.M; ++i) {
    for (int j = 0; j < g.N; ++j) {
      double exact = g.beta * double(o.C[size_t(i) * g.ldc() + j]), scale = std::abs(exact);
      for (int k = 0; k < g.K; ++k) {
        const double p = double(g.a(o.A, i, k)) * g.b(o.B, k, j);
        exact += p;
        scale += std::abs(p);
      }
      worst = std::max(worst, std::abs(C[size_t(i) * g.ldc() + j] - exact) / (scale + 1e-30));
    }
    for (int j = g.N; j < g.ldc(); ++j)
      ASSERT_EQ(C[size_t(i) * g.ldc() + j], o.C[size_t(i) * g.ldc() + j]) << "padding written";
  }
  EXPECT_LE(worst, 1e-5) << "M " << g.M << " N " << g.N << " K " << g.K << " ta " << g.ta << " tb "
                         << g.tb << " pad " << g.pad << " beta " << g.beta;
}

std::vector<GemmCase> cases() {
  std::vector<GemmCase> all;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (auto [M, N, K] : {std::array{1, 1, 1},
                             {1, 37, 19},
                             {9, 1, 5},
                             {17, 13, 1},
                             {33, 65, 129},
                             {160, 16, 512},
                             {160, 512, 32}})
        for (int pad : {0, 3})
          for (float beta : {0.0f, 1.0f}) all.push_back({ta, tb, M, N, K, pad, beta});
  return all;
}

TEST(DenseGemm, EveryRouteMatchesTheDoubleProduct) {
  for (cpu::GemmRoute route : gemm_routes()) {
    SCOPED_TRACE(route_name(route));
    RouteScope scope(route);
    unsigned seed = 1;
    for (const GemmCase& g : cases()) {
      const Operands o = random_operands(g, seed++);
      expect_matches_double(g, o, run(g, o));
    }
  }
}

TEST(DenseGemm, NanAndInfinityPropagate) {
  for (cpu::GemmRoute route : gemm_routes()) {
    RouteScope scope(route);
    const GemmCase g{false, false, 4, 40, 24};
    Operands o = random_operands(g, 7);
    o.A[size_t(1) * g.lda() + 3] = std::numeric_limits<float>::quiet_NaN();  // row 1 of C
    o.A[size_t(2) * g.lda() + 5] = std::numeric_limits<float>::infinity();   // row 2 of C
    const std::vector<float> C = run(g, o);
    for (int j = 0; j < g.N; ++j) {
      EXPECT_TRUE(std::isnan(C[size_t(1) * g.ldc() + j])) << j;
      EXPECT_FALSE(std::isfinite(C[size_t(2) * g.ldc() + j])) << j;
      EXPECT_TRUE(std::isfinite(C[j])) << j;
    }
  }
}

TEST(DenseGemm, OneDnnTakesTheGemmsItCanAndHandsTheRestBack) {
  if (!cpu::onednn_built()) GTEST_SKIP() << "built without oneDNN (libdnnl-dev)";
  const GemmCase g{false, true, 160, 512, 784};
  Operands o = random_operands(g, 3);
  const auto onednn = [&](float beta, int M, bool brgemm_only = false) {
    return cpu::onednn::gemm(false, true, M, g.N, g.K, o.A.data(), g.lda(), o.B.data(), g.ldb(),
                             beta, o.C.data(), g.ldc(), brgemm_only);
  };
  EXPECT_TRUE(onednn(0.0f, g.M));
  EXPECT_TRUE(onednn(1.0f, g.M));
  EXPECT_FALSE(onednn(0.5f, g.M));  // only C = A·B and C += A·B are oneDNN's
  EXPECT_FALSE(onednn(0.0f, 0));    // an empty shape is OpenBLAS's (which does nothing)
  // Inside a parallel region (the im2col convolutions' lanes, whose GEMMs run side by side)
  // each caller gets a one-thread primitive: the bits of a one-thread call outside the region,
  // and the region's thread count is its own again afterwards.
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  ASSERT_TRUE(onednn(0.0f, g.M));
  const std::vector<float> one_thread = o.C;
  omp_set_num_threads(saved);
  std::vector<std::vector<float>> lanes(2, std::vector<float>(o.C.size(), -1.0f));
  int team = 0, taken = 0, threads_after = 0;
#pragma omp parallel num_threads(2) reduction(+ : team, taken, threads_after)
  {
    team += 1;
    std::vector<float>& C = lanes[size_t(omp_get_thread_num())];
    const int before = omp_get_max_threads();
    taken += cpu::onednn::gemm(false, true, g.M, g.N, g.K, o.A.data(), g.lda(), o.B.data(), g.ldb(),
                               0.0f, C.data(), g.ldc(), false);
    threads_after += omp_get_max_threads() == before;
  }
  EXPECT_EQ(taken, team);
  EXPECT_EQ(threads_after, team);
  for (int t = 0; t < taken; ++t) EXPECT_EQ(lanes[size_t(t)], one_thread) << "lane " << t;
  // The automatic route's call: taken only where oneDNN has its brgemm kernels (AVX-512).
  EXPECT_EQ(onednn(0.0f, g.M, true), cpu::onednn_gemm_automatic());

  // On the routes: oneDNN's sums run in another order, so some bits differ from OpenBLAS's.
  std::vector<float> openblas, matmul;
  {
    RouteScope scope(cpu::GemmRoute::openblas);
    openblas = run(g, o);
  }
  {
    RouteScope scope(cpu::GemmRoute::onednn);
    matmul = run(g, o);
  }
  EXPECT_NE(openblas, matmul);
  // Automatic is oneDNN where it has brgemm kernels, else OpenBLAS.
  EXPECT_EQ(run(g, o), cpu::onednn_gemm_automatic() ? matmul : openblas);
  // A beta oneDNN does not take runs in OpenBLAS, bit for bit, on either route.
  GemmCase half = g;
  half.beta = 0.5f;
  std::vector<float> half_openblas;
  {
    RouteScope scope(cpu::GemmRoute::openblas);
    half_openblas = run(half, o);
  }
  RouteScope scope(cpu::GemmRoute::onednn);
  EXPECT_EQ(run(half, o), half_openblas);
}

// In oneDNN's brgemm kernels the results do not depend on the thread count (a primitive is made
// per count) or on other threads running the same shapes at the same time (each thread has its
// own scratchpad). OpenBLAS promises neither: its 160 × 784 · 784 × 512 product here differs in
// some bits between 1 and 2 threads.
TEST(DenseGemm, OneDnnResultsDoNotDependOnThreadsOrConcurrentCallers) {
  if (!cpu::onednn_gemm_automatic())
    GTEST_SKIP() << "no oneDNN brgemm kernels in this build or for this CPU";
  RouteScope scope(cpu::GemmRoute::onednn);
  const std::vector<GemmCase> shapes = {
      {false, false, 160, 512, 784}, {true, false, 784, 512, 160}, {false, true, 160, 784, 512},
      {false, false, 160, 16, 512},  {true, false, 512, 32, 160},  {false, true, 1160, 512, 32}};
  const int saved = omp_get_max_threads();
  for (const GemmCase& g : shapes) {
    const Operands o = random_operands(g, unsigned(g.M + g.N));
    omp_set_num_threads(1);
    const std::vector<float> one = run(g, o);
    for (int threads : {2, 3}) {
      omp_set_num_threads(threads);
      EXPECT_EQ(run(g, o), one) << threads << " threads, M " << g.M << " N " << g.N;
    }
  }
  omp_set_num_threads(saved);

  const GemmCase g = shapes[0];
  std::vector<Operands> operands;
  std::vector<std::vector<float>> alone, together(4);
  for (unsigned t = 0; t < 4; ++t) {
    operands.push_back(random_operands(g, 100 + t));
    alone.push_back(run(g, operands[t]));
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int repeat = 0; repeat < 5; ++repeat) together[t] = run(g, operands[t]);
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(together, alone);
}

TEST(DenseGemm, RoutesAreNamed) {
  EXPECT_EQ(cpu::gemm_route_named("openblas"), cpu::GemmRoute::openblas);
  EXPECT_EQ(cpu::gemm_route_named("onednn"), cpu::GemmRoute::onednn);
  EXPECT_EQ(cpu::gemm_route_named("auto"), cpu::GemmRoute::automatic);
  EXPECT_EQ(cpu::gemm_route_named(""), cpu::GemmRoute::automatic);
  try {
    cpu::gemm_route_named("mkl");
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "GEMM route 'mkl': expected auto, openblas or onednn");
  }
}

}  // namespace
}  // namespace equivae::test
