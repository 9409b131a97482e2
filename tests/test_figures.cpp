// The model's inference API (encode_v, decode) against the networks written out on the
// host, the figures of a briefly trained tiny model (sizes, content, determinism, faults),
// and models rebuilt from checkpoints.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/checkpoint_model.h"
#include "model/equivae.h"
#include "model/evaluate.h"
#include "model/figures.h"
#include "model/trainer.h"
#include "runtime/checkpoint.h"
#include "runtime/error.h"
#include "runtime/image_grid.h"
#include "runtime/png_image.h"
#include "tests/error_checks.h"
#include "tests/fixtures.h"
#include "tests/gemm_exactness.h"
#include "tests/scratch_files.h"

namespace equivae {
namespace {

namespace fs = std::filesystem;
using test::error_of;

std::string scratch(const std::string& name) {
  return test::build_tree_file("test_figures", name);
}

// An MLP on the host in double: y = x · W + b, ReLU between layers.
std::vector<double> host_mlp(const std::vector<DenseLayer<double>*>& layers,
                             std::vector<double> x) {
  for (const DenseLayer<double>* l : layers) {
    std::vector<double> y(size_t(l->out));
    for (int j = 0; j < l->out; ++j) {
      double s = l->b.data[j];
      for (int i = 0; i < l->in; ++i) s += x[i] * l->W.data[size_t(i) * l->out + j];
      y[j] = l->relu ? std::max(s, 0.0) : s;
    }
    x = std::move(y);
  }
  return x;
}

class InferenceApi : public ::testing::TestWithParam<bool> {};

// Rows 0..n of encode_v / decode against the encoder and decoder evaluated by hand; n spans
// three chunks of the plan's R rows, the last one partial.
TEST_P(InferenceApi, EncodeAndDecodeMatchTheNetworksOnTheHost) {
  const EquiVaeConfig c = GetParam() ? test::tiny_semi_config() : test::tiny_config();
  auto backend = make_cpu_backend<double>(1);
  EquiVae<double> model(c, *backend);
  const std::vector<DenseLayer<double>*> layers = model.all_layers();
  const std::vector<DenseLayer<double>*> encoder(layers.begin() + 3, layers.begin() + 6);
  const std::vector<DenseLayer<double>*> decoder(layers.begin() + 6, layers.begin() + 9);
  ASSERT_EQ(encoder.front()->in, c.input_dim + c.latent_r);
  ASSERT_EQ(decoder.front()->in, c.latent_r + c.latent_v);

  const Dataset data = test::bundled_digits(2 * c.rows() + 7);
  const int64_t n = data.n;
  std::vector<float> r(size_t(n) * c.latent_r), v(size_t(n) * c.latent_v);
  for (size_t i = 0; i < r.size(); ++i) r[i] = float(std::sin(0.7 * double(i)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(std::cos(1.3 * double(i)));

  std::vector<float> v_mean(size_t(n) * c.latent_v), pixels(size_t(n) * c.input_dim);
  model.encode_v(data.images.data(), r.data(), n, v_mean.data());
  model.decode(r.data(), v.data(), n, pixels.data());
  double worst_v = 0, worst_x = 0;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> xr(data.image(i), data.image(i) + c.input_dim);
    xr.insert(xr.end(), r.begin() + i * c.latent_r, r.begin() + (i + 1) * c.latent_r);
    const std::vector<double> mulv = host_mlp(encoder, xr);
    for (int j = 0; j < c.latent_v; ++j)
      worst_v = std::max(worst_v, std::fabs(mulv[j] - v_mean[size_t(i) * c.latent_v + j]));
    std::vector<double> rv(r.begin() + i * c.latent_r, r.begin() + (i + 1) * c.latent_r);
    rv.insert(rv.end(), v.begin() + i * c.latent_v, v.begin() + (i + 1) * c.latent_v);
    const std::vector<double> logits = host_mlp(decoder, rv);
    for (int j = 0; j < c.input_dim; ++j)
      worst_x = std::max(
          worst_x, std::fabs(1 / (1 + std::exp(-logits[j])) - pixels[size_t(i) * c.input_dim + j]));
  }
  EXPECT_LT(worst_v, 1e-6) << "mean of q(v|r,x): the first d_v encoder outputs";
  EXPECT_LT(worst_x, 1e-6) << "decoded pixels: sigmoid of the decoder's logits";
}

INSTANTIATE_TEST_SUITE_P(SupervisedAndSemiSupervised, InferenceApi, ::testing::Bool());

// ---- Figures of a tiny model with 2-D latents, trained for a few hundred steps.

EquiVaeConfig tiny_2d_config() {
  EquiVaeConfig c = test::tiny_config();
  c.hidden = 64;
  c.latent_r = c.latent_v = 2;
  return c;
}

struct Trained {
  std::unique_ptr<Backend<float>> backend = make_cpu_backend<float>(1);
  EquiVae<float> model{tiny_2d_config(), *backend};
  Dataset train_set, figure_set;
  Trained() {
    const Dataset digits = test::bundled_digits(2000);
    train_set = digits.slice(0, 1500);
    figure_set = digits.slice(1500, 2000);
    // 15 epochs of 37 steps each: enough for r̄_y to tell the classes apart.
    TrainOptions options = test::quiet_options(15);
    train(model, train_set, nullptr, options);
  }
};

Trained& trained() {
  static Trained t;
  return t;
}

double mean_abs_difference(const float* a, const float* b, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += std::fabs(double(a[i]) - double(b[i]));
  return s / n;
}

// The PNG of tiles, read back: its size and its spread of grey levels.
Image through_png(const Tiles& tiles, const std::string& name) {
  GridLayout g;
  g.rows = tiles.rows;
  g.cols = tiles.cols;
  g.height = g.width = 28;
  const std::string path = scratch(name);
  write_png(path, tile_grid(tiles.pixels, g));
  return read_png(path);
}

double pixel_stddev(const Image& image) {
  double mean = 0, sq = 0;
  for (uint8_t p : image.pixels) mean += p;
  mean /= double(image.pixels.size());
  for (uint8_t p : image.pixels) sq += (p - mean) * (p - mean);
  return std::sqrt(sq / double(image.pixels.size()));
}

// Index of the image of data equal to tile, or −1.
int64_t find_image(const Dataset& data, const float* tile) {
  for (int64_t i = 0; i < data.n; ++i)
    if (std::equal(tile, tile + data.dim, data.image(i))) return i;
  return -1;
}

TEST(Figures, PriorSamplesOneRowPerClass) {
  FigureMaker<float> figures(trained().model, trained().figure_set, 1);
  const Tiles t = figures.prior_samples(6);
  ASSERT_EQ(t.rows, 10);
  ASSERT_EQ(t.cols, 6);
  ASSERT_EQ(t.dim, 784);
  for (float p : t.pixels) ASSERT_TRUE(p >= 0 && p <= 1);
  const Image image = through_png(t, "prior.png");
  EXPECT_EQ(image.width, 6 * 30 + 2);
  EXPECT_EQ(image.height, 10 * 30 + 2);
  EXPECT_EQ(image.channels, 1);
  EXPECT_GT(pixel_stddev(image), 40) << "digits on black, not a flat picture";
  // Rows (classes) differ from each other, and samples within a row differ.
  for (int y = 1; y < 10; ++y)
    EXPECT_GT(mean_abs_difference(t.tile(0, 0), t.tile(y, 0), 784), 0.04) << "class " << y;
  EXPECT_GT(mean_abs_difference(t.tile(3, 0), t.tile(3, 1), 784), 1e-3);
}

TEST(Figures, SameSeedSameFigureOtherSeedOtherSamples) {
  FigureMaker<float> a(trained().model, trained().figure_set, 1);
  FigureMaker<float> b(trained().model, trained().figure_set, 1);
  FigureMaker<float> c(trained().model, trained().figure_set, 2);
  const Tiles ta = a.prior_samples(3), tb = b.prior_samples(3), tc = c.prior_samples(3);
  EXPECT_EQ(ta.pixels, tb.pixels);
  EXPECT_NE(ta.pixels, tc.pixels);
  EXPECT_EQ(a.interpolations(3).pixels, b.interpolations(3).pixels);
}

TEST(Figures, InterpolationsRunBetweenTwoImagesOfTheClass) {
  const Dataset& data = trained().figure_set;
  FigureMaker<float> figures(trained().model, data, 1);
  const Tiles t = figures.interpolations(5);
  ASSERT_EQ(t.rows, 10);
  ASSERT_EQ(t.cols, 7);
  for (int y = 0; y < 10; ++y) {
    const int64_t a = find_image(data, t.tile(y, 0)), b = find_image(data, t.tile(y, 6));
    ASSERT_GE(a, 0) << "the first column shows an image of the set";
    ASSERT_GE(b, 0) << "the last column shows an image of the set";
    EXPECT_NE(a, b);
    EXPECT_EQ(data.labels[a], y);
    EXPECT_EQ(data.labels[b], y);
    EXPECT_GT(mean_abs_difference(t.tile(y, 1), t.tile(y, 5), 784), 1e-3)
        << "class " << y << ": the two ends decode differently";
  }
  EXPECT_GT(pixel_stddev(through_png(t, "interpolations.png")), 40);
}

TEST(Figures, StyleSwapRowsAreClassesColumnsAreStyles) {
  const Dataset& data = trained().figure_set;
  FigureMaker<float> figures(trained().model, data, 1);
  const Tiles t = figures.style_swap();
  ASSERT_EQ(t.rows, 11);
  ASSERT_EQ(t.cols, 10);
  for (int j = 0; j < 10; ++j) {
    const int64_t source = find_image(data, t.tile(0, j));
    ASSERT_GE(source, 0) << "row 0 shows the source images";
    EXPECT_EQ(data.labels[source], j);
  }
  // Row 1 + i, column j decodes (r̄_i, mean q(v | r̄_j, x^j)), recomputed here one row at a
  // time: bit for bit where the GEMMs give a row the same bits in a product of any size.
  const bool exact = test::gemm_rows_exact_anywhere();
  std::vector<float> sources(t.pixels.begin(), t.pixels.begin() + 10 * 784), styles(10 * 2);
  trained().model.encode_v(sources.data(), figures.centroids().data(), 10, styles.data());
  for (int i : {0, 4, 9}) {
    for (int j : {1, 7}) {
      std::vector<float> expected(784);
      trained().model.decode(&figures.centroids()[size_t(i) * 2], &styles[size_t(j) * 2], 1,
                             expected.data());
      test::expect_same_rows(std::vector<float>(t.tile(1 + i, j), t.tile(1 + i, j) + 784), expected,
                             exact, "row " + std::to_string(i) + " column " + std::to_string(j));
    }
    EXPECT_GT(mean_abs_difference(t.tile(1 + i, 0), t.tile(1 + i, 1), 784), 1e-3)
        << "styles differ along a row";
  }
  EXPECT_GT(mean_abs_difference(t.tile(1, 0), t.tile(2, 0), 784), 1e-3)
      << "classes differ down a column";
  const Image image = through_png(t, "style_swap.png");
  EXPECT_EQ(image.height, 11 * 30 + 2);
}

TEST(Figures, TwoDimensionalGridsSpanTheirLatent) {
  FigureMaker<float> figures(trained().model, trained().figure_set, 1);
  const Tiles r_grid = figures.invariant_grid(5);
  ASSERT_EQ(r_grid.rows, 5);
  ASSERT_EQ(r_grid.cols, 5);
  EXPECT_GT(mean_abs_difference(r_grid.tile(0, 0), r_grid.tile(4, 4), 784), 0.02)
      << "opposite corners of the invariant space decode to different digits";
  const Tiles v_grid = figures.equivariant_grid(3, 4, 2.0);
  ASSERT_EQ(v_grid.rows, 4);
  ASSERT_EQ(v_grid.cols, 4);
  EXPECT_GT(mean_abs_difference(v_grid.tile(0, 0), v_grid.tile(3, 3), 784), 1e-3);
  const Tiles four = figures.equivariant_grid(4, 4, 2.0);
  const Tiles both = side_by_side({v_grid, four}, 1.0f);
  EXPECT_EQ(both.cols, 9);
  EXPECT_EQ(std::vector<float>(both.tile(2, 4), both.tile(2, 4) + 784),
            std::vector<float>(784, 1.0f))
      << "a column of fill between the panels";
  EXPECT_EQ(std::vector<float>(both.tile(2, 5), both.tile(2, 5) + 784),
            std::vector<float>(four.tile(2, 0), four.tile(2, 0) + 784))
      << "the second panel starts after the fill";
  EXPECT_GT(pixel_stddev(through_png(r_grid, "invariant_grid.png")), 40);
}

TEST(Figures, RefusesWhatItCannotDraw) {
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(test::tiny_config(), *backend);  // d_r = 3, d_v = 4
  FigureMaker<float> figures(model, trained().figure_set, 1);
  EXPECT_NE(error_of([&] { figures.invariant_grid(4); }).find("needs a 2-D invariant latent"),
            std::string::npos);
  EXPECT_NE(error_of([&] { figures.equivariant_grid(0, 4, 2); }).find("d_v = 4"),
            std::string::npos);
  // A class with a single image cannot give two to interpolate between.
  Dataset few = trained().figure_set.slice(0, 40);
  int64_t kept = -1;
  for (int64_t i = 0; i < few.n; ++i)
    if (few.labels[i] == 5) {
      if (kept >= 0) few.labels[i] = 6;
      kept = kept >= 0 ? kept : i;
    }
  const std::string message = error_of([&] { FigureMaker<float>(model, few, 1); });
  EXPECT_NE(message.find("class 5 has 1 images"), std::string::npos) << message;
  EXPECT_NE(message.find(few.source), std::string::npos) << message;
}

TEST(Latents, PooledInvariantsAverageOtherMembersOfTheClass) {
  // Row i embeds as (i, label): the pooled second coordinate must stay the label, the first
  // must avoid i (m = 1) or be the mean of all the others (m ≥ class size − 1).
  const std::vector<int32_t> labels = {0, 1, 0, 1, 0, 2, 2, 0};
  std::vector<float> finv;
  for (size_t i = 0; i < labels.size(); ++i) finv.insert(finv.end(), {float(i), float(labels[i])});
  const std::vector<float> one = pooled_invariants(finv, labels, 2, 1, 3);
  const std::vector<float> all = pooled_invariants(finv, labels, 2, 10, 3);
  for (size_t i = 0; i < labels.size(); ++i) {
    EXPECT_EQ(one[2 * i + 1], float(labels[i]));
    EXPECT_NE(one[2 * i], float(i));
    EXPECT_EQ(labels[size_t(one[2 * i])], labels[i]) << "pooled from its own class";
    double others = 0;
    int count = 0;
    for (size_t j = 0; j < labels.size(); ++j)
      if (j != i && labels[j] == labels[i]) others += double(j), ++count;
    EXPECT_FLOAT_EQ(all[2 * i], float(others / count));
  }
}

// ---- Models rebuilt from checkpoints.

TEST(CheckpointModel, RebuildsTheConfigurationAndTheWeights) {
  for (const EquiVaeConfig& c : {test::tiny_config(), test::tiny_semi_config()}) {
    auto backend = make_cpu_backend<float>(1);
    EquiVae<float> model(c, *backend);
    const std::string path = scratch("model.safetensors");
    save_checkpoint(path, model.to_checkpoint());
    const Checkpoint ckpt = load_checkpoint(path);
    EXPECT_EQ(config_from_checkpoint(ckpt, path).describe(), c.describe());

    auto other_backend = make_cpu_backend<float>(1);
    const std::unique_ptr<EquiVae<float>> loaded = load_model(path, *other_backend);
    ASSERT_EQ(loaded->parameter_count(), model.parameter_count());
    EXPECT_TRUE(std::equal(model.parameters(), model.parameters() + model.parameter_count(),
                           loaded->parameters()));
  }
}

TEST(CheckpointModel, MalformedConfigMetadataNamesTheFile) {
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(test::tiny_config(), *backend);
  Checkpoint ckpt = model.to_checkpoint();
  const std::string path = "some/model.safetensors";
  auto with = [&](const std::string& config) {
    Checkpoint c = ckpt;
    c.metadata["config"] = config;
    return error_of([&] { config_from_checkpoint(c, path); });
  };
  EXPECT_NE(with("input_dim=784 hidden=abc").find(path + ": config metadata: hidden=abc"),
            std::string::npos);
  EXPECT_NE(with("input_dim=784 colour=blue").find("unknown key 'colour'"), std::string::npos);
  EXPECT_NE(with("input_dim=784 hidden").find("'hidden' is not key=value"), std::string::npos);
  EXPECT_NE(with("latent_r=0").find("latent_r must be positive"), std::string::npos);
  ckpt.metadata.erase("config");
  EXPECT_NE(error_of([&] { config_from_checkpoint(ckpt, path); }).find("not an EquiVAE checkpoint"),
            std::string::npos);
}

// A tiny model's checkpoint, saved with `change` applied, and its path.
std::string saved_checkpoint(const std::string& name,
                             const std::function<void(Checkpoint&)>& change) {
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(test::tiny_config(), *backend);
  Checkpoint ckpt = model.to_checkpoint();
  change(ckpt);
  const std::string path = scratch(name);
  save_checkpoint(path, ckpt);
  return path;
}

NamedTensor& tensor_named(Checkpoint& ckpt, const std::string& name) {
  for (NamedTensor& t : ckpt.tensors)
    if (t.name == name) return t;
  throw Error(name, "no such tensor in the test's checkpoint");
}

TEST(CheckpointModel, NonFiniteWeightsAreRefusedNamingTheFileTheTensorAndTheElement) {
  // A NaN or an infinity would give an all-NaN embedding or one class for every image, and
  // the tools would exit 0: the shared loader refuses the file instead.
  const struct {
    const char* tensor;
    size_t element;
    float value;
    const char* shown;
  } cases[] = {{"finv.2.bias", 1, std::nanf(""), "nan"},
               {"decoder.0.weight", 7, INFINITY, "inf"},
               {"encoder.1.bias", 0, -INFINITY, "-inf"}};
  for (const auto& c : cases) {
    const std::string path = saved_checkpoint("non_finite.safetensors", [&](Checkpoint& ckpt) {
      tensor_named(ckpt, c.tensor).data[c.element] = c.value;
    });
    auto backend = make_cpu_backend<float>(1);
    Checkpoint back = load_checkpoint(path);
    const size_t n = tensor_named(back, c.tensor).data.size();
    EXPECT_EQ(error_of([&] { load_model(path, *backend); }),
              path + ": tensor " + c.tensor + " holds a non-finite value (element " +
                  std::to_string(c.element) + " of " + std::to_string(n) + " = " + c.shown +
                  "): the checkpoint is damaged");
  }
}

TEST(CheckpointModel, InferenceLoadsAWeightsOnlyCheckpoint) {
  // Adam's moments are training state: a file without them (exported weights) loads for
  // inference, with the same weights.
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(test::tiny_config(), *backend);
  const std::string path = saved_checkpoint("weights_only.safetensors", [](Checkpoint& ckpt) {
    std::erase_if(ckpt.tensors, [](const NamedTensor& t) { return t.name.rfind("adam.", 0) == 0; });
  });
  const std::unique_ptr<EquiVae<float>> loaded = load_model(path, *backend);
  EXPECT_TRUE(std::equal(model.parameters(), model.parameters() + model.parameter_count(),
                         loaded->parameters()));
  // A missing parameter is named with the file.
  const std::string partial = saved_checkpoint("partial.safetensors", [](Checkpoint& ckpt) {
    std::erase_if(ckpt.tensors, [](const NamedTensor& t) { return t.name == "decoder.1.bias"; });
  });
  EXPECT_NE(error_of([&] {
              load_model(partial, *backend);
            }).find(partial + ": tensor decoder.1.bias is missing (the checkpoint holds 19"),
            std::string::npos);
}

TEST(CheckpointModel, AnUnknownFormatVersionIsRefused) {
  auto backend = make_cpu_backend<float>(1);
  const std::string newer = saved_checkpoint("newer.safetensors", [](Checkpoint& ckpt) {
    EXPECT_EQ(ckpt.metadata.at("format"), "equivae-checkpoint-1");  // the only one so far
    ckpt.metadata["format"] = "equivae-checkpoint-99";
  });
  EXPECT_EQ(error_of([&] { load_model(newer, *backend); }),
            newer +
                ": checkpoint format 'equivae-checkpoint-99' is not one this build reads (it "
                "reads equivae-checkpoint-1): written by a newer build, or not an EquiVAE "
                "checkpoint");
  // Another writer's file without the key is read on its config and tensors.
  const std::string unversioned = saved_checkpoint(
      "unversioned.safetensors", [](Checkpoint& ckpt) { ckpt.metadata.erase("format"); });
  EXPECT_NO_THROW(load_model(unversioned, *backend));
}

TEST(CheckpointModel, ADenseModelRefusesImagesOfAnotherShapeWithAsManyPixels) {
  Dataset tall;  // 56 × 14: MNIST's 784 pixels in another shape
  tall.n = 1, tall.rows = 56, tall.cols = 14, tall.dim = 784;
  tall.images.assign(784, 0.5f);
  tall.labels = {0};
  tall.source = "tall-images";
  auto backend = make_cpu_backend<float>(1);
  const std::string path = saved_checkpoint("shaped.safetensors", [](Checkpoint& ckpt) {
    EXPECT_EQ(ckpt.metadata.at("image_shape"), "1x28x28");
  });
  const std::unique_ptr<EquiVae<float>> model = load_model(path, *backend);
  EXPECT_EQ(error_of([&] { model->check_image_size(tall); }),
            "tall-images: images are 1x56x14, the model expects 1x28x28 images (the same 784 "
            "values in another shape)");
  // A checkpoint of an older build records no shape: the pixel count is all it can check.
  const std::string older = saved_checkpoint(
      "unshaped.safetensors", [](Checkpoint& ckpt) { ckpt.metadata.erase("image_shape"); });
  EXPECT_NO_THROW(load_model(older, *backend)->check_image_size(tall));
  // A damaged shape is refused with the file named.
  for (const char* bad : {"1x28", "1x28x28x1", "0x28x28", "2x28x28", "1x28xx28", " 1x28x28"}) {
    const std::string damaged = saved_checkpoint(
        "bad_shape.safetensors", [&](Checkpoint& ckpt) { ckpt.metadata["image_shape"] = bad; });
    EXPECT_NE(
        error_of([&] { load_model(damaged, *backend); }).find(damaged + ": metadata image_shape"),
        std::string::npos)
        << bad;
  }
}

}  // namespace
}  // namespace equivae
