#pragma once
// The directories the tools write into, and where an earlier run's files move so that a new
// run does not overwrite them.
#include <string>

namespace equivae {

// Creates dir and its parents. Throws Error naming the file in the way (dir itself, or a
// directory above it, being a file) or dir and the system's reason.
void create_output_directory(const std::string& dir);

// The first of dir/previous, dir/previous-2, dir/previous-3, … that does not exist yet (any
// entry of that name, a dangling link too, counts as taken): an earlier move is never
// overwritten.
std::string first_free_previous_dir(const std::string& dir);

// Whether a CSV file holds a row below its header (false for a missing file, an empty one or
// a header alone: an earlier run that finished nothing).
bool csv_has_rows(const std::string& path);

}  // namespace equivae
