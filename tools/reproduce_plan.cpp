#include "tools/reproduce_plan.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "runtime/output_dir.h"
#include "tools/model_flags.h"

namespace equivae::reproduce {

namespace fs = std::filesystem;

namespace {

// What an earlier reproduction left in `dir` that this one would replace: runs.csv with rows,
// table.md, and runs/ (each run's logs; a run in training's checkpoint).
std::vector<std::string> earlier_reproduction(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  if (csv_has_rows(dir + "/runs.csv")) names.push_back("runs.csv");
  if (fs::exists(dir + "/table.md", ec)) names.push_back("table.md");
  if (fs::is_directory(dir + "/runs", ec) && !fs::is_empty(dir + "/runs", ec))
    names.push_back("runs");
  return names;
}

// Whether a row is one of the planned runs, with the same settings.
bool planned(const std::vector<PlannedRun>& plan, const RunResult& e) {
  return std::any_of(plan.begin(), plan.end(),
                     [&](const PlannedRun& p) { return same_run(e, p.result); });
}

}  // namespace

void keep_earlier_reproduction(const Reproduction& rp, bool reuses_out,
                               const std::vector<RunResult>& out_rows,
                               const std::vector<PlannedRun>& plan) {
  const std::vector<std::string> names = earlier_reproduction(rp.out_dir);
  if (names.empty()) return;
  const auto not_planned = std::count_if(out_rows.begin(), out_rows.end(),
                                         [&](const RunResult& e) { return !planned(plan, e); });
  if (reuses_out && not_planned == 0) return;
  const std::string previous = move_to_previous(rp.out_dir, names).dir;
  std::string moved;
  for (const std::string& name : names)
    moved += (moved.empty() ? "" : ", ") + name + (name == "runs" ? "/" : "");
  std::string note = "note: " + rp.out_dir + " held an earlier reproduction (" +
                     (reuses_out ? std::to_string(not_planned) + " of its runs " +
                                       (not_planned == 1 ? "is not a run" : "are not runs") +
                                       " of this reproduction"
                                 : "--reuse does not name its runs.csv") +
                     "): moved its " + moved + " to " + previous + "/";
  if (names.front() == "runs.csv") note += "; --reuse " + previous + "/runs.csv takes its runs";
  std::fprintf(stderr, "%s\n", note.c_str());
}

namespace {

// The runs.csv files --reuse names, each read whole.
std::vector<std::pair<std::string, std::vector<RunResult>>> read_reused(const Flags& f) {
  std::vector<std::pair<std::string, std::vector<RunResult>>> files;
  if (!f.has("reuse")) return files;
  std::stringstream list(f.get("reuse"));
  std::string path;
  while (std::getline(list, path, ',')) files.emplace_back(path, read_runs(path));
  return files;
}

}  // namespace

std::string continue_command(const Flags& f, bool reuses_out, const std::string& runs_csv) {
  if (reuses_out) return "the same command";
  return "the same command with --reuse " + (f.has("reuse") ? f.get("reuse") + "," : "") + runs_csv;
}

std::vector<int> row_epochs(const std::vector<int64_t>& label_counts,
                            const std::vector<int64_t>& epochs, bool supervised,
                            const PaperSettings& paper) {
  std::vector<int> out;
  for (size_t li = 0; li < label_counts.size(); ++li) {
    if (!epochs.empty()) {
      out.push_back(int(epochs.size() == 1 ? epochs[0] : epochs[li]));
    } else if (supervised) {
      out.push_back(paper.supervised_epochs);
    } else {  // a labelled-set size the paper did not run: the epochs of the next larger one
      const auto it = paper.semi_epochs.lower_bound(label_counts[li]);
      out.push_back(it != paper.semi_epochs.end() ? it->second
                                                  : paper.semi_epochs.rbegin()->second);
    }
  }
  return out;
}

std::vector<PlannedRun> plan_runs(Reproduction& rp, const Flags& f, const PaperSettings& paper,
                                  const std::vector<int64_t>& label_counts,
                                  const std::vector<int>& epochs, int seeds) {
  std::vector<PlannedRun> plan;
  for (size_t li = 0; li < label_counts.size(); ++li) {
    rp.row_config.push_back(
        model_config(f, paper, rp.data.train, rp.supervised ? 0 : label_counts[li]));
    const std::string settings =
        settings_crc32(rp.row_config.back(), rp.classifier_epochs, rp.data);
    for (int s = 1; s <= seeds; ++s) {
      PlannedRun p;
      p.row = li;
      p.result.table = rp.supervised ? 1 : 2;
      p.result.labels = label_counts[li];
      p.result.seed = uint64_t(s);
      p.result.epochs = epochs[li];
      p.result.settings = settings;
      plan.push_back(p);
    }
  }
  return plan;
}

Reused take_earlier_runs(const Flags& f, const Reproduction& rp, std::vector<PlannedRun>& plan) {
  Reused reused;
  std::vector<RunResult> earlier;
  const int table = rp.supervised ? 1 : 2;
  std::vector<RunResult> every_row;
  for (const auto& [path, rows] : read_reused(f)) {
    std::error_code ec;
    if (fs::equivalent(path, rp.runs_csv(), ec)) reused.out = true, reused.out_rows = rows;
    every_row.insert(every_row.end(), rows.begin(), rows.end());
    for (const RunResult& e : rows)
      if (e.table == table) earlier.push_back(e);
  }
  check_no_conflicting_rows(every_row);
  int unmatched = 0;
  for (PlannedRun& p : plan) {
    const RunResult& r = p.result;
    const auto it = std::find_if(earlier.begin(), earlier.end(),
                                 [&](const RunResult& e) { return same_run(e, r); });
    if (it != earlier.end()) {
      p.result = *it, p.done = true;
      continue;
    }
    ++reused.runs_to_train, reused.epochs_to_train += r.epochs;
    unmatched += std::any_of(earlier.begin(), earlier.end(), [&](const RunResult& e) {
      return e.labels == r.labels && e.seed == r.seed && e.epochs == r.epochs;
    });
  }
  if (unmatched > 0)
    std::fprintf(stderr,
                 "note: --reuse: %d earlier run%s of the same labels, seed and epochs %s made "
                 "with other settings (model, weights, classifier epochs or data), or before "
                 "runs.csv recorded them: trained again\n",
                 unmatched, unmatched == 1 ? "" : "s", unmatched == 1 ? "was" : "were");
  return reused;
}

}  // namespace equivae::reproduce
