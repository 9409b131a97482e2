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
#include "runtime/backend.h"
#include "runtime/clock.h"
#include "runtime/error.h"
#include "runtime/flags.h"
#include "runtime/interrupt.h"
#include "tools/data_flags.h"
#include "tools/device_flags.h"
#include "tools/model_flags.h"
#include "tools/paper_settings.h"
#include "tools/tool_main.h"

namespace {

using namespace equivae;

struct RunResult {
  int64_t labels = 0;
  uint64_t seed = 0;
  int epochs = 0;
  double q_error = NAN, distance_error = NAN, neural_error = NAN, benchmark_error = NAN;
  double seconds = 0;
  std::string settings;  // CRC-32 of everything else the run depends on (settings_crc32)
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
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    check(!item.empty() && *end == '\0' && errno == 0 && v > 0 && v <= max, "--" + flag,
          "expects a comma-separated list of integers in [1, " + std::to_string(max) + "], got '" +
              text + "'");
    check(!distinct || std::find(values.begin(), values.end(), v) == values.end(), "--" + flag,
          "lists " + std::to_string(v) + " twice");
    values.push_back(v);
  }
  check(!values.empty(), "--" + flag, "is empty");
  return values;
}

void write_run(std::ofstream& csv, bool supervised, const RunResult& r) {
  csv << (supervised ? 1 : 2) << ',' << r.labels << ',' << r.seed << ',' << r.epochs << ','
      << r.q_error << ',' << r.distance_error << ',' << r.neural_error << ',' << r.benchmark_error
      << ',' << r.seconds << ',' << r.settings << '\n';
  csv.flush();
}

