#include "runtime/checkpoint.h"

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <nlohmann/json.hpp>
#include <set>

#include "runtime/atomic_file.h"
#include "runtime/error.h"
#include "runtime/path_checks.h"

namespace equivae {

// The data section is raw little-endian floats, written and read with fwrite/fread.
static_assert(std::endian::native == std::endian::little,
              "checkpoints assume a little-endian host");
static_assert(sizeof(float) == 4);

namespace {

// ordered_json keeps the header's key order: the writer emits tensors in checkpoint order,
// and the reader uses it to break ties between empty tensors sharing one offset.
using Json = nlohmann::ordered_json;

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // a real header is a few KB
constexpr const char* kMetadataKey = "__metadata__";
constexpr const char* kChecksumKey = "crc32";  // in __metadata__: CRC-32 of the data section
constexpr int kMaxJsonDepth = 64;              // a real header nests 3 deep

CheckpointWriteHook& write_hook() {
  static CheckpointWriteHook hook;
  return hook;
}

// zlib's crc32 takes a uInt length: feed it in pieces.
uint32_t crc32_update(uint32_t crc, const void* bytes, uint64_t n) {
  const auto* p = static_cast<const Bytef*>(bytes);
  while (n > 0) {
    const uInt piece = static_cast<uInt>(std::min<uint64_t>(n, uint64_t{1} << 30));
    crc = static_cast<uint32_t>(::crc32(crc, p, piece));
    p += piece;
    n -= piece;
  }
  return crc;
}

std::string hex32(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

// Exactly 8 hex digits (either case), as the writer records them.
bool parse_hex32(const std::string& text, uint32_t& value) {
  if (text.size() != 8) return false;
  value = 0;
  for (char c : text) {
    const int digit = c >= '0' && c <= '9'   ? c - '0'
                      : c >= 'a' && c <= 'f' ? c - 'a' + 10
                      : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                             : -1;
    if (digit < 0) return false;
    value = value << 4 | static_cast<uint32_t>(digit);
  }
  return true;
}

std::string errno_text() {
  return std::strerror(errno);
}

// Element count of a shape, or false if a dimension is negative or the count overflows.
bool element_count(const std::vector<int64_t>& shape, uint64_t& count) {
  count = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(count, static_cast<uint64_t>(d), &count)) return false;
  }
  return count <= (uint64_t{1} << 61);  // so that count * 4 bytes cannot overflow either
}

// Tensor data goes out in chunks, each announced to the test hook first (which may fail it
// as a full disk would).
bool write_data(AtomicFileWriter& out, const void* bytes, uint64_t n, uint64_t& written) {
  const auto* p = static_cast<const char*>(bytes);
  for (uint64_t done = 0; done < n;) {
    const uint64_t chunk = std::min(n - done, kCheckpointWriteChunk);
    if (write_hook() && !write_hook()(written)) {
      errno = ENOSPC;
      return false;
    }
    if (!out.write(p + done, chunk)) return false;
    done += chunk;
    written += chunk;
  }
  return true;
}

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};

// One tensor as declared by the header, before its data is read.
struct Entry {
  std::string name;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

Entry parse_entry(const std::string& path, const std::string& name, const Json& value) {
  const std::string where = "tensor '" + name + "'";
  auto fail = [&](const std::string& what) { throw Error(path, where + ": " + what); };
  if (name.empty()) fail("empty tensor name");
  if (!value.is_object()) fail("header entry is not an object");
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!value.contains(field)) fail(std::string("missing '") + field + "'");
  }
  const Json& dtype = value["dtype"];
  if (!dtype.is_string()) fail("dtype is not a string");
  if (dtype.get<std::string>() != "F32") {
    fail("unsupported dtype '" + dtype.get<std::string>() + "' (only F32 is accepted)");
  }
  Entry e;
  e.name = name;
  const Json& shape = value["shape"];
  if (!shape.is_array()) fail("shape is not an array");
  for (const Json& d : shape) {
    // nlohmann parses non-negative integers as unsigned; negatives and 2.0 are rejected.
    if (!d.is_number_unsigned() || d.get<uint64_t>() > uint64_t(INT64_MAX)) {
      fail("shape " + shape.dump() + " is not a list of non-negative integers");
    }
    e.shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
  }
  const Json& offsets = value["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    fail("data_offsets " + offsets.dump() + " is not a pair of non-negative integers");
  }
  e.begin = offsets[0].get<uint64_t>();
  e.end = offsets[1].get<uint64_t>();
  if (e.begin > e.end) fail("data_offsets " + offsets.dump() + " are out of order (begin > end)");
  uint64_t count = 0;
  if (!element_count(e.shape, count)) fail("shape " + shape.dump() + " is too large");
  if (e.end - e.begin != count * 4) {
    fail("data_offsets " + offsets.dump() + " span " + std::to_string(e.end - e.begin) +
         " bytes but shape " + shape.dump() + " of F32 needs " + std::to_string(count * 4));
  }
  return e;
}

}  // namespace

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

