// Resuming a run: 2 epochs + a resume for 2 more equal 4 epochs bit for bit (parameters, Adam
// moments and t, per-epoch metrics), supervised and semi-supervised, on the CPU backend and on
// the emulated CUDA backend (device-resident graph steps); a checkpoint of another
// configuration or data set is refused naming the fields; a non-finite loss, or an Adam update
// gone non-finite with a finite loss, stops with the step and the tensor named and leaves the
// last checkpoint as it was, and a huge finite loss trains on; a run stopped on request
// names the checkpoint to resume from, and the resume equals the whole run; metrics.jsonl holds
// the CSV's records. A fresh run moves an earlier run's files aside, each run to its own
// OUT/previous[-N], and moves nothing when its logs cannot be opened.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "model/equivae.h"
#include "model/idx_dataset.h"
#include "model/subsets.h"
#include "model/trainer.h"
#include "runtime/backend.h"
#include "runtime/checkpoint.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/error.h"
#include "runtime/interrupt.h"
#include "tests/conv_fixtures.h"
#include "tests/fixtures.h"

namespace equivae {
namespace {

namespace fs = std::filesystem;

const Dataset& digits() {
  return test::kept_digits<1500>();
}
// 400 training digits: 10 supervised steps per epoch at B = 40.
const Dataset& train_set() {
  static const Dataset data = digits().slice(0, 400);
  return data;
}
const Dataset& validation_set() {
  static const Dataset data = digits().slice(1000, 1200);
  return data;
}
// 100 labelled + 200 unlabelled digits: 50 semi-supervised steps per epoch at U = 4.
const LabelledSplit& semi_split() {
  static const LabelledSplit split = split_labelled(digits().slice(0, 300), 100, 5);
  return split;
}

std::string fresh_dir(const std::string& name) {
  const fs::path dir =
      fs::path(testing::TempDir()) / ("resume-" + name + "." + std::to_string(::getpid()));
  fs::remove_all(dir);
  return dir.string();
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> cells;
  std::stringstream ss(line);
  for (std::string cell; std::getline(ss, cell, ',');) cells.push_back(cell);
  return cells;
}

using BackendFactory = std::function<std::unique_ptr<Backend<float>>()>;
BackendFactory cpu() {
  return [] { return make_cpu_backend<float>(1); };
}
BackendFactory emulated_cuda() {
  return [] { return make_emulated_cuda_backend<float>(); };
}

struct TrainedRun {
  std::vector<EpochRecord> records;
  Checkpoint state;  // the model's tensors and metadata after the run
};

// A fresh model of `config` trained until `epochs` (resuming from `resume` when given).
// validation: null for the digits' validation_set().
TrainedRun train_run(const BackendFactory& make_backend, const EquiVaeConfig& config,
                     const Dataset& labelled, const Dataset* unlabelled, int epochs,
                     const std::string& out_dir, const std::string& resume = "",
                     const Dataset* validation = nullptr) {
  auto backend = make_backend();
  EquiVae<float> model(config, *backend);
  TrainOptions options = test::quiet_options(epochs);
  options.out_dir = out_dir;
  options.resume_from = resume;
  TrainedRun run;
  run.records =
      train(model, labelled, unlabelled, validation ? validation : &validation_set(), options);
  run.state = model.to_checkpoint();
  return run;
}

void expect_same_tensors(const Checkpoint& a, const Checkpoint& b, const std::string& what) {
  ASSERT_EQ(a.tensors.size(), b.tensors.size()) << what;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const NamedTensor &x = a.tensors[i], &y = b.tensors[i];
    ASSERT_EQ(x.name, y.name) << what;
    ASSERT_EQ(x.data.size(), y.data.size()) << what << ": " << x.name;
    EXPECT_EQ(std::memcmp(x.data.data(), y.data.data(), x.data.size() * sizeof(float)), 0)
        << what << ": tensor " << x.name << " differs";
  }
}

// Every metric bit for bit; seconds and examples/s are wall-clock and may differ.
void expect_same_metrics(const EpochRecord& a, const EpochRecord& b) {
  const std::string at = "epoch " + std::to_string(a.epoch);
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.elbo, b.elbo) << at;
  EXPECT_EQ(a.recon, b.recon) << at;
  EXPECT_EQ(a.kl, b.kl) << at;
  EXPECT_EQ(a.validation_error, b.validation_error) << at;
  EXPECT_EQ(a.classifier_nll, b.classifier_nll) << at;
  EXPECT_EQ(a.unlabelled_bound, b.unlabelled_bound) << at;
  EXPECT_EQ(a.classifier_validation_error, b.classifier_validation_error) << at;
}

