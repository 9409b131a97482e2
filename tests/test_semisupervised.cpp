// The semi-supervised EquiVAE: the whole objective's gradients against finite
// differences in double, labelled subsets, and a short run that learns.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "model/equivae.h"
#include "model/evaluate.h"
#include "model/idx_dataset.h"
#include "model/sampler.h"
#include "model/subsets.h"
#include "model/trainer.h"
#include "runtime/error.h"
#include "tests/dense_finite_differences.h"
#include "tests/fixtures.h"

namespace equivae {
namespace {

const Dataset& digits() {
  return test::kept_digits<3000>();
}

using test::tiny_semi_config;

double loss_of(const StepMetrics& m, const EquiVaeConfig& c) {
  return -(m.recon - m.kl) + c.classifier_weight * m.classifier_nll -
         c.unlabelled_weight * m.unlabelled_bound;
}

TEST(SemiSupervised, WholeObjectiveBackwardMatchesFiniteDifferences) {
  auto backend = make_cpu_backend<double>(1);
  const EquiVaeConfig config = tiny_semi_config();
  EquiVae<double> model(config, *backend);
  model.set_log_prior({-2.1, -2.2, -2.3, -2.4, -2.2, -2.3, -2.35, -2.25, -2.3, -2.32});
  const LabelledSplit split = split_labelled(digits(), 100, 1);
  BalancedBatchSampler labelled(split.labelled.labels, 10, config.k, config.m_max, 1);
  UnlabelledSampler unlabelled(split.unlabelled.n, config.unlabelled, 10, config.k, config.m_max,
                               1);
  Batch batch;
  labelled.sample(2, batch);
  unlabelled.sample(2, batch);
  model.load_batch(batch, split.labelled, &split.unlabelled);
  ASSERT_TRUE(std::isfinite(loss_of(model.forward(2), config)));
  model.backward();
  std::vector<double> grads(model.gradients(), model.gradients() + model.parameter_count());

  // Every layer of f_inv, encoder, decoder and q(y|x).
  const std::vector<size_t> probes = test::dense_layer_probes(model, 5, 3);
  // h = 1e-4: the loss sums ~800 pixel terms per row: larger steps beat round-off.
  const test::FiniteDifferences fd = test::central_differences(
      model, probes, grads, 1e-4, [&] { return loss_of(model.forward(2), config); });
  EXPECT_LT(fd.worst, 2e-5);
  EXPECT_GT(fd.nonzero, int(probes.size()) / 2);
}

TEST(SemiSupervised, UnlabelledPoolingSetsComeFromTheirLabelsSegment) {
  const int C = 10, k = 4, U = 6;
  const LabelledSplit split = split_labelled(digits(), 100, 3);
  BalancedBatchSampler labelled(split.labelled.labels, C, k, 3, 3);
  UnlabelledSampler unlabelled(split.unlabelled.n, U, C, k, 3, 3);
  Batch batch;
  labelled.sample(0, batch);
  unlabelled.sample(0, batch);
  ASSERT_EQ(batch.offsets.size(), size_t(C * k + C * U + 1));
  for (int u = 0; u < U; ++u)
    for (int y = 0; y < C; ++y) {
      const int row = C * k + u * C + y;
      const int m = batch.offsets[row + 1] - batch.offsets[row];
      EXPECT_GE(m, 1);
      EXPECT_LE(m, 3);
      std::set<int> seen;
      for (int s = batch.offsets[row]; s < batch.offsets[row + 1]; ++s) {
        EXPECT_EQ(batch.members[s] / k, y) << "row " << row;
        EXPECT_TRUE(seen.insert(batch.members[s]).second);
      }
    }
}

TEST(SemiSupervised, LabelledSubsetsAreBalancedDisjointAndSeeded) {
  const LabelledSplit a = split_labelled(digits(), 600, 7), b = split_labelled(digits(), 600, 7),
                      c = split_labelled(digits(), 600, 8);
  ASSERT_EQ(a.labelled.n, 600);
  EXPECT_EQ(a.unlabelled.n, digits().n - 600);
  std::vector<int> per_class(10, 0);
  for (int32_t y : a.labelled.labels) ++per_class[y];
  for (int count : per_class) EXPECT_EQ(count, 60);
  EXPECT_EQ(a.labelled.images, b.labelled.images);
  EXPECT_NE(a.labelled.images, c.labelled.images);
  EXPECT_THROW(split_labelled(digits(), 105, 1), Error);
}

TEST(SemiSupervised, ShortRunRaisesTheBoundAndLowersTheClassifierError) {
  auto backend = make_cpu_backend<float>(1);
  EquiVaeConfig c;
  c.hidden = 64;
  c.latent_r = 8;
  c.latent_v = 4;
  c.k = 10;
  c.m_max = 4;
  c.unlabelled = 20;
  EquiVae<float> model(c, *backend);
  const LabelledSplit split = split_labelled(digits().slice(0, 2500), 100, 1);
  const Dataset test = digits().slice(2500, 3000);
  const double error_before = classifier_error(model, test);
  TrainOptions options = test::quiet_options(3);  // 3 × 120 steps
  const auto records = train(model, split.labelled, &split.unlabelled, nullptr, options);
  const double error_after = classifier_error(model, test);
  std::printf("q(y|x) error before %.3f after %.3f; L_unlab %.1f → %.1f\n", error_before,
              error_after, records.front().unlabelled_bound, records.back().unlabelled_bound);
  EXPECT_GT(records.back().unlabelled_bound, records.front().unlabelled_bound + 10);
  EXPECT_GT(records.back().elbo, records.front().elbo);
  EXPECT_LT(error_after, error_before - 0.3);
}

}  // namespace
}  // namespace equivae
