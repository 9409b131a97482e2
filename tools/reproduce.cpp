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
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "model/classifier.h"
#include "model/equivae.h"
#include "model/evaluate.h"
#include "model/subsets.h"
#include "model/trainer.h"
#include "runtime/atomic_file.h"
#include "runtime/backend.h"
#include "runtime/clock.h"
#include "runtime/error.h"
#include "runtime/flags.h"
#include "runtime/interrupt.h"
#include "runtime/output_dir.h"
#include "runtime/path_checks.h"
#include "tools/data_flags.h"
#include "tools/device_flags.h"
#include "tools/model_flags.h"
#include "tools/paper_settings.h"
#include "tools/tool_main.h"

namespace {

using namespace equivae;

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
std::string settings_crc32(const EquiVaeConfig& c, int classifier_epochs, const DataSplits& data) {
  std::ostringstream s;
  s << c.describe() << " lr=" << c.lr << " unlabelled_weight=" << c.unlabelled_weight
    << " classifier_weight=" << c.classifier_weight << " classifier_epochs=" << classifier_epochs
    << " train=" << data.train.source << " validation=" << data.validation.n
    << " test=" << data.test.source;
  const std::string text = s.str();
  char hex[16];
  std::snprintf(
      hex, sizeof hex, "%08lx",
      crc32_z(crc32_z(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(text.data()), text.size()));
  return hex;
}

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

constexpr char kRunsHeader[] =
    "table,labels,seed,epochs,q_error,distance_error,neural_error,benchmark_error,seconds,"
    "settings_crc32\n";

// runs.csv's text: the header, then the rows.
std::string runs_csv(const std::vector<const RunResult*>& rows) {
  std::ostringstream csv;
  csv << kRunsHeader;
  for (const RunResult* r : rows)
    csv << r->table << ',' << r->labels << ',' << r->seed << ',' << r->epochs << ',' << r->q_error
        << ',' << r->distance_error << ',' << r->neural_error << ',' << r->benchmark_error << ','
        << r->seconds << ',' << r->settings << '\n';
  return csv.str();
}

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> fields;
  std::stringstream in(line);
  std::string field;
  while (std::getline(in, field, ',')) fields.push_back(field);
  if (line.empty() || line.back() == ',') fields.emplace_back();
  return fields;
}

// One row of an earlier runs.csv, each value checked against what runs_csv writes: a value out
// of its range is damage, which --reuse would otherwise print in the table as a result.
class RunsRow {
 public:
  RunsRow(const std::string& where, std::vector<std::string> fields, const std::string& header)
      : where_(where), fields_(std::move(fields)), names_(split_csv_line(header)) {}
  int64_t integer(size_t column, int64_t min, int64_t max) const {
    int64_t value = 0;
    check(parse_integer(fields_[column], value) && value >= min && value <= max, where(column),
          "'" + fields_[column] + "' is not an integer in [" + std::to_string(min) + ", " +
              std::to_string(max) + "]");
    return value;
  }
  // A test error: the fraction of test images misclassified, in [0, 1]; "nan" where allowed
  // (a supervised row has no q(y|x)).
  double error_rate(size_t column, bool may_be_nan) const {
    const double value = number(column);
    const bool fraction = value >= 0 && value <= 1;  // false for NaN
    check(fraction || (may_be_nan && std::isnan(value)), where(column),
          "'" + fields_[column] + "' is not an error rate (a fraction in [0, 1]" +
              (may_be_nan ? ", or nan" : "") + ")");
    return value;
  }
  double seconds(size_t column) const {
    const double value = number(column);
    check(std::isfinite(value) && value >= 0, where(column),
          "'" + fields_[column] + "' is not a duration in seconds");
    return value;
  }
  std::string crc32(size_t column) const {
    const std::string& text = fields_[column];
    check(text.size() == 8 && text.find_first_not_of("0123456789abcdef") == std::string::npos,
          where(column), "'" + text + "' is not a CRC-32 (8 lowercase hex digits)");
    return text;
  }