// 4 epochs in one run against 2 epochs, then a fresh model resuming for 2 more.
void check_two_plus_two(const BackendFactory& make_backend, const EquiVaeConfig& config,
                        const Dataset& labelled, const Dataset* unlabelled, const std::string& name,
                        const Dataset* validation = nullptr) {
  const std::string whole_dir = fresh_dir(name + "-whole"), split_dir = fresh_dir(name + "-split");
  const TrainedRun whole =
      train_run(make_backend, config, labelled, unlabelled, 4, whole_dir, "", validation);
  const TrainedRun first =
      train_run(make_backend, config, labelled, unlabelled, 2, split_dir, "", validation);
  const TrainedRun resumed = train_run(make_backend, config, labelled, unlabelled, 4, split_dir,
                                       split_dir + "/checkpoint.safetensors", validation);

  // The state: every parameter and Adam moment, and Adam's t.
  EXPECT_EQ(resumed.state.metadata.at("adam_steps"), whole.state.metadata.at("adam_steps"));
  EXPECT_NE(first.state.metadata.at("adam_steps"), whole.state.metadata.at("adam_steps"));
  expect_same_tensors(whole.state, resumed.state, "in memory");
  expect_same_tensors(load_checkpoint(whole_dir + "/checkpoint.safetensors"),
                      load_checkpoint(split_dir + "/checkpoint.safetensors"), "on disk");

  // The records: epochs 1-2 come back from the checkpoint, epochs 3-4 are trained again.
  ASSERT_EQ(whole.records.size(), 4u);
  ASSERT_EQ(resumed.records.size(), 4u);
  for (int e = 0; e < 4; ++e) expect_same_metrics(whole.records[e], resumed.records[e]);
  for (int e = 0; e < 2; ++e) {
    EXPECT_EQ(first.records[e].seconds, resumed.records[e].seconds);
    EXPECT_EQ(first.records[e].validation_seconds, resumed.records[e].validation_seconds);
    EXPECT_EQ(first.records[e].checkpoint_seconds, resumed.records[e].checkpoint_seconds);
  }

  // metrics.csv continues: one header, epochs 1..4 once each, 3-4 as in the whole run.
  const std::vector<std::string> csv = read_lines(split_dir + "/metrics.csv"),
                                 whole_csv = read_lines(whole_dir + "/metrics.csv");
  ASSERT_EQ(csv.size(), 5u);
  ASSERT_EQ(whole_csv.size(), 5u);
  EXPECT_EQ(csv[0], whole_csv[0]);
  for (size_t row = 1; row < 5; ++row) {
    std::vector<std::string> a = split_csv(csv[row]), b = split_csv(whole_csv[row]);
    ASSERT_EQ(a.size(), 13u);
    ASSERT_EQ(b.size(), 13u);
    EXPECT_EQ(a[0], std::to_string(row));
    // seconds, examples/s, train, validation and checkpoint seconds
    for (size_t col : {5u, 6u, 10u, 11u, 12u}) a[col] = b[col] = "";
    EXPECT_EQ(a, b) << "metrics.csv row " << row;
  }
  fs::remove_all(whole_dir);
  fs::remove_all(split_dir);
}

TEST(Resume, SupervisedTwoPlusTwoEpochsEqualFourBitForBit) {
  check_two_plus_two(cpu(), test::tiny_config(), train_set(), nullptr, "supervised");
}

TEST(Resume, SemiSupervisedTwoPlusTwoEpochsEqualFourBitForBit) {
  check_two_plus_two(cpu(), test::tiny_semi_config(), semi_split().labelled,
                     &semi_split().unlabelled, "semi");
}

TEST(Resume, OnTheEmulatedCudaBackendTwoPlusTwoEqualFour) {
  // The device path: graph replays with the step and Adam's t in device counters, which a
  // resumed model must start from the checkpoint's values.
  check_two_plus_two(emulated_cuda(), test::tiny_config(), train_set(), nullptr, "emulated");
}

TEST(Resume, ConvGaussianTwoPlusTwoEpochsEqualFourBitForBit) {
  // The convolutional model with the learned log-variance: 390 3×8×8 blobs, 13 steps per epoch.
  static const Dataset blobs = test::coloured_blobs(500, 3, 8);
  const Dataset train_blobs = blobs.slice(0, 390), validation_blobs = blobs.slice(390, 500);
  check_two_plus_two(cpu(), test::tiny_conv_config(), train_blobs, nullptr, "conv",
                     &validation_blobs);
}

// Runs `body` expecting an E (Error or a kind of it, such as Interrupted) whose message
// contains every one of `parts`; returns the message ("" when nothing was thrown).
template <class E = Error>
std::string expect_error(const std::function<void()>& body, const std::vector<std::string>& parts) {
  try {
    body();
    ADD_FAILURE() << "expected an error";
  } catch (const E& e) {
    std::printf("[ message ] %s\n", e.what());
    for (const std::string& part : parts)
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
          << "missing '" << part << "' in: " << e.what();
    return e.what();
  }
  return "";
}

TEST(Resume, AnotherConfigurationOrDataSetIsRefusedNamingTheFields) {
  const std::string dir = fresh_dir("mismatch");
  const std::string path = dir + "/checkpoint.safetensors";
  const EquiVaeConfig config = test::tiny_config();  // latent_v = 4, seed = 7
  train_run(cpu(), config, train_set(), nullptr, 2, dir);

  EquiVaeConfig wider = config;
  wider.latent_v = 8;
  expect_error([&] { train_run(cpu(), wider, train_set(), nullptr, 3, "", path); },
               {"checkpoint " + path + " was written with latent_v = 4, this run asks for 8"});
  EquiVaeConfig two_fields = config;
  two_fields.seed = 8;
  two_fields.lr = 2e-3;
  expect_error([&] { train_run(cpu(), two_fields, train_set(), nullptr, 3, "", path); },
               {"lr = 0.001, this run asks for 0.002", "seed = 7, this run asks for 8"});
  const Dataset more = digits().slice(0, 440);
  expect_error([&] { train_run(cpu(), config, more, nullptr, 3, "", path); },
               {"labelled set size = 400, this run asks for 440", "labelled set labels CRC-32"});
  expect_error([&] { train_run(cpu(), config, train_set(), nullptr, 1, "", path); },
               {"checkpoint " + path + " has already trained 2 epochs, more than the 1"});

  // A model checkpoint without the training state cannot be resumed.
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(config, *backend);
  const std::string bare = dir + "/bare.safetensors";
  save_checkpoint(bare, model.to_checkpoint());
  expect_error([&] { train_run(cpu(), config, train_set(), nullptr, 3, "", bare); },
               {"checkpoint " + bare + " has no \"config.input_dim\"", "cannot be resumed"});

  // Asking for the epochs already trained trains nothing and returns the history.
  const TrainedRun done = train_run(cpu(), config, train_set(), nullptr, 2, "", path);
  ASSERT_EQ(done.records.size(), 2u);
  expect_same_tensors(done.state, load_checkpoint(path), "a resume with nothing left to train");
  fs::remove_all(dir);
}

