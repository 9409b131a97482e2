#pragma once
// The training loop: class-balanced batches, one static-plan step each, a
// progress line per epoch, metrics.csv, metrics.jsonl and an atomic checkpoint per epoch
// (written in the background while the next epoch trains, runtime/checkpoint_writer.h);
// a run resumes from its checkpoint exactly (model/resume_state.h).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/equivae.h"
#include "model/idx_dataset.h"

namespace equivae {

struct EpochRecord;

struct TrainOptions {
  int epochs = 40;  // epochs in total, those of the resumed run included
  // metrics.csv, metrics.jsonl, checkpoint.safetensors; empty: none. Each must be a regular
  // file or absent (checked before the first step). Another run's checkpoint there (not the
  // one resumed), or any other file of those names with something in it, moves aside with the
  // others to the first free of OUT/previous, OUT/previous-2, ...; not when this run's logs
  // cannot be opened. Partial checkpoints of dead processes there are removed (a note says so).
  std::string out_dir;
  bool quiet = false;  // no progress lines (errors still throw)
  // A checkpoint written by train() to continue from: its configuration and data sets must be
  // this run's (else Error naming the differing fields); parameters, Adam state, epoch, step
  // and the earlier epochs' records are restored, and training goes on to `epochs`. The
  // result is bit for bit the uninterrupted run's (same backend and thread count).
  std::string resume_from;
  // The JSON-lines log: empty: out_dir/metrics.jsonl (none without out_dir); "-": stdout.
  std::string json_log;
  // Called after each epoch, once its checkpoint has been read back from the model; the file
  // is written in the background and is on disk when the next epoch's checkpoint starts or
  // train() returns.
  std::function<void(const EpochRecord&)> after_epoch;
  // On a backend with device-resident steps: steps per graph-replay window (the host samples
  // a window's batches, uploads their indices and reads its metrics back once; the next
  // window is sampled while the device runs this one). Windows never cross an epoch's end.
  int device_window = 512;
  // With a validation set: its error after every validate_every-th epoch and after the last
  // (1: every epoch). Nothing selects on it (the run's result is its last epoch), so fewer
  // validations change no parameter, only the time (on an H200, 0.9 s of a 4.5 s 40-epoch
  // run); the other epochs' records hold −1.
  int validate_every = 1;
  // Asked before each step (on a device, before each window of steps): true stops the run
  // there, once the checkpoint being written is on disk, with Interrupted (runtime/interrupt.h)
  // naming the checkpoint to --resume from. Null: never asked.
  std::function<bool()> stop_requested;
};

struct EpochRecord {
  int epoch = 0;                 // 1-based
  double elbo = 0;               // mean per-example ELBO incl. log p(y) (nats)
  double recon = 0, kl = 0;      // mean log p(x|r,v) and KL (nats)
  double validation_error = -1;  // distance classifier on the validation set; −1: none
  // The training steps' wall time (validation and checkpoint not included), examples per second.
  double seconds = 0, examples_per_s = 0;
  // Semi-supervised only (else 0 / −1):
  double classifier_nll = 0;                // mean −log q(y|x) on labelled batches
  double unlabelled_bound = 0;              // mean L_unlab per unlabelled item
  double classifier_validation_error = -1;  // argmax q(y|x) on the validation set
  // Where the epoch's wall time went (seconds): the training steps (= seconds), the validation
  // errors, and the checkpoint's share of the training thread (waiting for the previous
  // checkpoint's write, reading the state back); the file is written beside the next epoch.
  // Records of runs that did not measure them (older checkpoints' history) hold 0.
  double train_seconds = 0, validation_seconds = 0, checkpoint_seconds = 0;
};

// Trains until epoch options.epochs and returns every epoch's record (a resumed run's
// earlier epochs included). Throws Error("epoch E, step S of N (step G of the run)", ...), every
// count from 1, at the first step whose loss is not finite, naming the non-finite loss term and
// the first non-finite parameter, gradient or Adam moment by its checkpoint name, or whose Adam
// update left a parameter or moment non-finite (a finite loss, however large, is no error),
// naming the first non-finite parameter or moment and element; the last epoch's
// checkpoint stays on disk untouched and the diverged epoch gets no row in the logs.
// Throws Interrupted when options.stop_requested says so.
// A checkpoint that cannot be written throws Error naming the file and the epoch, at the next
// epoch's checkpoint or before train() returns.
// labelled: the labelled training set; unlabelled: the unlabelled set of a semi-supervised
// model (one epoch = one pass over it), else null (one epoch = one pass over the labelled set).
template <class T>
std::vector<EpochRecord> train(EquiVae<T>& model, const Dataset& labelled,
                               const Dataset* unlabelled, const Dataset* validation,
                               const TrainOptions& options);

// Supervised training: train(model, labelled, nullptr, validation, options).
template <class T>
std::vector<EpochRecord> train(EquiVae<T>& model, const Dataset& labelled,
                               const Dataset* validation, const TrainOptions& options) {
  return train(model, labelled, nullptr, validation, options);
}

}  // namespace equivae
