// reproduce: runs rows of the paper's Tables 1–2 over several seeds and prints
// mean ± standard error beside the paper's figures, for MNIST-format data (dense EquiVAE) or
// SVHN (convolutional EquiVAE, Gaussian likelihood), chosen by the data set's colour planes.
//   Table 2 (default): semi-supervised EquiVAE for each labelled-set size:
//     q(y|x), the distance classifier (labelled centroids), the neural classifier on
//     f_inv(x), and the benchmark classifier trained on the labelled images alone.
//   Table 1 (--supervised): supervised EquiVAE on every label: distance and neural
//     classifiers on f_inv(x), and the benchmark classifier.
// Hyper-parameters are the paper's (tools/paper_settings.h); the benchmark and neural
// classifiers keep the epoch with the lowest validation error. The test split is read only for
// the reported errors.
// Its parts: reproduce_plan (the runs, and what --reuse takes), reproduce_training,
// reproduce_runs_csv, reproduce_table and reproduce_progress.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "model/subsets.h"
#include "runtime/atomic_file.h"
#include "runtime/backend.h"
#include "runtime/error.h"
#include "runtime/flags.h"
#include "runtime/interrupt.h"
#include "runtime/output_dir.h"
#include "tools/data_flags.h"
#include "tools/device_flags.h"
#include "tools/model_flags.h"
#include "tools/paper_settings.h"
#include "tools/reproduce_plan.h"
#include "tools/reproduce_progress.h"
#include "tools/reproduce_runs_csv.h"
#include "tools/reproduce_table.h"
#include "tools/reproduce_training.h"
#include "tools/tool_main.h"

