// The convolutional EquiVAE with the Gaussian likelihood (the SVHN model): the whole plan's
// gradients against finite differences in double (supervised and semi-supervised, the
// learned log-variance included), the float plan against the double plan, a short run on
// SVHN-shaped made-up images that learns, checkpoints (4-D conv weights, round trip, the
// model rebuilt from the file alone), the divergence report's names, the configuration.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "model/architecture.h"
#include "model/checkpoint_model.h"
#include "model/divergence.h"
#include "model/equivae.h"
#include "model/evaluate.h"
#include "model/sampler.h"
#include "model/subsets.h"
#include "model/trainer.h"
#include "runtime/error.h"
#include "tests/conv_fixtures.h"
#include "tests/fixtures.h"
#include "tests/scratch_files.h"

namespace equivae {
namespace {

using test::tiny_conv_config;
using test::tiny_conv_semi_config;

const Dataset& blobs8() {
  static const Dataset data = test::coloured_blobs(600, 3, 8);
  return data;
}

double loss_of(const StepMetrics& m, const EquiVaeConfig& c) {
  double loss = -(m.recon - m.kl);
  if (c.semi_supervised())
    loss += c.classifier_weight * m.classifier_nll - c.unlabelled_weight * m.unlabelled_bound;
  return loss;
}

// Loads one batch of the config's plan (semi-supervised: a labelled split of blobs8()).
struct PlanInput {
  Batch batch;
  Dataset labelled, unlabelled;
  PlanInput(const EquiVaeConfig& config, uint64_t step) {
    if (config.semi_supervised()) {
      LabelledSplit split = split_labelled(blobs8(), 100, 1);
      labelled = std::move(split.labelled);
      unlabelled = std::move(split.unlabelled);
    } else {
      labelled = blobs8();
    }
    BalancedBatchSampler sampler(labelled.labels, config.classes, config.k, config.m_max,
                                 config.seed);
    sampler.sample(step, batch);
    if (config.semi_supervised()) {
      UnlabelledSampler u(unlabelled.n, config.unlabelled, config.classes, config.k, config.m_max,
                          config.seed);
      u.sample(step, batch);
    }
  }
  const Dataset* unlabelled_set() const { return unlabelled.n > 0 ? &unlabelled : nullptr; }
};

// Which ReLU units are active, over every layer's output: a finite difference whose two
// evaluations differ here straddles a kink of the piecewise-linear network and measures no
// derivative (likely for a convolution's bias, which moves hundreds of units at once).
std::vector<bool> active_units(EquiVae<double>& model) {
  std::vector<bool> active;
  for (const DenseLayer<double>* l : model.all_layers())
    if (l->relu)
      for (size_t i = 0; i < l->y.size(); ++i) active.push_back(l->y.data[i] > 0);
  return active;
}

// Central differences against the plan's backward on probes of every parameter tensor (each
// layer's weight and bias, the log-variance): two spread elements and the three of largest
// gradient per tensor, so that every tensor is checked where its gradient is not zero.
void check_gradients(const EquiVaeConfig& config) {
  auto backend = make_cpu_backend<double>(1);
  EquiVae<double> model(config, *backend);
  const PlanInput in(config, 3);
  model.load_batch(in.batch, in.labelled, in.unlabelled_set());
  ASSERT_TRUE(std::isfinite(loss_of(model.forward(3), config)));
  model.backward();
  const std::vector<double> grads(model.gradients(), model.gradients() + model.parameter_count());

  std::vector<size_t> probes;
  int conv_layers = 0;
  for (const NamedParameter<double>& p : model.named_parameters()) {
    const size_t at = size_t(p.value - model.parameters());
    std::vector<size_t> order(p.size);
    for (size_t i = 0; i < p.size; ++i) order[i] = at + i;
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return std::fabs(grads[a]) > std::fabs(grads[b]); });
    EXPECT_GT(std::fabs(grads[order[0]]), 0.0) << p.name << " gets no gradient";
    for (size_t s = 0; s < std::min<size_t>(3, p.size); ++s) probes.push_back(order[s]);
    for (size_t s = 0; s < std::min<size_t>(2, p.size); ++s)
      probes.push_back(at + (s * 7919 + 3) % p.size);
    conv_layers += p.shape.size() == 4;
  }
  if (config.convolutional()) {
    EXPECT_EQ(conv_layers, config.semi_supervised() ? 4 * 3 : 3 * 3)
        << "every trunk and the decoder's transposes";
  }
  const double h = 1e-4;
  double worst = 0;
  int checked = 0, kinks = 0;
  for (size_t p : probes) {
    double& w = model.parameters()[p];
    const double saved = w;
    w = saved + h;
    const double up = loss_of(model.forward(3), config);
    const std::vector<bool> up_units = active_units(model);
    w = saved - h;
    const double down = loss_of(model.forward(3), config);
    const std::vector<bool> down_units = active_units(model);
    w = saved;
    if (up_units != down_units) {
      ++kinks;
      continue;
    }
    const double numeric = (up - down) / (2 * h);
    worst = std::max(worst, std::fabs(numeric - grads[p]) / (1e-4 + std::fabs(numeric)));
    ++checked;
  }
  std::printf(
      "[ info ] %d probes checked, %d straddling a ReLU kink skipped; worst relative "
      "error %.3g\n",
      checked, kinks, worst);
  EXPECT_LT(worst, 2e-5);
  EXPECT_LT(kinks, int(probes.size()) / 5);
}

