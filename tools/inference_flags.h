#pragma once
// Flags shared by the tools that use a trained model (figures, embed, classify): the
// checkpoint, where it runs, which split of the data they read, and where they write. The
// data are checked against the sets the checkpoint's run recorded (model/resume_state.h).
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "model/checkpoint_model.h"
#include "model/data_splits.h"
#include "model/resume_state.h"
#include "model/subsets.h"
#include "runtime/backend.h"
#include "runtime/checkpoint.h"
#include "runtime/error.h"
#include "runtime/flags.h"
#include "runtime/output_dir.h"
#include "runtime/path_checks.h"
#include "tools/data_flags.h"
#include "tools/device_flags.h"

namespace equivae {

inline void declare_model_flags(Flags& f) {
  f.add("checkpoint", "runs/mnist/checkpoint.safetensors",
        "checkpoint written by train_mnist or train_svhn --out DIR (DIR/checkpoint.safetensors; "
        "the default: train_mnist's)");
  declare_device_flags(f, "cpu", /*training=*/false);
  f.add("inference-chunk", std::to_string(EquiVaeConfig{}.inference_chunk),
        "images per chunk of f_inv and q(y|x); 0: the training batch's rows, so each image's "
        "f_inv equals a training step's forward bit for bit (convolutional networks always run "
        "the batch's rows)");
}

// The checkpoint's model on the backend of --device / --threads, and its metadata (what its
// run trained on).
struct LoadedModel {
  std::unique_ptr<Backend<float>> backend;
  std::unique_ptr<EquiVae<float>> model;
  std::string path;
  std::map<std::string, std::string> metadata;
};

inline LoadedModel load_model_from_flags(const Flags& f) {
  LoadedModel loaded;
  const int inference_chunk = int(f.get_int("inference-chunk", 0, kMaxInferenceChunk));
  loaded.backend = backend_from_flags(f);
  loaded.path = f.get("checkpoint");
  Checkpoint checkpoint = load_checkpoint(loaded.path);  // read once: weights and metadata
  loaded.model = load_model(checkpoint, loaded.path, *loaded.backend, inference_chunk);
  loaded.metadata = std::move(checkpoint.metadata);
  return loaded;
}

// The sizes of the sets the checkpoint's run trained on ("data.<set>.n"); known is false for
// a checkpoint that does not record them (not written by the trainer).
struct TrainedOn {
  bool known = false;
  int64_t labelled = 0, unlabelled = 0, validation = 0;
  // The training file's examples: a semi-supervised run's labelled and unlabelled sets are
  // its training split.
  int64_t examples() const { return labelled + unlabelled + validation; }
};

inline TrainedOn trained_on(const LoadedModel& loaded) {
  TrainedOn run;
  const std::pair<const char*, int64_t*> sets[] = {{"labelled", &run.labelled},
                                                   {"unlabelled", &run.unlabelled},
                                                   {"validation", &run.validation}};
  for (const auto& [name, value] : sets) {
    auto it = loaded.metadata.find(std::string("data.") + name + ".n");
    if (it == loaded.metadata.end()) return {};
    const std::string& text = it->second;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *value);
    if (ec != std::errc() || end != text.data() + text.size() || *value < 0) return {};
  }
  run.known = true;
  return run;
}

// The data flags' splits. --validation auto holds out what the checkpoint's run held out when
// the training file has as many examples as that run's (the same data, as far as sizes tell),
// else what train_mnist's auto does. The training images must fit the model before anything
// is held out: data of the wrong kind (SVHN for an MNIST model) are named as such, not by the
// validation count their kind's default would take.
inline DataSplits load_data_as_trained(const Flags& f, const TrainedOn& run,
                                       const EquiVae<float>& model) {
  DataSource source = data_source(f, 0);
  const int64_t given = source.validation;  // −1: auto for a data directory or files
  source.validation = 0;                    // the whole training file, held out below
  DataSplits splits = load_splits(source);
  model.check_image_size(splits.train);
  if (f.get("validation") != "auto") {
    hold_out_validation(splits, given);
    return splits;
  }
  if (!run.known || splits.train.n != run.examples()) {
    hold_out_auto_validation(splits);
    return splits;
  }
  if (run.validation != splits.auto_validation)
    std::fprintf(stderr, "note: --validation auto: %lld, as the checkpoint's run held out\n",
                 (long long)run.validation);
  hold_out_validation(splits, run.validation);
  return splits;
}

// The training data a tool works with, divided as the checkpoint's run divided them.
struct TrainingData {
  DataSplits splits;
  // A semi-supervised checkpoint's labelled subset and the rest, drawn again as train_mnist
  // drew them (model/subsets.h: the run's label count, the checkpoint's seed). Empty for a
  // supervised checkpoint, and when it cannot be drawn (why_no_subset says why).
  std::optional<LabelledSplit> subset;
  std::string why_no_subset;
};

inline void draw_labelled_subset(const LoadedModel& loaded, const TrainedOn& run,
                                 TrainingData& data) {
  const EquiVaeConfig& config = loaded.model->config();
  if (!config.semi_supervised()) return;
  if (!run.known) {
    data.why_no_subset = "the checkpoint does not record its number of labelled examples";
    return;
  }
  try {
    data.subset = split_labelled(data.splits.train, run.labelled, config.seed);
  } catch (const Error& e) {
    data.why_no_subset = e.what();
  }
}

