#pragma once
// What a checkpoint holds beside the model's tensors so that a run continues exactly where it
// stopped, bit for bit. Everything random in a run is a Philox function of (seed, global step):
// the batches and pooling sets (model/sampler.h), the noise ε (model/equivae.h), and Adam's
// bias correction counts its t; so parameters, Adam's moments and t, the global step and the
// configuration determine the rest of the run. The string metadata carries:
//   "config.<field>"                every EquiVaeConfig field (sizes, seed, lr, U, weights,
//                                   geometry, architecture, likelihood)
//   "data.<set>.n", ".labels_crc32", ".images_crc32"
//                                   identity of the labelled, unlabelled and validation sets
//   "epoch", "global_step"          epochs completed, and the step the next epoch starts at
//   "history"                       the completed epochs' records, a JSON array
// (the model's own keys, "config", "adam_steps", … are written by EquiVae::to_checkpoint).
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/idx_dataset.h"
#include "model/trainer.h"
#include "runtime/checkpoint.h"

namespace equivae {

// Throws Error("checkpoint PATH <message>") unless condition holds: a resume error is one
// sentence naming the checkpoint ("checkpoint a.safetensors was written with …").
void check_resumable(bool condition, const std::string& path, const std::string& message);

// One field of a run's identity: its metadata key, its name in messages, its value.
struct RunField {
  std::string key, label, value;
  // What a checkpoint that lacks the key was written with (fields added after older builds
  // wrote their checkpoints: "dense" for config.architecture); empty: the key is required.
  std::string if_absent = {};
};
using RunIdentity = std::vector<RunField>;

// The configuration and the data sets (null: absent, recorded as an empty set).
RunIdentity run_identity(const EquiVaeConfig& config, const Dataset& labelled,
                         const Dataset* unlabelled, const Dataset* validation);
void write_run_identity(Checkpoint& checkpoint, const RunIdentity& identity);
// Throws Error("checkpoint PATH was written with latent_v = 16, this run asks for 8; …")
// naming every field that differs, or the first key the checkpoint lacks; first of all, an
// unknown format version (check_checkpoint_format).
void check_same_run(const Checkpoint& checkpoint, const std::string& path,
                    const RunIdentity& identity);

struct TrainProgress {
  int epoch = 0;                     // epochs completed
  uint64_t global_step = 0;          // the next step
  std::vector<EpochRecord> history;  // [epoch] records of the completed epochs
};
void write_progress(Checkpoint& checkpoint, const TrainProgress& progress);
// Throws Error naming the checkpoint when a key is missing or malformed.
TrainProgress read_progress(const Checkpoint& checkpoint, const std::string& path);

}  // namespace equivae
