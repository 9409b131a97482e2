// The whole EquiVAE plan: gradients against finite differences in double, the
// float plan against the double plan, training lowers the loss, determinism,
// checkpoints, and the divergence stop.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "model/equivae.h"
#include "model/evaluate.h"
#include "model/idx_dataset.h"
#include "model/sampler.h"
#include "model/trainer.h"
#include "runtime/error.h"
#include "tests/dense_finite_differences.h"
#include "tests/error_checks.h"
#include "tests/fixtures.h"
#include "tests/scratch_files.h"

namespace equivae {
namespace {

const Dataset& digits() {
  return test::kept_digits<1500>();
}

using test::tiny_config;

template <class T>
double loss_at(EquiVae<T>& model, uint64_t step) {
  const StepMetrics m = model.forward(step);
  return -(m.recon - m.kl);
}

TEST(Model, WholeBackwardMatchesFiniteDifferencesInDouble) {
  auto backend = make_cpu_backend<double>(1);
  EquiVae<double> model(tiny_config(), *backend);
  BalancedBatchSampler sampler(digits().labels, 10, 4, 3, 7);
  Batch batch;
  sampler.sample(5, batch);
  model.load_batch(batch, digits());
  const double loss = loss_at(model, 5);
  ASSERT_TRUE(std::isfinite(loss));
  model.backward();
  std::vector<double> grads(model.gradients(), model.gradients() + model.parameter_count());

  // h = 1e-4: the loss sums ~800 pixel terms, so a smaller step drowns in round-off.
  // Parameters of every layer (weights and biases of f_inv, encoder, decoder).
  const std::vector<size_t> probes = test::dense_layer_probes(model, 6, 2);
  const test::FiniteDifferences fd =
      test::central_differences(model, probes, grads, 1e-4, [&] { return loss_at(model, 5); });
  EXPECT_LT(fd.worst, 2e-5);
  EXPECT_GT(fd.nonzero, int(probes.size()) / 2) << "most probed gradients should be non-zero";
}

TEST(Model, FloatPlanMatchesDoublePlanForOneStep) {
  auto bf = make_cpu_backend<float>(1);
  auto bd = make_cpu_backend<double>(1);
  EquiVae<float> mf(tiny_config(), *bf);
  EquiVae<double> md(tiny_config(), *bd);
  BalancedBatchSampler sampler(digits().labels, 10, 4, 3, 7);
  Batch batch;
  sampler.sample(0, batch);
  mf.load_batch(batch, digits());
  md.load_batch(batch, digits());
  const StepMetrics a = mf.forward(0), b = md.forward(0);
  EXPECT_NEAR(a.recon, b.recon, 1e-4 * std::fabs(b.recon));
  EXPECT_NEAR(a.kl, b.kl, 1e-4 * std::fabs(b.kl) + 1e-6);
  mf.backward();
  md.backward();
  const auto lf = mf.all_layers();
  const auto ld = md.all_layers();
  ASSERT_EQ(lf.size(), ld.size());
  double err = 0, norm = 0;
  for (size_t l = 0; l < ld.size(); ++l) {
    for (auto [f, d] : {std::pair{lf[l]->dW, ld[l]->dW}, std::pair{lf[l]->db, ld[l]->db}}) {
      ASSERT_EQ(f.size(), d.size());
      for (size_t i = 0; i < d.size(); ++i) {
        err += (d.data[i] - f.data[i]) * (d.data[i] - f.data[i]);
        norm += d.data[i] * d.data[i];
      }
    }
  }
  EXPECT_LT(err / norm, 1e-7) << "normalised MSE of the float gradients";
}

TEST(Model, ShortRunRaisesTheElboAndLearnsClasses) {
  auto backend = make_cpu_backend<float>(1);
  EquiVaeConfig c = tiny_config();
  c.hidden = 64;
  c.latent_r = 8;
  c.k = 8;
  EquiVae<float> model(c, *backend);
  // 50 epochs, 750 steps: r takes a few hundred steps to start carrying the class.
  TrainOptions options = test::quiet_options(50);
  const Dataset train_set = digits().slice(0, 1200), test_set = digits().slice(1200, 1500);
  const double error_before = distance_classifier_error(model, train_set, test_set);
  const std::vector<EpochRecord> records = train(model, train_set, nullptr, options);
  const double error_after = distance_classifier_error(model, train_set, test_set);
  std::printf("distance-classifier error before %.3f after %.3f\n", error_before, error_after);
  ASSERT_EQ(records.size(), 50u);
  for (const EpochRecord& r : records) EXPECT_TRUE(std::isfinite(r.elbo));
  EXPECT_GT(records.back().elbo, records.front().elbo + 20) << "ELBO should rise by > 20 nats";
  EXPECT_LT(error_after, error_before - 0.05);
}

TEST(Model, ABatchRowOutsideTheDataSetIsRefused) {
  // A batch built by hand, not by the sampler: load_batch checks its rows before reading.
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(test::tiny_config(), *backend);
  BalancedBatchSampler sampler(digits().labels, 10, 4, 3, 7);
  Batch batch;
  sampler.sample(0, batch);
  EXPECT_NO_THROW(model.load_batch(batch, digits()));
  batch.rows[3] = int32_t(digits().n);
  try {
    model.load_batch(batch, digits());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("row " + std::to_string(digits().n) + " is outside " +
                                         digits().source),
              std::string::npos)
        << e.what();
  }
}

TEST(Model, DistanceClassifierRefusesALabelOutsideItsClasses) {
  // A checkpoint of 3 classes fitted on data with label 7: an error, not a write past the
  // centroids.
  const std::vector<float> embeddings = {0, 1, 2, 3, 4, 5};
  EXPECT_NO_THROW(DistanceClassifier::fit(embeddings, {0, 1, 2}, 3, 2));
  try {
    DistanceClassifier::fit(embeddings, {0, 7, 2}, 3, 2);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("label 7 of training example 1 is outside the model's 3 "
                                         "classes"),
              std::string::npos)
        << e.what();
  }
}

