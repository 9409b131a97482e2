// The work the trainer does after each epoch, made cheap without changing what it computes:
// the validation runs f_inv (and q(y|x)) through the inference plan, in chunks of
// EquiVaeConfig::inference_chunk rows (at least the training plan's), read in place from
// device-resident images, with one download per call; with inference_chunk 0 each row's f_inv
// equals the training plan's own forward bit for bit (in larger chunks, within the GEMMs'
// rounding), and the per-epoch validation errors equal those of a chunk-by-chunk
// upload/download loop over the same chunks, as the trainer ran before; the
// checkpoint is written in the background and its file is the one a synchronous write gives;
// a checkpoint that cannot be written stops the run naming the file; each epoch's record says
// where its time went.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/emu/emu_runtime.h"
#include "model/equivae.h"
#include "model/evaluate.h"
#include "model/idx_dataset.h"
#include "model/metrics_log.h"
#include "model/resume_state.h"
#include "model/sampler.h"
#include "model/subsets.h"
#include "model/trainer.h"
#include "runtime/backend.h"
#include "runtime/checkpoint.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/error.h"
#include "runtime/host_floats.h"
#include "tests/conv_fixtures.h"
#include "tests/error_checks.h"
#include "tests/fixtures.h"
#include "tests/gemm_exactness.h"
#include "tests/scratch_files.h"

