// safetensors checkpoints: bit-exact round trips, every validation fault the reader promises,
// and the atomic-save guarantee (a failed save leaves the old file and no temp file).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "runtime/atomic_file.h"
#include "runtime/checkpoint.h"
#include "runtime/checkpoint_writer.h"
#include "runtime/error.h"

namespace equivae {
namespace {

namespace fs = std::filesystem;

float from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
uint32_t to_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bits;
}

// A fresh directory per test under the build tree, removed afterwards.
class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(EQUIVAE_BINARY_DIR) / "test_checkpoint_tmp" /
           (std::string(info->name()) + "." + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  // Writes an arbitrary byte image: 8-byte little-endian length (the header's own size
  // unless overridden), the header text, then `data` bytes.
  std::string write_raw(const std::string& header, size_t data_bytes,
                        int64_t length_override = -1) {
    const std::string path = file("corrupt.safetensors");
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    const uint64_t n = length_override >= 0 ? uint64_t(length_override) : header.size();
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
    out << header << std::string(data_bytes, '\x11');
    return path;
  }

  // Checks that loading fails with an Error naming the path and containing `fault`.
  static void expect_load_error(const std::string& path, const std::string& fault) {
    try {
      load_checkpoint(path);
      ADD_FAILURE() << "loading " << path << " should fail with '" << fault << "'";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_NE(msg.find(fault), std::string::npos) << "expected '" << fault << "' in: " << msg;
    }
  }

  // Leftover temp files (".tmp.") in the test directory.
  std::vector<std::string> temp_files() const {
    std::vector<std::string> found;
    for (const auto& entry : fs::directory_iterator(dir_)) {
      const std::string name = entry.path().filename().string();
      if (name.find(".tmp.") != std::string::npos) found.push_back(name);
    }
    return found;
  }

  fs::path dir_;
};

Checkpoint sample_checkpoint() {
  Checkpoint c;
  c.tensors.push_back({"encoder.0.weight", {2, 3}, {1.5f, -2.25f, 0.0f, 3.0e-8f, 1e30f, -7.0f}});
  // Bit patterns that a text or double round trip would lose: quiet and signalling NaNs with
  // payloads, -0.0, the smallest and largest denormals, infinities.
  c.tensors.push_back(
      {"special",
       {9},
       {from_bits(0x7fc00001), from_bits(0xffc12345), from_bits(0x7f800001), -0.0f,
        from_bits(0x00000001), from_bits(0x807fffff), std::numeric_limits<float>::infinity(),
        -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::max()}});
  c.tensors.push_back({"empty", {0}, {}});
  c.tensors.push_back({"empty2d", {3, 0}, {}});
  c.tensors.push_back({"scalar", {}, {42.5f}});
  c.tensors.push_back({"adam.m", {1, 1, 2}, {-1.0f, 1.0f}});
  c.metadata = {{"step", "12345"}, {"format", "pt"}, {"note", "unicode \xc3\xa9 \"quoted\"\n"}};
  return c;
}

void expect_bit_equal(const Checkpoint& a, const Checkpoint& b) {
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const NamedTensor &x = a.tensors[i], &y = b.tensors[i];
    EXPECT_EQ(x.name, y.name) << "tensor " << i;
    EXPECT_EQ(x.shape, y.shape) << x.name;
    ASSERT_EQ(x.data.size(), y.data.size()) << x.name;
    for (size_t j = 0; j < x.data.size(); ++j) {
      EXPECT_EQ(to_bits(x.data[j]), to_bits(y.data[j])) << x.name << "[" << j << "]";
    }
  }
  EXPECT_EQ(a.metadata, b.metadata);
}

TEST_F(CheckpointTest, RoundTripIsBitExactInFileOrder) {
  const Checkpoint c = sample_checkpoint();
  save_checkpoint(file("a.safetensors"), c);
  const Checkpoint back = load_checkpoint(file("a.safetensors"));
  expect_bit_equal(c, back);
  EXPECT_EQ(to_bits(back.get("special").data[0]), 0x7fc00001u);
  EXPECT_EQ(back.get("scalar").shape, std::vector<int64_t>{});
  EXPECT_TRUE(temp_files().empty());
}

TEST_F(CheckpointTest, EmptyCheckpointAndNoMetadata) {
  save_checkpoint(file("e.safetensors"), Checkpoint{});
  const Checkpoint back = load_checkpoint(file("e.safetensors"));
  EXPECT_TRUE(back.tensors.empty());
  EXPECT_TRUE(back.metadata.empty());
}

