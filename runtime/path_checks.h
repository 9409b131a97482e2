#pragma once
// What stands at the paths the tools read and write. An input must be a regular file (a
// symbolic link to one is fine): opening a FIFO waits for a writer forever, and a directory or
// a device fails obscurely or never ends. An output may replace only a regular file: renaming
// over a device node or a FIFO destroys it. And no output may be one of the tool's inputs.
#include <string>
#include <vector>

namespace equivae {

// What is at path when it is neither a regular file (nor a link to one) nor absent, in words
// that follow "it is": "a directory", "a FIFO (named pipe)", "a socket", "a character device",
// "a block device", "a dangling symbolic link to T"; "" otherwise.
std::string non_regular_kind(const std::string& path);

// "NAME is there but is KIND, not a regular file" (NAME: path's file name) when path's entry is
// there but is no file to read, for a search that names what it found; "" otherwise.
std::string not_a_file_to_read(const std::string& path);

// Throws Error(path, "cannot open: is a FIFO (named pipe), not a regular file") when something
// other than a regular file is there; a missing file is left to the open, which says so.
void check_input_file(const std::string& path);

// Throws Error naming path when something other than a regular file is there (a missing
// file is fine: the output creates it).
void check_output_file(const std::string& path);

// A file a tool reads or writes, and the flag (or words) that named it: "--checkpoint".
struct NamedPath {
  std::string flag, path;
};

// Whether a and b are one file: the same inode when both exist, else the same path once
// made absolute and normalized (symbolic links of the existing part resolved).
bool same_file(const std::string& a, const std::string& b);

// Throws Error naming both flags and paths when output is the same file as one of inputs:
// writing it would destroy that input.
void check_not_an_input(const NamedPath& output, const std::vector<NamedPath>& inputs);

}  // namespace equivae