TEST(Resume, CheckpointsWithoutTheConvolutionalKeysAreDenseBernoulliRuns) {
  // Checkpoints written before the convolutional model lack config.channels, .height, .width,
  // .architecture, .conv_width and .likelihood: a dense Bernoulli run resumes from them, a
  // conv run is refused (the absent architecture means dense).
  const std::vector<std::string> added = {"config.channels",   "config.height",
                                          "config.width",      "config.architecture",
                                          "config.conv_width", "config.likelihood"};
  const std::string dir = fresh_dir("older");
  const std::string path = dir + "/checkpoint.safetensors";
  train_run(cpu(), test::tiny_config(), train_set(), nullptr, 1, dir);
  Checkpoint older = load_checkpoint(path);
  for (const std::string& key : added) EXPECT_EQ(older.metadata.erase(key), 1u) << key;
  const std::string older_path = dir + "/older.safetensors";
  save_checkpoint(older_path, older);
  const TrainedRun resumed =
      train_run(cpu(), test::tiny_config(), train_set(), nullptr, 2, "", older_path);
  EXPECT_EQ(resumed.records.size(), 2u);

  static const Dataset blobs = test::coloured_blobs(120, 3, 8);
  const std::string conv_dir = fresh_dir("older-conv");
  const std::string conv_path = conv_dir + "/checkpoint.safetensors";
  train_run(cpu(), test::tiny_conv_config(), blobs, nullptr, 1, conv_dir, "", &blobs);
  Checkpoint conv = load_checkpoint(conv_path);
  for (const std::string& key : added) conv.metadata.erase(key);
  save_checkpoint(conv_path, conv);
  expect_error(
      [&] { train_run(cpu(), test::tiny_conv_config(), blobs, nullptr, 2, "", conv_path, &blobs); },
      {"architecture = dense, this run asks for conv", "likelihood = bernoulli"});
  fs::remove_all(dir);
  fs::remove_all(conv_dir);
}

TEST(Resume, DenseCheckpointsOfEarlierBuildsResumeWhateverTheirImagesShape) {
  // Before dense checkpoints recorded their images' shape ("image_shape"), their config held the
  // default geometry 1 x 28 x 28 whatever the images were: such a checkpoint of a dense run on
  // 3 x 8 x 8 images resumes (its input_dim says what it took).
  static const Dataset blobs = test::coloured_blobs(120, 3, 8);
  EquiVaeConfig config = test::tiny_config();
  config.input_dim = blobs.dim;
  config.channels = blobs.channels;
  config.height = blobs.rows;
  config.width = blobs.cols;
  const std::string dir = fresh_dir("older-dense-shape");
  const std::string path = dir + "/checkpoint.safetensors";
  train_run(cpu(), config, blobs, nullptr, 1, dir, "", &blobs);
  Checkpoint older = load_checkpoint(path);
  EXPECT_EQ(older.metadata.erase("image_shape"), 1u);
  older.metadata["config.channels"] = "1";
  older.metadata["config.height"] = older.metadata["config.width"] = "28";
  const std::string older_path = dir + "/older.safetensors";
  save_checkpoint(older_path, older);
  const TrainedRun resumed = train_run(cpu(), config, blobs, nullptr, 2, "", older_path, &blobs);
  EXPECT_EQ(resumed.records.size(), 2u);
  fs::remove_all(dir);
}

TEST(Resume, HistoryWithoutTheTimeBreakdownResumesWithZeros) {
  // Checkpoints written before the per-epoch time breakdown hold records without
  // train_seconds, validation_seconds and checkpoint_seconds: they resume, those read 0.
  const std::string dir = fresh_dir("older-history");
  const std::string path = dir + "/checkpoint.safetensors";
  train_run(cpu(), test::tiny_config(), train_set(), nullptr, 1, dir);
  Checkpoint older = load_checkpoint(path);
  nlohmann::json history = nlohmann::json::parse(older.metadata.at("history"));
  ASSERT_EQ(history.size(), 1u);
  for (const char* key : {"train_seconds", "validation_seconds", "checkpoint_seconds"})
    EXPECT_EQ(history[0].erase(key), 1u) << key;
  older.metadata["history"] = history.dump();
  const std::string older_path = dir + "/older.safetensors";
  save_checkpoint(older_path, older);
  const TrainedRun resumed =
      train_run(cpu(), test::tiny_config(), train_set(), nullptr, 2, dir, older_path);
  ASSERT_EQ(resumed.records.size(), 2u);
  EXPECT_EQ(resumed.records[0].train_seconds, 0);
  EXPECT_EQ(resumed.records[0].checkpoint_seconds, 0);
  EXPECT_GT(resumed.records[0].seconds, 0);
  EXPECT_GT(resumed.records[1].train_seconds, 0);
  EXPECT_GT(resumed.records[1].validation_seconds, 0);
  const std::vector<std::string> csv = read_lines(dir + "/metrics.csv");
  ASSERT_EQ(csv.size(), 3u);
  EXPECT_EQ(split_csv(csv[1]).size(), 13u) << csv[1];
  fs::remove_all(dir);
}