TEST(Model, SameSeedSameNumbers) {
  auto run = [](uint64_t seed) {
    auto backend = make_cpu_backend<float>(1);
    EquiVaeConfig c = tiny_config();
    c.seed = seed;
    EquiVae<float> model(c, *backend);
    BalancedBatchSampler sampler(digits().labels, 10, 4, 3, seed);
    Batch batch;
    for (uint64_t step = 0; step < 3; ++step) {
      sampler.sample(step, batch);
      model.train_step(batch, digits(), step);
    }
    return std::vector<float>(model.parameters(), model.parameters() + model.parameter_count());
  };
  EXPECT_EQ(run(3), run(3));
  EXPECT_NE(run(3), run(4));
}

TEST(Model, CheckpointRoundTripsBitExactly) {
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(tiny_config(), *backend);
  BalancedBatchSampler sampler(digits().labels, 10, 4, 3, 7);
  Batch batch;
  for (uint64_t step = 0; step < 2; ++step) {
    sampler.sample(step, batch);
    model.train_step(batch, digits(), step);
  }
  const std::string path = test::temp_checkpoint_path("roundtrip");
  save_checkpoint(path, model.to_checkpoint());

  EquiVaeConfig other_seed = tiny_config();
  other_seed.seed = 99;  // different initial weights, same architecture
  EquiVae<float> restored(other_seed, *backend);
  restored.load_checkpoint(load_checkpoint(path), path);
  EXPECT_EQ(restored.adam_steps(), 2);
  const Checkpoint a = model.to_checkpoint(), b = restored.to_checkpoint();
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t t = 0; t < a.tensors.size(); ++t) {
    EXPECT_EQ(a.tensors[t].name, b.tensors[t].name);
    EXPECT_EQ(a.tensors[t].shape, b.tensors[t].shape);
    EXPECT_EQ(0, std::memcmp(a.tensors[t].data.data(), b.tensors[t].data.data(),
                             a.tensors[t].data.size() * sizeof(float)))
        << a.tensors[t].name;
  }
  std::filesystem::remove(path);
}

TEST(Model, CheckpointOfAnotherArchitectureIsRefused) {
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(tiny_config(), *backend);
  const std::string path = test::temp_checkpoint_path("arch");
  save_checkpoint(path, model.to_checkpoint());
  EquiVaeConfig wider = tiny_config();
  wider.hidden = 32;
  EquiVae<float> other(wider, *backend);
  try {
    other.load_checkpoint(load_checkpoint(path), path);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(path), std::string::npos) << what;
    EXPECT_NE(what.find("different configuration"), std::string::npos) << what;
    EXPECT_NE(what.find("hidden=24"), std::string::npos) << what;
  }
  std::filesystem::remove(path);
}

TEST(Model, TruncatedCheckpointIsRejected) {
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(tiny_config(), *backend);
  const std::string path = test::temp_checkpoint_path("truncated");
  save_checkpoint(path, model.to_checkpoint());
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 100);
  try {
    load_checkpoint(path);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
}

TEST(Model, DivergenceStopsWithTheStepNamed) {
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(tiny_config(), *backend);
  model.parameters()[0] = std::nanf("");
  TrainOptions options = test::quiet_options(1);
  try {
    train(model, digits(), nullptr, options);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("epoch 1, step 1 of "), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("diverged"), std::string::npos) << e.what();
  }
}

TEST(Model, PixelsOutsideTheUnitIntervalAreRefusedBeforeTraining) {
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(tiny_config(), *backend);
  TrainOptions options = test::quiet_options(1);
  const std::vector<std::pair<float, std::string>> bad = {
      {std::nanf(""), "is nan"}, {INFINITY, "is inf"}, {1.5f, "is 1.5"}, {-0.25f, "is -0.25"}};
  for (const auto& [value, shown] : bad) {
    Dataset data = digits();
    data.source = "made-up digits";
    data.images[size_t(3) * data.dim + 17] = value;
    try {
      train(model, data, nullptr, options);
      FAIL() << "expected an error for " << shown;
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("made-up digits"), std::string::npos) << what;
      EXPECT_NE(what.find("image 3, pixel 17 " + shown), std::string::npos) << what;
    }
  }
  Dataset short_data = digits();
  short_data.images.pop_back();
  EXPECT_THROW(short_data.check_pixels(), Error);
}

// The check runs over blocks of 4,096 pixels: the first bad pixel is named wherever it lies
// (the last of a block, the first of the next, inside one, the set's last), and a later bad
// one does not hide it.
TEST(Model, TheFirstBadPixelIsNamedWhereverItLies) {
  const Dataset& clean = digits();
  const size_t last = clean.images.size() - 1;
  for (const size_t at : {size_t(4095), size_t(4096), size_t(9 * 784), last}) {
    Dataset data = clean;
    data.source = "made-up digits";
    data.images[at] = std::nanf("");
    if (at != last) data.images[last] = 2.0f;  // a later one
    test::expect_error([&] { data.check_pixels(); },
                       {"image " + std::to_string(at / size_t(data.dim)) + ", pixel " +
                        std::to_string(at % size_t(data.dim)) + " is nan"});
  }
  EXPECT_NO_THROW(clean.check_pixels());
}

}  // namespace
}  // namespace equivae