const NamedTensor& Checkpoint::get(const std::string& name) const {
  for (const NamedTensor& t : tensors) {
    if (t.name == name) return t;
  }
  throw Error("tensor '" + name + "'",
              "not found in the checkpoint (" + std::to_string(tensors.size()) + " tensors)");
}

void set_checkpoint_write_hook(CheckpointWriteHook hook) {
  write_hook() = std::move(hook);
}

void save_checkpoint(const std::string& path, const Checkpoint& checkpoint) {
  // Validate first, so a bad checkpoint never touches the disk.
  Json header = Json::object();
  header[kMetadataKey] = Json::object();  // first, as the safetensors package writes it
  for (const auto& [key, value] : checkpoint.metadata) header[kMetadataKey][key] = value;
  check(!checkpoint.metadata.count(kChecksumKey), path,
        "metadata key 'crc32' is reserved for the checksum the writer adds");
  std::set<std::string> names;
  uint64_t offset = 0;
  uint32_t crc = static_cast<uint32_t>(::crc32(0, Z_NULL, 0));
  for (const NamedTensor& t : checkpoint.tensors) {
    const std::string where = "tensor '" + t.name + "'";
    check(!t.name.empty(), path, "cannot save a tensor with an empty name");
    check(t.name != kMetadataKey, path, "cannot save a tensor named __metadata__");
    check(names.insert(t.name).second, path, "duplicate " + where);
    uint64_t count = 0;
    check(element_count(t.shape, count), path, where + ": invalid shape " + shape_text(t.shape));
    check(count == t.data.size(), path,
          where + ": shape " + shape_text(t.shape) + " has " + std::to_string(count) +
              " elements but the data has " + std::to_string(t.data.size()));
    header[t.name] = {
        {"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + 4 * count}}};
    offset += 4 * count;
    crc = crc32_update(crc, t.data.data(), 4 * count);
  }
  // Always written (an empty data section has CRC 00000000): its absence then means a file
  // from another writer, not a damaged one of ours.
  header[kMetadataKey][kChecksumKey] = hex32(crc);
  std::string text = header.dump();
  // Pad with spaces (the format allows trailing whitespace) so the data starts 8-byte aligned
  // and can be memory-mapped as floats by other readers.
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char length[8];
  for (int i = 0; i < 8; ++i)
    length[i] = static_cast<unsigned char>(uint64_t(text.size()) >> (8 * i));

  AtomicFileWriter out(path);
  bool ok = out.write(length, 8) && out.write(text.data(), text.size());
  uint64_t written = 0;
  for (size_t i = 0; ok && i < checkpoint.tensors.size(); ++i) {
    const std::vector<float>& data = checkpoint.tensors[i].data;
    ok = write_data(out, data.data(), data.size() * sizeof(float), written);
  }
  if (!ok) out.throw_write_error();
  out.commit();
}

Checkpoint load_checkpoint(const std::string& path) {
  check_input_file(path);  // a FIFO would block the open below
  std::unique_ptr<FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (!file) throw Error(path, "cannot open checkpoint: " + errno_text());
  struct stat st {};
  if (::fstat(::fileno(file.get()), &st) != 0 || !S_ISREG(st.st_mode)) {
    throw Error(path, "not a regular file");
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    throw Error(path, "file is " + std::to_string(file_size) +
                          " bytes, shorter than the 8-byte header length (truncated?)");
  }
  unsigned char length[8];
  if (std::fread(length, 1, 8, file.get()) != 8) throw Error(path, "cannot read header length");
  uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= uint64_t(length[i]) << (8 * i);
  if (header_size > kMaxHeaderBytes) {
    throw Error(path, "header length " + std::to_string(header_size) +
                          " is absurd (> 100 MB): not a safetensors file?");
  }
  if (header_size > file_size - 8) {
    throw Error(path, "header length " + std::to_string(header_size) + " exceeds the file (" +
                          std::to_string(file_size) + " bytes; truncated?)");
  }
  std::string text(header_size, '\0');
  if (std::fread(text.data(), 1, header_size, file.get()) != header_size) {
    throw Error(path, "cannot read the header");
  }

  // A JSON object silently keeps one of two duplicate keys; a checkpoint with two tensors of
  // the same name is corrupt, so catch them while parsing (top-level keys are at depth 1).
  std::set<std::string> keys;
  // Deep nesting is refused as well: nothing in a header nests more than 3 levels, and
  // printing a deeply nested value in an error message (dump) recurses once per level.
  const Json::parser_callback_t reject_duplicates = [&](int depth, Json::parse_event_t event,
                                                        Json& parsed) {
    if ((event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) &&
        depth >= kMaxJsonDepth) {
      throw Error(path, "header nests JSON deeper than " + std::to_string(kMaxJsonDepth) +
                            " levels: not a safetensors header");
    }
    if (event == Json::parse_event_t::key && depth == 1 &&
        !keys.insert(parsed.get<std::string>()).second) {
      throw Error(path, "duplicate header entry '" + parsed.get<std::string>() + "'");
    }
    return true;
  };
  Json header;
  try {
    header = Json::parse(text, reject_duplicates);
  } catch (const Json::exception& e) {
    throw Error(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) throw Error(path, "header is not a JSON object");

  Checkpoint checkpoint;
  std::vector<Entry> entries;
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      if (!value.is_object()) throw Error(path, "__metadata__ is not an object");
      for (const auto& [mkey, mvalue] : value.items()) {
        if (!mvalue.is_string()) {
          throw Error(path, "metadata value for '" + mkey + "' is not a string: " + mvalue.dump());
        }
        checkpoint.metadata[mkey] = mvalue.get<std::string>();
      }
    } else {
      entries.push_back(parse_entry(path, key, value));
    }
  }

  // The format requires the tensors to tile the data region exactly: sorted by offset, each
  // starts where the previous ended, the first at 0, the last at the end of the file.
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin < b.begin || (a.begin == b.begin && a.end < b.end);
  });
  uint64_t expected = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.begin < expected) {
      throw Error(path, "tensor '" + e.name + "' data_offsets [" + std::to_string(e.begin) + ", " +
                            std::to_string(e.end) + "] overlap tensor '" + entries[i - 1].name +
                            "'");
    }
    if (e.begin > expected) {
      throw Error(path, "gap of " + std::to_string(e.begin - expected) +
                            " unindexed bytes before tensor '" + e.name + "'");
    }
    expected = e.end;
  }
  const uint64_t data_size = file_size - 8 - header_size;
  if (expected > data_size) {
    const auto beyond = std::find_if(entries.begin(), entries.end(),
                                     [&](const Entry& e) { return e.end > data_size; });
    throw Error(path, "truncated file: tensor '" + beyond->name + "' ends at data byte " +
                          std::to_string(beyond->end) + " beyond the " + std::to_string(data_size) +
                          " data bytes the file holds");
  }
  if (expected < data_size) {
    throw Error(path, std::to_string(data_size - expected) +
                          " trailing bytes after the last tensor (the header indexes " +
                          std::to_string(expected) + " data bytes)");
  }

  // The checksum's text is checked before the data is read: a damaged value is not worth
  // reading megabytes for.
  bool verify = false;
  uint32_t recorded = 0;
  if (auto it = checkpoint.metadata.find(kChecksumKey); it != checkpoint.metadata.end()) {
    if (!parse_hex32(it->second, recorded)) {
      throw Error(path, "malformed checksum: metadata crc32 '" + it->second +
                            "' is not 8 hex digits (the file is corrupted)");
    }
    verify = true;
    checkpoint.metadata.erase(it);
  }

  // Everything is consistent, and the tensors together fit in the file's data section (so no
  // allocation below exceeds the file's size); now the data can be read in one sequential pass.
  uint32_t crc = static_cast<uint32_t>(::crc32(0, Z_NULL, 0));
  for (Entry& e : entries) {
    NamedTensor t;
    t.name = std::move(e.name);
    t.shape = std::move(e.shape);
    try {
      t.data.resize((e.end - e.begin) / 4);
    } catch (const std::bad_alloc&) {
      throw Error(path, "out of memory allocating " + std::to_string(e.end - e.begin) +
                            " bytes for tensor '" + t.name + "'");
    }
    if (!t.data.empty() &&
        std::fread(t.data.data(), sizeof(float), t.data.size(), file.get()) != t.data.size()) {
      throw Error(path, "truncated file: short read in tensor '" + t.name + "'");
    }
    crc = crc32_update(crc, t.data.data(), e.end - e.begin);
    checkpoint.tensors.push_back(std::move(t));
  }
  if (verify && crc != recorded) {
    throw Error(path, "checksum mismatch: the file is corrupted (crc32 of its " +
                          std::to_string(data_size) + " data bytes is " + hex32(crc) +
                          ", the header records " + hex32(recorded) + ")");
  }
  return checkpoint;
}

}  // namespace equivae