TEST(ConvModel, WholeBackwardMatchesFiniteDifferencesInDouble) {
  check_gradients(tiny_conv_config());
}

TEST(ConvModel, SemiSupervisedBackwardMatchesFiniteDifferencesInDouble) {
  check_gradients(tiny_conv_semi_config());
}

TEST(ConvModel, DenseGaussianAndConvBernoulliBackwardsMatchFiniteDifferences) {
  EquiVaeConfig dense_gaussian = tiny_conv_config();
  dense_gaussian.architecture = Architecture::dense;
  check_gradients(dense_gaussian);
  EquiVaeConfig conv_bernoulli = tiny_conv_config();
  conv_bernoulli.likelihood = Likelihood::bernoulli;
  check_gradients(conv_bernoulli);
}

TEST(ConvModel, FloatPlanMatchesDoublePlanForOneStep) {
  for (const EquiVaeConfig& config : {tiny_conv_config(), tiny_conv_semi_config()}) {
    auto bf = make_cpu_backend<float>(1);
    auto bd = make_cpu_backend<double>(1);
    EquiVae<float> mf(config, *bf);
    EquiVae<double> md(config, *bd);
    const PlanInput in(config, 0);
    mf.load_batch(in.batch, in.labelled, in.unlabelled_set());
    md.load_batch(in.batch, in.labelled, in.unlabelled_set());
    const StepMetrics a = mf.forward(0), b = md.forward(0);
    EXPECT_NEAR(a.recon, b.recon, 1e-5 * std::fabs(b.recon));
    EXPECT_NEAR(a.kl, b.kl, 1e-4 * std::fabs(b.kl) + 1e-6);
    EXPECT_NEAR(a.unlabelled_bound, b.unlabelled_bound, 1e-5 * std::fabs(b.unlabelled_bound));
    mf.backward();
    md.backward();
    const auto pf = mf.named_parameters();
    const auto pd = md.named_parameters();
    ASSERT_EQ(pf.size(), pd.size());
    double err = 0, norm = 0;
    for (size_t t = 0; t < pd.size(); ++t) {
      ASSERT_EQ(pf[t].size, pd[t].size);
      for (size_t i = 0; i < pd[t].size; ++i) {
        const double d = pd[t].grad[i], f = pf[t].grad[i];
        err += (d - f) * (d - f);
        norm += d * d;
      }
    }
    EXPECT_LT(err / norm, 1e-7) << "normalised MSE of the float gradients";
  }
}

// ---- a naive reference of the networks from the checkpoint's tensors alone, PyTorch's
// semantics: nn.Conv2d / nn.ConvTranspose2d weights [C_out, C_in, k, k] / [C_in, C_out, k, k],
// dense y = x · weight + bias with weight [in, out]; images NCHW, rows flat.

struct Image {
  int C, H, W;
  std::vector<double> v;  // [C, H, W]
};