 private:
  std::string where(size_t column) const {
    return where_ + ", column " + std::to_string(column + 1) + " (" + names_[column] + ")";
  }
  double number(size_t column) const {
    const std::string& text = fields_[column];
    double value = 0;
    check(parse_number(text, value), where(column), "'" + text + "' is not a number");
    return value;
  }
  std::string where_;
  std::vector<std::string> fields_, names_;
};

RunResult parse_run(const RunsRow& row, bool has_settings) {
  RunResult r;
  r.table = int(row.integer(0, 1, 2));
  r.labels = row.integer(1, 1, INT64_MAX);
  r.seed = uint64_t(row.integer(2, 1, kMaxSeeds));
  r.epochs = int(row.integer(3, 1, kMaxEpochs));
  r.q_error = row.error_rate(4, /*may_be_nan=*/r.table == 1);
  r.distance_error = row.error_rate(5, false);
  r.neural_error = row.error_rate(6, false);
  r.benchmark_error = row.error_rate(7, false);
  r.seconds = row.seconds(8);
  // Rows of files written before settings_crc32 existed: never reused.
  if (has_settings) r.settings = row.crc32(9);
  return r;
}

// Every row of an earlier runs.csv, of either table, each value checked. An empty file holds
// none: builds before this one created runs.csv empty and wrote its header with the first
// finished run. Files written before settings_crc32 have 9 columns.
std::vector<RunResult> read_runs(const std::string& path) {
  check_input_file(path);  // a FIFO would block the read
  std::ifstream in(path);
  check(in.good(), path, "cannot open (--reuse)");
  std::string header;
  if (!std::getline(in, header)) return {};
  const std::string current(kRunsHeader, sizeof kRunsHeader - 2);  // without the newline
  const std::string before_settings = current.substr(0, current.rfind(','));
  check(header == current || header == before_settings, path + ":1",
        "not the header of a reproduce runs.csv (expected " + current + ")");
  const size_t columns = split_csv_line(header).size();
  std::vector<RunResult> rows;
  std::string line;
  for (int number = 2; std::getline(in, line); ++number) {
    const std::string where = path + ":" + std::to_string(number);
    std::vector<std::string> fields = split_csv_line(line);
    check(fields.size() == columns, where,
          "has " + std::to_string(fields.size()) + " columns where the header has " +
              std::to_string(columns) + ": " + line);
    RunResult r = parse_run(RunsRow(where, std::move(fields), header), columns == 10);
    r.origin = where;
    rows.push_back(r);
  }
  return rows;
}

struct MeanSe {
  double mean = NAN, se = NAN;
};
MeanSe mean_se(const std::vector<double>& xs) {
  MeanSe r;
  if (xs.empty()) return r;
  double sum = 0;
  for (double x : xs) sum += x;
  r.mean = sum / xs.size();
  if (xs.size() < 2) return r;
  double ss = 0;
  for (double x : xs) ss += (x - r.mean) * (x - r.mean);
  r.se = std::sqrt(ss / (xs.size() - 1) / xs.size());  // sample s.d. / √N
  return r;
}
std::string format(const MeanSe& m) {
  char buf[64];
  if (std::isnan(m.mean)) return "—";
  if (std::isnan(m.se))
    std::snprintf(buf, sizeof buf, "%.2f", 100 * m.mean);
  else
    std::snprintf(buf, sizeof buf, "%.2f ± %.2f", 100 * m.mean, 100 * m.se);
  return buf;
}

// Neural classifier (2 dense layers 128, 64, dropout) on f_inv features; stops at Ctrl-C.
double neural_error(EquiVae<float>& model, Backend<float>& backend, const Dataset& train,
                    const Dataset& validation, const Dataset& test, uint64_t seed, int epochs) {
  ClassifierConfig c = neural_classifier_preset();
  c.seed = seed;
  c.epochs = epochs;
  MlpClassifier<float> clf(model.config().latent_r, train.num_classes, c, backend);
  const std::vector<float> tr = embed_dataset(model, train), va = embed_dataset(model, validation);
  clf.train(tr, train.labels, &va, &validation.labels, StopOnSignal::requested);
  return clf.error(embed_dataset(model, test), test.labels);
}

// Benchmark classifier: f_inv's architecture (its convolutional trunk for SVHN) + 2 dropout
// layers and a C-way output, on the labelled images alone; stops at Ctrl-C.
double benchmark_error(Backend<float>& backend, const EquiVaeConfig& model, const Dataset& train,
                       const Dataset& validation, const Dataset& test, uint64_t seed, int epochs) {
  ClassifierConfig c = benchmark_classifier_preset(model);
  c.seed = seed;
  c.epochs = epochs;
  MlpClassifier<float> clf(train.dim, train.num_classes, c, backend);
  clf.train(train.images, train.labels, &validation.images, &validation.labels,
            StopOnSignal::requested);
  return clf.error(test.images, test.labels);
}

std::string format_duration(double seconds) {
  const long s = std::lround(std::max(0.0, seconds));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

// Progress over the whole reproduction: EquiVAE epochs to train are the unit of work (the
// classifiers' time is folded into the measured rate), so the ETA is the time per epoch so
// far times the epochs left.
class Progress {
 public:
  Progress(int runs, int64_t epochs, bool quiet)
      : runs_(runs), total_(epochs), quiet_(quiet), live_(!quiet && isatty(STDERR_FILENO)) {}
  // A resumed run skips the epochs its checkpoint holds.
  void skip(int64_t epochs) { total_ -= epochs; }
  void epoch_done(int run, const std::string& what, int epoch, int epochs, double elbo) {
    ++done_;
    if (!live_) return;
    std::fprintf(stderr, "\r\033[Krun %d/%d  %s  epoch %d/%d  ELBO %.2f  elapsed %s  ETA %s", run,
                 runs_, what.c_str(), epoch, epochs, elbo, format_duration(elapsed()).c_str(),
                 eta().c_str());
  }
  // A line that is not progress (said even with --quiet), clearing the live line first.
  void note(const std::string& text) const {
    std::fprintf(stderr, "%snote: %s\n", live_ ? "\r\033[K" : "", text.c_str());
  }
  // The finished run's result line, with the ETA of the rest.
  void run_done(int run, const std::string& result) {
    if (quiet_) return;
    std::fprintf(stderr, "%srun %d/%d  %s  elapsed %s  ETA %s\n", live_ ? "\r\033[K" : "", run,
                 runs_, result.c_str(), format_duration(elapsed()).c_str(), eta().c_str());
  }

 private:
  double elapsed() const { return seconds_since(start_); }
  std::string eta() const {
    if (done_ == 0) return "--";
    return format_duration(elapsed() / double(done_) *
                           double(std::max<int64_t>(0, total_ - done_)));
  }
  int runs_;
  int64_t total_, done_ = 0;
  bool quiet_, live_;
  Clock::time_point start_ = Clock::now();
};

std::string format(const PaperFigure& p) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f ± %.2f", p.mean, p.se);
  return buf;
}

namespace fs = std::filesystem;

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

std::string run_name(const RunResult& r) {
  return "labels " + std::to_string(r.labels) + " seed " + std::to_string(r.seed);
}

// What a stopped reproduction says: where the finished runs are, what else it left (`left`,
// "" or " and …"), and the command that continues (then `after`, "" or ", …").
std::string stopped_advice(const Reproduction& rp, const std::string& left,
                           const std::string& after) {
  return "stopped on request; the finished runs are in " + rp.runs_csv() + left + ": " +
         rp.continue_with + " continues from there" + after;
}

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

// Whether two rows are the same run: table, labels, seed, epochs and settings.
bool same_run(const RunResult& a, const RunResult& b) {
  return a.table == b.table && a.labels == b.labels && a.seed == b.seed && a.epochs == b.epochs &&
         a.settings == b.settings;
}

// Whether two rows of the same run hold the same errors (NaN: no such classifier).
bool same_errors(const RunResult& a, const RunResult& b) {
  auto same = [](double x, double y) { return x == y || (std::isnan(x) && std::isnan(y)); };
  return same(a.q_error, b.q_error) && same(a.distance_error, b.distance_error) &&
         same(a.neural_error, b.neural_error) && same(a.benchmark_error, b.benchmark_error);
}

// Rows of one run that disagree (a damaged file, or files merged that should not be) are
// refused: taking either would report a result silently chosen.
void check_no_conflicting_rows(const std::vector<RunResult>& rows) {
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      check(!same_run(rows[i], rows[j]) || same_errors(rows[i], rows[j]), rows[i].origin,
            "holds other errors than " + rows[j].origin + " for the same run (table " +
                std::to_string(rows[i].table) + ", " + run_name(rows[i]) + ", " +
                std::to_string(rows[i].epochs) + " epochs, settings " + rows[i].settings +
                "): remove the wrong row");
}

// Whether a row is one of the planned runs, with the same settings.
bool planned(const std::vector<PlannedRun>& plan, const RunResult& e) {
  return std::any_of(plan.begin(), plan.end(),
                     [&](const PlannedRun& p) { return same_run(e, p.result); });
}

// An earlier reproduction in OUT stays where it is only when this one continues it: --reuse
// names its runs.csv, and every row of it is one of this reproduction's runs (so the new
// runs.csv holds them all, and its runs/ holds the checkpoints to continue from). Otherwise it
// moves aside, said on stderr.
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

// runs.csv, atomically: the header and the rows done so far, in the table's order. Written
// before the first run trains too, so an interrupted reproduction always leaves one that
// --reuse reads.
void write_runs(const Reproduction& rp, const std::vector<PlannedRun>& plan) {
  std::vector<const RunResult*> rows;
  for (const PlannedRun& p : plan)
    if (p.done) rows.push_back(&p.result);
  const std::string text = runs_csv(rows);
  write_file_atomically(rp.runs_csv(), text.data(), text.size());
}

// The wall time of the epochs a resumed run took from its checkpoint, spent by the sessions
// before this one (their training steps, validation and checkpoints).
double earlier_seconds(const std::vector<EpochRecord>& records, int64_t trained_now) {
  double seconds = 0;
  for (size_t i = 0; i + size_t(trained_now) < records.size(); ++i)
    seconds += records[i].seconds + records[i].validation_seconds + records[i].checkpoint_seconds;
  return seconds;
}

// Trains run r's EquiVAE into its directory, with --reuse from the checkpoint there; returns
// every epoch's record (those of the checkpoint first) and sets `trained` to the epochs this
// call trained.
std::vector<EpochRecord> train_equivae(const Reproduction& rp, EquiVae<float>& model,
                                       const Dataset& labelled, const Dataset* unlabelled,
                                       const RunResult& r, int run_number, Progress& progress,
                                       int64_t& trained) {
  const std::string dir = rp.run_dir(r), checkpoint = dir + "/checkpoint.safetensors";
  const std::string what = run_name(r);
  auto took = [&](int64_t epochs) {
    progress.note(what + ": EquiVAE continues from " + checkpoint + " after epoch " +
                  std::to_string(epochs) + " of " + std::to_string(r.epochs));
  };
  TrainOptions options;
  options.epochs = r.epochs;
  options.quiet = true;
  options.out_dir = dir;
  if (rp.reuse && fs::exists(checkpoint)) options.resume_from = checkpoint;
  trained = 0;
  int64_t skipped = 0;  // the checkpoint's epochs
  options.after_epoch = [&](const EpochRecord& e) {
    if (trained++ == 0 && e.epoch > 1) progress.skip(skipped = e.epoch - 1), took(skipped);
    progress.epoch_done(run_number, what, e.epoch, r.epochs, e.elbo);
  };
  options.stop_requested = StopOnSignal::requested;
  std::vector<EpochRecord> records;
  try {
    records = train(model, labelled, unlabelled, nullptr, options);
  } catch (const Interrupted& e) {  // the advice is --reuse here, not the trainer's --resume
    throw Interrupted(
        what + ", " + e.context(),
        stopped_advice(rp, " and this run's last finished epoch, if any, in " + dir, ""));
  }
  if (trained == 0 && !records.empty()) took(int64_t(records.size()));
  progress.skip(r.epochs - trained - skipped);  // a resumed run with nothing left to train
  return records;
}

// A classifier's test error; stopped on request, says how to continue: the run's EquiVAE
// checkpoint is still there, so only the classifiers train again.
template <class TrainClassifier>
double classifier_test_error(const Reproduction& rp, const RunResult& r, const std::string& name,
                             TrainClassifier&& train_classifier) {
  try {
    return train_classifier();
  } catch (const Interrupted& e) {
    throw Interrupted(
        run_name(r) + ", " + name + " " + e.context(),
        stopped_advice(
            rp, " and this run's trained EquiVAE in " + rp.run_dir(r) + "/checkpoint.safetensors",
            ", training only the classifiers again"));
  }
}

// Trains run p (EquiVAE, then the classifiers) and fills in its errors and seconds. Its
// EquiVAE checkpoint stays: the caller deletes it once the row is in runs.csv.
void train_run(const Reproduction& rp, PlannedRun& p, int run_number, Progress& progress) {
  const auto start = Clock::now();
  RunResult& r = p.result;
  EquiVaeConfig c = rp.row_config[p.row];
  c.seed = r.seed;
  LabelledSplit split;
  if (!rp.supervised) split = split_labelled(rp.data.train, r.labels, r.seed);
  const Dataset& labelled = rp.supervised ? rp.data.train : split.labelled;
  EquiVae<float> model(c, rp.backend);
  int64_t trained = 0;
  const std::vector<EpochRecord> records =
      train_equivae(rp, model, labelled, rp.supervised ? nullptr : &split.unlabelled, r, run_number,
                    progress, trained);
  const DataSplits& d = rp.data;
  if (!rp.supervised) r.q_error = classifier_error(model, d.test);
  r.distance_error = distance_classifier_error(model, labelled, d.test);
  r.neural_error = classifier_test_error(rp, r, "neural", [&] {
    return neural_error(model, rp.backend, labelled, d.validation, d.test, r.seed,
                        rp.classifier_epochs);
  });
  r.benchmark_error = classifier_test_error(rp, r, "benchmark", [&] {
    return benchmark_error(rp.backend, c, labelled, d.validation, d.test, r.seed,
                           rp.classifier_epochs);
  });
  // A resumed run counts the epochs its checkpoint holds as well as this session.
  r.seconds = seconds_since(start) + earlier_seconds(records, trained);
}

std::string result_line(const RunResult& r, bool supervised) {
  char q[32] = "";  // supervised rows have no q(y|x)
  if (!supervised) std::snprintf(q, sizeof q, "q(y|x) %6.2f%%  ", 100 * r.q_error);
  char line[256];
  std::snprintf(line, sizeof line,
                "labels %6lld seed %llu: %sdistance %6.2f%%  neural %6.2f%%  benchmark %6.2f%%  "
                "[%.0f s]",
                (long long)r.labels, (unsigned long long)r.seed, q, 100 * r.distance_error,
                100 * r.neural_error, 100 * r.benchmark_error, r.seconds);
  return line;
}

// Trains every planned run not yet done, rewriting runs.csv after each; a run's checkpoint is
// deleted once its row is there.
void train_runs(const Reproduction& rp, std::vector<PlannedRun>& plan, Progress& progress) {
  int run_number = 0;
  for (PlannedRun& p : plan) {
    if (p.done) continue;
    // A stop asked for between two runs' polls (while a test set was classified, say).
    if (StopOnSignal::requested())
      throw Interrupted("before " + run_name(p.result), stopped_advice(rp, "", ""));
    train_run(rp, p, ++run_number, progress);
    p.done = true;
    write_runs(rp, plan);
    fs::remove(rp.run_dir(p.result) + "/checkpoint.safetensors");  // its row stands for it now
    progress.run_done(run_number, result_line(p.result, rp.supervised));
  }
}

// table.md: mean ± standard error per row, beside the paper's figures.
std::string table_text(const Reproduction& rp, const PaperSettings& paper,
                       const std::vector<int64_t>& label_counts,
                       const std::vector<PlannedRun>& plan) {
  const DataSplits& data = rp.data;
  std::ostringstream md;
  // A source's "[a, b)" suffixes are the rows each split took: the file's first 8,000, then
  // their first 7,000 (the rest held out for validation).
  md << "Test error (%) on " << data.test.n << " test images, mean ± standard error over seeds. "
     << "Training: " << data.train.n << " examples, " << data.train.source
     << " ([a, b): the rows taken); validation: " << data.validation.n
     << " examples, which pick the classifiers' epochs.\n\n";
  if (rp.supervised) {
    md << "| row | runs | epochs | EquiVAE distance | EquiVAE neural (f_inv) | benchmark | paper "
          "(full "
       << paper.name
       << "): distance / neural / benchmark |\n| --- | --- | --- | --- | --- | --- | --- |\n";
  } else {
    md << "| labels | runs | epochs | EquiVAE q(y\\|x) | EquiVAE distance | EquiVAE neural "
          "(f_inv) | benchmark | paper EquiVAE ("
       << paper.name
       << ") | paper benchmark |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
  }
  for (int64_t labels : label_counts) {
    std::vector<double> q, dist, neural, bench;
    int ep = 0;
    for (const PlannedRun& p : plan) {
      const RunResult& r = p.result;
      if (r.labels == labels)
        q.push_back(r.q_error), dist.push_back(r.distance_error), neural.push_back(r.neural_error),
            bench.push_back(r.benchmark_error), ep = r.epochs;
    }
    if (rp.supervised) {
      md << "| supervised, " << labels << " labels | " << dist.size() << " | " << ep << " | "
         << format(mean_se(dist)) << " | " << format(mean_se(neural)) << " | "
         << format(mean_se(bench)) << " | " << format(paper.distance) << " / "
         << format(paper.neural) << " / " << format(paper.benchmark) << " |\n";
    } else {
      const bool published = paper.semi_equivae.count(labels) > 0;
      md << "| " << labels << " | " << q.size() << " | " << ep << " | " << format(mean_se(q))
         << " | " << format(mean_se(dist)) << " | " << format(mean_se(neural)) << " | "
         << format(mean_se(bench)) << " | "
         << (published ? format(paper.semi_equivae.at(labels)) : "—") << " | "
         << (published ? format(paper.semi_benchmark.at(labels)) : "—") << " |\n";
    }
  }
  return md.str();
}

// The runs.csv files --reuse names, each read whole.
std::vector<std::pair<std::string, std::vector<RunResult>>> read_reused(const Flags& f) {
  std::vector<std::pair<std::string, std::vector<RunResult>>> files;
  if (!f.has("reuse")) return files;
  std::stringstream list(f.get("reuse"));
  std::string path;
  while (std::getline(list, path, ',')) files.emplace_back(path, read_runs(path));
  return files;
}

// The command that continues a reproduction stopped now: the same one, with --reuse naming
// OUT/runs.csv unless it does already.
std::string continue_command(const Flags& f, bool reuses_out, const std::string& runs_csv) {
  if (reuses_out) return "the same command";
  return "the same command with --reuse " + (f.has("reuse") ? f.get("reuse") + "," : "") + runs_csv;
}

// The EquiVAE epochs of each row: --epochs (one value, or one per row), else the paper's.
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

// Every run of the reproduction, row by row, seeds 1..seeds; fills rp.row_config.
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

// What --reuse gave: whether it names OUT/runs.csv (and that file's rows), and the work left.
struct Reused {
  bool out = false;
  std::vector<RunResult> out_rows;
  int runs_to_train = 0;
  int64_t epochs_to_train = 0;
};

// Earlier runs that --reuse names take the place of planned runs with the same key; those of
// other settings are said and trained again.
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

int main(int argc, char** argv) {
  return equivae::run_tool("reproduce", run, argc, argv);
}
