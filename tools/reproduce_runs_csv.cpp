#include "tools/reproduce_runs_csv.h"

#include <zlib.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "runtime/error.h"
#include "runtime/flags.h"
#include "runtime/path_checks.h"

namespace equivae::reproduce {

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

namespace {

constexpr char kRunsHeader[] =
    "table,labels,seed,epochs,q_error,distance_error,neural_error,benchmark_error,seconds,"
    "settings_crc32\n";

}  // namespace

namespace {

// The shortest text that reads back as the same double (nan, inf as std::from_chars reads
// them): a row taken again with --reuse keeps its value, not a 6-digit rounding of it.
std::string exact(double v) {
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : "nan";
}

}  // namespace

std::string runs_csv(const std::vector<const RunResult*>& rows) {
  std::ostringstream csv;
  csv << kRunsHeader;
  for (const RunResult* r : rows)
    csv << r->table << ',' << r->labels << ',' << r->seed << ',' << r->epochs << ','
        << exact(r->q_error) << ',' << exact(r->distance_error) << ',' << exact(r->neural_error)
        << ',' << exact(r->benchmark_error) << ',' << exact(r->seconds) << ',' << r->settings
        << '\n';
  return csv.str();
}

namespace {

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

}  // namespace

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

std::string run_name(const RunResult& r) {
  return "labels " + std::to_string(r.labels) + " seed " + std::to_string(r.seed);
}

bool same_run(const RunResult& a, const RunResult& b) {
  return a.table == b.table && a.labels == b.labels && a.seed == b.seed && a.epochs == b.epochs &&
         a.settings == b.settings;
}

namespace {

// Whether two rows of the same run hold the same errors (NaN: no such classifier).
bool same_errors(const RunResult& a, const RunResult& b) {
  auto same = [](double x, double y) { return x == y || (std::isnan(x) && std::isnan(y)); };
  return same(a.q_error, b.q_error) && same(a.distance_error, b.distance_error) &&
         same(a.neural_error, b.neural_error) && same(a.benchmark_error, b.benchmark_error);
}

}  // namespace

void check_no_conflicting_rows(const std::vector<RunResult>& rows) {
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      check(!same_run(rows[i], rows[j]) || same_errors(rows[i], rows[j]), rows[i].origin,
            "holds other errors than " + rows[j].origin + " for the same run (table " +
                std::to_string(rows[i].table) + ", " + run_name(rows[i]) + ", " +
                std::to_string(rows[i].epochs) + " epochs, settings " + rows[i].settings +
                "): remove the wrong row");
}

}  // namespace equivae::reproduce