// A run asked to stop (Ctrl-C in the tools) when stop_requested is asked for the `ask`-th time
// (0-based; the host asks before every step, a device before every window of `window` steps):
// Interrupted names the step, the epoch and the checkpoint to resume from, which holds the
// last whole epoch (`kept`); the directory holds no temp file; and resuming from it until 4
// epochs equals an uninterrupted 4-epoch run bit for bit.
void check_stop_and_resume(const BackendFactory& make_backend, const std::string& name, int ask,
                           int window, const std::vector<std::string>& parts, int kept) {
  const std::string dir = fresh_dir(name), whole_dir = fresh_dir(name + "-whole");
  const std::string path = dir + "/checkpoint.safetensors";
  {
    auto backend = make_backend();
    EquiVae<float> model(test::tiny_config(), *backend);
    TrainOptions options = test::quiet_options(4);
    options.out_dir = dir;
    options.device_window = window;
    int asked = 0;
    options.stop_requested = [&] { return asked++ == ask; };
    std::vector<std::string> all = parts;
    all.push_back("the last good checkpoint " + path + " (epoch " + std::to_string(kept) + ")");
    all.push_back("continue by running this command again with --resume " + path + " added");
    expect_error<Interrupted>([&] { train(model, train_set(), &validation_set(), options); }, all);
    EXPECT_EQ(asked, ask + 1);
  }
  EXPECT_EQ(load_checkpoint(path).metadata.at("epoch"), std::to_string(kept));
  EXPECT_EQ(read_lines(dir + "/metrics.csv").size(), size_t(kept) + 1);
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir))
    files.push_back(entry.path().filename().string());
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files,
            (std::vector<std::string>{"checkpoint.safetensors", "metrics.csv", "metrics.jsonl"}));

  const TrainedRun whole =
      train_run(make_backend, test::tiny_config(), train_set(), nullptr, 4, whole_dir);
  const TrainedRun resumed =
      train_run(make_backend, test::tiny_config(), train_set(), nullptr, 4, dir, path);
  expect_same_tensors(whole.state, resumed.state, "resumed after the stop");
  ASSERT_EQ(resumed.records.size(), 4u);
  for (int e = 0; e < 4; ++e) expect_same_metrics(whole.records[e], resumed.records[e]);
  fs::remove_all(dir);
  fs::remove_all(whole_dir);
}

TEST(Interrupt, AStopRequestEndsTheRunAtTheNextStepAndItsResumeEqualsTheWholeRun) {
  // 10 steps per epoch: asked before step 15, the 6th of epoch 2.
  check_stop_and_resume(
      cpu(), "stop-cpu", 15, 512,
      {"epoch 2, step 6 of 10 (step 16 of the run): stopped on request before this step"}, 1);
}

TEST(Interrupt, OnADeviceTheRunStopsBeforeTheNextWindowOfSteps) {
  // Windows of 4 steps (4, 4, 2 per epoch): the 5th question comes before step 14.
  check_stop_and_resume(
      emulated_cuda(), "stop-emulated", 4, 4,
      {"epoch 2, step 5 of 10 (step 15 of the run): stopped on request before this step"}, 1);
  // At an epoch's start, once the previous epoch's checkpoint is on disk.
  check_stop_and_resume(
      emulated_cuda(), "stop-emulated-epoch", 2, 512,
      {"epoch 3, step 1 of 10 (step 21 of the run): stopped on request before this step"}, 2);
}

// A resumed run that is stopped says how to go on from the checkpoint it keeps: the same
// command while that is still the one it resumed, else that command with the newer checkpoint
// in place of its --resume (adding a second --resume would be refused).
TEST(Interrupt, AResumedRunsAdviceNamesTheCheckpointToResumeInstead) {
  const std::string dir = fresh_dir("resumed-stop"), other = fresh_dir("resumed-stop-elsewhere");
  const std::string path = dir + "/checkpoint.safetensors";
  train_run(cpu(), test::tiny_config(), train_set(), nullptr, 1, dir);
  auto stop_at = [&](int ask, const std::vector<std::string>& parts) {
    auto backend = make_cpu_backend<float>(1);
    EquiVae<float> model(test::tiny_config(), *backend);
    TrainOptions options = test::quiet_options(3);
    options.out_dir = other;
    options.resume_from = path;
    int asked = 0;
    options.stop_requested = [&] { return asked++ == ask; };
    return expect_error<Interrupted>([&] { train(model, train_set(), &validation_set(), options); },
                                     parts);
  };
  const std::string first =
      stop_at(0, {"the checkpoint " + path +
                  " (epoch 1) is kept untouched: continue by running this command again"});
  EXPECT_EQ(first.find("--resume"), std::string::npos) << first;
  // 10 steps per epoch: the 11th question comes before epoch 3, once epoch 2 is on disk there.
  stop_at(10, {"the last good checkpoint " + other + "/checkpoint.safetensors (epoch 2)",
               "continue by running this command again with --resume " + other +
                   "/checkpoint.safetensors in place of --resume " + path});
  fs::remove_all(dir);
  fs::remove_all(other);
}

TEST(Interrupt, BeforeTheFirstCheckpointNothingIsOfferedToResume) {
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(test::tiny_config(), *backend);
  TrainOptions options = test::quiet_options(2);
  options.stop_requested = [] { return true; };
  const std::string what = expect_error<Interrupted>(
      [&] { train(model, train_set(), &validation_set(), options); },
      {"epoch 1, step 1 of 10 (step 1 of the run)", "no checkpoint of this run was written yet"});
  EXPECT_EQ(what.find("--resume"), std::string::npos) << what;
  EXPECT_EQ(what.find("continue"), std::string::npos) << what;
}

TEST(Divergence, APoisonedParameterIsNamedAndTheLastCheckpointKept) {
  const std::string dir = fresh_dir("poison");
  const std::string path = dir + "/checkpoint.safetensors";
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(test::tiny_config(), *backend);
  std::vector<DenseLayer<float>*> layers = model.all_layers();  // finv, encoder, decoder × 3
  ASSERT_EQ(layers.size(), 9u);
  Checkpoint saved;
  TrainOptions options = test::quiet_options(3);
  options.out_dir = dir;
  options.after_epoch = [&](const EpochRecord& r) {
    if (r.epoch != 1) return;
    saved = model.to_checkpoint();  // the state epoch 1's checkpoint holds
    const float nan = std::numeric_limits<float>::quiet_NaN();
    backend->upload(layers[8]->b.data + 3, &nan, sizeof nan);  // decoder.2.bias[3]
  };
  expect_error(
      [&] { train(model, train_set(), nullptr, options); },
      {"epoch 2, step 1 of 10 (step 11 of the run)", "diverged",
       "reconstruction log p(x|r,v) = nan", "parameter decoder.2.bias (element 3 of 784 = nan)",
       "the last good checkpoint " + path + " (epoch 1) is kept untouched"});
  const Checkpoint on_disk = load_checkpoint(path);
  EXPECT_EQ(on_disk.metadata.at("epoch"), "1");
  expect_same_tensors(saved, on_disk, "the checkpoint before the divergence");
  EXPECT_EQ(read_lines(dir + "/metrics.csv").size(), 2u);
  fs::remove_all(dir);
}

