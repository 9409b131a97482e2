// Replays the fuzz inputs in the normal build (no clang needed): every input kept under
// fuzz/regressions/<target>/ (each once crashed or broke a reader) must now end in an Error,
// and every seed under fuzz/corpus/<target>/ must be handled without a crash ("valid*" seeds
// must be accepted). The harnesses are the fuzzers' own (fuzz/fuzz_targets.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz/fuzz_targets.h"

namespace equivae::fuzz {
namespace {

namespace fs = std::filesystem;
using Harness = Outcome (*)(const uint8_t*, size_t);

struct Target {
  const char* name;
  Harness run;
};
const Target kTargets[] = {
    {"idx", run_idx},     {"idx_gzip", run_idx_gzip}, {"checkpoint", run_checkpoint},
    {"flags", run_flags}, {"svhn_mat", run_svhn_mat}, {"runs_csv", run_runs_csv},
};

std::vector<uint8_t> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// The regular files in fuzz/<kind>/<target>/, sorted (empty when the directory is absent).
std::vector<fs::path> inputs(const std::string& kind, const std::string& target) {
  const fs::path dir = fs::path(EQUIVAE_SOURCE_DIR) / "fuzz" / kind / target;
  std::vector<fs::path> files;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

TEST(FuzzRegressions, EveryKeptCrashInputNowEndsInAnError) {
  int replayed = 0;
  for (const Target& t : kTargets) {
    for (const fs::path& file : inputs("regressions", t.name)) {
      const std::vector<uint8_t> bytes = read_bytes(file);
      EXPECT_EQ(t.run(bytes.data(), bytes.size()), Outcome::kError) << file;
      ++replayed;
    }
  }
  EXPECT_GT(replayed, 0) << "no regression inputs found under fuzz/regressions/";
}

// A seed's name says what it is: "valid…" loads, every other one is a fault the reader names.
TEST(FuzzRegressions, ValidSeedsLoadAndEveryOtherSeedEndsInAnError) {
  for (const Target& t : kTargets) {
    const std::vector<fs::path> seeds = inputs("corpus", t.name);
    EXPECT_FALSE(seeds.empty()) << "no seeds for " << t.name;
    int valid = 0, faulty = 0;
    for (const fs::path& file : seeds) {
      const std::vector<uint8_t> bytes = read_bytes(file);
      const Outcome outcome = t.run(bytes.data(), bytes.size());
      const bool is_valid = file.filename().string().rfind("valid", 0) == 0;
      EXPECT_EQ(outcome, is_valid ? Outcome::kAccepted : Outcome::kError) << file;
      ++(is_valid ? valid : faulty);
    }
    EXPECT_GT(valid, 0) << t.name << ": no valid seed";
    EXPECT_GT(faulty, 0) << t.name << ": no faulty seed";
  }
}

// Inputs the harnesses must cope with whatever the fuzzer starts from.
TEST(FuzzRegressions, EmptyAndTinyInputs) {
  for (const Target& t : kTargets) {
    for (size_t size = 0; size <= 4; ++size) {
      const std::vector<uint8_t> zeros(size, 0), ones(size, 0xff);
      (void)t.run(zeros.data(), zeros.size());
      (void)t.run(ones.data(), ones.size());
    }
  }
}

}  // namespace
}  // namespace equivae::fuzz
