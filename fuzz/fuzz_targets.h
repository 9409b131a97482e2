#pragma once
// The fuzz harnesses, one per reader of outside bytes. Each turns one fuzz input into a call of
// the reader and reports whether the reader accepted it or threw equivae::Error; anything else
// (a crash, a sanitizer report, another exception type, a broken invariant: __builtin_trap)
// is a bug. The libFuzzer entry points (fuzz_*.cpp, clang) and the regression replay
// (tests/test_fuzz_regressions.cpp, the normal g++ build) share this code, so an input kept
// under fuzz/regressions/<target>/ means the same thing in both.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "model/idx_dataset.h"
#include "model/svhn_dataset.h"
#include "runtime/checkpoint.h"
#include "runtime/error.h"
#include "runtime/flags.h"
#include "tools/reproduce_runs_csv.h"

namespace equivae::fuzz {

enum class Outcome { kAccepted, kError };

#define EQUIVAE_FUZZ_ASSERT(cond)                                                             \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      std::fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      __builtin_trap();                                                                       \
    }                                                                                         \
  } while (0)

// An anonymous in-memory file (memfd) holding the bytes, opened by path as
// /proc/self/fd/<fd>: the readers take paths, and no disk is touched per input.
class MemFile {
 public:
  MemFile(const uint8_t* data, size_t size) {
    fd_ = ::memfd_create("equivae-fuzz", MFD_CLOEXEC);
    EQUIVAE_FUZZ_ASSERT(fd_ >= 0);
    for (size_t done = 0; done < size;) {
      const ssize_t n = ::write(fd_, data + done, size - done);
      EQUIVAE_FUZZ_ASSERT(n > 0);
      done += static_cast<size_t>(n);
    }
  }
  ~MemFile() { ::close(fd_); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

 private:
  int fd_ = -1;
};

inline void check_dataset(const Dataset& ds) {
  EQUIVAE_FUZZ_ASSERT(ds.n > 0 && ds.rows > 0 && ds.cols > 0 && ds.channels > 0 &&
                      ds.dim == ds.channels * ds.rows * ds.cols);
  EQUIVAE_FUZZ_ASSERT(ds.images.size() == static_cast<size_t>(ds.n) * ds.dim);
  EQUIVAE_FUZZ_ASSERT(ds.labels.size() == static_cast<size_t>(ds.n));
  for (int32_t y : ds.labels) EQUIVAE_FUZZ_ASSERT(0 <= y && y < ds.num_classes);
  for (float x : ds.images) EQUIVAE_FUZZ_ASSERT(0.0f <= x && x <= 1.0f);
  const Dataset half = ds.slice(ds.n / 2, ds.n);
  EQUIVAE_FUZZ_ASSERT(half.n == ds.n - ds.n / 2 && half.labels.size() == size_t(half.n));
  try {
    ds.slice(0, ds.n + 1);
    EQUIVAE_FUZZ_ASSERT(false && "slice past the end must throw");
  } catch (const Error&) {
  }
}

// idx: byte 0 picks the class count (10 mostly, else 1..16), bytes 1-2 (little-endian) where
// the rest splits into the image file and the label file.
inline Outcome run_idx(const uint8_t* data, size_t size) {
  if (size < 3) return Outcome::kError;
  const int classes = data[0] < 128 ? 10 : 1 + data[0] % 16;
  const size_t rest = size - 3;
  const size_t split = (size_t{data[1]} | size_t{data[2]} << 8) % (rest + 1);
  const MemFile images(data + 3, split), labels(data + 3 + split, rest - split);
  try {
    check_dataset(load_idx(images.path(), labels.path(), classes));
    return Outcome::kAccepted;
  } catch (const Error&) {
    return Outcome::kError;
  }
}

// idx_gzip: byte 0's low bit picks the role of the rest (0: the image file, 1: the label
// file); the other file is a fixed valid one. The rest always goes through the gunzip path:
// the gzip magic 1f 8b is put in front when it does not start with it.
inline Outcome run_idx_gzip(const uint8_t* data, size_t size) {
  if (size < 1) return Outcome::kError;
  std::vector<uint8_t> gz(data + 1, data + size);
  if (gz.size() < 2 || gz[0] != 0x1f || gz[1] != 0x8b) gz.insert(gz.begin(), {0x1f, 0x8b});
  // One 1x1 image, one label 0: what the fuzzed file is paired with.
  static const uint8_t kImages[] = {0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 200};
  static const uint8_t kLabels[] = {0, 0, 8, 1, 0, 0, 0, 1, 0};
  const bool as_labels = data[0] & 1;
  const MemFile fuzzed(gz.data(), gz.size());
  const MemFile other(as_labels ? kImages : kLabels, as_labels ? sizeof kImages : sizeof kLabels);
  try {
    check_dataset(as_labels ? load_idx(other.path(), fuzzed.path())
                            : load_idx(fuzzed.path(), other.path()));
    return Outcome::kAccepted;
  } catch (const Error&) {
    return Outcome::kError;
  }
}

// svhn_mat: the input is the whole .mat file. What loads is SVHN-shaped: 3x32x32 images.
inline Outcome run_svhn_mat(const uint8_t* data, size_t size) {
  const MemFile file(data, size);
  try {
    const Dataset ds = load_svhn_mat(file.path());
    EQUIVAE_FUZZ_ASSERT(ds.channels == 3 && ds.rows == 32 && ds.cols == 32 && ds.dim == 3072);
    EQUIVAE_FUZZ_ASSERT(ds.num_classes == 10);
    check_dataset(ds);
    return Outcome::kAccepted;
  } catch (const Error&) {
    return Outcome::kError;
  }
}

// A directory for the round trip of accepted checkpoints: tmpfs when there is one (fsync is
// free there), removed at exit.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path base = fs::is_directory("/dev/shm", ec) ? "/dev/shm" : fs::temp_directory_path();
    std::string tmpl = (base / "equivae-fuzz-XXXXXX").string();
    EQUIVAE_FUZZ_ASSERT(::mkdtemp(tmpl.data()) != nullptr);
    static const std::string created = tmpl;
    std::atexit([] {
      std::error_code e;
      std::filesystem::remove_all(created, e);
    });
    return tmpl;
  }();
  return dir;
}