TEST(Divergence, OnADeviceANonFiniteLossNamesTheStateAfterItsStep) {
  // As above on the emulated GPU: the window of steps 10-19 runs to its end before its losses
  // are read, but step 10's NaN update stops the later ones, so the state named is step 10's.
  const std::string dir = fresh_dir("poison_device");
  auto backend = make_emulated_cuda_backend<float>();
  EquiVae<float> model(test::tiny_config(), *backend);
  TrainOptions options = test::quiet_options(3);
  options.out_dir = dir;
  options.after_epoch = [&](const EpochRecord& r) {
    if (r.epoch != 1) return;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    backend->upload(model.all_layers()[8]->b.data + 3, &nan, sizeof nan);  // decoder.2.bias[3]
  };
  expect_error(
      [&] { train(model, train_set(), nullptr, options); },
      {"epoch 2, step 1 of 10 (step 11 of the run): training diverged: the loss is not finite "
       "(reconstruction log p(x|r,v) = nan",
       "first non-finite tensor after step 11 of the run: parameter ",
       "the last good checkpoint " + dir + "/checkpoint.safetensors (epoch 1) is kept"});
  fs::remove_all(dir);
}

TEST(Divergence, AnInfiniteLearningRateIsCaughtAtTheFirstUpdate) {
  // Step 0's loss is finite; its Adam update with lr = +inf makes every parameter non-finite,
  // which stops the run at that step, naming the first parameter tensor.
  EquiVaeConfig config = test::tiny_config();
  config.lr = std::numeric_limits<double>::infinity();
  expect_error([&] { train_run(cpu(), config, train_set(), nullptr, 1, ""); },
               {"epoch 1, step 1 of 10 (step 1 of the run): training diverged: its loss was finite",
                "its Adam update made a value non-finite: parameter finv.0.weight (element 0 of",
                "no checkpoint of this run was written yet"});
}

TEST(Divergence, AnUpdateGoneNonFiniteStopsAtItsStepAndKeepsTheLastCheckpoint) {
  // One step per epoch (B = 250 of 400 digits). After epoch 1 one of Adam's v is made
  // negative: epoch 2's step has a finite loss, but its update takes the square root of v.
  // On a device the window runs to its end first; the state stays as that update left it.
  for (const auto& [name, make_backend] :
       {std::pair{"cpu", cpu()}, std::pair{"emulated cuda", emulated_cuda()}}) {
    SCOPED_TRACE(name);
    const std::string dir = fresh_dir("last_step");
    const std::string path = dir + "/checkpoint.safetensors";
    EquiVaeConfig config = test::tiny_config();
    config.k = 25;
    auto backend = make_backend();
    EquiVae<float> model(config, *backend);
    Checkpoint saved;
    TrainOptions options = test::quiet_options(3);
    options.out_dir = dir;
    options.after_epoch = [&](const EpochRecord& r) {
      if (r.epoch != 1) return;
      saved = model.to_checkpoint();
      Checkpoint poisoned = saved;
      for (NamedTensor& t : poisoned.tensors)
        if (t.name == "adam.v") t.data[0] = -1.0f;
      model.load_checkpoint(poisoned, "poisoned");
    };
    expect_error(
        [&] { train(model, train_set(), nullptr, options); },
        {"epoch 2, step 1 of 1 (step 2 of the run): training diverged: its loss was finite "
         "(ELBO ",
         ") but its Adam update made a value non-finite: parameter finv.0.weight "
         "(element 0 of ",
         "= nan); the last good checkpoint " + path + " (epoch 1) is kept untouched",
         "start a new run with --lr below this run's 0.001"});
    const Checkpoint on_disk = load_checkpoint(path);
    EXPECT_EQ(on_disk.metadata.at("epoch"), "1");
    expect_same_tensors(saved, on_disk, "the checkpoint before the update went non-finite");
    EXPECT_EQ(read_lines(dir + "/metrics.csv").size(), 2u) << "epoch 1's row alone";
    fs::remove_all(dir);
  }
}

TEST(Divergence, ALearningRateThatOverflowsAdamsMomentIsCaughtAtThatStep) {
  // lr = 10: step 0 moves every parameter by about ±10, so step 1's loss is huge but finite
  // and its gradients' squares overflow Adam's v (its update leaves the parameters finite).
  // The run stops at that step, before the epoch ends: no checkpoint, no row in the logs.
  for (const auto& [name, make_backend] :
       {std::pair{"cpu", cpu()}, std::pair{"emulated cuda", emulated_cuda()}}) {
    SCOPED_TRACE(name);
    const std::string dir = fresh_dir("overflow");
    EquiVaeConfig config = test::tiny_config();
    config.lr = 10;
    expect_error(
        [&] { train_run(make_backend, config, train_set(), nullptr, 2, dir); },
        {"epoch 1, step 2 of 10 (step 2 of the run): training diverged: its loss was finite "
         "(ELBO -",
         ") but its Adam update made a value non-finite: Adam moment adam.v of ",
         " = inf); no checkpoint of this run was written yet; a lower learning rate may "
         "avoid it: start a new run with --lr below this run's 10"});
    EXPECT_FALSE(fs::exists(dir + "/checkpoint.safetensors"));
    EXPECT_EQ(read_lines(dir + "/metrics.csv").size(), 1u) << "the header alone";
    fs::remove_all(dir);
  }
}

