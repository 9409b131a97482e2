#include "model/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "model/divergence.h"
#include "model/evaluate.h"
#include "model/metrics_log.h"
#include "model/resume_state.h"
#include "model/sampler.h"
#include "runtime/checkpoint_writer.h"
#include "runtime/clock.h"
#include "runtime/error.h"
#include "runtime/host_floats.h"
#include "runtime/interrupt.h"
#include "runtime/output_dir.h"
#include "runtime/path_checks.h"

namespace equivae {
namespace {

std::string format_duration(double seconds) {
  const int s = int(std::lround(seconds));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%d:%02d", s / 60, s % 60);
  return buf;
}

namespace fs = std::filesystem;

// The epoch a checkpoint reached ("" when it cannot be read: the note then goes without it).
std::string checkpoint_epoch(const std::string& path) {
  try {
    return load_checkpoint(path).metadata.at("epoch");
  } catch (const std::exception&) {
    return "";
  }
}

constexpr const char* kRunFiles[] = {"checkpoint.safetensors", "metrics.csv", "metrics.jsonl"};

// Each of the run's files in out_dir must be a regular file or absent, checked before the
// first step: a directory in the checkpoint's place would be refused only when epoch 1's
// checkpoint is written, a FIFO in a log's would block its open.
void check_run_files(const std::string& out_dir, bool default_json_log) {
  for (const char* name : kRunFiles)
    if (default_json_log || std::string(name) != "metrics.jsonl")
      check_output_file(out_dir + "/" + name);
}

// Whether a file holds anything to keep, whoever wrote it: anything but an empty file or
// (`header` given) a metrics.csv of its header alone, which a run refused before its first
// epoch leaves.
bool holds_something(const std::string& path, const std::string& header = "") {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec || size == 0) return false;
  if (header.empty() || size != header.size() + 1) return true;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line != header;
}

// Whether out_dir holds files of this run's names that it would overwrite: another run's
// checkpoint, its logs, or the user's own files of those names.
bool holds_files_to_keep(const std::string& out_dir) {
  for (const char* name : kRunFiles)
    if (holds_something(out_dir + "/" + name,
                        std::string(name) == "metrics.csv" ? metrics_csv_header() : ""))
      return true;
  return false;
}

// Files of this run's names, moved aside so that this run does not overwrite them.
// Moves the run files in out_dir to the first free of OUT/previous, OUT/previous-2, ...; the
// earlier run's epoch goes with them for the note.
std::pair<MovedAside, std::string> move_run_files_aside(const std::string& out_dir) {
  std::vector<std::string> names;
  for (const char* name : kRunFiles)
    if (fs::is_regular_file(out_dir + "/" + name)) names.push_back(name);
  std::string epoch = checkpoint_epoch(out_dir + "/checkpoint.safetensors");
  return {move_to_previous(out_dir, names), std::move(epoch)};
}

// What became of the earlier run, and how to go on with it.
void note_moved_aside(const std::string& out_dir, const MovedAside& moved,
                      const std::string& epoch) {
  const bool checkpoint = std::any_of(moved.entries.begin(), moved.entries.end(), [](auto& e) {
    return fs::path(e.first).filename() == "checkpoint.safetensors";
  });
  if (!checkpoint) {
    std::string names;
    for (const auto& entry : moved.entries)
      names += (names.empty() ? "" : ", ") + fs::path(entry.first).filename().string();
    std::fprintf(stderr,
                 "note: %s held %s but no checkpoint (an earlier run's logs, or files of those "
                 "names): moved to %s/, as this run writes its own\n",
                 out_dir.c_str(), names.c_str(), moved.dir.c_str());
    return;
  }
  const std::string at = epoch.empty() ? "" : " (epoch " + epoch + ")";
  std::fprintf(stderr,
               "note: %s held an earlier run's checkpoint%s: moved to %s/; to continue that run, "
               "run its command with --resume %s/checkpoint.safetensors and --out %s in place "
               "of its --out\n",
               out_dir.c_str(), at.c_str(), moved.dir.c_str(), moved.dir.c_str(),
               moved.dir.c_str());
}

// log p(y) for each class, p(y) = class frequencies of the (labelled) training set.
std::vector<double> class_log_prior(const Dataset& data, int classes) {
  std::vector<double> log_p(classes, 0);
  for (int32_t y : data.labels) log_p[y] += 1;
  for (double& p : log_p) p = std::log(p / double(data.n));
  return log_p;
}

}  // namespace

