#include "model/metrics_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "runtime/error.h"
#include "runtime/path_checks.h"

namespace equivae {
namespace {

// The record's fields in CSV column order. Optional fields were added after older builds wrote
// their checkpoints' history: a record without one reads as 0.
struct Field {
  const char* name;
  double EpochRecord::*member;
  bool optional = false;
};
constexpr Field kFields[] = {
    {"elbo", &EpochRecord::elbo},
    {"recon", &EpochRecord::recon},
    {"kl", &EpochRecord::kl},
    {"validation_error", &EpochRecord::validation_error},
    {"seconds", &EpochRecord::seconds},
    {"examples_per_s", &EpochRecord::examples_per_s},
    {"classifier_nll", &EpochRecord::classifier_nll},
    {"unlabelled_bound", &EpochRecord::unlabelled_bound},
    {"classifier_validation_error", &EpochRecord::classifier_validation_error},
    {"train_seconds", &EpochRecord::train_seconds, true},
    {"validation_seconds", &EpochRecord::validation_seconds, true},
    {"checkpoint_seconds", &EpochRecord::checkpoint_seconds, true},
};

// An open descriptor, closed when it goes.
class HeldOpen {
 public:
  explicit HeldOpen(int fd = -1) : fd_(fd) {}
  ~HeldOpen() {
    if (fd_ >= 0) ::close(fd_);
  }
  HeldOpen(const HeldOpen&) = delete;
  HeldOpen& operator=(const HeldOpen&) = delete;

 private:
  int fd_;
};

// A FIFO is written into as a stream, and only when a process reads it: opening one that no
// process reads would wait for a reader forever. A block device or a socket is no log. The
// FIFO's probe (a non-blocking writer) is returned open, to be held until the log's own stream
// is open: closed in between, it would leave the pipe without writers, a waiting reader (cat,
// jq) would read end-of-file and go, and the log's open would then wait forever.
HeldOpen check_stream_target(const std::string& path) {
  std::error_code ec;
  const std::filesystem::file_type type = std::filesystem::status(path, ec).type();
  check(type != std::filesystem::file_type::block && type != std::filesystem::file_type::socket,
        path, "cannot open for writing: is " + non_regular_kind(path) + ", not a file or a stream");
  if (type != std::filesystem::file_type::fifo) return HeldOpen();
  const int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  check(fd >= 0, path, "cannot open for writing: is a FIFO (named pipe) that no process reads");
  return HeldOpen(fd);
}

// The reason goes with the refusal: a directory in the way, or the system's word for it.
std::ofstream open_for_writing(const std::string& path) {
  const HeldOpen probe = check_stream_target(path);
  errno = 0;
  std::ofstream out(path, std::ios::trunc);
  if (out.good()) return out;
  const int error = errno;
  std::error_code ec;
  const std::string why = std::filesystem::is_directory(path, ec) ? "is a directory"
                          : error != 0                            ? std::strerror(error)
                                                                  : "unknown reason";
  throw Error(path, "cannot open for writing: " + why);
}

void flush_or_throw(std::ofstream& out, const std::string& path) {
  out.flush();
  check(out.good(), path, "write failed (disk full?)");
}

}  // namespace

std::string metrics_csv_header() {
  std::string header = "epoch";
  for (const Field& f : kFields) header += std::string(",") + f.name;
  return header;
}

std::string metrics_csv_row(const EpochRecord& record) {
  std::ostringstream row;  // default stream precision: 6 significant digits
  row << record.epoch;
  for (const Field& f : kFields) row << ',' << record.*f.member;
  return row.str();
}

nlohmann::ordered_json metrics_json(const EpochRecord& record) {
  nlohmann::ordered_json object = nlohmann::ordered_json::object();
  object["epoch"] = record.epoch;
  for (const Field& f : kFields) object[f.name] = record.*f.member;
  return object;
}

EpochRecord epoch_record_from_json(const nlohmann::json& object, const std::string& context) {
  check(object.is_object(), context, "an epoch record is not a JSON object");
  EpochRecord record;
  auto it = object.find("epoch");
  check(it != object.end() && it->is_number_integer(), context,
        "an epoch record has no integer \"epoch\"");
  record.epoch = it->get<int>();
  for (const Field& f : kFields) {
    it = object.find(f.name);
    if (it == object.end() && f.optional) continue;
    check(it != object.end() && it->is_number(), context,
          "epoch " + std::to_string(record.epoch) + "'s record has no number \"" + f.name + "\"");
    record.*f.member = it->get<double>();
  }
  return record;
}

MetricsLog::MetricsLog(const std::string& csv_path, const std::string& json_path,
                       const std::vector<EpochRecord>& history)
    : csv_path_(csv_path), json_path_(json_path), json_stdout_(json_path == "-") {
  // Both open before either is written; the JSON log first, as it may lie elsewhere: when it
  // cannot be opened, no new file is left in the output directory.
  if (!json_path_.empty() && !json_stdout_) json_ = open_for_writing(json_path_);
  if (!csv_path_.empty()) csv_ = open_for_writing(csv_path_);
  if (csv_.is_open()) {
    csv_ << metrics_csv_header() << '\n';
    for (const EpochRecord& r : history) csv_ << metrics_csv_row(r) << '\n';
    flush_or_throw(csv_, csv_path_);
  }
  if (json_.is_open()) {
    for (const EpochRecord& r : history) json_ << metrics_json(r).dump() << '\n';
    flush_or_throw(json_, json_path_);
  }
}

void MetricsLog::append(const EpochRecord& record) {
  if (csv_.is_open()) {
    csv_ << metrics_csv_row(record) << '\n';
    flush_or_throw(csv_, csv_path_);
  }
  if (json_stdout_ || json_.is_open()) append_json(record);
}

void MetricsLog::append_json(const EpochRecord& record) {
  const std::string line = metrics_json(record).dump() + "\n";
  errno = 0;
  bool written = false;
  if (json_stdout_) {
    written = std::fputs(line.c_str(), stdout) >= 0 && std::fflush(stdout) == 0;
  } else {
    json_ << line;
    json_.flush();
    written = json_.good();
  }
  if (!written) drop_json_log(errno);
}

void MetricsLog::drop_json_log(int error) {
  const std::string where = json_stdout_ ? "stdout" : json_path_;
  const std::string why = error == EPIPE ? "its reader went away"
                          : error != 0   ? std::strerror(error)
                                         : "write failed";
  const std::string kept = csv_.is_open() ? "; the epochs are still logged in " + csv_path_ : "";
  std::fprintf(stderr,
               "note: cannot write the JSON lines to %s: %s; training goes on without them%s\n",
               where.c_str(), why.c_str(), kept.c_str());
  json_stdout_ = false;
  json_.close();
}

}  // namespace equivae