namespace equivae::reproduce {
namespace {

// A comma-separated list of integers in [1, max]; `distinct`: no value twice (the table's rows
// are keyed by it, so a repeated one would merge two rows' runs).
std::vector<int64_t> parse_list(const std::string& text, const std::string& flag, int64_t max,
                                bool distinct) {
  std::vector<int64_t> values;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    int64_t v = 0;
    check(parse_integer(item, v) && v > 0 && v <= max, "--" + flag,
          "expects a comma-separated list of integers in [1, " + std::to_string(max) + "], got '" +
              text + "'");
    check(!distinct || std::find(values.begin(), values.end(), v) == values.end(), "--" + flag,
          "lists " + std::to_string(v) + " twice");
    values.push_back(v);
  }
  check(!values.empty(), "--" + flag, "is empty");
  return values;
}

int run(int argc, char** argv) {
  Flags f;
  declare_data_flags(f,
                     "last N training examples held out for validation, which selects the "
                     "classifiers' epochs (auto: 1000 of the bundled digits, 5000 of MNIST-format "
                     "files, 3257 of SVHN)");
  f.add("supervised", "", "Table 1 (supervised, every label) instead of Table 2", true);
  f.add("labels", "paper",
        "Table 2: labelled-set sizes (paper: 100,600,1000,3000 for MNIST; 1000,3000 for SVHN)");
  f.add("epochs", "paper",
        "EquiVAE epochs, one value or one per labelled-set size (paper, MNIST: 20,25,30,35 for "
        "100..3000 labels, 40 supervised; SVHN: 20,30 for 1000,3000 labels, 90 supervised)");
  f.add("seeds", "5", "runs per row (seeds 1..N)");
  declare_model_flags(f, {mnist_paper(), svhn_paper()});
  f.add("classifier-epochs", "50", "epochs of the neural and benchmark classifiers");
  declare_device_flags(f, "auto");
  f.add("out", "runs/reproduce/table2",
        "output directory: runs.csv, table.md and each run's logs in runs/ "
        "(runs/reproduce/table1 with --supervised; runs/reproduce/quick-table1 or "
        "quick-table2 with --quick, so a smoke run leaves the tables alone); an earlier "
        "reproduction there that this "
        "one does not continue (--reuse OUT/runs.csv) moves to OUT/previous, OUT/previous-2, "
        "...");
  f.add("reuse", "",
        "comma-separated runs.csv files of earlier runs: a row with the same table, labels, seed "
        "and epochs, made with the same settings (model, loss weights, classifier epochs, data; "
        "its settings_crc32), is taken instead of training again (resumes an interrupted "
        "reproduction, or "
        "merges runs made side by side); a run interrupted in OUT/runs/ continues from its "
        "checkpoint");
  f.add("quick", "",
        "smoke run: the smallest labelled-set size (every label with --supervised), 1 seed, 1 "
        "epoch, 5 classifier epochs, unless those flags are given",
        true);
  f.add("quiet", "", "no progress lines (errors and the table are still printed)", true);
  f.add("help", "", "show this help", true);
  if (!parse_flags_or_help(f, argc, argv,
                           "usage: reproduce [flags]\nRuns rows of the paper's Tables 1-2 over "
                           "seeds; prints mean ± standard error.\nMNIST-format data trains the "
                           "dense EquiVAE, SVHN (--data DIR with its .mat files) the "
                           "convolutional one, each with the paper's settings for that data "
                           "set."))
    return 0;
  const bool supervised = f.get_switch("supervised"), quick = f.get_switch("quick");
  check(!supervised || !f.has("labels"), "--labels",
        "sets Table 2's labelled-set sizes; --supervised (Table 1) trains on every label");
  const DataSplits data = load_data(f, 1000);
  check(data.validation.n > 0, "--validation", "must be positive: it selects classifier epochs");
  const PaperSettings paper = paper_settings_for(data.train.channels);
  std::vector<int64_t> label_counts =
      supervised                   ? std::vector<int64_t>{data.train.n}
      : f.get("labels") == "paper" ? paper.labels
                                   : parse_list(f.get("labels"), "labels", data.train.n, true);
  int seeds = int(f.get_int("seeds", 1, kMaxSeeds));
  int classifier_epochs = int(f.get_int("classifier-epochs", 1, 10000));
  std::vector<int64_t> epochs;
  if (f.get("epochs") != "paper") epochs = parse_list(f.get("epochs"), "epochs", kMaxEpochs, false);
  if (quick) {  // a smoke run's defaults; flags given on the command line still count
    if (!supervised && !f.has("labels"))
      label_counts = {*std::min_element(label_counts.begin(), label_counts.end())};
    if (!f.has("seeds")) seeds = 1;
    if (!f.has("epochs")) epochs = {1};
    if (!f.has("classifier-epochs")) classifier_epochs = 5;
  }
  check(epochs.empty() || epochs.size() == 1 || epochs.size() == label_counts.size(), "--epochs",
        "needs one value or one per labelled-set size");
  // Every row's labelled subset can be drawn: refused now, before an earlier reproduction in
  // OUT moves aside, not when its row's first run starts.
  if (!supervised)
    for (int64_t labels : label_counts) check_labelled_split(data.train, labels);
  const std::string table = supervised ? "table1" : "table2";
  const std::string out_dir =
      f.has("out") ? f.get("out") : "runs/reproduce/" + (quick ? "quick-" + table : table);
  create_output_directory(out_dir, "--out");
  const std::unique_ptr<Backend<float>> backend = backend_from_flags(f);
  Reproduction rp{data, *backend, supervised, classifier_epochs, {}, out_dir, f.has("reuse"), ""};
  std::vector<PlannedRun> plan = plan_runs(
      rp, f, paper, label_counts, row_epochs(label_counts, epochs, supervised, paper), seeds);
  const Reused reused = take_earlier_runs(f, rp, plan);
  rp.continue_with = continue_command(f, reused.out, rp.runs_csv());
  keep_earlier_reproduction(rp, reused.out, reused.out_rows, plan);

  // Ctrl-C or SIGTERM stops the run in training at its next step, EquiVAE's or a classifier's.
  StopOnSignal stop;
  write_runs(rp, plan);
  Progress progress(reused.runs_to_train, reused.epochs_to_train, f.get_switch("quiet"));
  train_runs(rp, plan, progress);

  const std::string md = table_text(rp, paper, label_counts, plan);
  write_file_atomically(out_dir + "/table.md", md.data(), md.size());
  std::printf("%s", md.c_str());
  std::printf("wrote %s/runs.csv and %s/table.md\n", out_dir.c_str(), out_dir.c_str());
  return 0;
}

}  // namespace
}  // namespace equivae::reproduce

int main(int argc, char** argv) {
  return equivae::run_tool("reproduce", equivae::reproduce::run, argc, argv);
}
