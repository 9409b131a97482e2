#pragma once
// reproduce's runs.csv: one row per finished run (RunResult), written whole after each run and
// read back by --reuse with every value checked; the key that makes two rows the same run.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/data_splits.h"

namespace equivae::reproduce {

// The most seeds per row and EquiVAE epochs per run the flags take (and runs.csv may hold).
constexpr int64_t kMaxSeeds = 100;
constexpr int64_t kMaxEpochs = 100000;

struct RunResult {
  int table = 0;  // 1: supervised, 2: semi-supervised
  int64_t labels = 0;
  uint64_t seed = 0;
  int epochs = 0;
  double q_error = NAN, distance_error = NAN, neural_error = NAN, benchmark_error = NAN;
  double seconds = 0;
  std::string settings;  // CRC-32 of everything else the run depends on (settings_crc32)
  std::string origin;    // "runs.csv:LINE" of a row read from an earlier reproduction
};

// The CRC-32 of what a row's result depends on besides its labels, seed and epochs: the model
// (its configuration line, learning rate and loss weights), the classifiers' epochs and the
// data (the files and the validation size). --reuse takes an earlier row only when it matches.
std::string settings_crc32(const EquiVaeConfig& c, int classifier_epochs, const DataSplits& data);

// runs.csv's text: the header, then the rows.
std::string runs_csv(const std::vector<const RunResult*>& rows);

// Every row of an earlier runs.csv, of either table, each value checked. An empty file holds
// none: builds before this one created runs.csv empty and wrote its header with the first
// finished run. Files written before settings_crc32 have 9 columns.
std::vector<RunResult> read_runs(const std::string& path);

// "labels L seed S": a run named in messages.
std::string run_name(const RunResult& r);

// Whether two rows are the same run: table, labels, seed, epochs and settings.
bool same_run(const RunResult& a, const RunResult& b);

// Rows of one run that disagree (a damaged file, or files merged that should not be) are
// refused: taking either would report a result silently chosen.
void check_no_conflicting_rows(const std::vector<RunResult>& rows);

}  // namespace equivae::reproduce
