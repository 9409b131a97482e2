#pragma once
// Checkpoints in the safetensors format (https://github.com/huggingface/safetensors), so the
// weights open directly in PyTorch / JAX / NumPy tooling:
//   8-byte little-endian uint64 N | N bytes of JSON header | raw little-endian tensor data.
// Header: {"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
//          "__metadata__": {"key": "string value", ...}}; offsets are relative to the first
// byte after the header; the header is padded with spaces so the data starts 8-byte aligned.
// Only F32 is written or accepted: the engine stores every parameter and Adam moment in float.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace equivae {

struct NamedTensor {
  std::string name;
  std::vector<int64_t> shape;  // [] is a scalar (one element); a 0 extent means no elements
  std::vector<float> data;     // row-major, product(shape) elements
};

struct Checkpoint {
  std::vector<NamedTensor> tensors;  // in file order
  std::map<std::string, std::string> metadata;
  // Throws Error naming the missing tensor.
  const NamedTensor& get(const std::string& name) const;
};

// Writes atomically: a temp file beside the target (path + ".tmp.<pid>"), fwrite, fflush,
// fsync, close, rename over the target, then fsync the directory, so a crash at any moment
// leaves either the old checkpoint or the new one, never a torn file. On any failure the temp
// file is removed and the previous file at path stays untouched; throws Error naming the path.
// Also throws (before touching the disk) on an empty, duplicate or "__metadata__" tensor name
// or a shape whose element count does not match the data.
void save_checkpoint(const std::string& path, const Checkpoint& checkpoint);

// Reads and validates everything before trusting it: file shorter than 8 bytes, header length
// larger than the file or absurd (> 100 MB), header not JSON or not an object, duplicate names,
// unknown dtype (only F32), shape not non-negative ints, offsets out of order / overlapping /
// leaving gaps / beyond the file / not matching shape*4 bytes, data region size not equal to
// the last offset (truncated file or trailing bytes), metadata values not strings. Each gives an
// Error naming the path and the fault. Tensors come back in file (data offset) order.
Checkpoint load_checkpoint(const std::string& path);

}  // namespace equivae
