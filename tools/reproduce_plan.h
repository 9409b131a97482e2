#pragma once
// reproduce's plan: every run of a reproduction (a row's labelled-set size and a seed) and what
// the runs share, the runs that earlier runs.csv files (--reuse) already hold, and what becomes
// of an earlier reproduction in OUT.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/data_splits.h"
#include "runtime/backend.h"
#include "runtime/flags.h"
#include "tools/paper_settings.h"
#include "tools/reproduce_runs_csv.h"

namespace equivae::reproduce {

// One run of the reproduction: row `row` of the table (a labelled-set size) and a seed.
struct PlannedRun {
  size_t row = 0;
  RunResult result;   // its key (table, labels, seed, epochs, settings), then its errors
  bool done = false;  // trained, or taken from an earlier runs.csv
};

// What every run of one reproduction shares.
struct Reproduction {
  const DataSplits& data;
  Backend<float>& backend;
  bool supervised = false;
  int classifier_epochs = 0;
  std::vector<EquiVaeConfig> row_config;  // per row: its labels cap k and make it semi-supervised
  std::string out_dir;
  bool reuse = false;         // --reuse given: a run in OUT/runs/ continues from its checkpoint
  std::string continue_with;  // the command that continues where this one stops
  std::string runs_csv() const { return out_dir + "/runs.csv"; }
  std::string run_dir(const RunResult& r) const {
    return out_dir + "/runs/table" + std::to_string(r.table) + "-labels" +
           std::to_string(r.labels) + "-seed" + std::to_string(r.seed);
  }
};

// The EquiVAE epochs of each row: --epochs (one value, or one per row), else the paper's.
std::vector<int> row_epochs(const std::vector<int64_t>& label_counts,
                            const std::vector<int64_t>& epochs, bool supervised,
                            const PaperSettings& paper);

// Every run of the reproduction, row by row, seeds 1..seeds; fills rp.row_config.
std::vector<PlannedRun> plan_runs(Reproduction& rp, const Flags& f, const PaperSettings& paper,
                                  const std::vector<int64_t>& label_counts,
                                  const std::vector<int>& epochs, int seeds);

// What --reuse gave: whether it names OUT/runs.csv (and that file's rows), and the work left.
struct Reused {
  bool out = false;
  std::vector<RunResult> out_rows;
  int runs_to_train = 0;
  int64_t epochs_to_train = 0;
};

// Earlier runs that --reuse names take the place of planned runs with the same key; those of
// other settings are said and trained again.
Reused take_earlier_runs(const Flags& f, const Reproduction& rp, std::vector<PlannedRun>& plan);

// The command that continues a reproduction stopped now: the same one, with --reuse naming
// OUT/runs.csv unless it does already.
std::string continue_command(const Flags& f, bool reuses_out, const std::string& runs_csv);

// An earlier reproduction in OUT stays where it is only when this one continues it: --reuse
// names its runs.csv, and every row of it is one of this reproduction's runs (so the new
// runs.csv holds them all, and its runs/ holds the checkpoints to continue from). Otherwise it
// moves aside, said on stderr.
void keep_earlier_reproduction(const Reproduction& rp, bool reuses_out,
                               const std::vector<RunResult>& out_rows,
                               const std::vector<PlannedRun>& plan);

}  // namespace equivae::reproduce