TEST_F(CheckpointTest, SaveOverwritesAnExistingCheckpoint) {
  Checkpoint c = sample_checkpoint();
  save_checkpoint(file("a.safetensors"), c);
  c.tensors[0].data[0] = 99.0f;
  c.metadata["step"] = "12346";
  save_checkpoint(file("a.safetensors"), c);
  expect_bit_equal(c, load_checkpoint(file("a.safetensors")));
}

TEST_F(CheckpointTest, GetNamesTheMissingTensor) {
  const Checkpoint c = sample_checkpoint();
  EXPECT_EQ(c.get("scalar").data[0], 42.5f);
  try {
    c.get("decoder.9.bias");
    FAIL() << "get should throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("decoder.9.bias"), std::string::npos) << e.what();
  }
}

// Every header length mod 8 must pad to an 8-byte aligned data start, and the padding is
// spaces (which JSON readers skip).
TEST_F(CheckpointTest, HeaderIsPaddedTo8ByteAlignment) {
  for (int len = 1; len <= 9; ++len) {
    Checkpoint c;
    c.tensors.push_back({std::string(len, 'w'), {2}, {1.0f, 2.0f}});
    const std::string path = file("align.safetensors");
    save_checkpoint(path, c);
    std::ifstream in(path, std::ios::binary);
    unsigned char length[8];
    in.read(reinterpret_cast<char*>(length), 8);
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= uint64_t(length[i]) << (8 * i);
    EXPECT_EQ((8 + n) % 8, 0u) << "name length " << len;
    std::string header(n, '\0');
    in.read(header.data(), static_cast<std::streamsize>(n));
    EXPECT_EQ(header.front(), '{');
    const size_t last = header.find_last_not_of(' ');
    EXPECT_EQ(header[last], '}');
    EXPECT_LT(n - 1 - last, 8u) << "at most 7 padding spaces";
    EXPECT_EQ(fs::file_size(path), 8 + n + 8) << "two floats of data";
  }
}

TEST_F(CheckpointTest, SaveRejectsInconsistentCheckpoints) {
  const std::string path = file("bad.safetensors");
  auto expect_save_error = [&](const Checkpoint& c, const std::string& fault) {
    try {
      save_checkpoint(path, c);
      ADD_FAILURE() << "save should fail with '" << fault << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fault), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(path));
    EXPECT_TRUE(temp_files().empty());
  };
  Checkpoint c;
  c.tensors = {{"w", {2, 2}, {1, 2, 3}}};
  expect_save_error(c, "has 4 elements but the data has 3");
  c.tensors = {{"w", {1}, {1}}, {"w", {1}, {2}}};
  expect_save_error(c, "duplicate tensor 'w'");
  c.tensors = {{"__metadata__", {1}, {1}}};
  expect_save_error(c, "__metadata__");
  c.tensors = {{"", {1}, {1}}};
  expect_save_error(c, "empty name");
  c.tensors = {{"w", {-1}, {}}};
  expect_save_error(c, "invalid shape");
}

// ---- the reader's validation, one hand-written corrupt file per fault.

TEST_F(CheckpointTest, RejectsMissingAndTooShortFiles) {
  expect_load_error(file("missing.safetensors"), "cannot open");
  const std::string path = file("short.safetensors");
  std::ofstream(path, std::ios::binary) << "abcde";
  expect_load_error(path, "shorter than the 8-byte header length");
  expect_load_error(dir_.string(), "not a regular file");
}

TEST_F(CheckpointTest, RejectsBadHeaderLength) {
  expect_load_error(write_raw("{}", 0, 1000), "header length 1000 exceeds the file");
  expect_load_error(write_raw("{}", 0, 200ll << 20), "absurd");
  expect_load_error(write_raw("{}", 0, int64_t(0xffffffffffffffffull >> 1)), "absurd");
}

TEST_F(CheckpointTest, RejectsHeaderThatIsNotAJsonObject) {
  expect_load_error(write_raw("{\"a\": ", 0), "not valid JSON");
  expect_load_error(write_raw("", 0), "not valid JSON");
  expect_load_error(write_raw("[1, 2]", 0), "not a JSON object");
  expect_load_error(write_raw("\"text\"", 0), "not a JSON object");
}

