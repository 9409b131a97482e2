// Training does not depend on the CPU thread count: the same weights, bit for bit, at 1, 2 and
// 3 threads — supervised at the reference architecture, semi-supervised, and the conv model —
// where the dense layers' GEMMs take oneDNN's brgemm kernels, whose sums do not depend on it.
// (OpenBLAS's do: on its route, EQUIVAE_CPU_GEMM=openblas, the supervised and semi-supervised
// weights differ between 1 and 2 threads on the development machine and those tests fail; the conv
// model's dense shapes happen to sum alike there.)
#include <gtest/gtest.h>
#include <omp.h>

#include <functional>
#include <memory>
#include <vector>

#include "kernels/cpu/ops.h"
#include "model/equivae.h"
#include "model/subsets.h"
#include "model/trainer.h"
#include "tests/conv_fixtures.h"
#include "tests/cpu_routes.h"
#include "tests/fixtures.h"

namespace equivae {
namespace {

const Dataset& digits() {
  return test::kept_digits<640>();
}

constexpr const char* kOpenBlasOnly =
    "the GEMMs take OpenBLAS here (no oneDNN brgemm kernels in this build or for this CPU), which "
    "sums in another order per thread count";

// The weights after one epoch on `threads` threads.
using Run = std::function<std::vector<float>(int threads)>;
std::vector<float> weights_after(const EquiVaeConfig& c, int threads, const Dataset& labelled,
                                 const Dataset* unlabelled) {
  const int before = omp_get_max_threads();
  auto backend = make_cpu_backend<float>(threads);
  EquiVae<float> model(c, *backend);
  train(model, labelled, unlabelled, nullptr, test::quiet_options(1));
  omp_set_num_threads(before);
  return {model.parameters(), model.parameters() + model.parameter_count()};
}

// The reference architecture (H = 512, d = 16, B = 160): 4 steps on 640 digits.
std::vector<float> supervised(int threads) {
  return weights_after(EquiVaeConfig{}, threads, digits(), nullptr);
}
// 100 labelled digits, 540 unlabelled at U = 20: 27 steps, H = 128.
std::vector<float> semi_supervised(int threads) {
  EquiVaeConfig c;
  c.hidden = 128;
  c.latent_r = 8;
  c.latent_v = 4;
  c.k = 10;
  c.m_max = 4;
  c.unlabelled = 20;
  const LabelledSplit split = split_labelled(digits(), 100, 1);
  return weights_after(c, threads, split.labelled, &split.unlabelled);
}
// The conv model on 32 × 32 colour images (B = 160, 2 steps), convolutions on their automatic
// routes.
std::vector<float> conv(int threads) {
  EquiVaeConfig c = test::tiny_conv_config();
  c.height = c.width = 32;
  c.input_dim = 3 * 32 * 32;
  c.conv_width = 16;
  c.hidden = 512;
  c.k = 16;
  static const Dataset images = test::coloured_blobs(320, 3, 32, 10, 3);
  return weights_after(c, threads, images, nullptr);
}

// On the automatic routes, whatever EQUIVAE_CPU_GEMM / EQUIVAE_CPU_CONV say.
void expect_thread_independent(const Run& run) {
  test::RouteScope gemm(cpu::GemmRoute::automatic);
  test::RouteScope conv(cpu::ConvRoute::automatic);
  const std::vector<float> one = run(1);
  for (int threads : {2, 3}) EXPECT_EQ(run(threads), one) << threads << " threads";
}

TEST(Threads, TrainingDoesNotDependOnTheThreadCount) {
  if (!cpu::onednn_gemm_automatic()) GTEST_SKIP() << kOpenBlasOnly;
  SCOPED_TRACE("supervised");
  expect_thread_independent(supervised);
}
TEST(Threads, SemiSupervisedTrainingDoesNotDependOnTheThreadCount) {
  if (!cpu::onednn_gemm_automatic()) GTEST_SKIP() << kOpenBlasOnly;
  expect_thread_independent(semi_supervised);
}
TEST(Threads, ConvModelTrainingDoesNotDependOnTheThreadCount) {
  if (!cpu::onednn_gemm_automatic()) GTEST_SKIP() << kOpenBlasOnly;
  expect_thread_independent(conv);
}

// OpenMP settings that hand out smaller teams than asked for (OMP_DYNAMIC=true,
// OMP_MAX_ACTIVE_LEVELS=0) leave training as it is, on either GEMM route: the backend turns them
// off (runtime/openmp_threads.h). Before it did, they left part of each oneDNN GEMM undone and
// hung OpenBLAS's.
TEST(Threads, TeamShrinkingOpenmpSettingsChangeNothing) {
  for (cpu::GemmRoute route : {cpu::GemmRoute::automatic, cpu::GemmRoute::openblas}) {
    SCOPED_TRACE(route == cpu::GemmRoute::openblas ? "OpenBLAS" : "automatic");
    test::RouteScope gemm(route);
    const std::vector<float> reference = supervised(2);
    omp_set_dynamic(1);
    omp_set_max_active_levels(0);
    const std::vector<float> shrunk = supervised(2);
    EXPECT_EQ(omp_get_dynamic(), 0);
    EXPECT_GE(omp_get_max_active_levels(), 1);
    omp_set_dynamic(0);
    omp_set_max_active_levels(1);
    EXPECT_EQ(shrunk, reference);
  }
}

}  // namespace
}  // namespace equivae
