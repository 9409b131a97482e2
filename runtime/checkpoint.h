#pragma once
// Checkpoints in the safetensors format (https://github.com/huggingface/safetensors), so the
// weights open directly in PyTorch / JAX / NumPy tooling:
//   8-byte little-endian uint64 N | N bytes of JSON header | raw little-endian tensor data.
// Header: {"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
//          "__metadata__": {"key": "string value", ...}}; offsets are relative to the first
// byte after the header; the header is padded with spaces so the data starts 8-byte aligned.
// Only F32 is written or accepted: the engine stores every parameter and Adam moment in float.
//
// Integrity: the writer records the CRC-32 (zlib's) of the whole data section in the metadata
// as "crc32": "<8 lowercase hex digits>"; the reader verifies it and fails with "checksum
// mismatch: the file is corrupted". The key is the writer's own: save_checkpoint refuses it in
// the caller's metadata, and load_checkpoint removes it from the metadata it returns. Files
// without it (e.g. written by the safetensors package) load as before, unverified.
#include <cstdint>
#include <functional>
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
// Also throws (before touching the disk) on an empty, duplicate or "__metadata__" tensor name,
// a shape whose element count does not match the data, or a "crc32" metadata key (reserved).
// Tensor data goes out in chunks of at most kCheckpointWriteChunk bytes.
void save_checkpoint(const std::string& path, const Checkpoint& checkpoint);

// Reads and validates everything before trusting it: file shorter than 8 bytes, header length
// larger than the file or absurd (> 100 MB), header not JSON or not an object, duplicate names,
// unknown dtype (only F32), shape not non-negative ints, offsets out of order / overlapping /
// leaving gaps / beyond the file / not matching shape*4 bytes, data region size not equal to
// the last offset (truncated file or trailing bytes), metadata values not strings, JSON nested
// deeper than 64 levels, a malformed or mismatching "crc32". Each gives an Error naming the
// path and the fault. Every size is checked against the file's size before anything is
// allocated, so a header that declares a 100 GB tensor in a small file fails at once. Tensors
// come back in file (data offset) order.
Checkpoint load_checkpoint(const std::string& path);

// "[784, 512]", "[]" for a scalar: shapes in error messages.
std::string shape_text(const std::vector<int64_t>& shape);

constexpr uint64_t kCheckpointWriteChunk = uint64_t{1} << 20;

// Test hook (fault injection; not thread-safe, tests only): when set, save_checkpoint calls it
// before writing each chunk of tensor data to the temp file, with the number of data bytes
// written so far. Returning false fails that write as a full disk does (errno ENOSPC); the hook
// may also sleep or block, to let a test kill the process mid-write. An empty function unsets it.
using CheckpointWriteHook = std::function<bool(uint64_t data_bytes_written)>;
void set_checkpoint_write_hook(CheckpointWriteHook hook);

}  // namespace equivae