TEST_F(CheckpointTest, RejectsDuplicateNames) {
  expect_load_error(write_raw(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                              R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                              8),
                    "duplicate header entry 'w'");
}

TEST_F(CheckpointTest, RejectsMalformedEntries) {
  expect_load_error(write_raw(R"({"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})", 4),
                    "tensor 'w': unsupported dtype 'F16' (only F32 is accepted)");
  expect_load_error(write_raw(R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8),
                    "unsupported dtype 'F64'");
  expect_load_error(write_raw(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4), "missing 'dtype'");
  expect_load_error(write_raw(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4),
                    "missing 'shape'");
  expect_load_error(write_raw(R"({"w":{"dtype":"F32","shape":[1]}})", 4), "missing 'data_offsets'");
  expect_load_error(write_raw(R"({"w":[1,2]})", 0), "header entry is not an object");
  for (const char* shape : {"[-1]", "[2.0]", "[\"2\"]", "[[1]]"}) {
    expect_load_error(write_raw(std::string(R"({"w":{"dtype":"F32","shape":)") + shape +
                                    R"(,"data_offsets":[0,4]}})",
                                4),
                      "is not a list of non-negative integers");
  }
  expect_load_error(write_raw(R"({"w":{"dtype":"F32","shape":4,"data_offsets":[0,16]}})", 16),
                    "shape is not an array");
  expect_load_error(write_raw(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4),
                    "is not a pair of non-negative integers");
  expect_load_error(write_raw(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 4),
                    "is not a pair of non-negative integers");
  expect_load_error(
      write_raw(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,4]}})",
                4),
      "is too large");
}

TEST_F(CheckpointTest, RejectsBadOffsets) {
  expect_load_error(write_raw(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8),
                    "out of order");
  expect_load_error(write_raw(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
                    "span 8 bytes but shape [3] of F32 needs 12");
  expect_load_error(write_raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                              12),
                    "tensor 'b' data_offsets [4, 12] overlap tensor 'a'");
  expect_load_error(write_raw(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                              R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                              12),
                    "gap of 4 unindexed bytes before tensor 'b'");
  expect_load_error(write_raw(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
                    "gap of 4 unindexed bytes before tensor 'a'");
  // Offsets beyond the end of the file.
  expect_load_error(write_raw(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                              R"("b":{"dtype":"F32","shape":[4],"data_offsets":[4,20]}})",
                              8),
                    "truncated file: tensor 'b' ends at data byte 20 beyond the 8 data bytes");
  expect_load_error(write_raw(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 12),
                    "8 trailing bytes after the last tensor");
}

TEST_F(CheckpointTest, RejectsBadMetadata) {
  expect_load_error(write_raw(R"({"__metadata__":{"step":3}})", 0),
                    "metadata value for 'step' is not a string: 3");
  expect_load_error(write_raw(R"({"__metadata__":{"a":null}})", 0), "is not a string");
  expect_load_error(write_raw(R"({"__metadata__":["x"]})", 0), "__metadata__ is not an object");
}

TEST_F(CheckpointTest, RejectsTruncatedAndExtendedCheckpoints) {
  const std::string path = file("t.safetensors");
  save_checkpoint(path, sample_checkpoint());
  const auto size = fs::file_size(path);
  for (uintmax_t cut : {uintmax_t{1}, uintmax_t{4}, uintmax_t{17}}) {
    save_checkpoint(path, sample_checkpoint());
    fs::resize_file(path, size - cut);
    expect_load_error(path, "truncated");
  }
  // Cut inside the header and inside the length word.
  fs::resize_file(path, 20);
  expect_load_error(path, "truncated");
  fs::resize_file(path, 6);
  expect_load_error(path, "shorter than the 8-byte header length");
  save_checkpoint(path, sample_checkpoint());
  std::ofstream(path, std::ios::binary | std::ios::app) << "junk";
  expect_load_error(path, "4 trailing bytes");
}

// ---- atomic save: a failure never damages the previous checkpoint nor leaves a temp file.

TEST_F(CheckpointTest, FailedSaveIntoMissingDirectory) {
  const std::string path = file("no/such/dir/c.safetensors");
  try {
    save_checkpoint(path, sample_checkpoint());
    FAIL() << "save should fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cannot create temp file"), std::string::npos);
  }
  EXPECT_TRUE(temp_files().empty());
}

