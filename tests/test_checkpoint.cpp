// safetensors checkpoints: bit-exact round trips, every validation fault the reader promises,
// and the atomic-save guarantee (a failed save leaves the old file and no temp file).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "runtime/checkpoint.h"
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

// The temp file is fully written, then the rename fails (the target is a non-empty
// directory): the temp file must be removed and the directory untouched.
TEST_F(CheckpointTest, FailedRenameRemovesTempFile) {
  const std::string path = file("c.safetensors");
  fs::create_directories(fs::path(path) / "inside");
  try {
    save_checkpoint(path, sample_checkpoint());
    FAIL() << "save should fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot rename"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::is_directory(fs::path(path) / "inside"));
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