namespace equivae {
namespace {

namespace fs = std::filesystem;

// 1,010 training digits: 25 chunks of B = 40 rows and a short one of 10.
const Dataset& digits() {
  return test::kept_digits<1210>();
}
const Dataset& train_digits() {
  static const Dataset data = digits().slice(0, 1010);
  return data;
}
const Dataset& validation_digits() {
  static const Dataset data = digits().slice(1010, 1210);
  return data;
}

// The tiny configurations with inference chunks of the training plan's rows (0), of 64 rows
// (several chunks and a short last one: 1,010 training digits, 200 validation ones), and of
// the default (one chunk per set).
EquiVaeConfig with_chunk(EquiVaeConfig c, int chunk) {
  c.inference_chunk = chunk;
  return c;
}
const int kChunks[] = {0, 64, EquiVaeConfig{}.inference_chunk};

template <class T>
std::vector<T> download(Backend<T>& be, const T* src, size_t n) {
  std::vector<T> host(n);
  be.download(host.data(), src, n * sizeof(T));
  return host;
}

// A dense network's outputs as the trainer's validation computed them before the inference
// plan: chunks of `chunk` images through the training plan's layers (backend ops on buffers
// of `chunk` rows), one upload and one download per chunk → [n, out].
template <class T>
std::vector<T> chunk_by_chunk(EquiVae<T>& model, const std::vector<DenseLayer<T>*>& layers,
                              int chunk, const Dataset& data) {
  Backend<T>& be = model.backend();
  const int D = model.config().input_dim, out = layers.back()->out;
  std::vector<void*> blocks = {be.allocate(size_t(chunk) * D * sizeof(T))};
  for (const DenseLayer<T>* l : layers)
    blocks.push_back(be.allocate(size_t(chunk) * l->out * sizeof(T)));
  std::vector<T> result(size_t(data.n) * out), x(size_t(chunk) * D);
  for (int64_t begin = 0; begin < data.n; begin += chunk) {
    const int count = int(std::min<int64_t>(chunk, data.n - begin));
    std::copy(data.image(begin), data.image(begin) + size_t(count) * D, x.begin());
    be.upload(blocks[0], x.data(), size_t(count) * D * sizeof(T));
    for (size_t l = 0; l < layers.size(); ++l)
      be.dense_forward(static_cast<T*>(blocks[l + 1]), static_cast<const T*>(blocks[l]),
                       layers[l]->W.data, layers[l]->b.data, count, layers[l]->in, layers[l]->out,
                       layers[l]->relu, nullptr, false);
    const std::vector<T> y =
        download(be, static_cast<const T*>(blocks.back()), size_t(count) * out);
    std::copy(y.begin(), y.end(), result.begin() + begin * out);
  }
  for (void* block : blocks) be.release(block);
  return result;
}

// The rows of a dense stack's inference chunks (EquiVaeConfig::inference_chunk): at least the
// rows the training plan runs it over.
int dense_chunk_rows(const EquiVaeConfig& c, int training_rows) {
  return std::max(training_rows, c.inference_chunk);
}

// f_inv (the dense plan's first 3 layers) in chunks of the inference plan's rows, as float.
template <class T>
std::vector<float> chunked_embedding(EquiVae<T>& model, const Dataset& data) {
  const std::vector<DenseLayer<T>*> layers = model.all_layers();
  const std::vector<DenseLayer<T>*> finv(layers.begin(), layers.begin() + 3);  // D → H → H → d_r
  EXPECT_EQ(finv.back()->out, model.config().latent_r);
  const int rows = dense_chunk_rows(model.config(), model.config().batch());
  EXPECT_EQ(model.inference_rows(), rows);
  const std::vector<T> e = chunk_by_chunk(model, finv, rows, data);
  return std::vector<float>(e.begin(), e.end());
}

template <class T>
double chunked_validation_error(EquiVae<T>& model, const Dataset& train,
                                const Dataset& validation) {
  const EquiVaeConfig& c = model.config();
  const DistanceClassifier classifier =
      DistanceClassifier::fit(chunked_embedding(model, train), train.labels, c.classes, c.latent_r);
  return classifier.error(chunked_embedding(model, validation), validation.labels);
}

// argmax q(y|x) (the semi-supervised plan's last 3 layers) in chunks of the inference plan's
// rows (B + U at least): its error.
template <class T>
double chunked_classifier_error(EquiVae<T>& model, const Dataset& data) {
  const EquiVaeConfig& c = model.config();
  const std::vector<DenseLayer<T>*> layers = model.all_layers();
  const std::vector<DenseLayer<T>*> classifier(layers.end() - 3, layers.end());
  EXPECT_EQ(classifier.back()->out, c.classes);
  const std::vector<T> logits =
      chunk_by_chunk(model, classifier, dense_chunk_rows(c, c.batch() + c.unlabelled), data);
  int64_t wrong = 0;
  for (int64_t i = 0; i < data.n; ++i) {
    const T* row = logits.data() + size_t(i) * c.classes;
    wrong += int32_t(std::max_element(row, row + c.classes) - row) != data.labels[i];
  }
  return double(wrong) / double(data.n);
}

// Row i of embed(data) against the training plan's f_inv output for the rows of a few batches
// (a forward pass: f_inv's last layer holds [B, d_r]), bit for bit where the GEMMs give a row
// the same bits wherever it sits (test::gemm_rows_exact_anywhere), else within a float
// tolerance; and the same with the images passed as a pointer, bit for bit.
template <class T>
void expect_embedding_equals_training_forward(EquiVae<T>& model, const Dataset& data,
                                              const std::string& what) {
  const EquiVaeConfig& c = model.config();
  const int dr = c.latent_r;
  std::vector<float> all(size_t(data.n) * dr), by_pointer(all.size());
  model.embed(data, all.data());
  model.embed(data.images.data(), data.n, by_pointer.data());
  EXPECT_EQ(std::memcmp(all.data(), by_pointer.data(), all.size() * sizeof(float)), 0) << what;
  const size_t finv_layers = c.convolutional() ? 5 : 3;
  const DenseLayer<T>* last = model.all_layers()[finv_layers - 1];
  ASSERT_EQ(last->out, dr) << what;
  BalancedBatchSampler sampler(data.labels, c.classes, c.k, c.m_max, c.seed);
  Batch batch;
  int compared = 0, last_chunk_rows = 0;
  const int64_t last_chunk = data.n / model.inference_rows() * model.inference_rows();
  const bool exact = test::gemm_rows_exact_anywhere<T>();
  for (uint64_t step = 0; step < 8; ++step) {
    sampler.sample(step, batch);
    model.load_batch(batch, data);
    model.forward(step);
    const std::vector<T> e = download(model.backend(), last->y.data, size_t(c.batch()) * dr);
    std::vector<float> got, expected;
    for (int i = 0; i < c.batch(); ++i) {
      const int64_t row = batch.rows[i];
      for (int j = 0; j < dr; ++j) {
        got.push_back(float(e[size_t(i) * dr + j]));
        expected.push_back(all[size_t(row) * dr + j]);
      }
      ++compared;
      last_chunk_rows += row >= last_chunk;
    }
    test::expect_same_rows(got, expected, exact,
                           what + ": batch of step " + std::to_string(step) +
                               (exact ? "" : " (GEMMs not exact here: within 1e-5)"));
  }
  EXPECT_GT(last_chunk_rows, 0) << what << ": no row of the short last chunk was compared";
  std::printf("[ %s ] %d rows equal the training forward%s (%d in the last chunk)\n", what.c_str(),
              compared, exact ? "" : " within 1e-5", last_chunk_rows);
}

TEST(InferencePlan, EachRowEqualsTheTrainingPlansForward) {
  // Chunks of the training plan's rows (inference_chunk 0), then larger ones.
  const EquiVaeConfig exact = with_chunk(test::tiny_config(), 0);
  {
    auto be = make_cpu_backend<float>(1);
    EquiVae<float> model(exact, *be);
    EXPECT_EQ(model.inference_rows(), exact.batch());
    expect_embedding_equals_training_forward(model, train_digits(), "cpu float, 1 thread");
  }
  {
    auto be = make_cpu_backend<float>(2);
    EquiVae<float> model(exact, *be);
    expect_embedding_equals_training_forward(model, train_digits(), "cpu float, 2 threads");
  }
  {
    auto be = make_cpu_backend<double>(1);
    EquiVae<double> model(exact, *be);
    expect_embedding_equals_training_forward(model, train_digits(), "cpu double");
  }
  for (const int chunk : {64, EquiVaeConfig{}.inference_chunk}) {
    auto be = make_cpu_backend<float>(1);
    EquiVae<float> model(with_chunk(test::tiny_config(), chunk), *be);
    EXPECT_EQ(model.inference_rows(), chunk);
    expect_embedding_equals_training_forward(model, train_digits(),
                                             "cpu float, chunks of " + std::to_string(chunk));
  }
  {
    // Convolutional f_inv: chunks of B = 30 rows whatever inference_chunk says; the short last
    // chunk runs all 30 (the rest ignored).
    static const Dataset blobs = test::coloured_blobs(400, 3, 8);
    auto be = make_cpu_backend<float>(1);
    EquiVae<float> model(test::tiny_conv_config(), *be);
    EXPECT_EQ(model.inference_rows(), model.config().batch());
    expect_embedding_equals_training_forward(model, blobs, "cpu conv");
  }
  {
    // 16 and 32 channels between f_inv's convolutions: both plans keep them in oneDNN's
    // blocked layout where this build has it (Conv2dShape::x_blocked).
    static const Dataset blobs = test::coloured_blobs(400, 3, 8);
    EquiVaeConfig c = test::tiny_conv_config();
    c.conv_width = 16;
    auto be = make_cpu_backend<float>(1);
    EquiVae<float> model(c, *be);
    const std::vector<DenseLayer<float>*> layers = model.all_layers();
    const bool blocked = cpu::conv_channel_block() > 0;
    EXPECT_EQ(layers[0]->conv.y_blocked, blocked);
    EXPECT_EQ(layers[1]->conv.x_blocked && layers[1]->conv.y_blocked, blocked);
    expect_embedding_equals_training_forward(model, blobs, "cpu conv, blocked trunk");
  }
}

TEST(InferencePlan, AChunkOutOfRangeIsRefusedNamingIt) {
  auto refused = [](const EquiVaeConfig& c, const std::string& expected) {
    try {
      c.validate();
      ADD_FAILURE() << "expected an error naming " << expected;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  };
  refused(with_chunk(EquiVaeConfig{}, -1), "inference_chunk must be 0");
  refused(with_chunk(EquiVaeConfig{}, kMaxInferenceChunk + 1), "got 1048577");
  EXPECT_NO_THROW(with_chunk(EquiVaeConfig{}, kMaxInferenceChunk).validate());  // × 784 values
  // The largest chunk of a model 4,096 wide would index past 2^31 elements.
  EquiVaeConfig wide = with_chunk(EquiVaeConfig{}, kMaxInferenceChunk);
  wide.hidden = 4096;
  refused(wide, "an inference chunk of 1048576 rows of up to 4096 values");
  // A convolutional model's stacks run the training rows whatever the chunk says: its feature
  // maps (8,192 values at SVHN's first layer) are not held against the chunk.
  EXPECT_NO_THROW(with_chunk(svhn_config(), kMaxInferenceChunk).validate());
}

TEST(InferencePlan, ResidentImagesOnTheEmulatedCudaBackendGiveTheSameRows) {
  // Kept resident, the images are read in place from the device copy (no upload per call).
  auto be = make_emulated_cuda_backend<float>();
  EquiVae<float> model(test::tiny_config(), *be);
  std::vector<float> uploaded(size_t(train_digits().n) * 3), in_place(uploaded.size());
  // (d_r = 3)
  model.embed(train_digits(), uploaded.data());
  model.keep_resident(train_digits());
  model.embed(train_digits(), in_place.data());
  EXPECT_EQ(uploaded, in_place);
  expect_embedding_equals_training_forward(model, train_digits(), "emulated cuda, resident");
  model.forget_resident();
  std::vector<float> after(uploaded.size());
  model.embed(train_digits(), after.data());
  EXPECT_EQ(uploaded, after);

  // A convolutional f_inv reads whole chunks in place and uploads the short last one.
  static const Dataset blobs = test::coloured_blobs(400, 3, 8);  // 13 chunks of 30, then 10
  EquiVae<float> conv(test::tiny_conv_config(), *be);
  std::vector<float> conv_uploaded(size_t(blobs.n) * 3), conv_in_place(conv_uploaded.size());
  conv.embed(blobs, conv_uploaded.data());
  conv.keep_resident(blobs);
  conv.embed(blobs, conv_in_place.data());
  EXPECT_EQ(conv_uploaded, conv_in_place);
}

// Kept resident on a device backend, an inference pass is one captured graph: the first call
// captures it, later calls replay it, each data set (and stack) has its own, and a replay reads
// the parameters in place, so it gives what an eager pass gives after they change. A
// convolutional f_inv whose last chunk is short uploads that chunk, so it runs eagerly.
TEST(InferencePlan, ResidentPassesReplayACapturedGraphThatSeesParameterUpdates) {
  using Ops = DeviceStepOps<float>;
  auto be = make_emulated_cuda_backend<float>();
  auto* ops = dynamic_cast<Ops*>(be.get());
  ASSERT_NE(ops, nullptr);
  auto inference_replays = [&] {
    size_t n = 0;
    for (int i = 0; i < Ops::kInferenceGraphs; ++i)
      n += ops->replays(Ops::kFirstInferenceGraph + i);
    return n;
  };
  EquiVae<float> model(test::tiny_config(), *be);
  const Dataset& data = train_digits();
  const Dataset other = data.slice(100, 190);
  const size_t dr = 3;
  std::vector<float> eager(size_t(data.n) * dr), replayed(eager.size());
  model.embed(data, eager.data());
  EXPECT_EQ(inference_replays(), 0u) << "uploaded chunk by chunk: eager";
  model.keep_resident(data);
  model.keep_resident(other);
  model.embed(data, replayed.data());
  EXPECT_EQ(inference_replays(), 1u);
  EXPECT_EQ(replayed, eager);
  std::vector<float> other_eager(size_t(other.n) * dr), other_replayed(other_eager.size());
  model.embed(other, other_replayed.data());  // its own graph
  model.embed(data, replayed.data());         // the first one's again
  EXPECT_EQ(inference_replays(), 3u);
  EXPECT_EQ(replayed, eager);

  // New parameters: the replayed passes follow them.
  std::vector<float> params(model.parameter_count());
  be->download(params.data(), model.parameters(), params.size() * sizeof(float));
  for (float& p : params) p *= 0.5f;
  be->upload(model.parameters(), params.data(), params.size() * sizeof(float));
  model.embed(data, replayed.data());
  model.embed(other, other_replayed.data());
  EXPECT_EQ(inference_replays(), 5u);
  model.forget_resident();
  std::vector<float> eager_after(eager.size());
  model.embed(data, eager_after.data());
  model.embed(other, other_eager.data());
  EXPECT_EQ(inference_replays(), 5u) << "not resident: eager";
  EXPECT_NE(eager_after, eager) << "the parameters changed";
  EXPECT_EQ(replayed, eager_after);
  EXPECT_EQ(other_replayed, other_eager);

  // The conv model: 400 images in chunks of 30 end in a short chunk (eager); 390 do not.
  static const Dataset blobs = test::coloured_blobs(400, 3, 8);
  static const Dataset whole = blobs.slice(0, 390);
  EquiVae<float> conv(test::tiny_conv_config(), *be);
  std::vector<float> conv_eager(size_t(whole.n) * dr), conv_replayed(conv_eager.size()),
      short_chunk(size_t(blobs.n) * dr);
  conv.embed(whole, conv_eager.data());
  conv.keep_resident(blobs);
  conv.keep_resident(whole);
  const size_t before = inference_replays();
  conv.embed(blobs, short_chunk.data());
  EXPECT_EQ(inference_replays(), before) << "a short last chunk is uploaded: eager";
  conv.embed(whole, conv_replayed.data());
  EXPECT_EQ(inference_replays(), before + 1);
  EXPECT_EQ(conv_replayed, conv_eager);
}

// What a captured pass is keyed by: two resident sets of the same size each get their own
// graph; a results block that moved (a larger set's pass) is captured again; a second model on
// the same backend capturing into the slots does not leave the first replaying its graph; and
// q(y|x)'s pass (classify) replays as f_inv's does. Each replayed pass equals an eager one.
TEST(InferencePlan, CapturedPassesStayRightAcrossSetsModelsAndMovedResults) {
  auto be = make_emulated_cuda_backend<float>();
  // Chunks of the training plan's rows (30; 70 for q(y|x)): a larger set's results block is
  // larger than the block of one chunk of 4,096 rows, the default, would be.
  const EquiVaeConfig config = with_chunk(test::tiny_semi_config(), 0);
  EquiVae<float> first(config, *be), second(config, *be);
  const Dataset& data = train_digits();
  const Dataset a = data.slice(0, 90), b = data.slice(100, 190), big = data.slice(0, 600);
  auto embed = [](EquiVae<float>& m, const Dataset& d) {
    std::vector<float> out(size_t(d.n) * m.config().latent_r);
    m.embed(d, out.data());
    return out;
  };
  auto classify = [](EquiVae<float>& m, const Dataset& d) {
    std::vector<int32_t> out(size_t(d.n));
    m.classify(d, out.data());
    return out;
  };
  // The eager passes (nothing resident) of each model, for the same sets.
  const std::vector<float> a0 = embed(first, a), b0 = embed(first, b), big0 = embed(first, big);
  const std::vector<int32_t> labels0 = classify(first, a);
  ASSERT_NE(a0, b0);
  for (const Dataset* d : {&a, &b, &big}) first.keep_resident(*d);
  EXPECT_EQ(embed(first, a), a0);
  EXPECT_EQ(embed(first, b), b0) << "same size, another set: its own graph";
  EXPECT_EQ(classify(first, a), labels0) << "q(y|x)'s pass";
  EXPECT_EQ(embed(first, big), big0) << "a larger pass: the results block grows";
  EXPECT_EQ(embed(first, a), a0) << "captured again over the moved results block";
  EXPECT_EQ(embed(first, b), b0);

  // A second model on the backend captures into the same slots; the first one's parameters then
  // change, and its passes must follow its own parameters, not replay the other's graphs.
  for (const Dataset* d : {&a, &b}) second.keep_resident(*d);
  const std::vector<float> second_a = embed(second, a);
  embed(second, b);
  std::vector<float> params(first.parameter_count());
  be->download(params.data(), first.parameters(), params.size() * sizeof(float));
  for (float& p : params) p *= 0.5f;
  be->upload(first.parameters(), params.data(), params.size() * sizeof(float));
  const std::vector<float> a1 = embed(first, a), b1 = embed(first, b);
  EXPECT_EQ(embed(second, a), second_a) << "the second model's parameters did not change";
  first.forget_resident();
  EXPECT_NE(embed(first, a), a0) << "the parameters changed";
  EXPECT_EQ(a1, embed(first, a)) << "replayed = eager, after the other model's captures";
  EXPECT_EQ(b1, embed(first, b));
}

TEST(InferencePlan, ClassifyEqualsTheTrainingPlansClassifier) {
  // q(y|x)'s argmax through the inference plan against the training plan's logits of the
  // labelled rows of a batch (chunks of the training plan's rows: the same bits).
  const EquiVaeConfig c = with_chunk(test::tiny_semi_config(), 0);
  auto be = make_cpu_backend<float>(1);
  EquiVae<float> model(c, *be);
  const LabelledSplit split = split_labelled(train_digits(), 300, 5);
  std::vector<int32_t> predicted(size_t(split.labelled.n));
  model.classify(split.labelled, predicted.data());
  const DenseLayer<float>* last = model.all_layers().back();  // the classifier's output layer
  ASSERT_EQ(last->out, c.classes);
  BalancedBatchSampler sampler(split.labelled.labels, c.classes, c.k, c.m_max, c.seed);
  UnlabelledSampler unlabelled(split.unlabelled.n, c.unlabelled, c.classes, c.k, c.m_max, c.seed);
  Batch batch;
  for (uint64_t step = 0; step < 4; ++step) {
    sampler.sample(step, batch);
    unlabelled.sample(step, batch);
    model.load_batch(batch, split.labelled, &split.unlabelled);
    model.forward(step);
    const std::vector<float> logits = download(*be, last->y.data, size_t(c.batch()) * c.classes);
    for (int i = 0; i < c.batch(); ++i) {
      const float* row = logits.data() + size_t(i) * c.classes;
      EXPECT_EQ(predicted[batch.rows[i]], int32_t(std::max_element(row, row + c.classes) - row))
          << "labelled image " << batch.rows[i];
    }
  }
  EXPECT_THROW(
      {
        EquiVae<float> supervised(test::tiny_config(), *be);
        supervised.classify(split.labelled, predicted.data());
      },
      Error);
}

// Trains `epochs` epochs of a tiny model and checks every epoch's validation errors against
// the chunk-by-chunk reference computed from the same parameters in the same chunks.
void expect_validation_equals_reference(std::unique_ptr<Backend<float>> backend,
                                        const EquiVaeConfig& config, const Dataset& labelled,
                                        const Dataset* unlabelled, int epochs,
                                        const std::string& what) {
  EquiVae<float> model(config, *backend);
  TrainOptions options = test::quiet_options(epochs);
  int checked = 0;
  options.after_epoch = [&](const EpochRecord& r) {
    const double reference = chunked_validation_error(model, labelled, validation_digits());
    EXPECT_EQ(r.validation_error, reference) << what << ", epoch " << r.epoch;
    // The embeddings behind it, bit for bit (the error alone could agree by chance).
    for (const Dataset* data : {&labelled, &validation_digits()})
      EXPECT_TRUE(embed_dataset(model, *data) == chunked_embedding(model, *data))
          << what << ", epoch " << r.epoch << ": " << data->n << " images";
    std::printf("[ %s ] epoch %d: validation error %.4f (reference %.4f)", what.c_str(), r.epoch,
                r.validation_error, reference);
    if (unlabelled) {
      const double q_reference = chunked_classifier_error(model, validation_digits());
      EXPECT_EQ(r.classifier_validation_error, q_reference) << what << ", epoch " << r.epoch;
      std::printf(", q(y|x) %.4f (reference %.4f)", r.classifier_validation_error, q_reference);
    }
    std::printf("\n");
    ++checked;
  };
  train(model, labelled, unlabelled, &validation_digits(), options);
  EXPECT_EQ(checked, epochs);
}

const LabelledSplit& semi_split() {  // 100 labelled, 100 unlabelled: 25 steps per epoch
  static const LabelledSplit split = split_labelled(train_digits().slice(0, 200), 100, 5);
  return split;
}

TEST(Validation, PerEpochErrorsEqualTheChunkedReference) {
  for (const int chunk : kChunks) {
    const std::string rows = ", inference chunk " + std::to_string(chunk);
    expect_validation_equals_reference(make_cpu_backend<float>(1),
                                       with_chunk(test::tiny_config(), chunk), train_digits(),
                                       nullptr, 2, "cpu" + rows);
    expect_validation_equals_reference(
        make_cpu_backend<float>(1), with_chunk(test::tiny_semi_config(), chunk),
        semi_split().labelled, &semi_split().unlabelled, 2, "cpu, semi-supervised" + rows);
  }
}

TEST(Validation, OnTheEmulatedCudaBackendFromResidentImages) {
  // The device path: the training set's uploaded copy and a resident validation set.
  for (const int chunk : kChunks) {
    const std::string rows = ", inference chunk " + std::to_string(chunk);
    expect_validation_equals_reference(make_emulated_cuda_backend<float>(),
                                       with_chunk(test::tiny_config(), chunk), train_digits(),
                                       nullptr, 1, "emulated cuda" + rows);
    expect_validation_equals_reference(make_emulated_cuda_backend<float>(),
                                       with_chunk(test::tiny_semi_config(), chunk),
                                       semi_split().labelled, &semi_split().unlabelled, 1,
                                       "emulated cuda, semi-supervised" + rows);
  }
}

// --validate-every: the validation error after every N-th epoch and the last, −1 (and no
// validation time) in the other records; the parameters are those of a run validating every
// epoch, bit for bit (nothing selects on the validation).
TEST(Validation, EveryNthEpochAndTheLastOnlyChangesNoParameter) {
  const Dataset train_set = train_digits().slice(0, 400);  // 10 steps per epoch
  std::vector<float> every_epoch;
  for (const int every : {1, 3}) {
    auto be = make_cpu_backend<float>(1);
    EquiVae<float> model(test::tiny_config(), *be);
    TrainOptions options = test::quiet_options(4);
    options.validate_every = every;
    const std::vector<EpochRecord> records = train(model, train_set, &validation_digits(), options);
    ASSERT_EQ(records.size(), 4u);
    for (const EpochRecord& r : records) {
      const bool validated = every == 1 || r.epoch == 3 || r.epoch == 4;
      EXPECT_EQ(r.validation_error >= 0, validated) << "every " << every << ", epoch " << r.epoch;
      if (!validated) {
        EXPECT_EQ(r.validation_seconds, 0.0) << "epoch " << r.epoch;
      }
    }
    const std::vector<float> params = download(*be, model.parameters(), model.parameter_count());
    if (every == 1)
      every_epoch = params;
    else
      EXPECT_TRUE(params == every_epoch) << "the parameters moved with the validation";
  }
  auto be = make_cpu_backend<float>(1);
  EquiVae<float> model(test::tiny_config(), *be);
  TrainOptions options = test::quiet_options(1);
  options.validate_every = 0;
  EXPECT_THROW(train(model, train_set, &validation_digits(), options), Error);
}

class EpochCheckpoint : public test::ScratchDirTest {
 protected:
  EpochCheckpoint() : ScratchDirTest("epoch_") {}
  // Two quiet epochs into path("run"), each one that ends counted in epochs_done.
  TrainOptions counted_options() {
    TrainOptions options = test::quiet_options(2);
    options.out_dir = path("run");
    options.after_epoch = [this](const EpochRecord&) { ++epochs_done; };
    return options;
  }
  int epochs_done = 0;
};

std::vector<char> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The trainer reads the state into the backend's host memory, exactly state_size() floats: any
// other size is refused, naming both.
TEST(StateReadBack, IntoBackendHostMemoryOfTheStateSizeAndNoOtherSize) {
  auto be = make_cpu_backend<float>(1);
  EquiVae<float> model(test::tiny_config(), *be);
  ASSERT_EQ(model.state_size(), 3 * model.parameter_count());
  std::vector<float> want;
  model.read_state(want);
  HostFloats<float> state(*be, model.state_size());
  model.read_state(state.span());
  EXPECT_TRUE(std::equal(want.begin(), want.end(), state.data()));
  for (const size_t wrong : {model.state_size() - 1, model.state_size() + 1}) {
    HostFloats<float> other(*be, wrong);
    test::expect_error([&] { model.read_state(other.span()); },
                       {"exactly " + std::to_string(model.state_size()) +
                        " floats (parameters, Adam's m and v), got " + std::to_string(wrong)});
  }
}

TEST(StateReadBack, ReusesItsBufferAndRefusesAStateTooShortForTheLayout) {
  auto be = make_cpu_backend<float>(1);
  EquiVae<float> model(test::tiny_config(), *be);
  std::vector<float> state;
  model.read_state(state);
  ASSERT_EQ(state.size(), 3 * model.parameter_count());
  const float* buffer = state.data();
  model.read_state(state);
  EXPECT_EQ(state.data(), buffer) << "a second read_state took a new buffer";
  // Each parameter tensor as its own download; Adam's moments after them (zero before a step:
  // one step makes them differ from the parameters and from each other).
  const Batch batch = [&] {
    BalancedBatchSampler sampler(train_digits().labels, 10, model.config().k, model.config().m_max,
                                 model.config().seed);
    Batch b;
    sampler.sample(0, b);
    return b;
  }();
  model.train_step(batch, train_digits(), 0);
  model.read_state(state);
  const Checkpoint filled = EquiVae<float>::fill_checkpoint(model.checkpoint_layout(), state);
  const std::vector<NamedParameter<float>> named = model.named_parameters();
  ASSERT_EQ(filled.tensors.size(), named.size() + 2);
  for (size_t i = 0; i < named.size(); ++i) {
    EXPECT_EQ(filled.tensors[i].name, named[i].name);
    EXPECT_TRUE(filled.tensors[i].data == download(*be, named[i].value, named[i].size))
        << named[i].name;
  }
  const std::vector<float>&m = filled.tensors[named.size()].data,
        &v = filled.tensors[named.size() + 1].data;
  EXPECT_EQ(filled.tensors[named.size()].name, "adam.m");
  EXPECT_EQ(filled.tensors[named.size() + 1].name, "adam.v");
  ASSERT_EQ(m.size(), model.parameter_count());
  ASSERT_EQ(v.size(), model.parameter_count());
  EXPECT_NE(m, v);
  for (size_t i = 0; i < v.size(); ++i) ASSERT_GE(v[i], 0.0f) << "adam.v must be Adam's v";
  EXPECT_EQ(filled.metadata, model.to_checkpoint().metadata);
  state.pop_back();  // adam.v's last value missing
  try {
    EquiVae<float>::fill_checkpoint(model.checkpoint_layout(), state);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("adam.v: lies outside the state read back"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(EpochCheckpoint, TheFileEqualsASynchronousWriteOfTheSameState) {
  const EquiVaeConfig config = test::tiny_config();
  const Dataset train_set = train_digits().slice(0, 400);  // 10 steps per epoch
  auto be = make_cpu_backend<float>(1);
  EquiVae<float> model(config, *be);
  TrainOptions options = test::quiet_options(2);
  options.out_dir = path("run");
  const std::vector<EpochRecord> records = train(model, train_set, &validation_digits(), options);

  // What the trainer wrote last, rebuilt from the model and written synchronously.
  Checkpoint expected = model.to_checkpoint();
  write_run_identity(expected, run_identity(config, train_set, nullptr, &validation_digits()));
  write_progress(expected, {2, 20, records});
  save_checkpoint(path("sync.safetensors"), expected);
  const std::vector<char> written = file_bytes(path("run/checkpoint.safetensors"));
  ASSERT_GT(written.size(), 1000u);
  EXPECT_TRUE(written == file_bytes(path("sync.safetensors")));
  for (const auto& entry : fs::directory_iterator(path("run")))
    EXPECT_EQ(entry.path().string().find(".tmp."), std::string::npos)
        << "temp file left behind: " << entry.path();

  // Where each epoch's time went.
  for (const EpochRecord& r : records) {
    EXPECT_EQ(r.train_seconds, r.seconds);
    EXPECT_GT(r.train_seconds, 0);
    EXPECT_GT(r.validation_seconds, 0);
    EXPECT_GT(r.checkpoint_seconds, 0);
  }
  const std::string header = metrics_csv_header();
  EXPECT_NE(header.find(",seconds,examples_per_s,"), std::string::npos) << header;
  EXPECT_NE(header.find(",train_seconds,validation_seconds,checkpoint_seconds"), std::string::npos)
      << header;
}

// On the (emulated) CUDA backend the trainer reads each epoch's state back into the backend's
// page-locked host memory: one block of the state's size, taken at the first checkpoint, kept
// across epochs and given back when training ends; the file is the same as the CPU's path.
TEST_F(EpochCheckpoint, EmulatedDeviceStateComesBackIntoOnePageLockedBlockKeptAcrossEpochs) {
  const EquiVaeConfig config = test::tiny_config();
  const Dataset train_set = train_digits().slice(0, 400);
  auto be = make_emulated_cuda_backend<float>();
  EquiVae<float> model(config, *be);
  TrainOptions options = test::quiet_options(3);
  options.out_dir = path("run");
  const int64_t before = emu::pinned_blocks, taken_before = emu::pinned_allocations;
  std::vector<int64_t> live;
  options.after_epoch = [&](const EpochRecord&) {
    live.push_back(emu::pinned_blocks - before);
    EXPECT_EQ(emu::last_pinned_bytes, model.state_size() * sizeof(float));
  };
  train(model, train_set, nullptr, options);
  EXPECT_EQ(live, (std::vector<int64_t>{1, 1, 1})) << "page-locked blocks alive after each epoch";
  EXPECT_EQ(emu::pinned_blocks, before) << "the block was not given back";
  EXPECT_EQ(emu::pinned_allocations - taken_before, 1) << "one block for every epoch";
  const Checkpoint written = load_checkpoint(path("run/checkpoint.safetensors"));
  const Checkpoint now = model.to_checkpoint();
  ASSERT_EQ(written.tensors.size(), now.tensors.size());
  for (size_t i = 0; i < now.tensors.size(); ++i)
    EXPECT_TRUE(written.tensors[i].data == now.tensors[i].data) << now.tensors[i].name;
}

TEST_F(EpochCheckpoint, NoValidationAndNoCheckpointTakeNoTime) {
  auto be = make_cpu_backend<float>(1);
  EquiVae<float> model(test::tiny_config(), *be);
  TrainOptions options = test::quiet_options(1);
  const std::vector<EpochRecord> records =
      train(model, train_digits().slice(0, 400), nullptr, options);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_GT(records[0].train_seconds, 0);
  EXPECT_EQ(records[0].validation_seconds, 0);
  EXPECT_EQ(records[0].checkpoint_seconds, 0);
}

TEST_F(EpochCheckpoint, ADirectoryInTheCheckpointsPlaceIsRefusedBeforeTheFirstEpoch) {
  const std::string target = path("run/checkpoint.safetensors");
  fs::create_directories(fs::path(target) / "occupied");
  auto be = make_cpu_backend<float>(1);
  EquiVae<float> model(test::tiny_config(), *be);
  TrainOptions options = counted_options();
  try {
    train(model, train_digits().slice(0, 400), nullptr, options);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), target +
                                         ": is a directory, not a regular file: the output "
                                         "cannot take its place; name another path or move "
                                         "it away");
  }
  EXPECT_EQ(epochs_done, 0);
  EXPECT_TRUE(fs::is_directory(target));
}

TEST_F(EpochCheckpoint, AnUnwritableCheckpointStopsTheRunNamingTheFile) {
  // A directory where the temp file should go (one in the checkpoint's own place is refused
  // before the first epoch): the write fails in the writer's thread, and the error reaches the
  // caller naming the file and the epoch.
  const std::string target = path("run/checkpoint.safetensors");
  const std::string temp = target + ".tmp." + std::to_string(::getpid());
  fs::create_directories(fs::path(temp) / "occupied");
  auto be = make_cpu_backend<float>(1);
  EquiVae<float> model(test::tiny_config(), *be);
  TrainOptions options = counted_options();
  try {
    train(model, train_digits().slice(0, 400), nullptr, options);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    std::printf("[ message ] %s\n", e.what());
    const std::string message = e.what();
    EXPECT_EQ(message.rfind(target + ": the checkpoint of epoch 1 was not written: ", 0), 0u)
        << message;
    EXPECT_NE(message.find("cannot create temp file " + temp), std::string::npos) << message;
  }
  EXPECT_EQ(epochs_done, 1);  // found when epoch 2's checkpoint waited for it
  EXPECT_TRUE(fs::is_directory(temp));
  for (const auto& entry : fs::directory_iterator(path("run")))
    EXPECT_TRUE(entry.path() == temp || entry.path().string().find(".tmp.") == std::string::npos)
        << "temp file left behind: " << entry.path();

  // A divergence while that write is in flight says both: nothing good is on disk, and why.
  EquiVae<float> poisoned(test::tiny_config(), *be);
  options.after_epoch = [&](const EpochRecord&) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    be->upload(poisoned.all_layers()[8]->b.data, &nan, sizeof nan);  // decoder.2.bias[0]
  };
  try {
    train(poisoned, train_digits().slice(0, 400), nullptr, options);
    ADD_FAILURE() << "expected the divergence";
  } catch (const Error& e) {
    std::printf("[ message ] %s\n", e.what());
    const std::string message = e.what();
    EXPECT_NE(message.find("epoch 2, step 1 of 10 (step 11 of the run): training diverged"),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("no checkpoint of this run was written yet; " + target +
                           ": the checkpoint of epoch 1 was not written: cannot create temp file"),
              std::string::npos)
        << message;
  }
}

}  // namespace
}  // namespace equivae