TEST_F(CheckpointTest, FailedOpenOfTempLeavesPreviousCheckpointIntact) {
  const std::string path = file("c.safetensors");
  const Checkpoint old = sample_checkpoint();
  save_checkpoint(path, old);
  // Occupy the temp path with a directory so the open fails.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  fs::create_directory(tmp);
  Checkpoint next = old;
  next.tensors[0].data[0] = -123.0f;
  EXPECT_THROW(save_checkpoint(path, next), Error);
  expect_bit_equal(old, load_checkpoint(path));
  EXPECT_TRUE(fs::is_directory(tmp)) << "the writer must not delete what it did not create";
  fs::remove(tmp);
  EXPECT_TRUE(temp_files().empty());
}

// The temp file is fully written, then the rename fails (the target became a non-empty
// directory after the writer checked it): the temp file must be removed and the directory
// untouched.
TEST_F(CheckpointTest, FailedRenameRemovesTempFile) {
  const std::string path = file("c.safetensors");
  try {
    AtomicFileWriter out(path);
    ASSERT_TRUE(out.write("bytes", 5));
    fs::create_directories(fs::path(path) / "inside");
    out.commit();
    FAIL() << "commit should fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot rename"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::is_directory(fs::path(path) / "inside"));
  EXPECT_TRUE(temp_files().empty());
}

// A directory as the target is refused before anything is written, in words about the
// target (not about the temp file the rename would have named), and left untouched.
TEST_F(CheckpointTest, SaveOverADirectoryIsRefusedUpFront) {
  const std::string path = file("c.safetensors");
  fs::create_directories(fs::path(path) / "inside");
  try {
    save_checkpoint(path, sample_checkpoint());
    FAIL() << "save should fail";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), path + ": cannot rename a file over it: it is a directory");
  }
  EXPECT_TRUE(fs::is_directory(fs::path(path) / "inside"));
  EXPECT_TRUE(temp_files().empty());
}

// An empty path, or one ending in '/', is no file: refused before a temp file is made (an
// empty path's would land in the working directory as ".tmp.<pid>").
TEST_F(CheckpointTest, PathThatNamesNoFileIsRefusedUpFront) {
  const std::string stray = ".tmp." + std::to_string(::getpid());
  try {
    write_file_atomically("", "x", 1);
    FAIL() << "an empty path should be refused";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "cannot write a file at an empty path");
  }
  EXPECT_FALSE(fs::exists(stray));
  const std::string slash = file("absent") + "/";
  try {
    write_file_atomically(slash, "x", 1);
    FAIL() << "a path ending in '/' should be refused";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              slash + ": names a directory (it ends in '/'), not a file to write");
  }
  EXPECT_FALSE(fs::exists(file("absent")));
}

// ---- integrity: the crc32 the writer records, and what the reader does with it.

// Reads a whole file.
std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void spit(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}
// Byte offset of the data section: 8 + the header length.
size_t data_start(const std::string& bytes) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(static_cast<unsigned char>(bytes[i])) << (8 * i);
  return 8 + n;
}

TEST_F(CheckpointTest, ChecksumOfTheDataIsRecordedAndNotReturnedAsMetadata) {
  const std::string path = file("c.safetensors");
  const Checkpoint c = sample_checkpoint();
  save_checkpoint(path, c);
  const std::string bytes = slurp(path);
  const size_t start = data_start(bytes);
  const uLong crc = crc32(crc32(0, Z_NULL, 0), reinterpret_cast<const Bytef*>(bytes.data()) + start,
                          static_cast<uInt>(bytes.size() - start));
  char want[32];
  std::snprintf(want, sizeof want, "\"crc32\":\"%08lx\"", crc);
  EXPECT_NE(bytes.substr(0, start).find(want), std::string::npos) << bytes.substr(0, start);
  expect_bit_equal(c, load_checkpoint(path));  // metadata comes back without "crc32"

  // An empty checkpoint records the CRC of no bytes.
  save_checkpoint(path, Checkpoint{});
  EXPECT_NE(slurp(path).find("\"crc32\":\"00000000\""), std::string::npos);
  EXPECT_TRUE(load_checkpoint(path).metadata.empty());
}

TEST_F(CheckpointTest, SaveRefusesTheReservedChecksumKey) {
  Checkpoint c = sample_checkpoint();
  c.metadata["crc32"] = "12345678";
  try {
    save_checkpoint(file("c.safetensors"), c);
    FAIL() << "save should fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'crc32' is reserved"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(file("c.safetensors")));
}

