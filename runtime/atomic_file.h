#pragma once
// Writes a whole file atomically: the bytes go to a temp file beside the target
// (path + ".tmp.<pid>"), which is flushed, fsynced and renamed over the target, then the
// directory is fsynced. A crash or a failed write leaves either the old file or the new
// one, never a torn file; on failure the temp file is removed and Error names the path.
#include <cstddef>
#include <string>

namespace equivae {

void write_file_atomically(const std::string& path, const void* bytes, size_t size);

}  // namespace equivae
