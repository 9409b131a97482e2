#include "tools/reproduce_table.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/build_info.h"

namespace equivae::reproduce {

namespace {

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

std::string format(const PaperFigure& p) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f ± %.2f", p.mean, p.se);
  return buf;
}

}  // namespace

std::string table_text(const Reproduction& rp, const PaperSettings& paper,
                       const std::vector<int64_t>& label_counts,
                       const std::vector<PlannedRun>& plan) {
  const DataSplits& data = rp.data;
  const bool taken_from_earlier = std::any_of(
      plan.begin(), plan.end(), [](const PlannedRun& p) { return !p.result.origin.empty(); });
  std::ostringstream md;
  // A source's "[a, b)" suffixes are the rows each split took: the file's first 8,000, then
  // their first 7,000 (the rest held out for validation).
  md << "Test error (%) on " << data.test.n << " test images, mean ± standard error over seeds. "
     << "Training: " << data.train.n << " examples, " << data.train.source
     << " ([a, b): the rows taken); validation: " << data.validation.n
     << " examples, which pick the classifiers' epochs.\n\n"
     << "Engine " << engine_version() << "; backend: " << rp.backend.describe()
     << (taken_from_earlier ? " (rows taken from earlier runs with --reuse ran on their own)" : "")
     << ".\n\n";
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

}  // namespace equivae::reproduce
