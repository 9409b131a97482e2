#include "runtime/output_dir.h"

#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "runtime/atomic_file.h"
#include "runtime/error.h"
#include "runtime/path_checks.h"

namespace equivae {

namespace fs = std::filesystem;

namespace {

void create_directory_or_throw(const std::string& dir) {
  check(!dir.empty(), "output directory", "the path is empty");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!ec && fs::is_directory(dir, ec)) return;
  for (fs::path p = dir; !p.empty(); p = p.parent_path()) {
    std::error_code unreadable;
    if (fs::exists(p, unreadable) && !fs::is_directory(p, unreadable))
      throw Error(p.string(), p == fs::path(dir)
                                  ? "is a file, not a directory: it cannot hold the run's outputs"
                                  : "is a file, not a directory: the output directory " + dir +
                                        " cannot be made in it");
    if (p == p.parent_path()) break;
  }
  throw Error(dir, "cannot create the output directory: " +
                       (ec ? ec.message() : std::string("it is not a directory")));
}

std::string first_free_previous_dir(const std::string& dir) {
  std::string previous = dir + "/previous";
  std::error_code ec;
  for (int i = 2; fs::exists(fs::symlink_status(previous, ec)); ++i)
    previous = dir + "/previous-" + std::to_string(i);
  return previous;
}

}  // namespace

void create_output_directory(const std::string& dir, const std::string& flag) {
  if (flag.empty()) return create_directory_or_throw(dir);
  try {
    create_directory_or_throw(dir);
  } catch (const Error& e) {
    throw Error(flag, e.what());
  }
}

ScopedOutputDirectory::ScopedOutputDirectory(const std::string& dir, const std::string& flag)
    : dir_(dir), exceptions_at_start_(std::uncaught_exceptions()) {
  // Every directory the path names on its way, as written ("x/../y" makes x too), that does
  // not exist yet; deepest first.
  std::error_code ec;
  fs::path prefix;
  for (const fs::path& part : fs::path(dir)) {
    prefix /= part;
    if (part.empty() || part == "." || part == ".." || part == prefix.root_path()) continue;
    if (!fs::exists(fs::symlink_status(prefix, ec))) created_.insert(created_.begin(), prefix);
  }
  try {
    create_output_directory(dir, flag);
  } catch (...) {
    remove_created();  // what it made before it failed
    throw;
  }
}

ScopedOutputDirectory::ScopedOutputDirectory(ScopedOutputDirectory&& other) noexcept
    : dir_(std::move(other.dir_)),
      created_(std::move(other.created_)),
      exceptions_at_start_(other.exceptions_at_start_) {
  other.created_.clear();
}

ScopedOutputDirectory::~ScopedOutputDirectory() {
  if (std::uncaught_exceptions() > exceptions_at_start_) remove_created();  // the tool failed
}

void ScopedOutputDirectory::remove_created() noexcept {
  std::error_code ec;
  for (const std::string& d : created_) fs::remove(d, ec);  // only while empty: rmdir
}

void MovedAside::undo() noexcept {
  std::error_code ec;
  for (const auto& [from, to] : entries) fs::rename(to, from, ec);
  if (!dir.empty()) fs::remove(dir, ec);  // empty once they are back
  entries.clear();
  dir.clear();
}

MovedAside move_to_previous(const std::string& dir, const std::vector<std::string>& names) {
  MovedAside moved;
  moved.dir = first_free_previous_dir(dir);
  std::error_code ec;
  fs::create_directory(moved.dir, ec);
  check(!ec, moved.dir, "cannot create it for the earlier run's files: " + ec.message());
  for (const std::string& name : names) {
    const std::string from = dir + "/" + name, to = moved.dir + "/" + name;
    fs::rename(from, to, ec);
    if (ec) {
      const std::string previous = moved.dir;
      moved.undo();
      throw Error(from, "cannot move it to " + previous + ": " + ec.message());
    }
    moved.entries.emplace_back(from, to);
  }
  return moved;
}

void remove_stale_temp_files_noting(const std::string& dir, const std::vector<std::string>& names,
                                    bool quiet) {
  const std::vector<std::string> removed = remove_stale_temp_files(dir, names);
  if (removed.empty() || quiet) return;
  std::string list;
  for (const std::string& path : removed) list += (list.empty() ? "" : ", ") + path;
  std::fprintf(stderr,
               "note: removed %s: partial file%s left by a run stopped mid-write (its process no "
               "longer runs)\n",
               list.c_str(), removed.size() > 1 ? "s" : "");
}

bool csv_has_rows(const std::string& path) {
  if (!non_regular_kind(path).empty()) return false;  // a FIFO would block the read
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line))
    if (!line.empty()) return true;
  return false;
}

}  // namespace equivae
