#include "runtime/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "runtime/error.h"
#include "runtime/path_checks.h"

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

// A target that cannot become a file is refused before the temp file exists: the rename
// would refuse it only after every byte was written, in words about the temp file.
void check_target(const std::string& path) {
  check(!path.empty(), "", "cannot write a file at an empty path");
  std::error_code ec;
  check(!std::filesystem::is_directory(path, ec), path,
        "cannot rename a file over it: it is a directory");
  check(std::filesystem::path(path).has_filename(), path,
        "names a directory (it ends in '/'), not a file to write");
  check_output_file(path);  // the rename would replace a device node or a FIFO with a file
}

constexpr char kTempInfix[] = ".tmp.";

std::string temp_path_of(const std::string& path) {
  return path + kTempInfix + std::to_string(::getpid());
}

// The writer's process of a temp file name NAME.tmp.<pid> of one of `names`; 0 for any other.
pid_t temp_file_owner(const std::string& file, const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    const std::string prefix = name + kTempInfix;
    if (file.size() <= prefix.size() || file.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string pid = file.substr(prefix.size());
    if (pid.size() > 9 ||
        !std::all_of(pid.begin(), pid.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return 0;
    return pid_t(std::stol(pid));
  }
  return 0;
}

// Whether process pid runs (EPERM: it does, as another user's).
bool process_runs(pid_t pid) {
  return ::kill(pid, 0) == 0 || errno == EPERM;
}

// Whether a writer holds the lock every AtomicFileWriter takes on its temp file: the word of a
// live writer whose PID means nothing here (another PID namespace sharing the directory).
// Locks go with their process, so a dead writer's file is free; a file system without locks
// answers "free", leaving the PID as the only evidence.
bool held_by_a_writer(const std::string& temp) {
  int fd = ::open(temp.c_str(), O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) fd = ::open(temp.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return false;
  const bool held = ::flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);  // releases the lock if this took it
  return held;
}

}  // namespace

std::vector<std::string> remove_stale_temp_files(const std::string& dir,
                                                 const std::vector<std::string>& names) {
  namespace fs = std::filesystem;
  std::vector<std::string> removed;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const pid_t owner = temp_file_owner(it->path().filename().string(), names);
    std::error_code kind;
    if (owner <= 0 || process_runs(owner) || !it->is_regular_file(kind) ||
        held_by_a_writer(it->path().string()))
      continue;
    if (fs::remove(it->path(), kind)) removed.push_back(it->path().string());
  }
  return removed;
}

AtomicFileWriter::AtomicFileWriter(std::string path)
    : path_(std::move(path)), temp_(temp_path_of(path_)) {
  check_target(path_);
  // Opened without truncating, then locked (held until the file has its final name, or is
  // gone: it marks the file as in use), then emptied: a writer of another PID namespace with
  // the same PID, writing the same name, holds the lock, and its bytes are not cut short.
  // CLOEXEC: no child process inherits the file, nor its lock.
  const int fd = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) throw Error(path_, "cannot create temp file " + temp_ + ": " + errno_text());
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
    ::close(fd);
    throw Error(path_, "another writer is writing it (its temp file " + temp_ +
                           " is locked): one writer per file at a time");
  }
  // A file system without locks leaves the PID as the only mark (remove_stale_temp_files).
  if (::ftruncate(fd, 0) != 0 || !(file_ = ::fdopen(fd, "wb"))) {
    const std::string why = errno_text();
    ::unlink(temp_.c_str());  // this writer's own: the lock above is held
    ::close(fd);
    throw Error(path_, "cannot create temp file " + temp_ + ": " + why);
  }
}

AtomicFileWriter::~AtomicFileWriter() {
  if (file_) std::fclose(file_);
  if (!committed_) ::unlink(temp_.c_str());
}

bool AtomicFileWriter::write(const void* bytes, size_t n) {
  return n == 0 || std::fwrite(bytes, 1, n, file_) == n;
}

void AtomicFileWriter::throw_write_error() const {
  throw Error(path_, "cannot write temp file " + temp_ + ": " + errno_text());
}

void AtomicFileWriter::commit() {
  // The data is on disk before the rename makes it visible.
  const bool synced = std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
  if (!synced) throw Error(path_, "cannot flush temp file " + temp_ + ": " + errno_text());
  // Renamed while still open, so its lock marks it in use until it no longer has a temp name.
  if (std::rename(temp_.c_str(), path_.c_str()) != 0)
    throw Error(path_, "cannot rename " + temp_ + " over it: " + errno_text());
  committed_ = true;
  const bool closed = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!closed) throw Error(path_, "written, but closing it failed: " + errno_text());
  if (!fsync_directory_of(path_))
    throw Error(path_, "written, but syncing its directory failed: " + errno_text());
}

void write_file_atomically(const std::string& path, const void* bytes, size_t size) {
  AtomicFileWriter out(path);
  if (!out.write(bytes, size)) out.throw_write_error();
  out.commit();
}

}  // namespace equivae