// A note on stderr when the data flags' training data (split, validation set, labelled
// subset) differ from the sets the checkpoint's run recorded (sizes and CRC-32s): other data
// may be meant, but then the figures are not the run's.
inline void note_other_training_data(const LoadedModel& loaded, const TrainedOn& run,
                                     const TrainingData& data) {
  if (!run.known) return;
  const DataSplits& s = data.splits;
  const RunIdentity here = run_identity(
      loaded.model->config(), data.subset ? data.subset->labelled : s.train,
      data.subset ? &data.subset->unlabelled : nullptr, s.validation.n ? &s.validation : nullptr);
  bool same = true;
  for (const RunField& field : here) {
    if (field.key.rfind("data.", 0) != 0) continue;
    auto it = loaded.metadata.find(field.key);
    same = same && it != loaded.metadata.end() && it->second == field.value;
  }
  if (same) return;
  const int64_t examples = s.train.n + s.validation.n;
  std::string recorded = std::to_string(run.examples()) + " training examples (";
  if (run.unlabelled > 0) recorded += std::to_string(run.labelled) + " labelled, ";
  recorded += std::to_string(run.validation) + " held out for validation)";
  const std::string given =
      examples == run.examples() && s.validation.n == run.validation
          ? "as many, but other images or labels,"
          : std::to_string(examples) + " (" + std::to_string(s.validation.n) + " held out)";
  std::fprintf(stderr,
               "note: %s was trained on other data: it records %s, the data flags give %s from "
               "%s. For its own, repeat its run's data flags (--data DIR or the IDX file flags) "
               "with --validation %lld\n",
               loaded.path.c_str(), recorded.c_str(), given.c_str(), s.train.source.c_str(),
               (long long)run.validation);
}

// The data flags' training data for the checkpoint's tools: held out as its run held out,
// the labelled subset of a semi-supervised run drawn again, and a note when they are not the
// run's own.
inline TrainingData load_training_data(const Flags& f, const LoadedModel& loaded) {
  const TrainedOn run = trained_on(loaded);
  TrainingData data;
  data.splits = load_data_as_trained(f, run, *loaded.model);
  draw_labelled_subset(loaded, run, data);
  note_other_training_data(loaded, run, data);
  return data;
}

// The data flags of a checkpoint's tools; `held_out_for` says what the held-out examples are
// kept from ("as the validation split", "from the centroids").
inline void declare_inference_data_flags(Flags& f, const std::string& held_out_for) {
  declare_data_flags(f, "last N training examples held out " + held_out_for +
                            " (auto: as the checkpoint's run held out when the training file "
                            "has its number of examples, else 0 for the bundled digits, 5000 "
                            "for MNIST-format files, 3257 for SVHN)");
}

inline void declare_split_flag(Flags& f) {
  f.add("split", "auto",
        "train, validation or test (auto: validation when there is one, else test; the "
        "bundled digits have no validation split unless the checkpoint's run or --validation N "
        "held one out)");
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

// The files a checkpoint's tool reads, each with the flag that names it.
inline std::vector<NamedPath> tool_inputs(const Flags& f) {
  std::vector<NamedPath> inputs = data_source_files(data_source(f, 0));
  inputs.push_back({"--checkpoint", f.get("checkpoint")});
  for (const std::string flag : {"images", "labels"})
    if (f.declared(flag) && f.has(flag)) inputs.push_back({"--" + flag, f.get(flag)});
  return inputs;
}

// The files a tool writes from --out, checked before they are: each may replace only a
// regular file (not a device node or a FIFO), and none may be one of the tool's inputs.
inline void check_tool_outputs(const Flags& f, const std::vector<std::string>& outputs) {
  const std::vector<NamedPath> inputs = tool_inputs(f);
  for (const std::string& out : outputs) {
    try {
      check_output_file(out);
    } catch (const Error& e) {
      throw Error("--out", e.what());
    }
    check_not_an_input({"--out", out}, inputs);
  }
}

// --out as the file to write, checked before any work: an empty path, a directory, a device
// or FIFO, or one of the inputs would otherwise fail (or be destroyed) only at the write.
inline std::string output_file(const Flags& f, const std::string& example_name) {
  const std::string out = f.get("out");  // not empty: Flags refuse an empty value
  std::error_code ec;
  const bool directory = std::filesystem::is_directory(out, ec);
  check(!directory && std::filesystem::path(out).has_filename(), "--out",
        out + (directory ? " is a directory" : " names a directory (it ends in '/')") +
            "; name a file in it, say " + (std::filesystem::path(out) / example_name).string());
  check_tool_outputs(f, {out});
  return out;
}

// Creates the directory of the file --out names (its parent), as the tools create their
// output directories, and removes the partial file an earlier write of it left when killed;
// throws Error naming the flag and the path.
inline void create_output_file_directory(const std::string& out) {
  const std::filesystem::path path(out);
  const std::string parent = path.parent_path().string();
  if (!parent.empty()) create_output_directory(parent, "--out");
  remove_stale_temp_files_noting(parent.empty() ? "." : parent, {path.filename().string()});
}

// --out as the directory to write the files `names` into, created, and the files checked as
// output_file checks its one (and their partial files from killed writes removed); throws
// Error naming the flag and the path. The directory goes again if the tool fails before it
// writes there (ScopedOutputDirectory): keep the result alive until the files are written.
inline ScopedOutputDirectory output_directory(const Flags& f,
                                              const std::vector<std::string>& names) {
  ScopedOutputDirectory out(f.get("out"), "--out");
  std::vector<std::string> outputs;
  for (const std::string& name : names)
    outputs.push_back((std::filesystem::path(out.path()) / name).string());
  check_tool_outputs(f, outputs);
  remove_stale_temp_files_noting(out.path(), names);
  return out;
}

}  // namespace equivae
