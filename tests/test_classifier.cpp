// Dropout (the op through the harness, its statistics) and the paper's classifiers: the whole
// backward against finite differences with dropout on, float vs double, learning a separable
// problem and the bundled MNIST digits, determinism, early-stopping selection; the classifier
// with a conv trunk (the SVHN benchmark classifier): finite differences with and without
// dropout and over a padded partial batch, float vs double, the emulated CUDA backend vs the
// CPU, learning made-up images, configuration errors, the presets.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/philox.h"
#include "model/architecture.h"
#include "model/classifier.h"
#include "model/idx_dataset.h"
#include "runtime/backend.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/error.h"
#include "runtime/interrupt.h"
#include "tests/conv_fixtures.h"
#include "tests/error_checks.h"
#include "tests/op_harness.h"

namespace equivae {
namespace {

using test::Buffers;
using test::BufferSpec;
using test::expect_error;

// ---- the op

struct DropoutCase {
  size_t n = 301;
  double rate = 0.3;
  uint64_t step = 4;
  uint32_t stream = 2;
  std::vector<BufferSpec> inputs() const { return {{"x", n, -2, 2}}; }
  std::vector<BufferSpec> outputs() const { return {{"y", n}, {"mask", n, 0, 0, false}}; }
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

struct GradientCheck {
  double worst = 0;  // largest |numeric − analytic| / (1 + |numeric|)
  int probed = 0, nonzero = 0;
};

// Central differences of the loaded batch's loss over every parameter (host memory: the CPU
// backend), against the analytic gradient of one backward; `training` with the masks of step.
GradientCheck check_gradients(MlpClassifier<double>& clf, bool training, uint64_t step) {
  clf.forward(training, step);
  clf.backward();
  const std::vector<double> grads(clf.gradients(), clf.gradients() + clf.parameter_count());
  const double h = 1e-6;
  GradientCheck g;
  for (Layer<double>& layer : clf.layers()) {
    for (Tensor<double>* t : {&layer.W, &layer.b}) {
      for (size_t i = 0; i < t->size(); ++i) {
        const size_t p_index = size_t(t->data + i - clf.parameters());
        double& w = t->data[i];
        const double saved = w;
        w = saved + h;
        const double up = clf.forward(training, step);
        w = saved - h;
        const double down = clf.forward(training, step);
        w = saved;
        const double numeric = (up - down) / (2 * h);
        g.worst = std::max(g.worst, std::fabs(numeric - grads[p_index]) / (1 + std::fabs(numeric)));
        g.nonzero += std::fabs(numeric) > 1e-9;
        ++g.probed;
      }
    }
  }
  std::printf("%d parameters probed, %d with a non-zero gradient, worst error %.2e\n", g.probed,
              g.nonzero, g.worst);
  return g;
}

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
  const GradientCheck g = check_gradients(clf, true, step);
  EXPECT_LT(g.worst, 1e-8);
  EXPECT_GT(g.nonzero, g.probed / 2);
}

double normalised_mse(const std::vector<double>& reference, const std::vector<double>& other) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < reference.size(); ++i) {
    err += (reference[i] - other[i]) * (reference[i] - other[i]);
    norm += reference[i] * reference[i];
  }
  return err / norm;
}