// Every single flipped bit of the data section is caught by the CRC (CRC-32 detects all
// single-bit and all burst errors up to 32 bits).
TEST_F(CheckpointTest, EveryCorruptedDataByteIsAChecksumMismatch) {
  const std::string path = file("c.safetensors");
  save_checkpoint(path, sample_checkpoint());
  const std::string good = slurp(path);
  const size_t start = data_start(good);
  ASSERT_GT(good.size(), start + 40);
  for (size_t i = start; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ (1 << (i % 8)));
    spit(path, bad);
    expect_load_error(path, "checksum mismatch: the file is corrupted");
  }
  // Two bytes swapped inside one tensor.
  std::string bad = good;
  std::swap(bad[start], bad[start + 1]);
  if (bad != good) {
    spit(path, bad);
    expect_load_error(path, "checksum mismatch");
  }
}

TEST_F(CheckpointTest, DamagedChecksumTextIsRejected) {
  const std::string path = file("c.safetensors");
  save_checkpoint(path, sample_checkpoint());
  const std::string good = slurp(path);
  const size_t at = good.find("\"crc32\":\"") + 9;
  for (const char* text : {"zzzzzzzz", "1234567 ", "-1234567"}) {
    std::string bad = good;
    bad.replace(at, 8, text);
    spit(path, bad);
    expect_load_error(path, "malformed checksum: metadata crc32");
  }
  // A different, well-formed value: the data no longer matches it.
  std::string bad = good;
  bad[at] = bad[at] == '0' ? '1' : '0';
  spit(path, bad);
  expect_load_error(path, "checksum mismatch: the file is corrupted");
  // Upper-case hex is accepted.
  std::string upper = good;
  for (size_t i = at; i < at + 8; ++i) upper[i] = static_cast<char>(std::toupper(upper[i]));
  spit(path, upper);
  expect_bit_equal(sample_checkpoint(), load_checkpoint(path));
}

// Files written by other tools (the safetensors package) carry no checksum: still accepted.
TEST_F(CheckpointTest, FilesWithoutAChecksumStillLoad) {
  std::string two_floats;
  for (float f : {1.5f, -2.0f}) two_floats.append(reinterpret_cast<const char*>(&f), 4);
  for (const std::string& header :
       {std::string(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})"),
        std::string(R"({"__metadata__":{"format":"pt"},)"
                    R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})")}) {
    const std::string path = write_raw(header, 0);
    std::ofstream(path, std::ios::binary | std::ios::app) << two_floats;
    const Checkpoint c = load_checkpoint(path);
    ASSERT_EQ(c.tensors.size(), 1u);
    EXPECT_EQ(c.get("w").data, (std::vector<float>{1.5f, -2.0f}));
  }
}

TEST_F(CheckpointTest, TruncationAtEveryLengthIsRejected) {
  const std::string path = file("c.safetensors");
  save_checkpoint(path, sample_checkpoint());
  const std::string good = slurp(path);
  for (size_t size = 0; size < good.size(); ++size) {
    spit(path, good.substr(0, size));
    EXPECT_THROW(load_checkpoint(path), Error) << "cut at " << size;
  }
}

TEST_F(CheckpointTest, DeeplyNestedHeaderIsRejectedWithoutRecursing) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  expect_load_error(write_raw(R"({"__metadata__":{"a":)" + deep + "}}", 0),
                    "nests JSON deeper than 64 levels");
  expect_load_error(
      write_raw(R"({"w":{"dtype":"F32","shape":)" + deep + R"(,"data_offsets":[0,0]}})", 0),
      "nests JSON deeper than 64 levels");
}

