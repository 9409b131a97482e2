#include "runtime/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "runtime/error.h"

namespace equivae {
namespace {

std::string errno_text() {
  return std::strerror(errno);
}

// Makes the rename itself durable: without it a crash can forget the new directory entry.
bool fsync_directory_of(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::fsync(fd) == 0;
  return ::close(fd) == 0 && ok;
}

}  // namespace

void write_file_atomically(const std::string& path, const void* bytes, size_t size) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::FILE* file = std::fopen(tmp.c_str(), "wb");
  if (!file) throw Error(path, "cannot create temp file " + tmp + ": " + errno_text());
  bool ok = size == 0 || std::fwrite(bytes, 1, size, file) == size;
  ok = ok && std::fflush(file) == 0 && ::fsync(::fileno(file)) == 0;  // on disk before rename
  std::string why = ok ? "" : errno_text();
  if (std::fclose(file) != 0 && ok) ok = false, why = errno_text();
  if (!ok) {
    ::unlink(tmp.c_str());
    throw Error(path, "cannot write temp file " + tmp + ": " + why);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp.c_str());
    throw Error(path, "cannot rename " + tmp + " over it: " + why);
  }
  if (!fsync_directory_of(path))
    throw Error(path, std::string("cannot fsync its directory: ") + errno_text());
}

}  // namespace equivae
