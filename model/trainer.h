#pragma once
// The training loop: class-balanced batches, one static-plan step each, a
// progress line per epoch, metrics.csv and an atomic checkpoint per epoch.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/equivae.h"
#include "model/idx_dataset.h"

namespace equivae {

struct TrainOptions {
  int epochs = 40;
  std::string out_dir;  // metrics.csv and checkpoint.safetensors; empty: write nothing
  bool quiet = false;   // no progress lines
};

struct EpochRecord {
  int epoch = 0;                 // 1-based
  double elbo = 0;               // mean per-example ELBO incl. log p(y) (nats)
  double recon = 0, kl = 0;      // mean log p(x|r,v) and KL (nats)
  double validation_error = -1;  // distance classifier on the validation set; −1: none
  double seconds = 0, examples_per_s = 0;
  // Semi-supervised only (else 0 / −1):
  double classifier_nll = 0;                // mean −log q(y|x) on labelled batches
  double unlabelled_bound = 0;              // mean L_unlab per unlabelled item
  double classifier_validation_error = -1;  // argmax q(y|x) on the validation set
};

// Trains for options.epochs; throws Error("step N", ...) if the loss stops being
// finite (the last epoch's checkpoint stays on disk). labelled: the labelled training
// set; unlabelled: the unlabelled set of a semi-supervised model (one epoch = one pass
// over it), else null (one epoch = one pass over the labelled set).
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