// A header that declares a 100 GB tensor in a 24-byte file: rejected from the sizes alone,
// before any allocation. Run in a child whose address space is capped at 1 GiB (not under
// AddressSanitizer, which reserves terabytes of shadow memory), so an attempt to allocate the
// tensor would fail there instead of succeeding lazily.
TEST_F(CheckpointTest, HugeDeclaredTensorFailsFastWithoutAllocating) {
  const std::string path = write_raw(
      R"({"w":{"dtype":"F32","shape":[25000000000],"data_offsets":[0,100000000000]}})", 16);
  const auto t0 = std::chrono::steady_clock::now();
  expect_load_error(path,
                    "truncated file: tensor 'w' ends at data byte 100000000000 beyond the "
                    "16 data bytes");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  // Two tensors that each fit but together do not.
  expect_load_error(
      write_raw(R"({"a":{"dtype":"F32","shape":[12500000000],"data_offsets":[0,50000000000]},)"
                R"("b":{"dtype":"F32","shape":[12500000000],"data_offsets":[50000000000,)"
                R"(100000000000]}})",
                16),
      "truncated file");
#if !defined(__SANITIZE_ADDRESS__)
  const std::string huge = write_raw(
      R"({"w":{"dtype":"F32","shape":[25000000000],"data_offsets":[0,100000000000]}})", 16);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    rlimit cap{1ull << 30, 1ull << 30};
    ::setrlimit(RLIMIT_AS, &cap);
    try {
      load_checkpoint(huge);
      ::_exit(1);
    } catch (const Error& e) {
      ::_exit(std::string(e.what()).find("truncated file") != std::string::npos ? 0 : 2);
    } catch (...) {
      ::_exit(3);  // std::bad_alloc: it tried to allocate
    }
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "child died with signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: loaded, 2: other error, 3: allocation failed";
#endif
}

// ---- failures in the middle of a save: the disk fills up, the process is killed.

Checkpoint big_checkpoint(float fill, size_t floats) {
  Checkpoint c;
  c.tensors.push_back({"small", {3}, {fill, fill + 1, fill + 2}});
  c.tensors.push_back({"big", {int64_t(floats)}, std::vector<float>(floats, fill)});
  c.metadata["fill"] = std::to_string(fill);
  return c;
}

// Unsets the write hook when a test ends, whatever happens.
struct HookGuard {
  ~HookGuard() { set_checkpoint_write_hook({}); }
};

TEST_F(CheckpointTest, DiskFullDuringWriteLeavesPreviousCheckpointIntact) {
  HookGuard guard;
  const std::string path = file("c.safetensors");
  const Checkpoint old = big_checkpoint(1.0f, 3 << 18);  // 3 MiB of data: 4 chunks
  save_checkpoint(path, old);
  for (uint64_t fail_at : {uint64_t{0}, uint64_t{1}, 2 * kCheckpointWriteChunk}) {
    int calls = 0;
    set_checkpoint_write_hook([&](uint64_t written) {
      ++calls;
      return written < fail_at;
    });
    try {
      save_checkpoint(path, big_checkpoint(2.0f, 3 << 18));
      ADD_FAILURE() << "save should fail at data byte " << fail_at;
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(path), std::string::npos) << what;
      EXPECT_NE(what.find("cannot write temp file"), std::string::npos) << what;
      EXPECT_NE(what.find(std::strerror(ENOSPC)), std::string::npos) << what;
    }
    EXPECT_GE(calls, 1);
    set_checkpoint_write_hook({});
    expect_bit_equal(old, load_checkpoint(path));
    EXPECT_TRUE(temp_files().empty()) << "fail at " << fail_at;
  }
  // Without the hook the same save goes through.
  save_checkpoint(path, big_checkpoint(2.0f, 3 << 18));
  expect_bit_equal(big_checkpoint(2.0f, 3 << 18), load_checkpoint(path));
}

// Forks a child that saves `next` over `path` with a hook run before each data chunk; returns
// its pid and a pipe end the child writes one byte to when it reaches the first chunk.
pid_t fork_writer(const std::string& path, const Checkpoint& next, int& ready_fd,
                  std::chrono::microseconds per_chunk, bool block_in_second_chunk) {
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  const pid_t child = ::fork();
  if (child != 0) {
    ::close(fds[1]);
    ready_fd = fds[0];
    return child;
  }
  ::close(fds[0]);
  set_checkpoint_write_hook([&](uint64_t written) {
    if (written == 0) (void)!::write(fds[1], "x", 1);
    if (block_in_second_chunk && written >= kCheckpointWriteChunk) {
      for (;;) ::pause();  // until SIGKILL
    }
    std::this_thread::sleep_for(per_chunk);
    return true;
  });
  try {
    save_checkpoint(path, next);
  } catch (...) {
    ::_exit(1);
  }
  ::_exit(0);
}