Image conv2d_ref(const Image& x, const NamedTensor& w, const NamedTensor& b, int stride, int pad,
                 bool relu) {
  const int Co = int(w.shape[0]), k = int(w.shape[2]);
  Image y{Co, (x.H + 2 * pad - k) / stride + 1, (x.W + 2 * pad - k) / stride + 1, {}};
  y.v.assign(size_t(Co) * y.H * y.W, 0);
  for (int o = 0; o < Co; ++o)
    for (int i = 0; i < y.H; ++i)
      for (int j = 0; j < y.W; ++j) {
        double sum = b.data[o];
        for (int c = 0; c < x.C; ++c)
          for (int p = 0; p < k; ++p)
            for (int q = 0; q < k; ++q) {
              const int h = i * stride - pad + p, ww = j * stride - pad + q;
              if (h < 0 || h >= x.H || ww < 0 || ww >= x.W) continue;
              sum += w.data[((size_t(o) * x.C + c) * k + p) * k + q] *
                     x.v[(size_t(c) * x.H + h) * x.W + ww];
            }
        y.v[(size_t(o) * y.H + i) * y.W + j] = relu ? std::max(sum, 0.0) : sum;
      }
  return y;
}

// Each input pixel scatters its kernel into the output: y[o, h·s − p + a, w·s − p + b] +=
// x[c, h, w] · W[c, o, a, b].
Image conv_transpose2d_ref(const Image& x, const NamedTensor& w, const NamedTensor& b, int stride,
                           int pad, bool relu) {
  const int Co = int(w.shape[1]), k = int(w.shape[2]);
  Image y{Co, (x.H - 1) * stride - 2 * pad + k, (x.W - 1) * stride - 2 * pad + k, {}};
  y.v.assign(size_t(Co) * y.H * y.W, 0);
  for (int c = 0; c < x.C; ++c)
    for (int h = 0; h < x.H; ++h)
      for (int ww = 0; ww < x.W; ++ww)
        for (int o = 0; o < Co; ++o)
          for (int p = 0; p < k; ++p)
            for (int q = 0; q < k; ++q) {
              const int i = h * stride - pad + p, j = ww * stride - pad + q;
              if (i < 0 || i >= y.H || j < 0 || j >= y.W) continue;
              y.v[(size_t(o) * y.H + i) * y.W + j] +=
                  x.v[(size_t(c) * x.H + h) * x.W + ww] *
                  w.data[((size_t(c) * Co + o) * k + p) * k + q];
            }
  for (int o = 0; o < Co; ++o)
    for (size_t i = 0; i < size_t(y.H) * y.W; ++i) {
      double& e = y.v[size_t(o) * y.H * y.W + i];
      e += b.data[o];
      if (relu) e = std::max(e, 0.0);
    }
  return y;
}

std::vector<double> dense_ref(const std::vector<double>& x, const NamedTensor& w,
                              const NamedTensor& b, bool relu) {
  const size_t in = size_t(w.shape[0]), out = size_t(w.shape[1]);
  std::vector<double> y(out);
  for (size_t j = 0; j < out; ++j) {
    double sum = b.data[j];
    for (size_t i = 0; i < in; ++i) sum += x[i] * w.data[i * out + j];
    y[j] = relu ? std::max(sum, 0.0) : sum;
  }
  return y;
}

