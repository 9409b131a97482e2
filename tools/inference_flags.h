#pragma once
// Flags shared by the tools that use a trained model (figures, embed, classify): the
// checkpoint, where it runs, and which split of the data they read.
#include <memory>
#include <string>

#include "model/checkpoint_model.h"
#include "model/data_splits.h"
#include "runtime/backend.h"
#include "runtime/error.h"
#include "runtime/flags.h"
#include "tools/device_flags.h"

namespace equivae {

inline void declare_model_flags(Flags& f) {
  f.add("checkpoint", "runs/mnist/checkpoint.safetensors",
        "checkpoint written by train_mnist or train_svhn --out DIR (DIR/checkpoint.safetensors; "
        "the default: train_mnist's)");
  declare_device_flags(f, "cpu");
}

// The checkpoint's model on the backend of --device / --threads.
struct LoadedModel {
  std::unique_ptr<Backend<float>> backend;
  std::unique_ptr<EquiVae<float>> model;
};

inline LoadedModel load_model_from_flags(const Flags& f) {
  LoadedModel loaded;
  loaded.backend = backend_from_flags(f);
  loaded.model = load_model(f.get("checkpoint"), *loaded.backend);
  return loaded;
}

inline void declare_split_flag(Flags& f) {
  f.add("split", "auto",
        "train, validation or test (auto: validation when there is one, else test; the "
        "bundled digits have no validation split unless --validation N)");
}

// The split named by --split; throws Error when it is empty.
inline const Dataset& select_split(const Flags& f, const DataSplits& splits) {
  std::string name = f.get("split");
  if (name == "auto") name = splits.validation.n > 0 ? "validation" : "test";
  const Dataset* set = name == "train"        ? &splits.train
                       : name == "validation" ? &splits.validation
                       : name == "test"       ? &splits.test
                                              : nullptr;
  check(set != nullptr, "--split", "expects train, validation, test or auto, got '" + name + "'");
  check(set->n > 0, "--split",
        "the " + name + " split is empty (use --validation N to hold one out)");
  return *set;
}

}  // namespace equivae
