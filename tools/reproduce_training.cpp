#include "tools/reproduce_training.h"

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "model/classifier.h"
#include "model/equivae.h"
#include "model/evaluate.h"
#include "model/subsets.h"
#include "model/trainer.h"
#include "runtime/atomic_file.h"
#include "runtime/backend.h"
#include "runtime/clock.h"
#include "runtime/interrupt.h"

namespace equivae::reproduce {

namespace fs = std::filesystem;

namespace {

// Neural classifier (2 dense layers 128, 64, dropout) on f_inv features; stops at Ctrl-C.
double neural_error(EquiVae<float>& model, Backend<float>& backend, const Dataset& train,
                    const Dataset& validation, const Dataset& test, uint64_t seed, int epochs) {
  ClassifierConfig c = neural_classifier_preset();
  c.seed = seed;
  c.epochs = epochs;
  MlpClassifier<float> clf(model.config().latent_r, train.num_classes, c, backend);
  const std::vector<float> tr = embed_dataset(model, train), va = embed_dataset(model, validation);
  clf.train(tr, train.labels, &va, &validation.labels, StopOnSignal::requested);
  return clf.error(embed_dataset(model, test), test.labels);
}

// Benchmark classifier: f_inv's architecture (its convolutional trunk for SVHN) + 2 dropout
// layers and a C-way output, on the labelled images alone; stops at Ctrl-C.
double benchmark_error(Backend<float>& backend, const EquiVaeConfig& model, const Dataset& train,
                       const Dataset& validation, const Dataset& test, uint64_t seed, int epochs) {
  ClassifierConfig c = benchmark_classifier_preset(model);
  c.seed = seed;
  c.epochs = epochs;
  MlpClassifier<float> clf(train.dim, train.num_classes, c, backend);
  clf.train(train.images, train.labels, &validation.images, &validation.labels,
            StopOnSignal::requested);
  return clf.error(test.images, test.labels);
}

// What a stopped reproduction says: where the finished runs are, what else it left (`left`,
// "" or " and …"), and the command that continues (then `after`, "" or ", …").
std::string stopped_advice(const Reproduction& rp, const std::string& left,
                           const std::string& after) {
  return "stopped on request; the finished runs are in " + rp.runs_csv() + left + ": " +
         rp.continue_with + " continues from there" + after;
}

}  // namespace

void write_runs(const Reproduction& rp, const std::vector<PlannedRun>& plan) {
  std::vector<const RunResult*> rows;
  for (const PlannedRun& p : plan)
    if (p.done) rows.push_back(&p.result);
  const std::string text = runs_csv(rows);
  write_file_atomically(rp.runs_csv(), text.data(), text.size());
}

namespace {

// The wall time of the epochs a resumed run took from its checkpoint, spent by the sessions
// before this one (their training steps, validation and checkpoints).
double earlier_seconds(const std::vector<EpochRecord>& records, int64_t trained_now) {
  double seconds = 0;
  for (size_t i = 0; i + size_t(trained_now) < records.size(); ++i)
    seconds += records[i].seconds + records[i].validation_seconds + records[i].checkpoint_seconds;
  return seconds;
}

// Trains run r's EquiVAE into its directory, with --reuse from the checkpoint there; returns
// every epoch's record (those of the checkpoint first) and sets `trained` to the epochs this
// call trained.
std::vector<EpochRecord> train_equivae(const Reproduction& rp, EquiVae<float>& model,
                                       const Dataset& labelled, const Dataset* unlabelled,
                                       const RunResult& r, int run_number, Progress& progress,
                                       int64_t& trained) {
  const std::string dir = rp.run_dir(r), checkpoint = dir + "/checkpoint.safetensors";
  const std::string what = run_name(r);
  auto took = [&](int64_t epochs) {
    progress.note(what + ": EquiVAE continues from " + checkpoint + " after epoch " +
                  std::to_string(epochs) + " of " + std::to_string(r.epochs));
  };
  TrainOptions options;
  options.epochs = r.epochs;
  options.quiet = true;
  options.out_dir = dir;
  if (rp.reuse && fs::exists(checkpoint)) options.resume_from = checkpoint;
  trained = 0;
  int64_t skipped = 0;  // the checkpoint's epochs
  options.after_epoch = [&](const EpochRecord& e) {
    if (trained++ == 0 && e.epoch > 1) progress.skip(skipped = e.epoch - 1), took(skipped);
    progress.epoch_done(run_number, what, e.epoch, r.epochs, e.elbo);
  };
  options.stop_requested = StopOnSignal::requested;
  std::vector<EpochRecord> records;
  try {
    records = train(model, labelled, unlabelled, nullptr, options);
  } catch (const Interrupted& e) {  // the advice is --reuse here, not the trainer's --resume
    throw Interrupted(
        what + ", " + e.context(),
        stopped_advice(rp, " and this run's last finished epoch, if any, in " + dir, ""));
  }
  if (trained == 0 && !records.empty()) took(int64_t(records.size()));
  progress.skip(r.epochs - trained - skipped);  // a resumed run with nothing left to train
  return records;
}

// A classifier's test error; stopped on request, says how to continue: the run's EquiVAE
// checkpoint is still there, so only the classifiers train again.
template <class TrainClassifier>
double classifier_test_error(const Reproduction& rp, const RunResult& r, const std::string& name,
                             TrainClassifier&& train_classifier) {
  try {
    return train_classifier();
  } catch (const Interrupted& e) {
    throw Interrupted(
        run_name(r) + ", " + name + " " + e.context(),
        stopped_advice(
            rp, " and this run's trained EquiVAE in " + rp.run_dir(r) + "/checkpoint.safetensors",
            ", training only the classifiers again"));
  }
}

// Trains run p (EquiVAE, then the classifiers) and fills in its errors and seconds. Its
// EquiVAE checkpoint stays: the caller deletes it once the row is in runs.csv.
void train_run(const Reproduction& rp, PlannedRun& p, int run_number, Progress& progress) {
  const auto start = Clock::now();
  RunResult& r = p.result;
  EquiVaeConfig c = rp.row_config[p.row];
  c.seed = r.seed;
  LabelledSplit split;
  if (!rp.supervised) split = split_labelled(rp.data.train, r.labels, r.seed);
  const Dataset& labelled = rp.supervised ? rp.data.train : split.labelled;
  EquiVae<float> model(c, rp.backend);
  int64_t trained = 0;
  const std::vector<EpochRecord> records =
      train_equivae(rp, model, labelled, rp.supervised ? nullptr : &split.unlabelled, r, run_number,
                    progress, trained);
  const DataSplits& d = rp.data;
  if (!rp.supervised) r.q_error = classifier_error(model, d.test);
  r.distance_error = distance_classifier_error(model, labelled, d.test);
  r.neural_error = classifier_test_error(rp, r, "neural", [&] {
    return neural_error(model, rp.backend, labelled, d.validation, d.test, r.seed,
                        rp.classifier_epochs);
  });
  r.benchmark_error = classifier_test_error(rp, r, "benchmark", [&] {
    return benchmark_error(rp.backend, c, labelled, d.validation, d.test, r.seed,
                           rp.classifier_epochs);
  });
  // A resumed run counts the epochs its checkpoint holds as well as this session.
  r.seconds = seconds_since(start) + earlier_seconds(records, trained);
}

std::string result_line(const RunResult& r, bool supervised) {
  char q[32] = "";  // supervised rows have no q(y|x)
  if (!supervised) std::snprintf(q, sizeof q, "q(y|x) %6.2f%%  ", 100 * r.q_error);
  char line[256];
  std::snprintf(line, sizeof line,
                "labels %6lld seed %llu: %sdistance %6.2f%%  neural %6.2f%%  benchmark %6.2f%%  "
                "[%.0f s]",
                (long long)r.labels, (unsigned long long)r.seed, q, 100 * r.distance_error,
                100 * r.neural_error, 100 * r.benchmark_error, r.seconds);
  return line;
}

}  // namespace

void train_runs(const Reproduction& rp, std::vector<PlannedRun>& plan, Progress& progress) {
  int run_number = 0;
  for (PlannedRun& p : plan) {
    if (p.done) continue;
    // A stop asked for between two runs' polls (while a test set was classified, say).
    if (StopOnSignal::requested())
      throw Interrupted("before " + run_name(p.result), stopped_advice(rp, "", ""));
    train_run(rp, p, ++run_number, progress);
    p.done = true;
    write_runs(rp, plan);
    fs::remove(rp.run_dir(p.result) + "/checkpoint.safetensors");  // its row stands for it now
    progress.run_done(run_number, result_line(p.result, rp.supervised));
  }
}

}  // namespace equivae::reproduce