// checkpoint: the input is the whole file. What loads must save and load back bit for bit.
inline Outcome run_checkpoint(const uint8_t* data, size_t size) {
  const MemFile file(data, size);
  Checkpoint c;
  try {
    c = load_checkpoint(file.path());
  } catch (const Error&) {
    return Outcome::kError;
  }
  const std::string again = scratch_dir() + "/roundtrip.safetensors";
  save_checkpoint(again, c);  // an Error here is a bug too: the reader accepted it
  const Checkpoint back = load_checkpoint(again);
  EQUIVAE_FUZZ_ASSERT(back.metadata == c.metadata);
  EQUIVAE_FUZZ_ASSERT(back.tensors.size() == c.tensors.size());
  for (size_t i = 0; i < c.tensors.size(); ++i) {
    const NamedTensor &a = c.tensors[i], &b = back.tensors[i];
    EQUIVAE_FUZZ_ASSERT(a.name == b.name && a.shape == b.shape && a.data.size() == b.data.size());
    EQUIVAE_FUZZ_ASSERT(a.data.empty() ||
                        std::memcmp(a.data.data(), b.data.data(), 4 * a.data.size()) == 0);
  }
  return Outcome::kAccepted;
}

// flags: the input split on NUL bytes is argv[1..]; a flag set like train_mnist's is declared
// and every typed getter is called on it (an Error from a getter is a fine outcome).
inline Outcome run_flags(const uint8_t* data, size_t size) {
  std::vector<std::string> args{"fuzz"};
  std::string current;
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == 0) {
      args.push_back(current);
      current.clear();
    } else {
      current.push_back(static_cast<char>(data[i]));
    }
  }
  if (size > 0) args.push_back(current);
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);

  Flags f;
  f.add("data", "", "directory");
  f.add("epochs", "40", "epochs");
  f.add("validation", "auto", "held out");
  f.add("lr", "0.001", "learning rate");
  f.add("seed", "1", "seed");
  f.add("m-max", "auto", "pool size");
  f.add("quiet", "", "no progress", true);
  f.add("help", "", "help", true);
  try {
    f.parse(static_cast<int>(args.size()), argv.data());
  } catch (const Error&) {
    return Outcome::kError;
  }
  auto guarded = [](auto&& call) {
    try {
      call();
    } catch (const Error&) {
    }
  };
  for (const char* name : {"data", "epochs", "validation", "lr", "seed", "m-max", "quiet"}) {
    guarded([&] { (void)f.get(name); });
    guarded([&] { (void)f.get_int(name, 1, 100000); });
    guarded([&] { (void)f.get_int(name, INT64_MIN, INT64_MAX); });
    guarded([&] { (void)f.get_double(name, 1e-8, 10); });
    guarded([&] { (void)f.get_double(name, -1e300, 1e300); });
    guarded([&] { (void)f.get_switch(name); });
    (void)f.has(name);
  }
  try {
    (void)f.get("no-such-flag");
    EQUIVAE_FUZZ_ASSERT(false && "an undeclared flag must throw");
  } catch (const Error&) {
  }
  EQUIVAE_FUZZ_ASSERT(!f.help("usage").empty());
  return Outcome::kAccepted;
}

