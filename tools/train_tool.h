#pragma once
// The training tool that train_mnist and train_svhn share: flags, data, model, training,
// test error, written files. A TrainTool says what differs: the base configuration, the
// paper's defaults and whether a data set is bundled.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <future>
#include <memory>
#include <string>
#include <utility>

#include "model/config.h"
#include "model/data_splits.h"
#include "model/equivae.h"
#include "model/evaluate.h"
#include "model/idx_dataset.h"
#include "model/subsets.h"
#include "model/trainer.h"
#include "runtime/backend.h"
#include "runtime/build_info.h"
#include "runtime/clock.h"
#include "runtime/error.h"
#include "runtime/flags.h"
#include "runtime/interrupt.h"
#include "runtime/path_checks.h"
#include "tools/data_flags.h"
#include "tools/device_flags.h"
#include "tools/model_flags.h"
#include "tools/paper_settings.h"
#include "tools/tool_main.h"

namespace equivae {

struct TrainTool {
  const char* usage;
  PaperSettings paper;  // the base configuration and the defaults of --epochs, --latent, --m-max
  const char* out;      // default output directory
  bool bundled_data;    // false: --data (or the IDX flags) is required
  const char* validation_help;
  // The tool made for colour (SVHN) images when this one is not: such data are trained all
  // the same (a dense model takes any image size), with a note naming it. Null: none.
  const char* colour_tool = nullptr;
};

inline void declare_train_flags(Flags& f, const TrainTool& tool) {
  declare_data_flags(f, tool.validation_help);
  f.add("epochs", std::to_string(tool.paper.supervised_epochs), "training epochs");
  f.add("validate-every", "1",
        "the validation error after every N-th epoch and the last (1: every epoch; nothing "
        "selects on it, so larger N only saves time)");
  f.add("labels", "0",
        "semi-supervised: keep the labels of only N training examples (N/10 per class, chosen "
        "by --seed), the rest train unlabelled; 0: supervised");
  declare_model_flags(f, {tool.paper});
  f.add("latent-r", "", "size of the invariant latent r (overrides --latent)");
  f.add("latent-v", "", "size of the equivariant latent v (overrides --latent)");
  f.add("lr", "0.001", "Adam learning rate (1e-8 to 10)");
  f.add("seed", "1", "random seed (same seed, same numbers)");
  declare_device_flags(f, "auto");
  f.add("out", tool.out,
        "output directory: metrics.csv, metrics.jsonl, checkpoint.safetensors (rewritten "
        "atomically after every epoch)");
  f.add("resume", "",
        "continue the run that wrote this checkpoint (same flags and data, else refused), until "
        "--epochs in total; the result equals an uninterrupted run bit for bit (same device and "
        "--threads). The run writes to --out (" +
            std::string(tool.out) +
            " unless given), not beside the checkpoint: give the checkpoint's directory as --out "
            "to go on there; another run's checkpoint in --out first moves aside to "
            "OUT/previous (previous-2, ... when taken)");
  f.add("log-json", "",
        "write the per-epoch JSON lines here instead of OUT/metrics.jsonl ('-': stdout)");
  f.add("quiet", "", "no progress lines (errors are still printed)", true);
  f.add("help", "", "show this help", true);
}

inline EquiVaeConfig train_config(const Flags& f, const TrainTool& tool, const Dataset& train) {
  EquiVaeConfig c = model_config(f, tool.paper, train, f.get_int("labels", 0, train.n));
  c.lr = f.get_double("lr", 1e-8, 10);
  c.seed = uint64_t(f.get_int("seed", 0, INT64_MAX));
  c.validate();
  return c;
}

// The run's files, checked before anything is read or trained: none may be one of the run's
// inputs (the data files; the checkpoint it resumes, but for OUT/checkpoint.safetensors, which
// the run continues in place), and --log-json may be none of OUT's own files.
inline void check_run_outputs(const Flags& f, const DataSource& source) {
  const std::string out = f.get("out"), json = f.get("log-json");
  const NamedPath resume{"--resume", f.get("resume")};
  const std::vector<NamedPath> data = data_source_files(source);
  const NamedPath checkpoint{"--out", out + "/checkpoint.safetensors"};
  const std::vector<NamedPath> logs = {{"--out", out + "/metrics.csv"},
                                       {"--out", out + "/metrics.jsonl"}};
  check_not_an_input(checkpoint, data);
  for (const NamedPath& log : logs) {
    check_not_an_input(log, data);
    check_not_an_input(log, {resume});
  }
  if (json.empty() || json == "-") return;
  const NamedPath json_log{"--log-json", json};
  check_not_an_input(json_log, data);
  check_not_an_input(json_log, {resume});
  // OUT/metrics.jsonl itself is where the JSON lines go without the flag: the same, allowed.
  for (const NamedPath& own : {checkpoint, logs[0]})
    check(!same_file(json, own.path), "--log-json",
          json + " is the run's own " + std::filesystem::path(own.path).filename().string() +
              " in --out " + out +
              ": name a file outside the run's files, or leave --log-json out");
}

// A model made for other images trains on them all the same; the note names the tool for them.
inline void note_other_images(const TrainTool& tool, const Flags& f, const Dataset& train) {
  if (tool.colour_tool == nullptr || train.channels != 3) return;
  const std::string data = f.has("data") ? "--data " + f.get("data") : train.source;
  std::fprintf(stderr,
               "note: %s holds %dx%dx%d colour images (SVHN): they train here with the dense MNIST "
               "model (Bernoulli likelihood, MNIST's settings); for the paper's SVHN model "
               "(convolutional, Gaussian likelihood, SVHN's settings) use %s\n",
               data.c_str(), train.channels, train.rows, train.cols, tool.colour_tool);
}

// What a signal in the test evaluation prints: it stops before the next pass over the images.
constexpr char kEvaluationNotice[] =
    "\nstopping before the next pass of the test evaluation (training is finished, its "
    "checkpoint kept); press Ctrl-C again to quit at once\n";

// After training, a signal stops the test evaluation before its next pass: Interrupted says
// which error was not computed (`missing`) and how to compute it from the checkpoint
// (`method`: classify's flag for it, or "").
inline void stop_evaluation_if_requested(const TrainOptions& options, const std::string& missing,
                                         const std::string& method = "") {
  if (!StopOnSignal::requested()) return;
  const std::string checkpoint = options.out_dir + "/checkpoint.safetensors";
  throw Interrupted("test evaluation", "stopped on request; training finished (epoch " +
                                           std::to_string(options.epochs) + ") and " + checkpoint +
                                           " is kept, but " + missing +
                                           " was not computed: classify --checkpoint " +
                                           checkpoint + (method.empty() ? "" : " " + method) +
                                           " with this run's data flags computes it");
}

inline int train_tool(const TrainTool& tool, int argc, char** argv) {
  Flags flags;
  declare_train_flags(flags, tool);
  if (!parse_flags_or_help(flags, argc, argv, tool.usage)) return 0;
  const auto start = Clock::now();
  check(tool.bundled_data || flags.has("data") || flags.has("train-images"), "--data",
        "no data set is bundled for this model: give --data DIR (or the IDX file flags)");
  // Reading the data (file reads, inflation) and starting the backend (on a GPU: the driver,
  // the context, the BLAS handles) are independent: side by side. The flags are parsed here;
  // the other thread only reads files.
  const DataSource source = data_source(flags, 0);
  check_run_outputs(flags, source);
  auto loading = std::async(std::launch::async, [source] {
    const auto t0 = Clock::now();
    DataSplits splits = load_splits(source);
    return std::pair{std::move(splits), seconds_since(t0)};
  });
  const auto backend_start = Clock::now();
  const std::unique_ptr<Backend<float>> backend = backend_from_flags(flags);
  const double backend_seconds = seconds_since(backend_start);
  const auto [data, load_seconds] = loading.get();
  note_other_images(tool, flags, data.train);
  const EquiVaeConfig config = train_config(flags, tool, data.train);
  TrainOptions options;
  options.epochs = int(flags.get_int("epochs", 1, 100000));
  options.validate_every = int(flags.get_int("validate-every", 1, 100000));
  options.out_dir = flags.get("out");
  options.quiet = flags.get_switch("quiet");
  options.resume_from = flags.get("resume");
  options.json_log = flags.get("log-json");
  // With the JSON lines on stdout every line for people goes to stderr: stdout stays JSON.
  FILE* const human = options.json_log == "-" ? stderr : stdout;

  const int64_t labels = flags.get_int("labels", 0, data.train.n);
  LabelledSplit split;
  if (labels > 0) split = split_labelled(data.train, labels, config.seed);
  const Dataset& labelled = labels > 0 ? split.labelled : data.train;
  const Dataset* unlabelled = labels > 0 ? &split.unlabelled : nullptr;

  EquiVae<float> model(config, *backend);
  if (!options.quiet) {
    std::fprintf(stderr, "train %lld", (long long)data.train.n);
    if (unlabelled)
      std::fprintf(stderr, " (%lld labelled, %lld unlabelled)", (long long)labelled.n,
                   (long long)unlabelled->n);
    std::fprintf(stderr, "  validation %lld  test %lld  (%s)\n", (long long)data.validation.n,
                 (long long)data.test.n, data.train.source.c_str());
    std::fprintf(stderr, "model %s  B=%d\nengine %s  backend: %s\n", config.describe().c_str(),
                 config.batch(), engine_version().c_str(), backend->describe().c_str());
    std::fprintf(stderr, "start-up %.2f s: data loaded in %.2f s beside the backend's %.2f s\n",
                 seconds_since(start), load_seconds, backend_seconds);
    if (!options.resume_from.empty())
      std::fprintf(stderr, "resuming from %s\n", options.resume_from.c_str());
  }
  // Ctrl-C, SIGTERM or SIGHUP stops the run at the next step, the checkpoint in flight
  // written; in the test evaluation, before its next pass over the images.
  StopOnSignal stop;
  options.stop_requested = StopOnSignal::requested;
  train(model, labelled, unlabelled, data.validation.n ? &data.validation : nullptr, options);
  StopOnSignal::set_notice(kEvaluationNotice);

  // The distance classifier's centroids come from the labelled examples only. On the GPU
  // both sets are uploaded once and read in place (a no-op on the CPU).
  model.keep_resident(labelled);
  model.keep_resident(data.test);
  const char* distance = unlabelled ? "--method distance" : "";
  stop_evaluation_if_requested(options, "the test error", distance);
  const DistanceClassifier classifier = DistanceClassifier::fit(
      embed_dataset(model, labelled), labelled.labels, config.classes, config.latent_r);
  stop_evaluation_if_requested(options, "the test error", distance);
  const double error = classifier.error(embed_dataset(model, data.test), data.test.labels);
  std::fprintf(human, "test error (distance classifier): %.2f%% on %lld images  [%.1f s]\n",
               100 * error, (long long)data.test.n, seconds_since(start));
  if (unlabelled) {
    stop_evaluation_if_requested(options, "the q(y|x) test error");
    std::fprintf(human, "test error (q(y|x)): %.2f%% on %lld images\n",
                 100 * classifier_error(model, data.test), (long long)data.test.n);
  }
  if (!options.out_dir.empty()) {
    const std::string& out = options.out_dir;
    const std::string json = options.json_log.empty() ? out + "/metrics.jsonl" : options.json_log;
    std::fprintf(human, "wrote %s/metrics.csv, %s and %s/checkpoint.safetensors\n", out.c_str(),
                 json == "-" ? "the JSON lines to stdout" : json.c_str(), out.c_str());
  }
  return 0;
}

}  // namespace equivae
