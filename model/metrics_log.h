#pragma once
// The per-epoch records of a training run as text, for people and for programs:
//   metrics.csv   one header line, then one row per epoch;
//   metrics.jsonl one JSON object per epoch (line), with the same fields as the CSV.
// The checkpoint keeps the records too (as JSON, full double precision), so a resumed run
// rewrites both files from them and then appends: no duplicated header, no epoch twice, even
// when the previous run died between writing a row and writing its checkpoint.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/trainer.h"

namespace equivae {

// The CSV header line (no newline) and one row; the JSON object of one record.
std::string metrics_csv_header();
std::string metrics_csv_row(const EpochRecord& record);
nlohmann::ordered_json metrics_json(const EpochRecord& record);  // keys in CSV order
// Inverse of metrics_json; throws Error(context, ...) on a missing or non-numeric field.
EpochRecord epoch_record_from_json(const nlohmann::json& object, const std::string& context);

class MetricsLog {
 public:
  // csv_path, json_path: "" writes no such file; json_path "-" writes the JSON lines to
  // stdout. Files are (re)written with `history` first; stdout gets only appended records.
  // A file that cannot be opened throws Error naming it and why, before either is written.
  // The JSON log may be a stream (a FIFO, /dev/stderr): written into, never replaced; a FIFO
  // that no process reads is refused rather than waited for.
  MetricsLog(const std::string& csv_path, const std::string& json_path,
             const std::vector<EpochRecord>& history);
  // Writes one epoch to each destination and flushes. A JSON log that can no longer be written
  // (its reader went away: EPIPE; a full disk) is said once on stderr and dropped: training
  // goes on, the CSV and the checkpoint keep the records. A failed CSV write throws.
  void append(const EpochRecord& record);

 private:
  void append_json(const EpochRecord& record);
  void drop_json_log(int error);
  std::string csv_path_, json_path_;
  std::ofstream csv_, json_;
  bool json_stdout_ = false;
};

}  // namespace equivae