TEST_F(CheckpointTest, KilledMidWriteLeavesPreviousCheckpointReadable) {
  const std::string path = file("c.safetensors");
  const size_t floats = 2 << 20;  // 8 MiB: 8 chunks
  const Checkpoint old = big_checkpoint(1.0f, floats), next = big_checkpoint(2.0f, floats);
  save_checkpoint(path, old);

  // Killed for certain in the middle: the child blocks inside its second chunk.
  int ready = -1;
  pid_t child = fork_writer(path, next, ready, std::chrono::microseconds(0), true);
  ASSERT_GT(child, 0);
  char byte;
  ASSERT_EQ(::read(ready, &byte, 1), 1);
  ::close(ready);
  const std::string tmp = path + ".tmp." + std::to_string(child);
  for (int i = 0; i < 2000 && (!fs::exists(tmp) || fs::file_size(tmp) < 8); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ::kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_TRUE(fs::exists(tmp)) << "the child should have died with its temp file half written";
  expect_bit_equal(old, load_checkpoint(path));
  fs::remove(tmp);  // a killed writer cannot clean up after itself; the next one ignores it

  // Killed at random moments, from before the first chunk to after the rename: the file at
  // path is always one whole checkpoint, the old or the new one, never a torn mix.
  std::mt19937 rng(12345);
  int saw_old = 0, saw_new = 0;
  for (int round = 0; round < 12; ++round) {
    save_checkpoint(path, old);
    child = fork_writer(path, next, ready, std::chrono::microseconds(1000), false);
    ASSERT_GT(child, 0);
    ASSERT_EQ(::read(ready, &byte, 1), 1);
    ::close(ready);
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 120000));
    ::kill(child, SIGKILL);
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    const Checkpoint back = load_checkpoint(path);
    if (back.metadata.at("fill") == old.metadata.at("fill")) {
      expect_bit_equal(old, back);
      ++saw_old;
    } else {
      expect_bit_equal(next, back);
      ++saw_new;
    }
    for (const std::string& name : temp_files()) fs::remove(dir_ / name);
  }
  EXPECT_EQ(saw_old + saw_new, 12);
  std::printf("killed writers left the old checkpoint %d times, the new one %d times\n", saw_old,
              saw_new);
}

// ---- checkpoints written in the background (runtime/checkpoint_writer.h).

TEST_F(CheckpointTest, BackgroundWriteGivesTheFileOfASynchronousOne) {
  const Checkpoint c = big_checkpoint(3.0f, 3 << 18);
  save_checkpoint(file("sync.safetensors"), c);
  CheckpointWriter writer;
  writer.write(file("async.safetensors"), c, "epoch 1");
  writer.wait();
  EXPECT_FALSE(writer.in_flight());
  const std::string bytes = slurp(file("async.safetensors"));
  EXPECT_GT(bytes.size(), size_t(3) << 20);
  EXPECT_TRUE(bytes == slurp(file("sync.safetensors")));
  EXPECT_TRUE(temp_files().empty());
}

TEST_F(CheckpointTest, BackgroundWritesRunOneAtATime) {
  // The first write is held at its first chunk until the test lets it go: write() has returned
  // meanwhile (the caller goes on), and the second write() returns only once the first file
  // is complete.
  HookGuard guard;
  std::atomic<bool> go{false};
  std::atomic<int> chunks{0};
  set_checkpoint_write_hook([&](uint64_t) {
    while (!go) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ++chunks;
    return true;
  });
  const Checkpoint first = big_checkpoint(1.0f, 3 << 18), second = big_checkpoint(2.0f, 3 << 18);
  CheckpointWriter writer;
  writer.write(file("a.safetensors"), first, "epoch 1");
  EXPECT_TRUE(writer.in_flight());
  EXPECT_FALSE(fs::exists(file("a.safetensors")));
  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    go = true;
  });
  writer.write(file("b.safetensors"), second, "epoch 2");
  EXPECT_GE(chunks.load(), 4) << "the first write had not finished";
  expect_bit_equal(first, load_checkpoint(file("a.safetensors")));
  writer.wait();
  release.join();
  expect_bit_equal(second, load_checkpoint(file("b.safetensors")));
  EXPECT_TRUE(temp_files().empty());
}

