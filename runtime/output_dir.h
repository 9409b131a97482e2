#pragma once
// The directories the tools write into, and where an earlier run's files move so that a new
// run does not overwrite them.
#include <string>
#include <utility>
#include <vector>

namespace equivae {

// Creates dir and its parents. Throws Error naming the file in the way (dir itself, or a
// directory above it, being a file) or dir and the system's reason; with `flag` ("--out"),
// the error names the flag first.
void create_output_directory(const std::string& dir, const std::string& flag = "");

// An output directory that a tool creates before its work, so that a path that cannot hold
// its files fails first, and writes into at the end: if the tool fails in between (an
// exception leaves the scope), the directories this one created are removed again while
// they are empty, so a failed run leaves nothing behind.
class ScopedOutputDirectory {
 public:
  // create_output_directory(dir, flag), remembering which directories did not exist yet.
  ScopedOutputDirectory(const std::string& dir, const std::string& flag);
  ScopedOutputDirectory(ScopedOutputDirectory&& other) noexcept;
  ScopedOutputDirectory(const ScopedOutputDirectory&) = delete;
  ScopedOutputDirectory& operator=(const ScopedOutputDirectory&) = delete;
  ScopedOutputDirectory& operator=(ScopedOutputDirectory&&) = delete;
  ~ScopedOutputDirectory();

  const std::string& path() const { return dir_; }

 private:
  void remove_created() noexcept;

  std::string dir_;
  std::vector<std::string> created_;  // dir and the parents made for it, deepest first
  int exceptions_at_start_ = 0;
};

// Entries of a directory moved into its first free previous directory.
struct MovedAside {
  std::string dir;                                           // "": nothing moved
  std::vector<std::pair<std::string, std::string>> entries;  // from, to
  // Puts the entries back and removes the (then empty) previous directory: nothing moved.
  void undo() noexcept;
};

// Moves the entries `names` of dir (files or directories) into the first of dir/previous,
// dir/previous-2, … that does not exist yet (any entry of that name, a dangling link too,
// counts as taken: an earlier move is never overwritten), which it creates. A move that fails is
// undone, and throws Error naming the entry and why.
MovedAside move_to_previous(const std::string& dir, const std::vector<std::string>& names);

// Removes the partial files that writes of `names` into dir left when their process was killed
// mid-write (runtime/atomic_file.h: NAME.tmp.<pid> of a process that no longer runs), and says
// so in one line on stderr unless quiet.
void remove_stale_temp_files_noting(const std::string& dir, const std::vector<std::string>& names,
                                    bool quiet = false);

// Whether a CSV file holds a row below its header (false for a missing file, an empty one or
// a header alone: an earlier run that finished nothing).
bool csv_has_rows(const std::string& path);

}  // namespace equivae
