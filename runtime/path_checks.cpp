#include "runtime/path_checks.h"

#include <filesystem>
#include <system_error>

#include "runtime/error.h"

namespace equivae {

namespace fs = std::filesystem;

namespace {

// Whether path is a symbolic link whose target is missing.
bool dangling_link(const std::string& path) {
  std::error_code ec;
  return fs::is_symlink(fs::symlink_status(path, ec)) && !fs::exists(fs::status(path, ec));
}

// What the path's own entry, or the file a link there leads to, is (see non_regular_kind).
std::string kind_of_target(const std::string& path) {
  std::error_code ec;
  switch (fs::status(path, ec).type()) {
    case fs::file_type::regular:
      return "";
    case fs::file_type::directory:
      return "a directory";
    case fs::file_type::fifo:
      return "a FIFO (named pipe)";
    case fs::file_type::socket:
      return "a socket";
    case fs::file_type::character:
      return "a character device";
    case fs::file_type::block:
      return "a block device";
    case fs::file_type::not_found:
      if (dangling_link(path))
        return "a dangling symbolic link to " + fs::read_symlink(path, ec).string();
      return "";
    default:
      return "";  // unknown or not examinable: the open says why
  }
}

}  // namespace

std::string non_regular_kind(const std::string& path) {
  const std::string kind = kind_of_target(path);
  std::error_code ec;
  if (kind.empty() || dangling_link(path) || !fs::is_symlink(fs::symlink_status(path, ec)))
    return kind;
  return "a symbolic link to " + fs::read_symlink(path, ec).string() + ", which is " + kind;
}

std::string not_a_file_to_read(const std::string& path) {
  const std::string kind = non_regular_kind(path);
  if (kind.empty()) return kind;
  return fs::path(path).filename().string() + " is there but is " + kind + ", not a regular file";
}

void check_input_file(const std::string& path) {
  const std::string kind = non_regular_kind(path);
  check(kind.empty(), path, "cannot open: is " + kind + ", not a regular file");
}

void check_output_file(const std::string& path) {
  const std::string kind = non_regular_kind(path);
  // A dangling link loses nothing: a rename replaces the link, a stream creates its target.
  if (kind.empty() || dangling_link(path)) return;
  throw Error(path, "is " + kind +
                        ", not a regular file: the output cannot take its place; name another "
                        "path or move it away");
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  if (fs::exists(a, ec) && fs::exists(b, ec)) return fs::equivalent(a, b, ec);
  const fs::path ca = fs::weakly_canonical(a, ec);
  if (ec) return false;
  const fs::path cb = fs::weakly_canonical(b, ec);
  return !ec && ca == cb;
}

void check_not_an_input(const NamedPath& output, const std::vector<NamedPath>& inputs) {
  for (const NamedPath& input : inputs)
    check(input.path.empty() || !same_file(output.path, input.path), output.flag,
          output.path + " is the same file as " + input.flag + " " + input.path +
              ": writing it would destroy that input; name another file");
}

}  // namespace equivae