TEST_F(CheckpointTest, ABackgroundWriteThatFailsIsReportedToTheCallerNamingTheFile) {
  const std::string path = file("no/such/dir/c.safetensors");
  CheckpointWriter writer;
  writer.write(path, sample_checkpoint(), "epoch 3");  // returns: the failure comes later
  try {
    writer.wait();
    FAIL() << "wait should report the failed write";
  } catch (const Error& e) {
    const std::string what = e.what();
    std::printf("[ message ] %s\n", what.c_str());
    EXPECT_EQ(e.context(), path);
    EXPECT_EQ(what.rfind(path +
                             ": the checkpoint of epoch 3 was not written: cannot create temp "
                             "file " +
                             path + ".tmp.",
                         0),
              0u)
        << what;
  }
  EXPECT_FALSE(writer.in_flight());
  writer.wait();  // reported once
  // The next write goes through; and a failure is also what the next write() reports.
  writer.write(file("c.safetensors"), sample_checkpoint());
  writer.wait();
  expect_bit_equal(sample_checkpoint(), load_checkpoint(file("c.safetensors")));
  writer.write(path, sample_checkpoint(), "epoch 4");
  EXPECT_THROW(writer.write(file("d.safetensors"), sample_checkpoint()), Error);
  EXPECT_FALSE(fs::exists(file("d.safetensors")));
  EXPECT_TRUE(temp_files().empty());
}

TEST_F(CheckpointTest, ABuilderMakesTheCheckpointOnTheWritersThread) {
  // write(path, build): build runs on the writer's thread, after write() has returned, and its
  // checkpoint is the file; an Error it throws fails the write, naming the file.
  const Checkpoint c = sample_checkpoint();
  const std::thread::id caller = std::this_thread::get_id();
  std::promise<void> returned;
  const std::shared_future<void> write_returned = returned.get_future().share();
  std::thread::id builder;
  CheckpointWriter writer;
  writer.write(file("built.safetensors"), CheckpointWriter::Builder([&] {
                 write_returned.wait();  // a builder run by write() itself would never return
                 builder = std::this_thread::get_id();
                 return c;
               }),
               "epoch 1");
  returned.set_value();
  writer.wait();
  EXPECT_NE(builder, caller);
  expect_bit_equal(c, load_checkpoint(file("built.safetensors")));

  const std::string path = file("refused.safetensors");
  writer.write(path, CheckpointWriter::Builder([]() -> Checkpoint {
                 throw Error("model", "adam.v lies outside the state read back");
               }),
               "epoch 2");
  try {
    writer.wait();
    FAIL() << "wait should report the builder's error";
  } catch (const Error& e) {
    EXPECT_EQ(e.context(), path);
    EXPECT_NE(std::string(e.what()).find("the checkpoint of epoch 2 was not written: adam.v lies "
                                         "outside the state read back"),
              std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(temp_files().empty());
}

TEST_F(CheckpointTest, ADestroyedWriterFinishesItsWrite) {
  HookGuard guard;
  set_checkpoint_write_hook([](uint64_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return true;
  });
  const Checkpoint c = big_checkpoint(4.0f, 3 << 18);
  {
    CheckpointWriter writer;
    writer.write(file("c.safetensors"), c);
  }  // the destructor waits for the write
  set_checkpoint_write_hook({});
  expect_bit_equal(c, load_checkpoint(file("c.safetensors")));
  EXPECT_TRUE(temp_files().empty());
}

// Writes the reference file that tests/check_safetensors.py (CTest safetensors_python_reader)
// reads back: $EQUIVAE_SAFETENSORS_OUT if set, else a fixed path in the build tree. The python
// check compares these exact values, so keep the two in sync.
TEST(CheckpointReference, WritesReferenceFileForPython) {
  const char* env = std::getenv("EQUIVAE_SAFETENSORS_OUT");
  const std::string path =
      env ? env : std::string(EQUIVAE_BINARY_DIR) + "/tests/reference.safetensors";
  Checkpoint c;
  NamedTensor weight{"encoder.0.weight", {4, 5}, {}};
  for (int i = 0; i < 20; ++i) weight.data.push_back(0.25f * float(i) - 2.0f);
  c.tensors.push_back(weight);
  c.tensors.push_back({"encoder.0.bias", {5}, {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f}});
  c.tensors.push_back({"log_sigma", {}, {3.25f}});
  c.tensors.push_back({"empty", {0}, {}});
  c.tensors.push_back({"cube", {2, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8}});
  c.metadata = {{"format", "pt"}, {"step", "123"}, {"producer", "equivae"}};
  save_checkpoint(path, c);
  expect_bit_equal(c, load_checkpoint(path));
}

}  // namespace
}  // namespace equivae