TEST(ConvModel, EmbedAndDecodeMatchANaiveReferenceOfTheCheckpoint) {
  const EquiVaeConfig c = tiny_conv_config();
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(c, *backend);
  const Checkpoint ckpt = model.to_checkpoint();
  auto t = [&](const std::string& name) -> const NamedTensor& { return ckpt.get(name); };
  const int n = 7, dr = c.latent_r, dv = c.latent_v, D = c.input_dim;
  std::vector<float> e(size_t(n) * dr), v(size_t(n) * dv), pixels(size_t(n) * D);
  model.embed(blobs8().images.data(), n, e.data());
  for (int i = 0; i < n * dv; ++i) v[i] = float(0.3 * std::sin(1.7 * i));
  model.decode(e.data(), v.data(), n, pixels.data());
  double worst_e = 0, worst_x = 0;
  int unclamped = 0;
  for (int i = 0; i < n; ++i) {
    Image x{3, 8, 8, std::vector<double>(blobs8().image(i), blobs8().image(i) + D)};
    for (int l = 0; l < 3; ++l) {
      const std::string name = "finv." + std::to_string(l);
      x = conv2d_ref(x, t(name + ".weight"), t(name + ".bias"), 2, 1, true);
    }
    const std::vector<double> h = dense_ref(x.v, t("finv.3.weight"), t("finv.3.bias"), true);
    const std::vector<double> ref_e = dense_ref(h, t("finv.4.weight"), t("finv.4.bias"), false);
    for (int j = 0; j < dr; ++j)
      worst_e = std::max(worst_e, std::fabs(ref_e[j] - e[size_t(i) * dr + j]));

    std::vector<double> rv(e.begin() + size_t(i) * dr, e.begin() + size_t(i + 1) * dr);
    rv.insert(rv.end(), v.begin() + size_t(i) * dv, v.begin() + size_t(i + 1) * dv);
    const std::vector<double> h0 = dense_ref(rv, t("decoder.0.weight"), t("decoder.0.bias"), true);
    Image y{4 * c.conv_width, 1, 1,
            dense_ref(h0, t("decoder.1.weight"), t("decoder.1.bias"), true)};
    for (int l = 2; l < 5; ++l) {
      const std::string name = "decoder." + std::to_string(l);
      y = conv_transpose2d_ref(y, t(name + ".weight"), t(name + ".bias"), 2, 1, l < 4);
    }
    ASSERT_EQ(y.C * y.H * y.W, D);
    for (int j = 0; j < D; ++j) {
      worst_x =
          std::max(worst_x, std::fabs(std::clamp(y.v[j], 0.0, 1.0) - pixels[size_t(i) * D + j]));
      unclamped += y.v[j] > 0 && y.v[j] < 1;
    }
  }
  EXPECT_GT(unclamped, n * D / 4) << "most means should lie inside [0, 1], unclamped";
  std::printf("[ info ] largest difference: f_inv %.3g, decoded mean %.3g\n", worst_e, worst_x);
  EXPECT_LT(worst_e, 1e-5);
  EXPECT_LT(worst_x, 1e-5);
}

TEST(ConvModel, SvhnArchitectureHasTheDocumentedLayers) {
  const EquiVaeConfig c = svhn_config();
  const NetworkLayers n = network_layers(c);
  ASSERT_EQ(n.finv.size(), 5u);
  EXPECT_EQ(n.finv[0].kind, LayerKind::conv2d);
  EXPECT_EQ(n.finv[0].in, 3072);
  EXPECT_EQ(n.finv[0].out, 32 * 16 * 16);
  EXPECT_EQ(n.finv[1].out, 64 * 8 * 8);
  EXPECT_EQ(n.finv[2].out, 128 * 4 * 4);
  EXPECT_EQ(n.finv[3].in, 2048);
  EXPECT_EQ(n.finv[3].out, 512);
  EXPECT_EQ(n.finv[4].out, 16);
  EXPECT_EQ(n.encoder_features, 2048);
  ASSERT_EQ(n.encoder_trunk.size(), 3u);
  ASSERT_EQ(n.encoder_head.size(), 2u);
  EXPECT_EQ(n.encoder_head[0].in, 2048 + 16);
  EXPECT_EQ(n.encoder_head[1].out, 32);
  ASSERT_EQ(n.decoder.size(), 5u);
  EXPECT_EQ(n.decoder[0].in, 32);
  EXPECT_EQ(n.decoder[1].out, 2048);
  EXPECT_EQ(n.decoder[2].kind, LayerKind::conv_transpose2d);
  EXPECT_EQ(n.decoder[2].out, 64 * 8 * 8);
  EXPECT_EQ(n.decoder[4].out, 3072);
  EXPECT_EQ(n.decoder[4].weight_shape(), (std::vector<int64_t>{32, 3, 4, 4}));
  EXPECT_EQ(n.finv[0].weight_shape(), (std::vector<int64_t>{32, 3, 4, 4}));
  EXPECT_TRUE(n.classifier.empty());
  EXPECT_EQ(c.batch(), 160);
  EXPECT_EQ(c.m_max, 10);

  EquiVaeConfig semi = c;
  semi.unlabelled = 100;
  const NetworkLayers s = network_layers(semi);
  ASSERT_EQ(s.classifier.size(), 5u);
  EXPECT_EQ(s.classifier[0].kind, LayerKind::conv2d);
  EXPECT_EQ(s.classifier.back().out, 10);

  // Parameters: f_inv 1,222,896, encoder 1,239,296, decoder 1,232,995, log-variance 3.
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(c, *backend);
  size_t total = 0;
  for (const NamedParameter<float>& p : model.named_parameters()) total += p.size;
  EXPECT_EQ(total, 3'695'190u);
  EXPECT_GE(model.parameter_count(), total);  // the flat buffer adds alignment padding only
  EXPECT_LT(model.parameter_count(), total + 64 * 40);
}