template <class T>
std::vector<EpochRecord> train(EquiVae<T>& model, const Dataset& labelled,
                               const Dataset* unlabelled, const Dataset* validation,
                               const TrainOptions& options) {
  const EquiVaeConfig& config = model.config();
  const Dataset& train = labelled;
  check(config.semi_supervised() == (unlabelled != nullptr), "training",
        config.semi_supervised() ? "the semi-supervised model needs an unlabelled set"
                                 : "an unlabelled set needs a semi-supervised model");
  for (const Dataset* data : {&labelled, unlabelled, validation})
    if (data) data->check_pixels();
  // Its faults (a class with fewer than k items) name the data set they are in.
  BalancedBatchSampler sampler = [&] {
    try {
      return BalancedBatchSampler(train.labels, config.classes, config.k, config.m_max,
                                  config.seed);
    } catch (const Error& e) {
      throw Error(train.source, e.what());
    }
  }();
  std::unique_ptr<UnlabelledSampler> unlabelled_sampler;
  if (unlabelled)
    unlabelled_sampler = std::make_unique<UnlabelledSampler>(
        unlabelled->n, config.unlabelled, config.classes, config.k, config.m_max, config.seed);
  const int64_t steps =
      unlabelled_sampler ? unlabelled_sampler->steps_per_epoch() : sampler.steps_per_epoch();
  // The semi-supervised objective uses log p(y) per class; for the supervised one it is
  // eq. 4's constant term, the mean over a class-balanced batch, which moves the reported
  // ELBO and never the gradients.
  const std::vector<double> log_p = class_log_prior(train, config.classes);
  model.set_log_prior(log_p);  // a no-op for the supervised plan
  double log_prior = 0;
  for (double p : log_p) log_prior += p / config.classes;
  const bool live = !options.quiet && isatty(STDERR_FILENO);

  // Where the run starts: epoch 0, or the epoch a checkpoint of this same run reached.
  TrainProgress progress;
  RunIdentity identity;
  if (!options.out_dir.empty() || !options.resume_from.empty())
    identity = run_identity(config, train, unlabelled, validation);
  if (!options.resume_from.empty()) {
    const std::string& path = options.resume_from;
    const Checkpoint ckpt = load_checkpoint(path);
    check_same_run(ckpt, path, identity);
    progress = read_progress(ckpt, path);
    check_resumable(progress.global_step == uint64_t(progress.epoch) * uint64_t(steps), path,
                    "is at step " + std::to_string(progress.global_step) +
                        ", not at the end of epoch " + std::to_string(progress.epoch) + " (" +
                        std::to_string(steps) + " steps each)");
    check_resumable(progress.epoch <= options.epochs, path,
                    "has already trained " + std::to_string(progress.epoch) +
                        " epochs, more than the " + std::to_string(options.epochs) +
                        " this run asks for");
    model.load_checkpoint(ckpt, path);  // parameters, Adam's moments and t
    check_resumable(model.adam_steps() == int64_t(progress.global_step), path,
                    "has taken " + std::to_string(model.adam_steps()) +
                        " Adam steps (metadata \"adam_steps\") but is at step " +
                        std::to_string(progress.global_step));
  }

  std::string checkpoint_path, csv_path, json_path = options.json_log;
  // The checkpoint this run resumes is the one it writes (--resume OUT/checkpoint.safetensors).
  bool resumes_own_checkpoint = false;
  MovedAside moved;
  std::string moved_epoch;
  if (!options.out_dir.empty()) {
    create_output_directory(options.out_dir);
    remove_stale_temp_files_noting(options.out_dir, {"checkpoint.safetensors"}, options.quiet);
    check_run_files(options.out_dir, json_path.empty());
    csv_path = options.out_dir + "/metrics.csv";
    if (json_path.empty()) json_path = options.out_dir + "/metrics.jsonl";
    checkpoint_path = options.out_dir + "/checkpoint.safetensors";
    std::error_code absent;  // either file missing: not the same one
    resumes_own_checkpoint = fs::equivalent(checkpoint_path, options.resume_from, absent);
    // Another run's checkpoint there (not the one this run resumes), the epochs it logged (a
    // run stopped before its first checkpoint), or any other files of those names are not
    // overwritten by this run: they move aside.
    if (!resumes_own_checkpoint && holds_files_to_keep(options.out_dir))
      std::tie(moved, moved_epoch) = move_run_files_aside(options.out_dir);
  }
  // Both logs start over from the checkpoint's records, so a resumed run's files hold every
  // epoch once even if the previous run wrote a row after its last checkpoint. They take the
  // moved files' names, so they open after the move; a log that cannot be opened (its
  // directory missing, a directory in its place) puts the earlier run's files back: a run
  // that fails on its outputs moves nothing.
  MetricsLog log = [&] {
    try {
      return MetricsLog(csv_path, json_path, progress.history);
    } catch (...) {
      moved.undo();
      throw;
    }
  }();
  if (!moved.dir.empty() && !options.quiet) note_moved_aside(options.out_dir, moved, moved_epoch);

  // On a backend with device-resident steps (CUDA) the data sets are uploaded once and the
  // steps run as graph replays, a window of steps per call: the host samples the window's
  // batches, and reads the window's metrics back once.
  check(options.device_window >= 1, "train", "device_window must be at least 1");
  check(options.validate_every >= 1, "train",
        "validate_every must be at least 1, got " + std::to_string(options.validate_every));
  const int64_t window_steps = options.device_window;
  const bool on_device = model.device_steps_supported();
  if (on_device) model.upload_datasets(train, unlabelled);
  // The plan's convolutions were timed on cuDNN and lowered to GEMMs when it was made
  // (CudaBackendOptions::autotune): said once.
  if (const auto routes = model.convolution_routes(); routes.timed > 0 && !options.quiet)
    std::fprintf(stderr,
                 "convolution autotuning: %d calls timed on cuDNN and lowered to GEMMs, %d run "
                 "lowered\n",
                 routes.timed, routes.lowered);
  // The validation reads the training set (the centroids) and the validation set every epoch:
  // on the device both stay there (the training set is the copy just uploaded).
  struct KeptForValidation {
    EquiVae<T>& model;
    ~KeptForValidation() { model.forget_resident(); }
  } kept{model};
  if (validation) {
    model.keep_resident(train);
    model.keep_resident(*validation);
  }
  std::vector<Batch> window;
  std::vector<StepMetrics> window_metrics;
  // The next device window's batches are sampled on a worker thread while the device runs
  // the current one: the samplers are functions of the step, so the batches are the same, and
  // only one thread at a time uses them (this one waits in train_steps meanwhile).
  struct WindowBatches {
    uint64_t first = 0;
    std::vector<Batch> batches;
  };
  auto sample_window = [&](uint64_t first, size_t n) {
    WindowBatches w{first, std::vector<Batch>(n)};
    for (size_t i = 0; i < n; ++i) {
      sampler.sample(first + i, w.batches[i]);
      if (unlabelled_sampler) unlabelled_sampler->sample(first + i, w.batches[i]);
    }
    return w;
  };
  std::future<WindowBatches> next_window;

  std::vector<EpochRecord> records = progress.history;
  Batch batch;
  const auto run_start = Clock::now();
  const int first_epoch = progress.epoch + 1;
  uint64_t step = progress.global_step;
  uint64_t window_last = 0;  // the last step of the device window that ran
  // Each epoch's state is read back on this thread into `state`, and cut into a checkpoint and
  // written on the writer's while the next epoch trains; the next checkpoint, a divergence and
  // the end of training wait for it (`state` outlives the writer, which waits when destroyed).
  // Its memory is the backend's host memory, taken at the first checkpoint and kept: on a GPU
  // page-locked, so the read-back is one DMA per region rather than a pageable copy (~6 ms an
  // epoch for the 24 MB of the MNIST model's state on an H200's host).
  HostFloats<T> state;
  CheckpointWriter writer;
  int saved_epoch = 0;    // the last epoch whose checkpoint this call has on disk
  int pending_epoch = 0;  // the epoch whose checkpoint is being written, 0: none
  auto settle_checkpoint = [&] {
    const int epoch = pending_epoch;
    pending_epoch = 0;
    writer.wait();  // throws when that write failed
    if (epoch > 0) saved_epoch = epoch;
  };
  // What a run that stops early leaves behind: the write in flight finished (its error, if it
  // failed), and which checkpoint holds the last good state ("" if none).
  struct Kept {
    std::string text, path, failed;
  };
  auto kept_checkpoint = [&] {
    Kept k{"no checkpoint of this run was written yet", "", ""};
    try {
      settle_checkpoint();
    } catch (const Error& e) {
      k.failed = "; " + std::string(e.what());
    }
    if (saved_epoch > 0) {
      k.path = checkpoint_path;
      k.text = "the last good checkpoint " + k.path + " (epoch " + std::to_string(saved_epoch) +
               ") is kept untouched";
    } else if (!options.resume_from.empty()) {
      k.path = options.resume_from;
      k.text = "the checkpoint " + k.path + " (epoch " + std::to_string(progress.epoch) +
               ") is kept untouched";
    }
    return k;
  };
  // Every step's loss and update are checked, so the state after an epoch is finite unless
  // something outside the steps changed it: a last guard that a non-finite state never
  // replaces the last good checkpoint. Checked on the writer's thread, off the training's;
  // the refusal surfaces at the next settle.
  const size_t parameter_tensors = model.named_parameters().size();
  const CheckpointWriter::Refusal refuse_non_finite = [parameter_tensors](const Checkpoint& c) {
    const std::string bad = first_non_finite_state(c, parameter_tensors);
    return bad.empty() ? bad : "the state after the epoch's last step is not finite: " + bad;
  };
  // Where a step stands, every count from 1: step `s` (from 0) of `epoch`, the run's step `at`
  // (from 0, as the sampler and the checkpoint count).
  auto where = [&](uint64_t at, int epoch, int64_t s) {
    return "epoch " + std::to_string(epoch) + ", step " + std::to_string(s + 1) + " of " +
           std::to_string(steps) + " (step " + std::to_string(at + 1) + " of the run)";
  };
  // How to go on after a divergence: the same flags take the same steps again, and a run
  // continued with --resume keeps the learning rate.
  const std::string lower_lr = "; a lower learning rate may avoid it: start a new run with " +
                               ("--lr below this run's " + format_number(config.lr)) +
                               " (a run continued with --resume must keep it)";
  // The device window's step whose update went non-finite, if any.
  std::optional<uint64_t> window_diverged;
  auto diverged = [&](const StepMetrics& m, uint64_t at, int epoch, int64_t s) {
    std::string tensor = first_non_finite_tensor(model);
    if (tensor.empty()) tensor = "none: every parameter, gradient and Adam moment is finite";
    // A device window ran to its end before its metrics were read: the state is after it, or
    // after the update that went non-finite (the later ones change nothing).
    const uint64_t last = window_diverged.value_or(window_last);
    const std::string state =
        on_device ? " after step " + std::to_string(last + 1) + " of the run" : "";
    const Kept k = kept_checkpoint();
    return Error(where(at, epoch, s), "training diverged: the loss is not finite (" +
                                          non_finite_loss_terms(m) + "); first non-finite tensor" +
                                          state + ": " + tensor + "; " + k.text + k.failed +
                                          lower_lr);
  };
  // Step `s` of `epoch` (global step `at`) had a finite loss, however large, and an Adam update
  // that left a parameter or moment NaN or infinite: the state is as that update left it.
  auto update_diverged = [&](const StepMetrics& m, uint64_t at, int epoch, int64_t s) {
    std::string tensor = first_non_finite_state(model);
    if (tensor.empty()) tensor = "none found in the state read back";
    const Kept k = kept_checkpoint();
    const std::string loss = "ELBO " + format_number(m.elbo() + log_prior);
    return Error(where(at, epoch, s), "training diverged: its loss was finite (" + loss +
                                          ") but its Adam update made a value non-finite: " +
                                          tensor + "; " + k.text + k.failed + lower_lr);
  };
  // Stopped on request before step `s` of `epoch` (global step `at`).
  auto stopped = [&](uint64_t at, int epoch, int64_t s) {
    const Kept k = kept_checkpoint();
    // A write in flight that failed leaves the one before it, which still resumes. The same
    // command, --out included: a resumed run writes where --out says (by default runs/mnist),
    // not beside the checkpoint it resumes.
    std::string next;
    if (!k.path.empty() && k.path == options.resume_from)
      next = ": continue by running this command again";
    else if (!k.path.empty())
      next =
          ": continue by running this command again with --resume " + k.path +
          (options.resume_from.empty() ? " added" : " in place of --resume " + options.resume_from);
    return Interrupted(where(at, epoch, s),
                       "stopped on request before this step; " + k.text + next + k.failed);
  };
  for (int epoch = first_epoch; epoch <= options.epochs; ++epoch) {
    const auto epoch_start = Clock::now();
    double recon = 0, kl = 0, nll = 0, bound = 0;
    for (int64_t s = 0; s < steps; ++s, ++step) {
      // Asked before each step on the host, before each window on a device.
      if (options.stop_requested && (!on_device || s % window_steps == 0) &&
          options.stop_requested())
        throw stopped(step, epoch, s);
      if (on_device) {
        const int64_t at = s % window_steps;
        if (at == 0) {  // run the next window of steps on the device
          const size_t n = size_t(std::min(window_steps, steps - s));
          WindowBatches w;
          if (next_window.valid()) w = next_window.get();
          if (w.first != step || w.batches.size() != n) w = sample_window(step, n);
          window = std::move(w.batches);
          // The window after this one: the rest of this epoch, or the next epoch's first.
          const int64_t rest = steps - s - int64_t(n);
          if (rest > 0 || epoch < options.epochs)
            next_window = std::async(std::launch::async, sample_window, step + n,
                                     size_t(std::min(window_steps, rest > 0 ? rest : steps)));
          const int tuned_before = model.gemm_tuning().timed;
          window_metrics = model.train_steps(window, step);
          window_last = step + window.size() - 1;
          window_diverged.reset();
          for (size_t i = 0; i < window_metrics.size() && !window_diverged; ++i)
            if (!window_metrics[i].update_finite) window_diverged = step + i;
          if (const GemmTuning& t = model.gemm_tuning(); t.timed > tuned_before && !options.quiet)
            std::fprintf(stderr,
                         "GEMM autotuning: %d cuBLASLt plans timed, %d changed (%d to the small "
                         "GEMM; %.1f -> %.1f us, each plan once)\n",
                         t.timed, t.changed, t.small, t.heuristic_seconds * 1e6,
                         t.chosen_seconds * 1e6);
        }
      }
      // On the host the step stops after its forward pass when the loss is not finite, so
      // the error sees the parameters that produced it (train_step's phases, in order).
      const StepMetrics m = on_device ? window_metrics[size_t(s % window_steps)] : [&] {
        sampler.sample(step, batch);
        if (unlabelled_sampler) unlabelled_sampler->sample(step, batch);
        model.load_batch(batch, train, unlabelled);
        return model.forward(step);
      }();
      if (!std::isfinite(m.recon) || !std::isfinite(m.kl) || !std::isfinite(m.classifier_nll) ||
          !std::isfinite(m.unlabelled_bound))
        throw diverged(m, step, epoch, s);
      bool update_finite = m.update_finite;  // on a device; on the host, asked after the update
      if (!on_device) {
        model.backward();
        update_finite = model.apply_adam();
      }
      if (!update_finite) throw update_diverged(m, step, epoch, s);
      recon += m.recon;
      kl += m.kl;
      nll += m.classifier_nll;
      bound += m.unlabelled_bound;
      if (live && (s % 10 == 0 || s + 1 == steps))
        std::fprintf(stderr, "\repoch %d/%d  step %lld/%lld  ELBO %.2f", epoch, options.epochs,
                     (long long)s + 1, (long long)steps, (recon - kl) / double(s + 1) + log_prior);
    }
    EpochRecord r;
    r.epoch = epoch;
    r.recon = recon / double(steps);
    r.kl = kl / double(steps);
    r.elbo = r.recon - r.kl + log_prior;
    r.classifier_nll = nll / double(steps);
    r.unlabelled_bound = bound / double(steps);
    r.seconds = r.train_seconds = seconds_since(epoch_start);
    r.examples_per_s = double(steps) * (config.batch() + config.unlabelled) / r.seconds;
    const bool validated =
        validation && (epoch % options.validate_every == 0 || epoch == options.epochs);
    if (validated) {
      const auto validation_start = Clock::now();
      r.validation_error = distance_classifier_error(model, train, *validation);
      if (unlabelled) r.classifier_validation_error = classifier_error(model, *validation);
      r.validation_seconds = seconds_since(validation_start);
    }
    if (checkpoint_path.empty()) {
      records.push_back(r);
    } else {
      // The time this thread spends on it: the previous write's end (which frees `state`), then
      // the state read back into it.
      const auto checkpoint_start = Clock::now();
      settle_checkpoint();
      if (state.size() != model.state_size())
        state = HostFloats<T>(model.backend(), model.state_size());
      model.read_state(state.span());
      typename EquiVae<T>::CheckpointLayout layout = model.checkpoint_layout();
      write_run_identity(layout.shell, identity);
      r.checkpoint_seconds = seconds_since(checkpoint_start);
      records.push_back(r);
      write_progress(layout.shell, {epoch, step, records});
      writer.write(
          checkpoint_path,
          CheckpointWriter::Builder(
              [layout = std::move(layout), read = std::span<const float>(state.span())]() mutable {
                return EquiVae<T>::fill_checkpoint(std::move(layout), read);
              }),
          "epoch " + std::to_string(epoch), refuse_non_finite);
      pending_epoch = epoch;
    }

    if (!options.quiet) {
      const double elapsed = seconds_since(run_start);
      const double eta = elapsed / (epoch - first_epoch + 1) * (options.epochs - epoch);
      std::fprintf(stderr, "%sepoch %3d/%d  ELBO %8.2f  recon %8.2f  KL %6.2f", live ? "\r" : "",
                   epoch, options.epochs, r.elbo, r.recon, r.kl);
      if (unlabelled)
        std::fprintf(stderr, "  L_unlab %8.2f  -log q %5.3f", r.unlabelled_bound, r.classifier_nll);
      if (validated) std::fprintf(stderr, "  val err %5.2f%%", 100 * r.validation_error);
      if (r.classifier_validation_error >= 0)
        std::fprintf(stderr, " (q(y|x) %5.2f%%)", 100 * r.classifier_validation_error);
      std::fprintf(stderr, "  %7.0f ex/s  [train %.2f s", r.examples_per_s, r.train_seconds);
      if (validated) std::fprintf(stderr, ", val %.2f s", r.validation_seconds);
      if (!checkpoint_path.empty()) std::fprintf(stderr, ", ckpt %.2f s", r.checkpoint_seconds);
      std::fprintf(stderr, "]  ETA %s\n", format_duration(eta).c_str());
    }
    log.append(r);
    if (options.after_epoch) options.after_epoch(r);
  }
  // A finished run resumed into another directory trains nothing: its checkpoint goes there
  // all the same, so that directory resumes as the metrics beside it say.
  if (first_epoch > options.epochs && !checkpoint_path.empty() && !resumes_own_checkpoint) {
    Checkpoint ckpt = model.to_checkpoint();
    write_run_identity(ckpt, identity);
    write_progress(ckpt, {progress.epoch, step, records});
    writer.write(checkpoint_path, std::move(ckpt), "epoch " + std::to_string(progress.epoch));
    pending_epoch = progress.epoch;
  }
  settle_checkpoint();
  return records;
}

template std::vector<EpochRecord> train<float>(EquiVae<float>&, const Dataset&, const Dataset*,
                                               const Dataset*, const TrainOptions&);
template std::vector<EpochRecord> train<double>(EquiVae<double>&, const Dataset&, const Dataset*,
                                                const Dataset*, const TrainOptions&);

}  // namespace equivae