// Rows of an earlier runs.csv that belong to `table`.
std::vector<RunResult> read_runs(const std::string& path, int table) {
  std::ifstream in(path);
  check(in.good(), path, "cannot open (--reuse)");
  std::string line;
  std::getline(in, line);
  check(line.rfind("table,labels,seed,epochs,", 0) == 0, path, "is not a reproduce runs.csv");
  std::vector<RunResult> rows;
  for (int number = 2; std::getline(in, line); ++number) {
    RunResult r;
    int t = 0;
    unsigned long long seed = 0;
    long long labels = 0;
    char q[32], d[32], n[32], b[32], settings[16] = "";
    // Rows of files written before settings_crc32 existed have 9 fields: never reused.
    check(std::sscanf(line.c_str(), "%d,%lld,%llu,%d,%31[^,],%31[^,],%31[^,],%31[^,],%lf,%15s", &t,
                      &labels, &seed, &r.epochs, q, d, n, b, &r.seconds, settings) >= 9,
          path + ":" + std::to_string(number), "malformed row: " + line);
    r.settings = settings;
    r.labels = labels;
    r.seed = seed;
    r.q_error = std::strtod(q, nullptr);  // "nan" where the row has no such classifier
    r.distance_error = std::strtod(d, nullptr);
    r.neural_error = std::strtod(n, nullptr);
    r.benchmark_error = std::strtod(b, nullptr);
    if (t == table) rows.push_back(r);
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

// Neural classifier (2 dense layers 128, 64, dropout) on f_inv features.
double neural_error(EquiVae<float>& model, Backend<float>& backend, const Dataset& train,
                    const Dataset& validation, const Dataset& test, uint64_t seed, int epochs) {
  ClassifierConfig c = neural_classifier_preset();
  c.seed = seed;
  c.epochs = epochs;
  MlpClassifier<float> clf(model.config().latent_r, train.num_classes, c, backend);
  const std::vector<float> tr = embed_dataset(model, train), va = embed_dataset(model, validation);
  clf.train(tr, train.labels, &va, &validation.labels);
  return clf.error(embed_dataset(model, test), test.labels);
}

// Benchmark classifier: f_inv's architecture (its convolutional trunk for SVHN) + 2 dropout
// layers and a C-way output, on the labelled images alone.
double benchmark_error(Backend<float>& backend, const EquiVaeConfig& model, const Dataset& train,
                       const Dataset& validation, const Dataset& test, uint64_t seed, int epochs) {
  ClassifierConfig c = benchmark_classifier_preset(model);
  c.seed = seed;
  c.epochs = epochs;
  MlpClassifier<float> clf(train.dim, train.num_classes, c, backend);
  clf.train(train.images, train.labels, &validation.images, &validation.labels);
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

int run(int argc, char** argv) {
  Flags f;
  declare_data_flags(f,
                     "last N training examples held out for validation, which selects the "
                     "classifiers' epochs (auto: 1000 of the bundled digits, 5000 of an MNIST "
                     "directory, 3257 of SVHN)");
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
  f.add("out", "runs/reproduce", "output directory: runs.csv and table.md");
  f.add("reuse", "",
        "comma-separated runs.csv files of earlier runs: a row with the same table, labels, seed "
        "and epochs is taken instead of training again (resumes an interrupted reproduction, or "
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
  int seeds = int(f.get_int("seeds", 1, 100));
  int classifier_epochs = int(f.get_int("classifier-epochs", 1, 10000));
  std::vector<int64_t> epochs;
  if (f.get("epochs") != "paper") epochs = parse_list(f.get("epochs"), "epochs", 100000, false);
  if (quick) {  // a smoke run's defaults; flags given on the command line still count
    if (!supervised && !f.has("labels"))
      label_counts = {*std::min_element(label_counts.begin(), label_counts.end())};
    if (!f.has("seeds")) seeds = 1;
    if (!f.has("epochs")) epochs = {1};
    if (!f.has("classifier-epochs")) classifier_epochs = 5;
  }
  check(epochs.empty() || epochs.size() == 1 || epochs.size() == label_counts.size(), "--epochs",
        "needs one value or one per labelled-set size");
  const std::string out_dir = f.get("out");
  std::filesystem::create_directories(out_dir);
  const std::unique_ptr<Backend<float>> backend = backend_from_flags(f);
  std::vector<RunResult> earlier;
  if (f.has("reuse")) {
    std::stringstream files(f.get("reuse"));
    std::string path;
    while (std::getline(files, path, ',')) {
      std::vector<RunResult> rows = read_runs(path, supervised ? 1 : 2);
      earlier.insert(earlier.end(), rows.begin(), rows.end());
    }
  }
  // The EquiVAE epochs of row li, and the earlier run a row can take instead of training.
  auto epochs_of = [&](size_t li) {
    const int64_t labels = label_counts[li];
    if (!epochs.empty()) return int(epochs.size() == 1 ? epochs[0] : epochs[li]);
    if (supervised) return paper.supervised_epochs;
    // A labelled-set size the paper did not run: the epochs of the next larger one it did.
    const auto it = paper.semi_epochs.lower_bound(labels);
    return it != paper.semi_epochs.end() ? it->second : paper.semi_epochs.rbegin()->second;
  };
  // Row li's model (its labels cap k and make it semi-supervised), and its settings.
  std::vector<EquiVaeConfig> row_config;
  std::vector<std::string> row_settings;
  for (int64_t labels : label_counts) {
    row_config.push_back(model_config(f, paper, data.train, supervised ? 0 : labels));
    row_settings.push_back(settings_crc32(row_config.back(), classifier_epochs, data));
  }
  auto earlier_run = [&](int64_t labels, uint64_t seed, int run_epochs,
                         const std::string& settings) {
    return std::find_if(earlier.begin(), earlier.end(), [&](const RunResult& e) {
      return e.labels == labels && e.seed == seed && e.epochs == run_epochs &&
             e.settings == settings;
    });
  };
  int runs_to_train = 0, unmatched = 0;
  int64_t epochs_to_train = 0;
  for (size_t li = 0; li < label_counts.size(); ++li)
    for (int s = 1; s <= seeds; ++s) {
      if (earlier_run(label_counts[li], uint64_t(s), epochs_of(li), row_settings[li]) !=
          earlier.end())
        continue;
      ++runs_to_train, epochs_to_train += epochs_of(li);
      unmatched += std::any_of(earlier.begin(), earlier.end(), [&](const RunResult& e) {
        return e.labels == label_counts[li] && e.seed == uint64_t(s) && e.epochs == epochs_of(li);
      });
    }
  if (unmatched > 0)
    std::fprintf(stderr,
                 "note: --reuse: %d earlier runs of the same labels, seed and epochs were made "
                 "with other settings (model, weights, classifier epochs or data), or before "
                 "runs.csv recorded them: trained again\n",
                 unmatched);
  Progress progress(runs_to_train, epochs_to_train, f.get_switch("quiet"));
  int run_number = 0;

  // Ctrl-C or SIGTERM stops the run in training at its next step (see the catch below).
  StopOnSignal stop;
  std::vector<RunResult> results;
  std::ofstream csv(out_dir + "/runs.csv");
  check(csv.good(), out_dir + "/runs.csv", "cannot open for writing");
  csv << "table,labels,seed,epochs,q_error,distance_error,neural_error,benchmark_error,seconds,"
         "settings_crc32\n";
  for (size_t li = 0; li < label_counts.size(); ++li) {
    const int64_t labels = label_counts[li];
    for (int s = 1; s <= seeds; ++s) {
      const auto start = Clock::now();
      RunResult r;
      r.labels = labels;
      r.seed = uint64_t(s);
      EquiVaeConfig c = row_config[li];
      c.seed = r.seed;
      LabelledSplit split;
      if (!supervised) split = split_labelled(data.train, labels, r.seed);
      const Dataset& labelled = supervised ? data.train : split.labelled;
      r.epochs = epochs_of(li);
      r.settings = row_settings[li];
      if (auto it = earlier_run(r.labels, r.seed, r.epochs, r.settings); it != earlier.end()) {
        results.push_back(*it);
        write_run(csv, supervised, *it);
        continue;
      }
      ++run_number;
      // The run's own logs and, while it trains, its checkpoint: with --reuse, a run that
      // was interrupted continues from it.
      const std::string what = "labels " + std::to_string(labels) + " seed " + std::to_string(s);
      const std::string run_dir = out_dir + "/runs/table" + (supervised ? "1" : "2") + "-labels" +
                                  std::to_string(labels) + "-seed" + std::to_string(s);
      const std::string checkpoint = run_dir + "/checkpoint.safetensors";
      EquiVae<float> model(c, *backend);
      TrainOptions options;
      options.epochs = r.epochs;
      options.quiet = true;
      options.out_dir = run_dir;
      if (f.has("reuse") && std::filesystem::exists(checkpoint)) options.resume_from = checkpoint;
      int64_t trained = 0, skipped = 0;
      options.after_epoch = [&](const EpochRecord& e) {
        if (trained++ == 0 && e.epoch > 1) progress.skip(skipped = e.epoch - 1);
        progress.epoch_done(run_number, what, e.epoch, r.epochs, e.elbo);
      };
      options.stop_requested = StopOnSignal::requested;
      try {
        train(model, labelled, supervised ? nullptr : &split.unlabelled, nullptr, options);
      } catch (const Interrupted& e) {  // the advice is --reuse here, not the trainer's --resume
        throw Interrupted(what + ", " + e.context(),
                          "stopped on request; the finished runs are in " + out_dir +
                              "/runs.csv and this run's last finished epoch, if any, in " +
                              run_dir + ": the same command with --reuse " + out_dir +
                              "/runs.csv continues from there");
      }
      progress.skip(r.epochs - trained - skipped);  // a resumed run with nothing left to train
      std::filesystem::remove(checkpoint);          // the run's row in runs.csv stands for it now
      if (!supervised) r.q_error = classifier_error(model, data.test);
      r.distance_error = distance_classifier_error(model, labelled, data.test);
      r.neural_error = neural_error(model, *backend, labelled, data.validation, data.test, r.seed,
                                    classifier_epochs);
      r.benchmark_error = benchmark_error(*backend, c, labelled, data.validation, data.test, r.seed,
                                          classifier_epochs);
      r.seconds = seconds_since(start);
      results.push_back(r);
      write_run(csv, supervised, r);
      char q[32] = "";  // supervised rows have no q(y|x)
      if (!supervised) std::snprintf(q, sizeof q, "q(y|x) %6.2f%%  ", 100 * r.q_error);
      char line[256];
      std::snprintf(line, sizeof line,
                    "labels %6lld seed %d: %sdistance %6.2f%%  neural %6.2f%%  benchmark %6.2f%%  "
                    "[%.0f s]",
                    (long long)labels, s, q, 100 * r.distance_error, 100 * r.neural_error,
                    100 * r.benchmark_error, r.seconds);
      progress.run_done(run_number, line);
    }
  }

  std::ostringstream md;
  md << "Test error (%), mean ± standard error over seeds; " << data.train.source << ", "
     << data.test.n << " test images, " << data.validation.n << " validation.\n\n";
  if (supervised) {
    md << "| row | runs | EquiVAE distance | EquiVAE neural (f_inv) | benchmark | paper (full "
       << paper.name
       << "): distance / neural / benchmark |\n| --- | --- | --- | --- | --- | --- |\n";
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
    for (const RunResult& r : results)
      if (r.labels == labels)
        q.push_back(r.q_error), dist.push_back(r.distance_error), neural.push_back(r.neural_error),
            bench.push_back(r.benchmark_error), ep = r.epochs;
    if (supervised) {
      md << "| supervised, " << labels << " labels | " << dist.size() << " | "
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
  std::ofstream(out_dir + "/table.md") << md.str();
  std::printf("%s", md.str().c_str());
  std::printf("wrote %s/runs.csv and %s/table.md\n", out_dir.c_str(), out_dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return equivae::run_tool("reproduce", run, argc, argv);
}