// runs_csv: a row read from reproduce's runs.csv holds what read_runs checks and RunResult
// promises. has_settings: the file has the 10-column header (the 9-column one predates
// settings_crc32, and its rows carry none).
inline void check_run(const reproduce::RunResult& r, bool has_settings) {
  EQUIVAE_FUZZ_ASSERT(r.table == 1 || r.table == 2);
  EQUIVAE_FUZZ_ASSERT(r.labels >= 1);
  EQUIVAE_FUZZ_ASSERT(r.seed >= 1 && r.seed <= uint64_t(reproduce::kMaxSeeds));
  EQUIVAE_FUZZ_ASSERT(r.epochs >= 1 && r.epochs <= reproduce::kMaxEpochs);
  auto fraction = [](double e) { return e >= 0 && e <= 1; };
  // Only a supervised row (table 1) has no q(y|x) error.
  EQUIVAE_FUZZ_ASSERT(fraction(r.q_error) || (r.table == 1 && std::isnan(r.q_error)));
  EQUIVAE_FUZZ_ASSERT(fraction(r.distance_error) && fraction(r.neural_error) &&
                      fraction(r.benchmark_error));
  EQUIVAE_FUZZ_ASSERT(std::isfinite(r.seconds) && r.seconds >= 0);
  if (has_settings) {
    EQUIVAE_FUZZ_ASSERT(r.settings.size() == 8 &&
                        r.settings.find_first_not_of("0123456789abcdef") == std::string::npos);
  } else {
    EQUIVAE_FUZZ_ASSERT(r.settings.empty());
  }
}

inline bool same_bits(double a, double b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

// The row's values, bit for bit: runs_csv writes each double's shortest exact text.
inline bool same_values(const reproduce::RunResult& a, const reproduce::RunResult& b) {
  return same_bits(a.q_error, b.q_error) && same_bits(a.distance_error, b.distance_error) &&
         same_bits(a.neural_error, b.neural_error) &&
         same_bits(a.benchmark_error, b.benchmark_error) && same_bits(a.seconds, b.seconds);
}

// What read_runs gives for the text runs_csv writes of `rows` (an Error here is a bug: the
// reader refuses what the writer wrote).
inline std::vector<reproduce::RunResult> write_and_read(
    const std::vector<reproduce::RunResult>& rows, std::string& text) {
  std::vector<const reproduce::RunResult*> pointers;
  for (const reproduce::RunResult& r : rows) pointers.push_back(&r);
  text = reproduce::runs_csv(pointers);
  const MemFile file(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  return reproduce::read_runs(file.path());
}

// Whether two rows of one run disagree: what check_no_conflicting_rows must refuse.
inline bool has_conflict(const std::vector<reproduce::RunResult>& rows) {
  auto same = [](double x, double y) { return x == y || (std::isnan(x) && std::isnan(y)); };
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t j = 0; j < i; ++j) {
      const reproduce::RunResult &a = rows[i], &b = rows[j];
      if (reproduce::same_run(a, b) &&
          !(same(a.q_error, b.q_error) && same(a.distance_error, b.distance_error) &&
            same(a.neural_error, b.neural_error) && same(a.benchmark_error, b.benchmark_error)))
        return true;
    }
  return false;
}

inline bool refuses_conflicts(const std::vector<reproduce::RunResult>& rows) {
  try {
    reproduce::check_no_conflicting_rows(rows);
    return false;
  } catch (const Error&) {
    return true;
  }
}

// runs_csv: the input is the whole runs.csv (reproduce --reuse FILE). What loads holds the
// rows' invariants; check_no_conflicting_rows refuses exactly the files with two rows of one
// run that disagree; and the rows written by runs_csv (each double's shortest round-trip
// text) read back as the same runs with the same values, bit for bit.
inline Outcome run_runs_csv(const uint8_t* data, size_t size) {
  const MemFile file(data, size);
  std::vector<reproduce::RunResult> rows;
  try {
    rows = reproduce::read_runs(file.path());
  } catch (const Error&) {
    return Outcome::kError;
  }
  const std::string first_line(reinterpret_cast<const char*>(data),
                               std::find(data, data + size, uint8_t('\n')) - data);
  const bool has_settings = first_line.find("settings_crc32") != std::string::npos;
  for (size_t i = 0; i < rows.size(); ++i) {
    check_run(rows[i], has_settings);
    EQUIVAE_FUZZ_ASSERT(rows[i].origin == file.path() + ":" + std::to_string(i + 2));
  }
  const bool conflict = has_conflict(rows);
  EQUIVAE_FUZZ_ASSERT(refuses_conflicts(rows) == conflict);

  // Rows of a 9-column file carry no settings and are never reused, so never written back:
  // the writer only writes runs that do. A stand-in lets their values take the round trip.
  std::vector<reproduce::RunResult> written = rows;
  for (reproduce::RunResult& r : written)
    if (r.settings.empty()) r.settings = "0123abcd";
  std::string text;
  const std::vector<reproduce::RunResult> back = write_and_read(written, text);
  EQUIVAE_FUZZ_ASSERT(back.size() == rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    check_run(back[i], true);
    EQUIVAE_FUZZ_ASSERT(reproduce::same_run(written[i], back[i]));
    EQUIVAE_FUZZ_ASSERT(same_values(written[i], back[i]));
  }
  return Outcome::kAccepted;
}

}  // namespace equivae::fuzz
