// Dropout (the op through the harness, its statistics) and the paper's MLP classifiers:
// the whole backward against finite differences with dropout on, float vs double, learning a
// separable problem and the bundled MNIST digits, determinism, early-stopping selection.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/philox.h"
#include "model/classifier.h"
#include "model/idx_dataset.h"
#include "runtime/backend.h"
#include "runtime/error.h"
#include "tests/op_harness.h"

namespace equivae {
namespace {

using test::Buffers;
using test::BufferSpec;
using IntInputs = std::vector<std::pair<std::string, std::vector<int32_t>>>;

// ---- the op

struct DropoutCase {
  size_t n = 301;
  double rate = 0.3;
  uint64_t step = 4;
  uint32_t stream = 2;
  std::vector<BufferSpec> inputs() const { return {{"x", n, -2, 2}}; }
  std::vector<BufferSpec> outputs() const { return {{"y", n}, {"mask", n, 0, 0, false}}; }
  IntInputs int_inputs() const { return {}; }
  template <class T>
  void forward(Buffers<T>& b) const {
    cpu::dropout_forward(b["y"], b["mask"], b["x"], n, T(rate), 11, step, stream);
  }
  template <class T>
  void backward(Buffers<T>& b) const {
    cpu::dropout_backward(b["dx"], b["dy"], b["mask"], n);
  }
};

TEST(Dropout, MatchesReferenceAndFiniteDifferences) {
  test::expect_op_ok(test::check_op(DropoutCase{}));
}
TEST(Dropout, HighRate) {
  test::expect_op_ok(test::check_op(DropoutCase{.n = 64, .rate = 0.9}));
}
TEST(Dropout, RateZero) {
  test::expect_op_ok(test::check_op(DropoutCase{.rate = 0}));
}
TEST(Dropout, OneElement) {
  test::expect_op_ok(test::check_op(DropoutCase{.n = 1}));
}

TEST(Dropout, KeepFractionAndMeanOverManyElements) {
  const size_t n = 100000;
  for (double rate : {0.2, 0.5, 0.8}) {
    std::vector<float> x(n, 1.0f), y(n), mask(n);
    cpu::dropout_forward(y.data(), mask.data(), x.data(), n, float(rate), 1, 0, 0);
    size_t kept = 0;
    double mean = 0;
    for (size_t i = 0; i < n; ++i) {
      kept += mask[i] != 0;
      mean += y[i];
      // Inverted dropout: a kept element is scaled by exactly 1/(1 − rate).
      // (rate is passed as a float: the scale is 1/(1 − float(rate)), rounded to float).
      ASSERT_TRUE(mask[i] == 0 || mask[i] == float(1 / (1 - double(float(rate))))) << i;
    }
    mean /= double(n);
    const double keep = double(kept) / double(n), sigma = std::sqrt(rate * (1 - rate) / n);
    std::printf("rate %.1f: kept %.4f (expected %.4f), mean %.4f\n", rate, keep, 1 - rate, mean);
    EXPECT_NEAR(keep, 1 - rate, 5 * sigma);
    EXPECT_NEAR(mean, 1.0, 5 * sigma / (1 - rate));  // E[y] = x
  }
}

TEST(Dropout, RateZeroIsTheIdentity) {
  std::vector<float> x(1000), y(1000, -1), mask(1000, -1);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(test::random_in(3, i, -5, 5));
  cpu::dropout_forward(y.data(), mask.data(), x.data(), x.size(), 0.0f, 1, 7, 0);
  EXPECT_EQ(y, x);
  EXPECT_TRUE(std::all_of(mask.begin(), mask.end(), [](float m) { return m == 1; }));
}

TEST(Dropout, MaskIsAFunctionOfSeedStepStreamAndIndexOnly) {
  const size_t n = 500;
  auto mask_of = [&](uint64_t seed, uint64_t step, uint32_t stream, size_t count) {
    std::vector<double> x(count, 1.0), y(count), mask(count);
    cpu::dropout_forward(y.data(), mask.data(), x.data(), count, 0.5, seed, step, stream);
    return mask;
  };
  const std::vector<double> a = mask_of(5, 9, 1, n);
  EXPECT_EQ(a, mask_of(5, 9, 1, n));
  const std::vector<double> prefix = mask_of(5, 9, 1, 100);  // same elements, shorter call
  EXPECT_TRUE(std::equal(prefix.begin(), prefix.end(), a.begin()));
  EXPECT_NE(a, mask_of(5, 10, 1, n));  // another step
  EXPECT_NE(a, mask_of(5, 9, 2, n));   // another stream (layer)
  EXPECT_NE(a, mask_of(6, 9, 1, n));   // another seed
  for (size_t i = 0; i < n; ++i)
    EXPECT_EQ(a[i] != 0, philox_uniform<double>(5, 9, 1, uint32_t(i)) >= 0.5) << i;
  // float decides exactly as double does.
  std::vector<float> xf(n, 1.0f), yf(n), mf(n);
  cpu::dropout_forward(yf.data(), mf.data(), xf.data(), n, 0.5f, 5, 9, 1);
  for (size_t i = 0; i < n; ++i) EXPECT_EQ(mf[i] != 0, a[i] != 0) << i;
}

TEST(Dropout, ThroughTheCpuBackend) {
  auto backend = make_cpu_backend<float>(1);
  std::vector<float> x(64), y(64), mask(64), y2(64), mask2(64), dy(64), dx(64);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i) - 30, dy[i] = 1.0f + float(i);
  backend->dropout_forward(y.data(), mask.data(), x.data(), 64, 0.25f, 3, 1, 0);
  cpu::dropout_forward(y2.data(), mask2.data(), x.data(), 64, 0.25f, 3, 1, 0);
  EXPECT_EQ(y, y2);
  EXPECT_EQ(mask, mask2);
  backend->dropout_backward(dx.data(), dy.data(), mask.data(), 64);
  for (size_t i = 0; i < dx.size(); ++i) EXPECT_EQ(dx[i], dy[i] * mask[i]);
}

// ---- synthetic data

struct Problem {
  std::vector<float> x;
  std::vector<int32_t> y;
};

// Linearly separable: y = argmax_c (w_c · x) for fixed random w, x ~ U(−1, 1)^d; a fraction
// `noise` of the labels is then replaced by a random class.
Problem separable(int n, int d, int classes, uint64_t stream, double noise = 0) {
  Problem p;
  p.x.resize(size_t(n) * d);
  p.y.resize(n);
  for (size_t i = 0; i < p.x.size(); ++i) p.x[i] = float(test::random_in(stream, i, -1, 1));
  for (int i = 0; i < n; ++i) {
    int best = 0;
    double best_score = -1e300;
    for (int c = 0; c < classes; ++c) {
      double score = 0;
      for (int j = 0; j < d; ++j)
        score += test::random_in(999, size_t(c) * d + j, -1, 1) * p.x[size_t(i) * d + j];
      if (score > best_score) best_score = score, best = c;
    }
    p.y[i] = best;
    if (test::random_in(stream + 500, i, 0, 1) < noise)
      p.y[i] = int32_t(philox_below(uint32_t(classes), 77, stream, 0, uint32_t(i)));
  }
  return p;
}

// ---- the classifier

TEST(Classifier, WholeBackwardMatchesFiniteDifferencesInDoubleWithDropout) {
  auto backend = make_cpu_backend<double>(1);
  ClassifierConfig config;
  config.hidden = {9, 7};
  config.dropout = 0.4;
  config.batch = 10;
  config.seed = 3;
  MlpClassifier<double> clf(6, 4, config, *backend);
  const Problem p = separable(10, 6, 4, 1);
  clf.load_batch(p.x.data(), p.y.data(), nullptr, 10);
  const uint64_t step = 5;
  const double loss = clf.forward(true, step);
  ASSERT_TRUE(std::isfinite(loss));
  EXPECT_NE(loss, clf.forward(false, step)) << "dropout should change the loss";
  clf.forward(true, step);
  clf.backward();
  const std::vector<double> grads(clf.gradients(), clf.gradients() + clf.parameter_count());

  const double h = 1e-6;
  double worst = 0;
  int nonzero = 0, probed = 0;
  for (DenseLayer<double>& layer : clf.layers()) {
    for (Tensor<double>* t : {&layer.W, &layer.b}) {
      for (size_t i = 0; i < t->size(); ++i) {
        const size_t p_index = size_t(t->data + i - clf.parameters());
        double& w = t->data[i];
        const double saved = w;
        w = saved + h;
        const double up = clf.forward(true, step);
        w = saved - h;
        const double down = clf.forward(true, step);
        w = saved;
        const double numeric = (up - down) / (2 * h);
        worst = std::max(worst, std::fabs(numeric - grads[p_index]) / (1 + std::fabs(numeric)));
        nonzero += std::fabs(numeric) > 1e-9;
        ++probed;
      }
    }
  }
  std::printf("%d parameters probed, %d with a non-zero gradient, worst error %.2e\n", probed,
              nonzero, worst);
  EXPECT_LT(worst, 1e-8);
  EXPECT_GT(nonzero, probed / 2);
}

TEST(Classifier, FloatPlanMatchesDoublePlanForOneStep) {
  auto bf = make_cpu_backend<float>(1);
  auto bd = make_cpu_backend<double>(1);
  ClassifierConfig config;
  config.hidden = {32, 16};
  config.batch = 20;
  MlpClassifier<float> cf(12, 5, config, *bf);
  MlpClassifier<double> cd(12, 5, config, *bd);
  const Problem p = separable(20, 12, 5, 2);
  cf.load_batch(p.x.data(), p.y.data(), nullptr, 20);
  cd.load_batch(p.x.data(), p.y.data(), nullptr, 20);
  const double lf = cf.forward(true, 1), ld = cd.forward(true, 1);
  EXPECT_NEAR(lf, ld, 1e-5 * std::fabs(ld));
  cf.backward();
  cd.backward();
  double err = 0, norm = 0;
  for (size_t l = 0; l < cd.layers().size(); ++l) {
    for (auto [f, d] : {std::pair{cf.layers()[l].dW, cd.layers()[l].dW},
                        std::pair{cf.layers()[l].db, cd.layers()[l].db}}) {
      for (size_t i = 0; i < d.size(); ++i) {
        err += (d.data[i] - f.data[i]) * (d.data[i] - f.data[i]);
        norm += d.data[i] * d.data[i];
      }
    }
  }
  EXPECT_LT(err / norm, 1e-7) << "normalised MSE of the float gradients";
}

TEST(Classifier, LearnsALinearlySeparableProblem) {
  auto backend = make_cpu_backend<float>(1);
  const Problem train = separable(2000, 10, 4, 10), test_set = separable(1000, 10, 4, 11);
  ClassifierConfig config = neural_classifier_preset();
  config.epochs = 30;
  MlpClassifier<float> clf(10, 4, config, *backend);
  const double before = clf.error(test_set.x, test_set.y);
  const TrainSummary s = clf.train(train.x, train.y, nullptr, nullptr);
  const double after = clf.error(test_set.x, test_set.y);
  std::printf("separable: test error %.4f before, %.4f after; loss %.4f → %.4f\n", before, after,
              s.loss.front(), s.loss.back());
  ASSERT_EQ(s.loss.size(), 30u);
  EXPECT_LT(s.loss.back(), s.loss.front());
  EXPECT_LE(after, 0.05);
  EXPECT_EQ(s.best_epoch, 30);
  EXPECT_TRUE(s.validation_error.empty());
  EXPECT_EQ(s.best_validation_error, -1);
}

TEST(Classifier, BenchmarkPresetLearnsMnistFromAThousandLabels) {
  const Dataset digits = load_idx(EQUIVAE_SOURCE_DIR "/data/mnist10k-images-idx3-ubyte.gz",
                                  EQUIVAE_SOURCE_DIR "/data/mnist10k-labels-idx1-ubyte.gz");
  ASSERT_EQ(digits.dim, 784);
  const Dataset train = digits.slice(0, 1000), held_out = digits.slice(9000, 10000);
  auto backend = make_cpu_backend<float>(1);
  const ClassifierConfig config = benchmark_classifier_preset();  // 50 epochs of 10 steps
  MlpClassifier<float> clf(784, 10, config, *backend);
  const auto start = std::chrono::steady_clock::now();
  const TrainSummary s = clf.train(train.images, train.labels, nullptr, nullptr);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double err = clf.error(held_out.images, held_out.labels);
  std::printf(
      "MNIST benchmark classifier (784-512-512-10, dropout 0.5), 1000 labels, %d epochs: "
      "held-out error %.2f%% (train loss %.4f), %.2f s\n",
      config.epochs, 100 * err, s.loss.back(), seconds);
  EXPECT_LT(err, 0.15);
}

TEST(Classifier, SameSeedSamePredictions) {
  const Problem train = separable(530, 8, 3, 20), test_set = separable(300, 8, 3, 21);
  auto run = [&](uint64_t seed) {
    auto backend = make_cpu_backend<float>(1);
    ClassifierConfig config = neural_classifier_preset();
    config.epochs = 3;
    config.batch = 64;  // 530 = 8·64 + 18: a partial last minibatch
    config.seed = seed;
    MlpClassifier<float> clf(8, 3, config, *backend);
    const TrainSummary s = clf.train(train.x, train.y, nullptr, nullptr);
    return std::pair{s.loss, clf.predict(test_set.x)};
  };
  const auto a = run(4), b = run(4), c = run(5);
  EXPECT_EQ(a.first, b.first);
  EXPECT_EQ(a.second, b.second);
  EXPECT_NE(a.first, c.first) << "another seed should train differently";
  for (double loss : a.first) EXPECT_TRUE(std::isfinite(loss));
}

TEST(Classifier, EarlyStoppingKeepsTheBestValidationEpoch) {
  // A small noisy training set and no dropout: the network memorises the noise, so the
  // validation error bottoms out before the last epoch.
  const Problem train = separable(200, 10, 4, 30, 0.4), val = separable(500, 10, 4, 31);
  auto backend = make_cpu_backend<float>(1);
  ClassifierConfig config;
  config.hidden = {128, 64};
  config.dropout = 0;
  config.batch = 20;
  config.epochs = 40;
  MlpClassifier<float> clf(10, 4, config, *backend);
  const TrainSummary s = clf.train(train.x, train.y, &val.x, &val.y);
  ASSERT_EQ(s.validation_error.size(), 40u);
  const auto best = std::min_element(s.validation_error.begin(), s.validation_error.end());
  std::printf("validation error: epoch 1 %.3f, best %.3f at epoch %d, last %.3f\n",
              s.validation_error.front(), *best, s.best_epoch, s.validation_error.back());
  EXPECT_EQ(s.best_epoch, 1 + int(best - s.validation_error.begin()));  // the earliest minimum
  EXPECT_EQ(s.best_validation_error, *best);
  EXPECT_LT(s.best_epoch, 40) << "this setting should overfit before the last epoch";
  EXPECT_LT(*best, s.validation_error.back());
  // The parameters left in the model are those of the best epoch.
  EXPECT_EQ(clf.error(val.x, val.y), *best);
}

TEST(Classifier, RejectsBadConfigurationsAndData) {
  auto backend = make_cpu_backend<float>(1);
  ClassifierConfig bad;
  bad.hidden = {8};
  bad.dropout = 1.0;
  EXPECT_THROW(MlpClassifier<float>(4, 3, bad, *backend), Error);
  bad.dropout = 0.5;
  bad.hidden = {0};
  EXPECT_THROW(MlpClassifier<float>(4, 3, bad, *backend), Error);
  bad.hidden = {8};
  bad.batch = 0;
  EXPECT_THROW(MlpClassifier<float>(4, 3, bad, *backend), Error);

  ClassifierConfig config;
  config.hidden = {8};
  config.epochs = 1;
  MlpClassifier<float> clf(4, 3, config, *backend);
  const std::vector<float> x(12, 0.5f);
  EXPECT_THROW(clf.train(x, {0, 1}, nullptr, nullptr), Error);       // 3 rows, 2 labels
  EXPECT_THROW(clf.train(x, {0, 1, 3}, nullptr, nullptr), Error);    // label 3 of 3 classes
  EXPECT_THROW(clf.train({1, 2, 3}, {0}, nullptr, nullptr), Error);  // not a multiple of 4
  EXPECT_THROW(clf.train(x, {0, 1, 2}, &x, nullptr), Error);         // half a validation set
  EXPECT_NO_THROW(clf.train(x, {0, 1, 2}, nullptr, nullptr));
}

TEST(Classifier, Presets) {
  const ClassifierConfig neural = neural_classifier_preset();
  EXPECT_EQ(neural.hidden, (std::vector<int>{128, 64}));
  EXPECT_EQ(neural.dropout, 0.5);
  const ClassifierConfig bench = benchmark_classifier_preset();
  EXPECT_EQ(bench.hidden, (std::vector<int>{512, 512}));
  EXPECT_EQ(bench.dropout, 0.5);
  EXPECT_EQ(benchmark_classifier_preset(64).hidden, (std::vector<int>{64, 64}));
}

}  // namespace
}  // namespace equivae