TEST(Divergence, AHugeButFiniteLossIsNotAnError) {
  // Decoder logits of about 1e30: log p(x|r,v) ≈ −1e32 per image, finite, and its gradients
  // stay bounded (a sigmoid's), so every update is finite: the epoch trains on.
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(test::tiny_config(), *backend);
  const std::vector<float> huge(784, 1e30f);
  backend->upload(model.all_layers()[8]->b.data, huge.data(), huge.size() * sizeof(float));
  const std::vector<EpochRecord> records =
      train(model, train_set(), nullptr, test::quiet_options(1));
  ASSERT_EQ(records.size(), 1u);
  EXPECT_TRUE(std::isfinite(records[0].recon)) << records[0].recon;
  EXPECT_LT(records[0].recon, -1e30);
}

TEST(Resume, AFinishedRunResumedIntoAnotherDirectoryLeavesItsCheckpointThere) {
  const std::string first = fresh_dir("finished"), second = fresh_dir("finished_copy");
  const EquiVaeConfig config = test::tiny_config();
  train_run(cpu(), config, train_set(), nullptr, 2, first);
  // Nothing is left to train; the second directory still gets the checkpoint its metrics
  // belong to, and resumes from it as from the first.
  train_run(cpu(), config, train_set(), nullptr, 2, second, first + "/checkpoint.safetensors");
  const Checkpoint a = load_checkpoint(first + "/checkpoint.safetensors");
  const Checkpoint b = load_checkpoint(second + "/checkpoint.safetensors");
  expect_same_tensors(a, b, "the finished run's checkpoint in another directory");
  EXPECT_EQ(b.metadata.at("epoch"), "2");
  EXPECT_EQ(b.metadata.at("history"), a.metadata.at("history"));
  EXPECT_EQ(read_lines(second + "/metrics.csv").size(), 3u);
  const TrainedRun on =
      train_run(cpu(), config, train_set(), nullptr, 3, "", second + "/checkpoint.safetensors");
  EXPECT_EQ(on.records.size(), 3u);
  fs::remove_all(first);
  fs::remove_all(second);
}

TEST(Resume, AFreshRunKeepsTheEarlierRunsCheckpointAside) {
  const std::string dir = fresh_dir("twice");
  const EquiVaeConfig config = test::tiny_config();
  train_run(cpu(), config, train_set(), nullptr, 2, dir);
  const Checkpoint first = load_checkpoint(dir + "/checkpoint.safetensors");
  EquiVaeConfig other = config;
  other.seed = 8;
  train_run(cpu(), other, train_set(), nullptr, 1, dir);
  // The first run's files are in previous/, untouched; the new run's are in their place.
  expect_same_tensors(first, load_checkpoint(dir + "/previous/checkpoint.safetensors"),
                      "the earlier run's checkpoint");
  EXPECT_EQ(read_lines(dir + "/previous/metrics.csv").size(), 3u);
  EXPECT_EQ(load_checkpoint(dir + "/checkpoint.safetensors").metadata.at("epoch"), "1");
  EXPECT_EQ(read_lines(dir + "/metrics.csv").size(), 2u);
  // Resuming the directory's own checkpoint moves nothing.
  train_run(cpu(), other, train_set(), nullptr, 2, dir, dir + "/checkpoint.safetensors");
  expect_same_tensors(first, load_checkpoint(dir + "/previous/checkpoint.safetensors"),
                      "the earlier run's checkpoint after a resume");
  EXPECT_EQ(load_checkpoint(dir + "/checkpoint.safetensors").metadata.at("epoch"), "2");
  fs::remove_all(dir);
}

// train_run with the progress lines on: returns what the run printed on stderr.
std::string run_printing(const EquiVaeConfig& config, int epochs, const std::string& out_dir,
                         const std::string& resume = "") {
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(config, *backend);
  TrainOptions options = test::quiet_options(epochs);
  options.quiet = false;
  options.out_dir = out_dir;
  options.resume_from = resume;
  testing::internal::CaptureStderr();
  train(model, train_set(), &validation_set(), options);
  return testing::internal::GetCapturedStderr();
}

TEST(Resume, EachEarlierRunKeepsItsOwnPreviousDirectoryAndTheNoteSaysHowToResumeIt) {
  const std::string dir = fresh_dir("previous_n");
  EquiVaeConfig a = test::tiny_config(), b = a, c = a;
  b.seed = 8;
  c.seed = 9;
  train_run(cpu(), a, train_set(), nullptr, 2, dir);
  const Checkpoint first = load_checkpoint(dir + "/checkpoint.safetensors");
  train_run(cpu(), b, train_set(), nullptr, 1, dir);
  const Checkpoint second = load_checkpoint(dir + "/checkpoint.safetensors");
  const std::string note = run_printing(c, 1, dir);
  // The third run moves the second one beside the first, never over it.
  expect_same_tensors(first, load_checkpoint(dir + "/previous/checkpoint.safetensors"),
                      "the first run's checkpoint");
  expect_same_tensors(second, load_checkpoint(dir + "/previous-2/checkpoint.safetensors"),
                      "the second run's checkpoint");
  EXPECT_EQ(read_lines(dir + "/previous/metrics.csv").size(), 3u);
  EXPECT_EQ(read_lines(dir + "/previous-2/metrics.csv").size(), 2u);
  EXPECT_NE(note.find("note: " + dir + " held an earlier run's checkpoint (epoch 1): moved to " +
                      dir + "/previous-2/; to continue that run, run its command with --resume " +
                      dir + "/previous-2/checkpoint.safetensors and --out " + dir +
                      "/previous-2 in place of its --out"),
            std::string::npos)
      << note;

  // As the note says: the second run goes on from there into the same directory (the third
  // moves aside in turn) and equals its uninterrupted two epochs.
  const TrainedRun resumed =
      train_run(cpu(), b, train_set(), nullptr, 2, dir, dir + "/previous-2/checkpoint.safetensors");
  const std::string whole_dir = fresh_dir("previous_n_whole");
  const TrainedRun whole = train_run(cpu(), b, train_set(), nullptr, 2, whole_dir);
  expect_same_tensors(whole.state, resumed.state, "the second run resumed from previous-2");
  EXPECT_EQ(load_checkpoint(dir + "/checkpoint.safetensors").metadata.at("epoch"), "2");
  EXPECT_EQ(load_checkpoint(dir + "/previous-3/checkpoint.safetensors").metadata.at("config.seed"),
            "9");
  fs::remove_all(dir);
  fs::remove_all(whole_dir);
}