// The normalised MSE of the float plan's gradients against the double plan's, gathered layer by
// layer: the flat buffers' alignment padding differs between float and double.
double float_gradient_mse(MlpClassifier<float>& cf, MlpClassifier<double>& cd) {
  std::vector<double> gd, gf;
  for (size_t l = 0; l < cd.layers().size(); ++l) {
    for (auto [f, d] : {std::pair{cf.layers()[l].dW, cd.layers()[l].dW},
                        std::pair{cf.layers()[l].db, cd.layers()[l].db}}) {
      gd.insert(gd.end(), d.data, d.data + d.size());
      gf.insert(gf.end(), f.data, f.data + f.size());
    }
  }
  return normalised_mse(gd, gf);
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
  EXPECT_LT(float_gradient_mse(cf, cd), 1e-7) << "normalised MSE of the float gradients";
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

// Asked before each step (reproduce passes Ctrl-C's flag): a stop throws Interrupted naming
// the epoch and step, with no step taken after it; a callback that never stops changes nothing.
TEST(Classifier, StopsBeforeTheStepWhenAsked) {
  const Problem train = separable(530, 8, 3, 20), val = separable(100, 8, 3, 21);
  ClassifierConfig config = neural_classifier_preset();
  config.epochs = 5;
  config.batch = 64;  // 9 steps per epoch
  auto backend = make_cpu_backend<float>(1);
  MlpClassifier<float> stopped(8, 3, config, *backend);
  int asked = 0;
  try {
    stopped.train(train.x, train.y, &val.x, &val.y, [&] { return ++asked == 12; });
    ADD_FAILURE() << "the classifier did not stop";
  } catch (const Interrupted& e) {
    EXPECT_EQ(e.context(), "classifier epoch 2 of 5, step 3 of 9");
    EXPECT_NE(std::string(e.what()).find("stopped on request before this step"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(asked, 12);
  EXPECT_EQ(stopped.adam_steps(), 11);

  MlpClassifier<float> plain(8, 3, config, *backend), polled(8, 3, config, *backend);
  const TrainSummary a = plain.train(train.x, train.y, &val.x, &val.y);
  const TrainSummary b = polled.train(train.x, train.y, &val.x, &val.y, [] { return false; });
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(a.validation_error, b.validation_error);
  EXPECT_EQ(polled.adam_steps(), 45);
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

// ---- the classifier with a conv trunk

constexpr int kTinyIn = 2 * 8 * 8;  // 2×8×8 images

// conv 2→3 (8×8 → 4×4), conv 3→4 (→ 2×2): F = 16 features, then dense 16 → 5 → classes.
ClassifierConfig tiny_conv_classifier(int batch, double dropout) {
  ClassifierConfig c;
  c.convolutions = {LayerSpec::conv2d(2, 8, 8, 3, 4, 2, 1), LayerSpec::conv2d(3, 4, 4, 4, 4, 2, 1)};
  c.hidden = {5};
  c.dropout = dropout;
  c.batch = batch;
  c.seed = 11;  // an initialisation with most ReLUs live on these images
  return c;
}

// n NCHW images 2×8×8: noise in [0, 0.6) with the quadrant of the class (0 top-left,
// 1 top-right, 2 bottom-left, 3 bottom-right) brightened by `brightness` in both channels.
Problem bright_quadrant_images(int n, uint64_t stream, double brightness = 0.4) {
  Problem p;
  p.x.resize(size_t(n) * kTinyIn);
  p.y.resize(n);
  for (int i = 0; i < n; ++i) {
    const int y = int(philox_below(4, 31, stream, 0, uint32_t(i)));
    p.y[i] = y;
    for (int c = 0; c < 2; ++c)
      for (int r = 0; r < 8; ++r)
        for (int col = 0; col < 8; ++col) {
          const size_t e = size_t(i) * kTinyIn + size_t(c * 64 + r * 8 + col);
          const bool bright = (r / 4) * 2 + col / 4 == y;
          p.x[e] = float(test::random_in(stream, e, 0, 0.6) + (bright ? brightness : 0.0));
        }
  }
  return p;
}

template <class T>
std::vector<double> download_all(Backend<T>& be, const T* data, size_t n) {
  std::vector<T> host(n);
  be.download(host.data(), data, n * sizeof(T));
  return std::vector<double>(host.begin(), host.end());
}

TEST(ConvClassifier, LayersAndDropoutPlaces) {
  auto backend = make_cpu_backend<double>(1);
  MlpClassifier<double> clf(kTinyIn, 3, tiny_conv_classifier(5, 0.5), *backend);
  ASSERT_EQ(clf.layers().size(), 4u);
  EXPECT_TRUE(clf.convolutional());
  EXPECT_EQ(clf.layers()[0].kind, LayerKind::conv2d);
  EXPECT_EQ(clf.layers()[1].kind, LayerKind::conv2d);
  EXPECT_EQ(clf.layers()[2].kind, LayerKind::dense);
  EXPECT_EQ(clf.layers()[2].in, 16);  // the trunk's 4×2×2 output as a flat row
  EXPECT_EQ(clf.layers()[3].out, 3);
  // ReLU after every layer but the output.
  for (size_t l = 0; l < 3; ++l) EXPECT_TRUE(clf.layers()[l].relu) << l;
  EXPECT_FALSE(clf.layers()[3].relu);
  // 3·2·4·4 + 3, 4·3·4·4 + 4, 16·5 + 5, 5·3 + 3 (and any alignment padding).
  EXPECT_GE(clf.parameter_count(), size_t(99 + 196 + 85 + 18));

  // With no dense hidden layer the only dropout is the one after the trunk.
  ClassifierConfig trunk_only = tiny_conv_classifier(5, 0.5);
  trunk_only.hidden.clear();
  MlpClassifier<double> direct(kTinyIn, 3, trunk_only, *backend);
  const Problem p = bright_quadrant_images(5, 1);
  direct.load_batch(p.x.data(), nullptr, nullptr, 5);
  EXPECT_NE(direct.forward(true, 3), direct.forward(false, 3)) << "no dropout after the trunk";
  EXPECT_EQ(direct.forward(false, 3), direct.forward(false, 4)) << "dropout while not training";
}

TEST(ConvClassifier, WholeBackwardMatchesFiniteDifferencesInDouble) {
  const Problem p = bright_quadrant_images(5, 2);
  for (double dropout : {0.0, 0.4}) {
    auto backend = make_cpu_backend<double>(1);
    MlpClassifier<double> clf(kTinyIn, 4, tiny_conv_classifier(5, dropout), *backend);
    clf.load_batch(p.x.data(), p.y.data(), nullptr, 5);
    const uint64_t step = 7;
    if (dropout > 0) {
      EXPECT_NE(clf.forward(true, step), clf.forward(false, step));
    }
    const GradientCheck g = check_gradients(clf, dropout > 0, step);
    EXPECT_LT(g.worst, 1e-7) << "dropout " << dropout;
    EXPECT_GT(g.nonzero, g.probed / 2) << "dropout " << dropout;
  }
}

TEST(ConvClassifier, PaddedRowsOfAPartialBatchContributeNothing) {
  // 3 rows in a plan of 5 against the same 3 rows in a plan of 3 (same seed: same parameters,
  // and the first rows' dropout masks are the same elements).
  const Problem p = bright_quadrant_images(5, 3);
  auto b5 = make_cpu_backend<double>(1);
  auto b3 = make_cpu_backend<double>(1);
  MlpClassifier<double> five(kTinyIn, 4, tiny_conv_classifier(5, 0.4), *b5);
  MlpClassifier<double> three(kTinyIn, 4, tiny_conv_classifier(3, 0.4), *b3);
  ASSERT_EQ(five.parameter_count(), three.parameter_count());
  ASSERT_TRUE(std::equal(five.parameters(), five.parameters() + five.parameter_count(),
                         three.parameters()));
  const uint64_t step = 2;
  // A full batch first, so that the partial one must overwrite the rows it does not use.
  five.load_batch(p.x.data(), p.y.data(), nullptr, 5);
  five.forward(true, step);
  five.backward();

  const int64_t rows[3] = {4, 0, 2};
  five.load_batch(p.x.data(), p.y.data(), rows, 3);
  three.load_batch(p.x.data(), p.y.data(), rows, 3);
  const double l5 = five.forward(true, step), l3 = three.forward(true, step);
  EXPECT_NEAR(l5, l3, 1e-13 * std::fabs(l3));
  five.backward();
  three.backward();
  const size_t n = five.parameter_count();
  const std::vector<double> g5(five.gradients(), five.gradients() + n),
      g3(three.gradients(), three.gradients() + n);
  double worst = 0, norm = 0;
  for (size_t i = 0; i < n; ++i)
    worst = std::max(worst, std::fabs(g5[i] - g3[i])), norm = std::max(norm, std::fabs(g3[i]));
  std::printf("partial batch: loss %.15f vs %.15f, worst gradient difference %.2e of %.2e\n", l5,
              l3, worst, norm);
  EXPECT_LT(worst, 1e-12 * norm);
  EXPECT_GT(norm, 0);

  // And the partial batch's gradient is that of the mean loss over its 3 rows.
  const GradientCheck g = check_gradients(five, true, step);
  EXPECT_LT(g.worst, 1e-7);
  EXPECT_GT(g.nonzero, g.probed / 2);
}

TEST(ConvClassifier, FloatPlanMatchesDoublePlanForOneStep) {
  auto bf = make_cpu_backend<float>(1);
  auto bd = make_cpu_backend<double>(1);
  const ClassifierConfig config = tiny_conv_classifier(6, 0.5);
  MlpClassifier<float> cf(kTinyIn, 4, config, *bf);
  MlpClassifier<double> cd(kTinyIn, 4, config, *bd);
  const Problem p = bright_quadrant_images(6, 4);
  for (int count : {6, 4}) {  // a full batch, then a padded one
    cf.load_batch(p.x.data(), p.y.data(), nullptr, count);
    cd.load_batch(p.x.data(), p.y.data(), nullptr, count);
    const double lf = cf.forward(true, 1), ld = cd.forward(true, 1);
    EXPECT_NEAR(lf, ld, 1e-5 * std::fabs(ld)) << count;
    cf.backward();
    cd.backward();
    EXPECT_LT(float_gradient_mse(cf, cd), 1e-7)
        << "normalised MSE of the float gradients, " << count << " rows";
  }
}

TEST(ConvClassifier, EmulatedCudaBackendMatchesTheCpu) {
  CudaBackendOptions options;
  options.strict_fp32 = true;
  auto cuda = make_emulated_cuda_backend<float>(options);
  auto cpu = make_cpu_backend<float>(1);
  ClassifierConfig config = tiny_conv_classifier(8, 0.3);
  config.epochs = 2;
  MlpClassifier<float> on_cuda(kTinyIn, 4, config, *cuda);
  MlpClassifier<float> on_cpu(kTinyIn, 4, config, *cpu);
  const Problem train = bright_quadrant_images(30, 5), held_out = bright_quadrant_images(20, 6);
  const size_t n = on_cpu.parameter_count();

  // One step on a padded partial batch.
  on_cuda.load_batch(train.x.data(), train.y.data(), nullptr, 5);
  on_cpu.load_batch(train.x.data(), train.y.data(), nullptr, 5);
  const double l_cuda = on_cuda.forward(true, 4), l_cpu = on_cpu.forward(true, 4);
  EXPECT_NEAR(l_cuda, l_cpu, 1e-5 * std::fabs(l_cpu));
  on_cuda.backward();
  on_cpu.backward();
  EXPECT_LT(normalised_mse(download_all(*cpu, on_cpu.gradients(), n),
                           download_all(*cuda, on_cuda.gradients(), n)),
            1e-9);

  // Two epochs of 30 rows in minibatches of 8 (the last one partial), then predictions.
  const TrainSummary s_cuda = on_cuda.train(train.x, train.y, nullptr, nullptr);
  const TrainSummary s_cpu = on_cpu.train(train.x, train.y, nullptr, nullptr);
  ASSERT_EQ(s_cuda.loss.size(), 2u);
  for (size_t e = 0; e < 2; ++e) EXPECT_NEAR(s_cuda.loss[e], s_cpu.loss[e], 1e-4) << e;
  EXPECT_LT(normalised_mse(download_all(*cpu, on_cpu.parameters(), n),
                           download_all(*cuda, on_cuda.parameters(), n)),
            1e-9);
  EXPECT_EQ(on_cuda.predict(held_out.x), on_cpu.predict(held_out.x));
}

TEST(ConvClassifier, LearnsBrightQuadrantsAndSelectsTheBestValidationEpoch) {
  // Faint quadrants: the validation error moves over the epochs, so the selection matters.
  const double faint = 0.15;
  const Problem train = bright_quadrant_images(400, 7, faint),
                val = bright_quadrant_images(200, 8, faint),
                test_set = bright_quadrant_images(200, 9, faint);
  auto backend = make_cpu_backend<float>(1);
  ClassifierConfig config;
  config.convolutions = {LayerSpec::conv2d(2, 8, 8, 4, 4, 2, 1),
                         LayerSpec::conv2d(4, 4, 4, 8, 4, 2, 1)};
  config.hidden = {16};
  config.dropout = 0.25;
  config.batch = 32;  // 400 = 12·32 + 16: a padded last minibatch every epoch
  config.epochs = 15;
  config.lr = 3e-3;
  MlpClassifier<float> clf(kTinyIn, 4, config, *backend);
  const double before = clf.error(test_set.x, test_set.y);
  const auto start = std::chrono::steady_clock::now();
  const TrainSummary s = clf.train(train.x, train.y, &val.x, &val.y);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double after = clf.error(test_set.x, test_set.y);
  std::printf(
      "bright quadrants: test error %.4f before, %.4f after; loss %.4f → %.4f; best "
      "validation epoch %d (%.4f); %.2f s\n",
      before, after, s.loss.front(), s.loss.back(), s.best_epoch, s.best_validation_error, seconds);
  ASSERT_EQ(s.loss.size(), 15u);
  ASSERT_EQ(s.validation_error.size(), 15u);
  for (double e : s.validation_error) std::printf(" %.3f", e);
  std::printf("\n");
  EXPECT_LT(s.loss.back(), 0.5 * s.loss.front());
  EXPECT_LE(after, 0.05);
  const auto best = std::min_element(s.validation_error.begin(), s.validation_error.end());
  EXPECT_EQ(s.best_epoch, 1 + int(best - s.validation_error.begin()));
  EXPECT_EQ(s.best_validation_error, *best);
  EXPECT_EQ(clf.error(val.x, val.y), *best);  // the kept parameters are the best epoch's
}

TEST(ConvClassifier, RejectsBadConfigurations) {
  auto backend = make_cpu_backend<float>(1);
  const ClassifierConfig good = tiny_conv_classifier(4, 0.5);
  EXPECT_NO_THROW(MlpClassifier<float>(kTinyIn, 3, good, *backend));
  expect_error([&] { MlpClassifier<float>(100, 3, good, *backend); },
               {"classifier", "input width 100", "2×8×8 = 128"});

  ClassifierConfig unchained = good;  // conv 1 expects 5 channels, conv 0 gives 3
  unchained.convolutions[1] = LayerSpec::conv2d(5, 4, 4, 4, 4, 2, 1);
  expect_error([&] { MlpClassifier<float>(kTinyIn, 3, unchained, *backend); },
               {"convolution 1 takes a 5×4×4 image", "convolution 0 gives 3×4×4"});
  unchained.convolutions[1] = LayerSpec::conv2d(3, 8, 8, 4, 4, 2, 1);  // wrong size
  expect_error([&] { MlpClassifier<float>(kTinyIn, 3, unchained, *backend); },
               {"convolution 1 takes a 3×8×8 image", "convolution 0 gives 3×4×4"});

  ClassifierConfig not_conv2d = good;
  not_conv2d.convolutions[1] = LayerSpec::dense(48, 16);
  expect_error([&] { MlpClassifier<float>(kTinyIn, 3, not_conv2d, *backend); },
               {"convolution 1 is not a conv2d layer"});
  not_conv2d.convolutions[1] = LayerSpec::conv_transpose2d(3, 4, 4, 4, 4, 2, 1);
  expect_error([&] { MlpClassifier<float>(kTinyIn, 3, not_conv2d, *backend); },
               {"convolution 1 is not a conv2d layer"});

  ClassifierConfig too_small = good;  // a 2×2 image under a 4×4 kernel without padding
  too_small.convolutions = {LayerSpec::conv2d(2, 2, 2, 3, 4, 2, 0)};
  expect_error([&] { MlpClassifier<float>(8, 3, too_small, *backend); }, {"convolution 0: "});

  ClassifierConfig bad_dropout = good;
  bad_dropout.dropout = 1;
  expect_error([&] { MlpClassifier<float>(kTinyIn, 3, bad_dropout, *backend); },
               {"dropout must lie in [0, 1)"});

  // Data whose rows are not images of the trunk's input.
  ClassifierConfig one_epoch = good;
  one_epoch.epochs = 1;
  MlpClassifier<float> clf(kTinyIn, 3, one_epoch, *backend);
  expect_error([&] { clf.train(std::vector<float>(100, 0.5f), {0}, nullptr, nullptr); },
               {"not a multiple of the 128 input features"});
}

TEST(ConvClassifier, BenchmarkPresetOfTheModel) {
  EquiVaeConfig dense;
  dense.hidden = 64;
  const ClassifierConfig d = benchmark_classifier_preset(dense);
  EXPECT_TRUE(d.convolutions.empty());
  EXPECT_EQ(d.hidden, (std::vector<int>{64, 64}));
  EXPECT_EQ(d.dropout, 0.5);
  EXPECT_EQ(benchmark_classifier_preset(EquiVaeConfig{}).hidden, (std::vector<int>{512, 512}));

  const EquiVaeConfig svhn = svhn_config();
  const ClassifierConfig c = benchmark_classifier_preset(svhn);
  const std::vector<LayerSpec> finv = network_layers(svhn).finv;
  ASSERT_EQ(c.convolutions.size(), 3u);
  for (size_t l = 0; l < 3; ++l) {
    const LayerSpec &a = c.convolutions[l], &b = finv[l];
    EXPECT_EQ(a.kind, LayerKind::conv2d) << l;
    EXPECT_EQ(b.kind, LayerKind::conv2d) << l;
    EXPECT_EQ(a.in, b.in) << l;
    EXPECT_EQ(a.out, b.out) << l;
    EXPECT_EQ(a.conv.C_in, b.conv.C_in) << l;
    EXPECT_EQ(a.conv.C_out, b.conv.C_out) << l;
    EXPECT_EQ(a.conv.H, b.conv.H) << l;
    EXPECT_EQ(a.conv.KH, b.conv.KH) << l;
    EXPECT_EQ(a.conv.stride, b.conv.stride) << l;
    EXPECT_EQ(a.conv.pad, b.conv.pad) << l;
  }
  EXPECT_EQ(c.convolutions.front().in, svhn.input_dim);  // 3·32·32
  EXPECT_EQ(c.convolutions.back().out, 128 * 4 * 4);     // F = 2048
  EXPECT_EQ(c.hidden, (std::vector<int>{svhn.hidden}));
  EXPECT_EQ(c.dropout, 0.5);
  EquiVaeConfig invalid = svhn;
  invalid.hidden = 0;
  EXPECT_THROW(benchmark_classifier_preset(invalid), Error);

  // The preset of the tiny conv model builds and trains on its images.
  const EquiVaeConfig tiny = test::tiny_conv_config();
  ClassifierConfig t = benchmark_classifier_preset(tiny);
  t.batch = 16;
  t.epochs = 2;
  auto backend = make_cpu_backend<float>(1);
  MlpClassifier<float> clf(tiny.input_dim, tiny.classes, t, *backend);
  ASSERT_EQ(clf.layers().size(), 5u);  // 3 convs, dense F → H, dense H → C
  EXPECT_EQ(clf.layers()[3].in, network_layers(tiny).finv[3].in);  // F
  const Dataset images = test::coloured_blobs(40, tiny.channels, tiny.height, tiny.classes);
  const TrainSummary s = clf.train(images.images, images.labels, nullptr, nullptr);
  ASSERT_EQ(s.loss.size(), 2u);
  for (double loss : s.loss) EXPECT_TRUE(std::isfinite(loss));
}

}  // namespace
}  // namespace equivae
