#pragma once
// Files written atomically: the bytes go to a temp file beside the target
// (path + ".tmp.<pid>", flock-ed by its writer until renamed), which is flushed, fsynced and
// renamed over the target, then the directory is fsynced. A crash or a failed write leaves either
// the old file or the new one, never a torn file; on failure the temp file is removed and Error
// names the path.
#include <cstddef>
#include <cstdio>
#include <string>
#include <vector>

namespace equivae {

// The streaming form (checkpoints write tensor after tensor):
//   AtomicFileWriter out(path);  out.write(...) ...;  out.commit();
// Destroyed without commit() (an exception on the way), it removes its temp file.
class AtomicFileWriter {
 public:
  // Creates the temp file; throws Error naming the path, before anything is created, when
  // the path is empty or names a directory, a device node, a FIFO or a socket.
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  // False on a failed write (errno says why); the caller then throws write_error().
  bool write(const void* bytes, size_t n);
  // The Error for a failed write, naming the temp file and errno's text.
  [[noreturn]] void throw_write_error() const;
  // fflush + fsync, rename over the target, close, fsync the directory; throws Error.
  void commit();
  const std::string& temp_path() const { return temp_; }

 private:
  std::string path_, temp_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

// The whole file at once.
void write_file_atomically(const std::string& path, const void* bytes, size_t size);

// The temp files of writes into dir of the files `names` that their process left behind
// (killed mid-write, or a second Ctrl-C): dir/NAME.tmp.<pid> whose process no longer runs and
// whose lock no writer holds (a live writer in another PID namespace keeps it). Removes them
// and returns their paths.
std::vector<std::string> remove_stale_temp_files(const std::string& dir,
                                                 const std::vector<std::string>& names);

}  // namespace equivae