TEST(Resume, ARunThatCannotOpenItsLogsMovesNothing) {
  const std::string dir = fresh_dir("unopened_logs");
  const EquiVaeConfig config = test::tiny_config();
  train_run(cpu(), config, train_set(), nullptr, 2, dir);
  const Checkpoint earlier = load_checkpoint(dir + "/checkpoint.safetensors");
  fs::create_directories(dir + "/a-directory");
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(config, *backend);
  TrainOptions options = test::quiet_options(1);
  options.out_dir = dir;
  // A JSON log whose directory is missing, and one where a directory is: the reason is said.
  for (const auto& [json, reason] :
       {std::pair<std::string, std::string>{dir + "/missing/metrics.jsonl",
                                            "No such file or directory"},
        {dir + "/a-directory", "is a directory"}}) {
    options.json_log = json;
    expect_error([&] { train(model, train_set(), &validation_set(), options); },
                 {json + ": cannot open for writing: " + reason});
    // The earlier run's files are where they were; nothing moved aside.
    expect_same_tensors(earlier, load_checkpoint(dir + "/checkpoint.safetensors"),
                        "the earlier run's checkpoint after " + json);
    EXPECT_EQ(read_lines(dir + "/metrics.csv").size(), 3u);
    EXPECT_EQ(read_lines(dir + "/metrics.jsonl").size(), 2u);
    EXPECT_FALSE(fs::exists(dir + "/previous"));
  }
  fs::remove_all(dir);
}

// A run stopped before its first checkpoint (diverged, say) leaves only its logs: those epochs
// move aside too; a metrics.csv of the header alone (a run refused before its first epoch) is
// nothing worth keeping and is overwritten.
TEST(Resume, LogsWithoutACheckpointMoveAsideButAHeaderAloneDoesNot) {
  const std::string dir = fresh_dir("logs_only");
  const EquiVaeConfig config = test::tiny_config();
  train_run(cpu(), config, train_set(), nullptr, 1, dir);
  fs::remove(dir + "/checkpoint.safetensors");
  const std::vector<std::string> logged = read_lines(dir + "/metrics.csv");
  ASSERT_EQ(logged.size(), 2u);
  train_run(cpu(), config, train_set(), nullptr, 1, dir);
  EXPECT_EQ(read_lines(dir + "/previous/metrics.csv"), logged);
  EXPECT_TRUE(fs::exists(dir + "/previous/metrics.jsonl"));
  EXPECT_FALSE(fs::exists(dir + "/previous/checkpoint.safetensors"));

  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir + "/metrics.csv") << logged.front() << "\n";  // the header alone
  train_run(cpu(), config, train_set(), nullptr, 1, dir);
  EXPECT_FALSE(fs::exists(dir + "/previous"));
  EXPECT_EQ(read_lines(dir + "/metrics.csv").size(), 2u);
  fs::remove_all(dir);
}

TEST(Resume, AFileWhereTheOutputDirectoryShouldBeIsNamed) {
  const std::string dir = fresh_dir("out_is_a_file");
  fs::create_directories(dir);
  const std::string file = dir + "/afile";
  std::ofstream(file) << "not a directory\n";
  for (const auto& [out, expected] :
       {std::pair<std::string, std::string>{
            file, file + ": is a file, not a directory: it cannot hold the run's outputs"},
        {file + "/sub", file + ": is a file, not a directory: the output directory " + file +
                            "/sub cannot be made in it"}})
    expect_error(
        [&, out = out] { train_run(cpu(), test::tiny_config(), train_set(), nullptr, 1, out); },
        {expected});
  // A directory where no file can be made: the log's path and the reason.
  if (fs::is_directory("/proc/self")) {
    const std::string message = expect_error(
        [] { train_run(cpu(), test::tiny_config(), train_set(), nullptr, 1, "/proc/self"); },
        {"/proc/self/metrics.", ": cannot open for writing: "});
    EXPECT_GT(message.size(), message.find("for writing: ") + 13) << "no reason: " << message;
  }
  fs::remove_all(dir);
}

TEST(Resume, CheckpointTensorsMustHaveTheModelsShapesAndItsAdamStepCount) {
  const std::string dir = fresh_dir("shapes");
  const std::string path = dir + "/checkpoint.safetensors";
  const EquiVaeConfig config = test::tiny_config();
  train_run(cpu(), config, train_set(), nullptr, 1, dir);
  const Checkpoint good = load_checkpoint(path);
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(config, *backend);
  auto rewrite = [&](const std::string& name, const std::function<void(Checkpoint&)>& change) {
    Checkpoint c = good;
    change(c);
    save_checkpoint(dir + "/" + name, c);
    return dir + "/" + name;
  };
  // finv.0.weight stored [out, in], as PyTorch's nn.Linear would: as many values, transposed.
  const std::string transposed = rewrite("transposed.safetensors", [](Checkpoint& c) {
    for (NamedTensor& t : c.tensors)
      if (t.name == "finv.0.weight") std::swap(t.shape[0], t.shape[1]);
  });
  expect_error([&] { model.load_checkpoint(load_checkpoint(transposed), transposed); },
               {transposed, "tensor finv.0.weight has shape [24, 784], the model's is [784, 24]"});
  const std::string garbled =
      rewrite("garbled.safetensors", [](Checkpoint& c) { c.metadata["adam_steps"] = "1e3"; });
  expect_error([&] { model.load_checkpoint(load_checkpoint(garbled), garbled); },
               {garbled, "metadata \"adam_steps\" is not a non-negative integer: '1e3'"});
  // A count that parses but is not the run's: a resume would restart Adam's bias correction.
  const std::string reset = rewrite(
      "reset.safetensors", [](Checkpoint& c) { c.metadata["adam_steps"] = std::to_string(0); });
  expect_error([&] { train_run(cpu(), config, train_set(), nullptr, 2, "", reset); },
               {reset, "has taken 0 Adam steps (metadata \"adam_steps\") but is at step 10"});
  fs::remove_all(dir);
}

