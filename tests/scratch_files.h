#pragma once
// Scratch files for tests under GoogleTest's temp directory, named by the process id so
// parallel CTest runs never share one.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace equivae::test {

// TEMP/<name>.<pid>.safetensors: a checkpoint path for one test.
inline std::string temp_checkpoint_path(const std::string& name) {
  return (std::filesystem::path(testing::TempDir()) /
          (name + "." + std::to_string(::getpid()) + ".safetensors"))
      .string();
}

// EQUIVAE_BINARY_DIR/<dir>/<name>, the folder made when missing: a file a test writes into the
// build tree, in a folder of its own.
inline std::string build_tree_file(const std::string& dir, const std::string& name) {
  const std::filesystem::path folder = std::filesystem::path(EQUIVAE_BINARY_DIR) / dir;
  std::filesystem::create_directories(folder);
  return (folder / name).string();
}

// A fixture owning a fresh directory TEMP/<prefix><pid>_<test name>, removed after the test.
class ScratchDirTest : public testing::Test {
 protected:
  explicit ScratchDirTest(std::string prefix) : prefix_(std::move(prefix)) {}
  void SetUp() override {
    const auto* info = testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::path(testing::TempDir()) /
           (prefix_ + std::to_string(getpid()) + "_" + info->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  // Writes bytes to dir/name and returns its path.
  std::string write(const std::string& name, const std::vector<uint8_t>& bytes) const {
    const std::string p = path(name);
    std::ofstream(p, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    return p;
  }

  std::filesystem::path dir_;

 private:
  std::string prefix_;
};

}  // namespace equivae::test