TEST(ConvModel, ConfigurationLinesAndChecks) {
  // The dense MNIST line is the one older checkpoints hold.
  EXPECT_EQ(EquiVaeConfig().describe(),
            "input_dim=784 hidden=512 latent_r=16 latent_v=16 classes=10 k=16 m_max=7");
  EXPECT_EQ(svhn_config().describe(),
            "input_dim=3072 hidden=512 latent_r=16 latent_v=16 classes=10 k=16 m_max=10 "
            "channels=3 height=32 width=32 architecture=conv conv_width=32 likelihood=gaussian");
  EquiVaeConfig bad = svhn_config();
  bad.input_dim = 3000;
  EXPECT_THROW(bad.validate(), Error);
  bad = svhn_config();
  bad.height = bad.width = 30;
  bad.input_dim = 3 * 30 * 30;
  try {
    bad.validate();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("divisible by 8"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_architecture("resnet", "here"), Error);
  EXPECT_THROW(parse_likelihood("poisson", "here"), Error);
  // The dense Bernoulli model ignores the geometry (any IDX image size trains).
  EquiVaeConfig dense;
  dense.input_dim = 400;
  EXPECT_NO_THROW(dense.validate());
  // A step whose largest tensor would pass 2^31 elements (the kernels' 32-bit indices) is
  // refused before anything is allocated: 10 × (4096 + 100000) rows × 4096 wide; at hidden
  // 2048 the same rows fit.
  EquiVaeConfig huge;
  huge.k = 4096, huge.unlabelled = 100000, huge.hidden = 4096;
  try {
    huge.validate();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1040960 rows"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("2^31"), std::string::npos) << e.what();
  }
  huge.hidden = 2048;
  EXPECT_NO_THROW(huge.validate());
  // A checkpoint's metadata may hold any int in each field: refused, without overflowing
  // (the sanitizer build checks the arithmetic).
  EquiVaeConfig extreme = svhn_config();
  extreme.classes = extreme.k = extreme.unlabelled = extreme.hidden = INT32_MAX;
  extreme.conv_width = extreme.height = extreme.width = INT32_MAX - 7;
  EXPECT_THROW(extreme.validate(), Error);
  EquiVaeConfig conv = svhn_config();
  conv.k = 4096, conv.unlabelled = 30000;  // 340,960 rows × 32·16·16 = 8,192 values > 2^31
  EXPECT_THROW(conv.validate(), Error);
}

TEST(ConvModel, ImagesMustHaveTheGeometryAConvOrGaussianModelReads) {
  const EquiVaeConfig svhn = svhn_config();
  EXPECT_EQ(svhn.image_mismatch(3072, 3, 32, 32), "");
  // 3,072 grey values of 48 × 64 are not a colour image of 32 × 32: the shapes differ.
  EXPECT_EQ(svhn.image_mismatch(3072, 1, 48, 64),
            "images are 1x48x64, the model expects 3x32x32 images (the same 3072 values in "
            "another shape)");
  EXPECT_EQ(svhn.image_mismatch(784, 1, 28, 28),
            "images have 784 values (1x28x28), the model expects 3072 values (3x32x32)");
  // The dense Bernoulli model computes with the value count alone, but keeps the shape it
  // was trained on: 784 pixels of 16 × 49 are not a 28 × 28 digit.
  const EquiVaeConfig dense;
  EXPECT_EQ(dense.image_mismatch(784, 1, 28, 28), "");
  EXPECT_EQ(dense.image_mismatch(784, 1, 16, 49),
            "images are 1x16x49, the model expects 1x28x28 images (the same 784 values in "
            "another shape)");
  EXPECT_EQ(dense.image_mismatch(400, 1, 20, 20),
            "images have 400 values (1x20x20), the model expects 784 values (1x28x28)");
  // Without a shape (a checkpoint of an older build): the value count alone.
  EquiVaeConfig unshaped;
  unshaped.channels = unshaped.height = unshaped.width = 0;
  EXPECT_EQ(unshaped.image_mismatch(784, 1, 16, 49), "");
  EXPECT_EQ(unshaped.image_mismatch(400, 1, 20, 20),
            "images have 400 values, the model expects 784 values");
  // The model's check names the data set.
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(tiny_conv_config(), *backend);
  Dataset grey = test::coloured_blobs(4, 1, 8);
  grey.cols = 24;  // 1 × 8 × 24 = 192 values, as the model's 3 × 8 × 8
  grey.dim = 192;
  grey.images.resize(4 * 192);
  EXPECT_NO_THROW(model.check_image_size(test::coloured_blobs(4, 3, 8)));
  try {
    model.check_image_size(grey);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(
        std::string(e.what()).find(grey.source + ": images are 1x8x24, the model expects 3x8x8"),
        std::string::npos)
        << e.what();
  }
}

TEST(ConvModel, CheckpointRoundTripsAndRebuildsTheModel) {
  const EquiVaeConfig config = tiny_conv_semi_config();
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(config, *backend);
  for (uint64_t step = 0; step < 2; ++step) {
    const PlanInput in(config, step);
    model.train_step(in.batch, in.labelled, step, in.unlabelled_set());
  }
  const std::string path = test::temp_checkpoint_path("conv-roundtrip");
  const Checkpoint written = model.to_checkpoint();
  save_checkpoint(path, written);

  // Names and shapes: 4-D convolution weights, the log-variance per channel.
  auto find = [&](const std::string& name) -> const NamedTensor& { return written.get(name); };
  EXPECT_EQ(find("finv.0.weight").shape, (std::vector<int64_t>{3, 3, 4, 4}));
  EXPECT_EQ(find("finv.0.bias").shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(find("finv.3.weight").shape, (std::vector<int64_t>{12, 12}));
  EXPECT_EQ(find("encoder.2.weight").shape, (std::vector<int64_t>{12, 6, 4, 4}));
  EXPECT_EQ(find("encoder.3.weight").shape, (std::vector<int64_t>{12 + 3, 12}));
  EXPECT_EQ(find("decoder.2.weight").shape, (std::vector<int64_t>{12, 6, 4, 4}));
  EXPECT_EQ(find("decoder.4.weight").shape, (std::vector<int64_t>{3, 3, 4, 4}));
  EXPECT_EQ(find("classifier.4.weight").shape, (std::vector<int64_t>{12, 10}));
  EXPECT_EQ(find("decoder.logvar").shape, (std::vector<int64_t>{3}));
  EXPECT_NE(find("decoder.logvar").data[0], 0.0f) << "two Adam steps move the log-variance";

  // Into a model of another seed, and rebuilt from the file alone.
  EquiVaeConfig other_seed = config;
  other_seed.seed = 99;
  EquiVae<float> restored(other_seed, *backend);
  restored.load_checkpoint(load_checkpoint(path), path);
  const std::unique_ptr<EquiVae<float>> rebuilt = load_model(path, *backend);
  EXPECT_EQ(rebuilt->config().describe(), config.describe());
  EXPECT_EQ(rebuilt->config().likelihood, Likelihood::gaussian);
  // The rebuilt model is for inference: its weights only, not Adam's state.
  EXPECT_EQ(restored.adam_steps(), 2);
  EXPECT_EQ(rebuilt->adam_steps(), 0);
  for (EquiVae<float>* m : {&restored, rebuilt.get()}) {
    const Checkpoint back = m->to_checkpoint();
    ASSERT_EQ(back.tensors.size(), written.tensors.size());
    for (size_t t = 0; t < written.tensors.size(); ++t) {
      if (m == rebuilt.get() && written.tensors[t].name.rfind("adam.", 0) == 0) continue;
      EXPECT_EQ(back.tensors[t].name, written.tensors[t].name);
      EXPECT_EQ(back.tensors[t].shape, written.tensors[t].shape);
      EXPECT_EQ(0, std::memcmp(back.tensors[t].data.data(), written.tensors[t].data.data(),
                               written.tensors[t].data.size() * sizeof(float)))
          << written.tensors[t].name;
    }
  }
  // A fresh model of the same configuration (the seed draws the noise) continues as the
  // original: the same numbers, bit for bit.
  EquiVae<float> same(config, *backend);
  same.load_checkpoint(load_checkpoint(path), path);
  const PlanInput in(config, 5);
  const StepMetrics a = model.train_step(in.batch, in.labelled, 5, in.unlabelled_set());
  const StepMetrics b = same.train_step(in.batch, in.labelled, 5, in.unlabelled_set());
  EXPECT_EQ(a.recon, b.recon);
  EXPECT_EQ(a.kl, b.kl);
  EXPECT_EQ(a.unlabelled_bound, b.unlabelled_bound);
  EXPECT_EQ(0, std::memcmp(model.parameters(), same.parameters(),
                           model.parameter_count() * sizeof(float)));

  // A dense model or another likelihood refuses it, naming both configurations.
  EquiVaeConfig bernoulli = config;
  bernoulli.likelihood = Likelihood::bernoulli;
  EquiVae<float> other(bernoulli, *backend);
  try {
    other.load_checkpoint(load_checkpoint(path), path);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("likelihood=gaussian"), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
}

TEST(ConvModel, DivergenceNamesConvolutionTensorsAndTheLogVariance) {
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(tiny_conv_config(), *backend);
  EXPECT_EQ(first_non_finite_tensor(model), "");
  const std::vector<NamedParameter<float>> params = model.named_parameters();
  ASSERT_EQ(params.back().name, "decoder.logvar");
  params.back().value[1] = std::nanf("");
  EXPECT_EQ(first_non_finite_tensor(model), "parameter decoder.logvar (element 1 of 3 = nan)");
  params.back().value[1] = 0;
  params[4].grad[7] = INFINITY;  // finv.2.weight's gradient
  EXPECT_EQ(params[4].name, "finv.2.weight");
  EXPECT_EQ(first_non_finite_tensor(model), "gradient of finv.2.weight (element 7 of " +
                                                std::to_string(params[4].size) + " = inf)");
}

TEST(ConvModel, ShortSvhnShapedRunLowersTheLoss) {
  // 3×32×32 images (the SVHN geometry), 400 training blobs, narrow trunks: 12 epochs of 10
  // steps. (The distance classifier is printed, not asserted: an untrained conv trunk already
  // separates the blobs, and r takes more steps than this to carry the class.)
  EquiVaeConfig c = svhn_config();
  c.conv_width = 8;
  c.hidden = 64;
  c.latent_r = 8;
  c.latent_v = 4;
  c.k = 4;
  c.m_max = 3;
  const Dataset all = test::coloured_blobs(600, 3, 32, 10, 3);
  const Dataset train_set = all.slice(0, 400), test_set = all.slice(400, 600);
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(c, *backend);
  TrainOptions options = test::quiet_options(12);
  const auto start = std::chrono::steady_clock::now();
  const std::vector<EpochRecord> records = train(model, train_set, &test_set, options);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::vector<NamedParameter<float>> params = model.named_parameters();
  const float* logvar = params.back().value;
  std::printf(
      "[ info ] 120 steps in %.2f s; ELBO %.1f → %.1f, KL %.2f → %.2f; log-variance %.3f %.3f "
      "%.3f; distance error %.3f → %.3f\n",
      seconds, records.front().elbo, records.back().elbo, records.front().kl, records.back().kl,
      logvar[0], logvar[1], logvar[2], records.front().validation_error,
      records.back().validation_error);
  ASSERT_EQ(records.size(), 12u);
  for (const EpochRecord& r : records) {
    EXPECT_TRUE(std::isfinite(r.elbo)) << "epoch " << r.epoch;
    EXPECT_TRUE(std::isfinite(r.kl)) << "epoch " << r.epoch;
  }
  for (size_t e = 1; e < records.size(); ++e)
    EXPECT_GT(records[e].elbo, records[e - 1].elbo) << "epoch " << records[e].epoch;
  EXPECT_GT(records.back().elbo, records.front().elbo + 1000) << "the ELBO should rise";
  EXPECT_NE(logvar[0], float(2 * std::log(0.1))) << "the log-variance is trained";
}

}  // namespace
}  // namespace equivae