TEST(Resume, ANonFiniteTensorIsNamedWhenTheCheckpointIsRead) {
  // A NaN in Adam's v: the resume is refused at once, naming adam.v, not the parameter its
  // first update would have spoilt.
  const std::string dir = fresh_dir("non_finite");
  const std::string path = dir + "/checkpoint.safetensors";
  const EquiVaeConfig config = test::tiny_config();
  train_run(cpu(), config, train_set(), nullptr, 1, dir);
  const Checkpoint good = load_checkpoint(path);
  for (const char* name : {"adam.v", "adam.m", "decoder.2.bias"}) {
    Checkpoint c = good;
    for (NamedTensor& t : c.tensors)
      if (t.name == name) t.data[3] = std::numeric_limits<float>::quiet_NaN();
    const std::string poisoned = dir + "/poisoned.safetensors";
    save_checkpoint(poisoned, c);
    expect_error(
        [&] { train_run(cpu(), config, train_set(), nullptr, 2, "", poisoned); },
        {poisoned + ": tensor " + name + " holds a non-finite value (element 3 of ", " = nan)"});
  }
  // Adam's moments are a resume's to need, and its error says so, naming the file.
  Checkpoint weights_only = good;
  std::erase_if(weights_only.tensors,
                [](const NamedTensor& t) { return t.name.rfind("adam.", 0) == 0; });
  const std::string bare = dir + "/weights_only.safetensors";
  save_checkpoint(bare, weights_only);
  expect_error([&] { train_run(cpu(), config, train_set(), nullptr, 2, "", bare); },
               {bare + ": tensor adam.m is missing", "resuming needs Adam's moments"});
  fs::remove_all(dir);
}

TEST(Resume, AnUnknownFormatVersionIsSaidBeforeAnyFieldIsCompared) {
  const std::string dir = fresh_dir("format");
  const EquiVaeConfig config = test::tiny_config();
  train_run(cpu(), config, train_set(), nullptr, 1, dir);
  Checkpoint newer = load_checkpoint(dir + "/checkpoint.safetensors");
  newer.metadata["format"] = "equivae-checkpoint-2";
  newer.metadata["config.hidden"] = "7";  // a newer build's keys may differ too
  const std::string path = dir + "/newer.safetensors";
  save_checkpoint(path, newer);
  const std::string what =
      expect_error([&] { train_run(cpu(), config, train_set(), nullptr, 2, "", path); },
                   {path + ": checkpoint format 'equivae-checkpoint-2' is not one this build "
                           "reads (it reads equivae-checkpoint-1)"});
  EXPECT_EQ(what.find("hidden"), std::string::npos) << what;
  fs::remove_all(dir);
}

TEST(MetricsLog, JsonLinesParseAndMatchTheCsv) {
  const std::string dir = fresh_dir("jsonl");
  const EquiVaeConfig config = test::tiny_semi_config();  // every field in use
  const LabelledSplit& split = semi_split();
  train_run(cpu(), config, split.labelled, &split.unlabelled, 1, dir);
  train_run(cpu(), config, split.labelled, &split.unlabelled, 2, dir,
            dir + "/checkpoint.safetensors");
  const std::vector<std::string> csv = read_lines(dir + "/metrics.csv"),
                                 json = read_lines(dir + "/metrics.jsonl");
  ASSERT_EQ(csv.size(), 3u);
  ASSERT_EQ(json.size(), 2u);
  const std::vector<std::string> header = split_csv(csv[0]);
  ASSERT_EQ(header.size(), 13u);
  for (size_t e = 0; e < json.size(); ++e) {
    const nlohmann::json object = nlohmann::json::parse(json[e]);  // throws if malformed
    ASSERT_TRUE(object.is_object());
    EXPECT_EQ(object.size(), header.size()) << json[e];
    const std::vector<std::string> row = split_csv(csv[e + 1]);
    ASSERT_EQ(row.size(), header.size());
    for (size_t c = 0; c < header.size(); ++c) {
      ASSERT_TRUE(object.contains(header[c])) << header[c] << " missing in " << json[e];
      const double from_json = object[header[c]].get<double>(), from_csv = std::stod(row[c]);
      // The CSV keeps 6 significant digits, the JSON every digit.
      EXPECT_NEAR(from_json, from_csv, 1e-5 * std::max(1.0, std::abs(from_csv)))
          << header[c] << " of epoch " << e + 1;
    }
    EXPECT_EQ(object["epoch"].get<int>(), int(e + 1));
  }

  // "-": the JSON lines go to stdout instead.
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(config, *backend);
  TrainOptions options = test::quiet_options(1);
  options.json_log = "-";
  testing::internal::CaptureStdout();
  const std::vector<EpochRecord> records =
      train(model, split.labelled, &split.unlabelled, &validation_set(), options);
  const std::string out = testing::internal::GetCapturedStdout();
  const nlohmann::json object = nlohmann::json::parse(out);
  EXPECT_EQ(object["epoch"].get<int>(), 1);
  EXPECT_EQ(object["elbo"].get<double>(), records[0].elbo);  // full precision
  fs::remove_all(dir);
}

}  // namespace
}  // namespace equivae
