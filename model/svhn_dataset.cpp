// SVHN .mat reader in two passes. First a scan of our own walks the MAT 5 file: the 128-byte
// header, every top-level element's tag against the file size, every variable's header
// (array flags, dimensions, name, data tag; the first few KiB inflated for a compressed one),
// and the whole zlib stream of X and y, counted without being kept. Only a file that passes
// reaches libmatio, which then reads X and y. The scan exists because libmatio alone reads a
// compressed stream that ends early, or an uncompressed X whose data runs into the next
// variable, silently (zeros or the wrong bytes), allocates what the dimensions declare before
// finding out, and on a file it does not recognise as MAT 5 falls back to its v4 and HDF5
// parsers. See svhn_dataset.h for the format and the layout.
#include "model/svhn_dataset.h"

#include <matio.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <vector>

#include "runtime/error.h"
#include "runtime/generated_iterator.h"
#include "runtime/path_checks.h"

namespace equivae {
namespace {

// MAT 5 element types (data element tags) and array classes (the array flags' low byte).
constexpr uint32_t miINT8 = 1, miUINT8 = 2, miINT32 = 5, miUINT32 = 6, miMATRIX = 14,
                   miCOMPRESSED = 15;
constexpr uint32_t mxCHAR = 4, mxDOUBLE = 6, mxUINT8 = 9, mxUINT64 = 15;
constexpr uint32_t kComplexFlag = 0x0800;

constexpr size_t kFileHeader = 128;  // text, subsystem offset, version, endian indicator
constexpr int kSide = 32, kPlanes = 3;
constexpr uint64_t kImageBytes = kSide * kSide * kPlanes;  // 3072
// A variable's header (array flags, dimensions, name, data tag) must fit in this many bytes:
// SVHN's take 56. It bounds what the scan inflates per variable and libmatio's allocations.
constexpr uint32_t kMaxVariableHeader = 4096;
// Deflate's best case is 1032:1 (258-byte matches in 2 bits each): a compressed element that
// declares more than this many times its size lies, and is refused before it is inflated.
constexpr uint64_t kMaxDeflateRatio = 1032;

const char* class_name(uint32_t c) {
  static const char* const names[] = {
      "unknown class 0", "cell array",      "struct",       "object", "char",
      "sparse",          "double",          "single",       "int8",   "uint8",
      "int16",           "uint16",          "int32",        "uint32", "int64",
      "uint64",          "function handle", "opaque object"};
  return c < std::size(names) ? names[c] : "unknown class";
}

// Bytes per element of a numeric MAT data type (miINT8 .. miUINT64), 0 for any other type.
size_t numeric_type_size(uint32_t t) {
  //   types 1-7: int8 uint8 int16 uint16 int32 uint32 single; 9: double; 12-13: int64 uint64
  static const uint8_t sizes[] = {0, 1, 1, 2, 2, 4, 4, 4, 0, 8, 0, 0, 8, 8};
  return t < std::size(sizes) ? sizes[t] : 0;
}

std::string type_name(uint32_t t) {
  static const char* const names[] = {
      "type 0",   "miINT8",       "miUINT8",  "miINT16", "miUINT16", "miINT32", "miUINT32",
      "miSINGLE", "type 8",       "miDOUBLE", "type 10", "type 11",  "miINT64", "miUINT64",
      "miMATRIX", "miCOMPRESSED", "miUTF8",   "miUTF16", "miUTF32"};
  return t < std::size(names) ? names[t] : "type " + std::to_string(t);
}

// A name from the file as it can be printed: non-printable bytes escaped, long names cut.
std::string printable(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 64; ++i) {
    const unsigned char c = s[i];
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (s.size() > 64) out += "...";
  return out;
}

std::string dims_text(const std::vector<uint32_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i > 0) s += 'x';
    s += std::to_string(dims[i]);
  }
  return s;
}

uint64_t round8(uint64_t n) {
  return (n + 7) / 8 * 8;
}

// The open file: its size, and reads at an offset that must be satisfied in full.
class File {
 public:
  explicit File(const std::string& path) : path_(path), f_(nullptr, std::fclose) {
    check_input_file(path);  // a FIFO would block the open, a directory fail the read
    f_.reset(std::fopen(path.c_str(), "rb"));
    if (!f_) throw Error(path, std::string("cannot open: ") + std::strerror(errno));
    if (fseeko(f_.get(), 0, SEEK_END) != 0 || (size_ = ftello(f_.get())) < 0)
      throw Error(path, std::string("cannot measure its size: ") + std::strerror(errno));
  }
  uint64_t size() const { return static_cast<uint64_t>(size_); }
  // Reads n bytes at offset; the scan only asks for bytes inside the size measured at open.
  void read(uint64_t offset, void* out, size_t n) const {
    if (fseeko(f_.get(), static_cast<off_t>(offset), SEEK_SET) != 0 ||
        std::fread(out, 1, n, f_.get()) != n) {
      throw Error(path_,
                  "read error at byte " + std::to_string(offset) + " (" + std::to_string(n) +
                      " bytes): " + (std::ferror(f_.get()) ? std::strerror(errno) : "file shrank"));
    }
  }

 private:
  std::string path_;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f_;
  off_t size_ = 0;
};

// MAT files say their byte order in the header ("IM": little-endian writer, "MI": big).
struct ByteOrder {
  bool big = false;
  uint32_t u32(const uint8_t* p) const {
    return big ? uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3]
               : uint32_t{p[3]} << 24 | uint32_t{p[2]} << 16 | uint32_t{p[1]} << 8 | p[0];
  }
  uint16_t u16(const uint8_t* p) const {
    return static_cast<uint16_t>(big ? p[0] << 8 | p[1] : p[1] << 8 | p[0]);
  }
};

// Inflates one miCOMPRESSED element's zlib stream straight from the file, a chunk at a time.
class Inflater {
 public:
  Inflater(const File& file, const std::string& path, uint64_t offset, uint32_t nbytes,
           std::string what)
      : file_(file),
        path_(path),
        what_(std::move(what)),
        next_(offset),
        left_(nbytes),
        total_(nbytes) {
    if (inflateInit(&z_) != Z_OK) throw Error(path_, what_ + ": zlib inflateInit failed");
  }
  ~Inflater() { inflateEnd(&z_); }
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;

  // Inflates up to n bytes into out; fewer only when the stream ends, which must then be
  // exactly where the element ends.
  size_t read(uint8_t* out, size_t n) {
    z_.next_out = out;
    z_.avail_out = static_cast<uInt>(n);
    while (z_.avail_out > 0 && !ended_) {
      if (z_.avail_in == 0 && left_ > 0) {
        const size_t chunk = std::min<uint64_t>(left_, in_.size());
        file_.read(next_, in_.data(), chunk);
        next_ += chunk;
        left_ -= chunk;
        z_.next_in = in_.data();
        z_.avail_in = static_cast<uInt>(chunk);
      }
      const int ret = inflate(&z_, Z_NO_FLUSH);
      if (ret == Z_STREAM_END) {
        ended_ = true;
        const uint64_t after = z_.avail_in + left_;
        check(after == 0, path_,
              what_ + ": " + std::to_string(after) + " bytes of its " + std::to_string(total_) +
                  " compressed bytes follow the end of its zlib stream");
      } else if (ret == Z_BUF_ERROR && z_.avail_in == 0 && left_ == 0) {
        throw Error(path_, what_ + ": truncated compressed element: its " + std::to_string(total_) +
                               " compressed bytes end before its zlib stream does (" +
                               std::to_string(z_.total_out) + " bytes inflated)");
      } else if (ret != Z_OK) {  // Z_OK always makes progress; anything else is damage
        throw Error(path_, what_ + ": corrupt compressed element: zlib: " +
                               (z_.msg               ? z_.msg
                                : ret == Z_NEED_DICT ? "needs a dictionary"
                                                     : "no progress") +
                               " (after " + std::to_string(total_ - left_ - z_.avail_in) + " of " +
                               std::to_string(total_) + " compressed bytes)");
      }
    }
    return n - z_.avail_out;
  }
  uint64_t inflated() const { return z_.total_out; }

 private:
  const File& file_;
  const std::string& path_;
  std::string what_;
  uint64_t next_, left_, total_;
  z_stream z_{};
  bool ended_ = false;
  std::array<uint8_t, 1 << 16> in_;
};

// One top-level variable as the scan found it.
struct Variable {
  std::string name;
  uint64_t offset = 0;         // of its element tag in the file
  bool compressed = false;     // a miCOMPRESSED element holding the miMATRIX one
  uint32_t element_bytes = 0;  // after the element tag (compressed bytes when compressed)
  uint32_t matrix_bytes = 0;   // the miMATRIX contents after its tag (inflated)
  uint32_t cls = 0;            // mx* array class
  bool complex = false;
  std::vector<uint32_t> dims;
  uint32_t data_type = 0;  // the real part's subelement (numeric classes only)
  uint32_t data_bytes = 0;
  std::string where() const {
    return "variable '" + printable(name) + "' (element at byte " + std::to_string(offset) + ")";
  }
  uint64_t elements() const {
    uint64_t n = 1;
    for (uint32_t d : dims) n *= d;  // each < 2^31, and callers check the rank first
    return n;
  }
};

// A subelement tag inside a variable: normal (8-byte tag, data padded to 8) or small (type and
// size in 4 bytes, up to 4 bytes of data in the other 4).
struct Tag {
  uint32_t type = 0, nbytes = 0;
  uint64_t data = 0;  // where its data starts
  uint64_t end = 0;   // where the next subelement starts
};

// Walks the subelements of one variable's contents (the bytes after its miMATRIX tag).
class VariableParser {
 public:
  VariableParser(const std::string& path, Variable& v, const uint8_t* bytes, size_t available,
                 const ByteOrder& order)
      : path_(path), v_(v), bytes_(bytes), available_(available), order_(order) {}

  void parse() {
    const Tag flags = tag("array flags");
    expect(flags.type == miUINT32 && flags.nbytes == 8, "array flags", flags, "miUINT32, 8");
    const uint32_t word = order_.u32(bytes_ + flags.data);
    v_.cls = word & 0xff;
    v_.complex = (word & kComplexFlag) != 0;

    const Tag dims = tag("dimensions");
    expect(dims.type == miINT32 && dims.nbytes % 4 == 0 && dims.nbytes > 0, "dimensions", dims,
           "miINT32, 4 per dimension");
    for (uint32_t i = 0; i < dims.nbytes / 4; ++i) {
      const int32_t d = static_cast<int32_t>(order_.u32(bytes_ + dims.data + 4 * i));
      check(d >= 0, path_,
            where() + ": dimension " + std::to_string(i + 1) + " is negative (" +
                std::to_string(d) + ")");
      v_.dims.push_back(static_cast<uint32_t>(d));
    }

    const Tag name = tag("name");
    expect(name.type == miINT8, "name", name, "miINT8");
    // Up to the first NUL, as libmatio (C strings) sees it: "X\0junk" is a second X to it.
    const char* text = reinterpret_cast<const char*>(bytes_ + name.data);
    v_.name.assign(text, std::find(text, text + name.nbytes, '\0'));
    named_ = true;

    // Numeric arrays go on with their data; others (char) need nothing more from the scan.
    if (v_.cls >= mxDOUBLE && v_.cls <= mxUINT64) {
      const Tag data = tag("data", /*numeric_data=*/true);
      v_.data_type = data.type;
      v_.data_bytes = data.nbytes;
    }
  }

 private:
  std::string where() const {
    return named_ ? v_.where() : "element at byte " + std::to_string(v_.offset);
  }
  void need(uint64_t end, const char* what) {
    check(end <= v_.matrix_bytes, path_,
          where() + ": its " + what + " subelement runs past the end of the variable (byte " +
              std::to_string(end) + " of " + std::to_string(v_.matrix_bytes) + ")");
    check(end <= available_, path_,
          where() + ": its header is longer than " + std::to_string(kMaxVariableHeader) +
              " bytes (" + what + " subelement)");
  }
  // The subelement tag at the current position. The whole subelement must be inside the
  // variable and, unless it is the numeric data (whose tag is all the scan reads), inside the
  // scanned header.
  Tag tag(const char* what, bool numeric_data = false) {
    need(pos_ + 8, what);
    const uint32_t first = order_.u32(bytes_ + pos_);
    Tag t;
    if (first >> 16 != 0) {  // small data element
      t.type = first & 0xffff;
      t.nbytes = first >> 16;
      check(t.nbytes <= 4, path_,
            where() + ": its " + what + " subelement is a small data element of " +
                std::to_string(t.nbytes) + " bytes (at most 4)");
      t.data = pos_ + 4;
      t.end = pos_ + 8;
    } else {
      t.type = first;
      t.nbytes = order_.u32(bytes_ + pos_ + 4);
      t.data = pos_ + 8;
      t.end = pos_ + 8 + round8(t.nbytes);
    }
    if (numeric_data) {
      check(t.data + t.nbytes <= v_.matrix_bytes, path_,
            where() + ": its data subelement (" + std::to_string(t.nbytes) +
                " bytes) runs past the end of the variable (" + std::to_string(v_.matrix_bytes) +
                " bytes)");
    } else {
      need(t.end, what);
    }
    pos_ = t.end;
    return t;
  }
  void expect(bool ok, const char* what, const Tag& t, const char* wanted) {
    check(ok, path_,
          where() + ": its " + what + " subelement is " + type_name(t.type) + ", " +
              std::to_string(t.nbytes) + " bytes; expected " + wanted);
  }

  const std::string& path_;
  Variable& v_;
  const uint8_t* bytes_;
  size_t available_;
  const ByteOrder& order_;
  uint64_t pos_ = 0;
  bool named_ = false;
};

// The 128-byte header: MAT 5 (version 0x0100) in either byte order, or a clear refusal.
ByteOrder check_file_header(const File& file, const std::string& path) {
  const uint64_t size = file.size();
  check(size > 0, path, "empty file (0 bytes), expected a MAT file");
  check(size >= kFileHeader, path,
        "not a MAT file: " + std::to_string(size) + " bytes, shorter than the " +
            std::to_string(kFileHeader) + "-byte MAT 5 header");
  std::array<uint8_t, kFileHeader> h;
  file.read(0, h.data(), h.size());
  ByteOrder order;
  if (h[126] == 'I' && h[127] == 'M') {
    order.big = false;
  } else if (h[126] == 'M' && h[127] == 'I') {
    order.big = true;
  } else {
    char found[16];
    std::snprintf(found, sizeof found, "0x%02x%02x", h[126], h[127]);
    throw Error(path, std::string("not a MAT 5 file: bytes 126-127 are ") + found +
                          ", where a MAT 5 header has 'IM' or 'MI' (a MAT v4 file, or not a "
                          "MAT file at all)");
  }
  const uint16_t version = order.u16(h.data() + 124);
  if (version == 0x0200) {
    throw Error(path,
                "MAT v7.3 file (HDF5) is not supported: save it with -v7 (MAT 5, as the "
                "official SVHN files are)");
  }
  if (version != 0x0100) {
    char found[16];
    std::snprintf(found, sizeof found, "0x%04x", version);
    throw Error(path,
                std::string("not a MAT 5 file: header version ") + found + ", expected 0x0100");
  }
  return order;
}

// One top-level element at offset: its tag and its variable's header.
Variable scan_element(const File& file, const std::string& path, const ByteOrder& order,
                      uint64_t offset) {
  const uint64_t size = file.size();
  Variable v;
  v.offset = offset;
  const std::string at = "element at byte " + std::to_string(offset);
  check(size - offset >= 8, path,
        "truncated: " + std::to_string(size - offset) + " bytes at byte " + std::to_string(offset) +
            " after the last element, too few for an element tag (8)");
  uint8_t tag[8];
  file.read(offset, tag, 8);
  const uint32_t type = order.u32(tag);
  v.element_bytes = order.u32(tag + 4);
  check(type == miMATRIX || type == miCOMPRESSED, path,
        at + " is " + type_name(type) +
            ", expected miMATRIX or miCOMPRESSED (a variable); the file is damaged");
  check(v.element_bytes <= size - offset - 8, path,
        "truncated: " + at + " declares " + std::to_string(v.element_bytes) +
            " bytes, the file ends " + std::to_string(size - offset - 8) + " bytes after its tag");
  v.compressed = type == miCOMPRESSED;

  std::vector<uint8_t> header;  // the variable's contents after its miMATRIX tag, at most 4 KiB
  if (!v.compressed) {
    check(v.element_bytes % 8 == 0, path,
          at + ": miMATRIX of " + std::to_string(v.element_bytes) +
              " bytes, not padded to a multiple of 8 as MAT 5 requires");
    v.matrix_bytes = v.element_bytes;
    header.resize(std::min(v.matrix_bytes, kMaxVariableHeader));
    file.read(offset + 8, header.data(), header.size());
  } else {
    Inflater z(file, path, offset + 8, v.element_bytes, at);
    uint8_t inner[8];
    const size_t got = z.read(inner, 8);
    check(got == 8, path,
          at + ": compressed element inflates to " + std::to_string(got) +
              " bytes, too few for the miMATRIX tag it must hold");
    const uint32_t inner_type = order.u32(inner);
    v.matrix_bytes = order.u32(inner + 4);
    check(inner_type == miMATRIX, path,
          at + ": compressed element holds " + type_name(inner_type) + ", expected miMATRIX");
    check(8 + uint64_t{v.matrix_bytes} <= kMaxDeflateRatio * v.element_bytes + 64, path,
          at + ": compressed element of " + std::to_string(v.element_bytes) +
              " bytes declares a variable of " + std::to_string(v.matrix_bytes) +
              " bytes, more than deflate can expand it to");
    header.resize(std::min(v.matrix_bytes, kMaxVariableHeader));
    const size_t have = z.read(header.data(), header.size());
    check(have == header.size(), path,
          at + ": compressed element inflates to " + std::to_string(8 + have) +
              " bytes, its miMATRIX tag declares " + std::to_string(8 + uint64_t{v.matrix_bytes}));
  }
  VariableParser(path, v, header.data(), header.size(), order).parse();

  // libmatio walks cells and structs recursively (a deep nest would overflow its stack) and
  // nothing in an SVHN file needs them: only numeric and char arrays pass.
  check(v.cls == mxCHAR || (v.cls >= mxDOUBLE && v.cls <= mxUINT64), path,
        v.where() + " has class " + class_name(v.cls) +
            ": only numeric and char arrays are read (an SVHN file holds the arrays X and y)");
  return v;
}

// Inflates a compressed variable's whole stream into a small scratch buffer, checking that it
// is intact and exactly as long as its miMATRIX tag says, before libmatio allocates for it.
void check_compressed_stream(const File& file, const std::string& path, const Variable& v) {
  Inflater z(file, path, v.offset + 8, v.element_bytes, v.where());
  std::vector<uint8_t> scratch(1 << 16);
  const uint64_t want = 8 + uint64_t{v.matrix_bytes};
  while (z.inflated() < want) {
    const size_t ask = std::min<uint64_t>(scratch.size(), want - z.inflated());
    if (z.read(scratch.data(), ask) < ask) {
      throw Error(path, v.where() + ": compressed element inflates to " +
                            std::to_string(z.inflated()) + " bytes, its miMATRIX tag declares " +
                            std::to_string(want));
    }
  }
  uint8_t extra;
  check(z.read(&extra, 1) == 0, path,
        v.where() + ": compressed element inflates past the " + std::to_string(want) +
            " bytes its miMATRIX tag declares");
}

std::vector<Variable> scan_file(const File& file, const std::string& path, ByteOrder& order) {
  order = check_file_header(file, path);
  std::vector<Variable> vars;
  for (uint64_t offset = kFileHeader; offset < file.size();) {
    vars.push_back(scan_element(file, path, order, offset));
    offset += 8 + uint64_t{vars.back().element_bytes};
  }
  return vars;
}

std::string names_of(const std::vector<Variable>& vars) {
  if (vars.empty()) return "the file holds no variables";
  std::string s = "the file holds ";
  for (size_t i = 0; i < vars.size() && i < 8; ++i) {
    if (i > 0) s += ", ";
    s += '\'' + printable(vars[i].name) + '\'';
  }
  if (vars.size() > 8) s += ", ... (" + std::to_string(vars.size()) + " variables)";
  return s;
}

const Variable& find_variable(const std::vector<Variable>& vars, const std::string& path,
                              const std::string& name, const char* role) {
  const Variable* found = nullptr;
  for (const Variable& v : vars) {
    if (v.name != name) continue;
    check(!found, path,
          "two variables named '" + name + "': elements at bytes " +
              std::to_string(found ? found->offset : 0) + " and " + std::to_string(v.offset));
    found = &v;
  }
  check(found != nullptr, path,
        "no variable '" + name + "' (" + role + "); " + names_of(vars) +
            " (an SVHN file holds X and y)");
  return *found;
}

// X: 32x32x3xN uint8 (32x32x3 when N = 1: MATLAB drops trailing singleton dimensions).
uint64_t check_images(const std::string& path, const Variable& x) {
  const std::string shape = dims_text(x.dims);
  check(x.cls == mxUINT8, path,
        x.where() + " is " + class_name(x.cls) + ", expected uint8 (32x32x3xN images)");
  check(!x.complex, path, x.where() + " is complex, expected real uint8 images");
  const bool rank_ok = x.dims.size() == 4 || x.dims.size() == 3;
  check(rank_ok && x.dims[0] == kSide && x.dims[1] == kSide && x.dims[2] == kPlanes, path,
        x.where() + " is " + shape + ", expected 32x32x3xN (SVHN's 32x32 RGB images)");
  const uint64_t n = x.dims.size() == 4 ? x.dims[3] : 1;
  check(n > 0, path, x.where() + " holds no images (" + shape + ")");
  check(x.data_type == miUINT8 && x.data_bytes == n * kImageBytes, path,
        x.where() + ": its data is " + type_name(x.data_type) + ", " +
            std::to_string(x.data_bytes) + " bytes; expected miUINT8, " +
            std::to_string(n * kImageBytes) + " bytes for " + shape);
  return n;
}

// y: N labels, Nx1 or 1xN, double or uint8 (the value checks come after the read).
void check_labels(const std::string& path, const Variable& y, uint64_t n) {
  const std::string shape = dims_text(y.dims);
  check(y.cls == mxDOUBLE || y.cls == mxUINT8, path,
        y.where() + " is " + class_name(y.cls) + ", expected double or uint8 labels");
  check(!y.complex, path, y.where() + " is complex, expected real labels");
  check(y.dims.size() == 2 && (y.dims[0] == 1 || y.dims[1] == 1), path,
        y.where() + " is " + shape + ", expected a vector of labels (Nx1)");
  const uint64_t count = y.elements();
  check(count == n, path,
        "X holds " + std::to_string(n) + " images but y holds " + std::to_string(count) +
            " labels (" + shape + ")");
  const size_t size = numeric_type_size(y.data_type);
  check(size > 0 && y.data_bytes == count * size, path,
        y.where() + ": its data is " + type_name(y.data_type) + ", " +
            std::to_string(y.data_bytes) + " bytes; expected " + std::to_string(count) +
            " numbers");
}

// ---- libmatio ------------------------------------------------------------------------------

// libmatio reports through a process-wide log function (and prints nothing without one). Ours
// keeps the first warning or error of the current thread's read, which then fails with it.
thread_local std::string matio_message;

void capture_matio_log(int level, char* message) {
  constexpr int kFaults =
      MATIO_LOG_LEVEL_ERROR | MATIO_LOG_LEVEL_CRITICAL | MATIO_LOG_LEVEL_WARNING;
  if ((level & kFaults) && matio_message.empty())
    matio_message = message ? message : "(no message)";
}

void install_matio_log() {
  static std::once_flag once;
  std::call_once(once, [] { Mat_LogInitFunc("equivae", capture_matio_log); });
}

struct MatCloser {
  void operator()(mat_t* m) const { Mat_Close(m); }
};
struct MatVarFreer {
  void operator()(matvar_t* v) const { Mat_VarFree(v); }
};
using MatVar = std::unique_ptr<matvar_t, MatVarFreer>;

// Reads one variable that the scan checked, then checks what libmatio made of it.
MatVar read_variable(mat_t* mat, const std::string& path, const Variable& v, matio_classes cls,
                     size_t element_size) {
  matio_message.clear();
  MatVar var(Mat_VarRead(mat, v.name.c_str()));
  check(
      var != nullptr && matio_message.empty(), path,
      "libmatio could not read " + v.where() + (matio_message.empty() ? "" : ": " + matio_message));
  bool same = var->class_type == cls && !var->isComplex && var->data != nullptr &&
              var->rank == static_cast<int>(v.dims.size()) &&
              var->nbytes == v.elements() * element_size;
  for (int i = 0; same && i < var->rank; ++i) same = var->dims[i] == v.dims[i];
  check(same, path, "libmatio read " + v.where() + " differently from its header");
  return var;
}

// What the scan hands to the read: the two variables, checked.
struct Checked {
  Variable x, y;
  int64_t n = 0;
};

Checked scan_and_check(const std::string& path) {
  const File file(path);  // closed again before libmatio opens the file
  ByteOrder order;
  const std::vector<Variable> vars = scan_file(file, path, order);
  Checked c;
  c.x = find_variable(vars, path, "X", "the images");
  c.y = find_variable(vars, path, "y", "the labels");
  c.n = static_cast<int64_t>(check_images(path, c.x));
  check_labels(path, c.y, c.n);
  for (const Variable* v : {&c.x, &c.y})
    if (v->compressed) check_compressed_stream(file, path, *v);
  return c;
}

}  // namespace

Dataset load_svhn_mat(const std::string& path) {
  const Checked checked = scan_and_check(path);
  const Variable &x = checked.x, &y = checked.y;
  const int64_t n = checked.n;

  install_matio_log();
  matio_message.clear();
  std::unique_ptr<mat_t, MatCloser> mat(Mat_Open(path.c_str(), MAT_ACC_RDONLY));
  check(mat != nullptr && Mat_GetVersion(mat.get()) == MAT_FT_MAT5, path,
        "libmatio could not open it as a MAT 5 file" +
            (matio_message.empty() ? "" : ": " + matio_message));

  Dataset ds;
  ds.n = n;
  ds.rows = ds.cols = kSide;
  ds.channels = kPlanes;
  ds.dim = static_cast<int>(kImageBytes);
  ds.num_classes = 10;
  ds.source = path;
  // The labels first: a bad one fails before the images are read.
  const bool as_double = y.cls == mxDOUBLE;
  const MatVar labels = read_variable(mat.get(), path, y, as_double ? MAT_C_DOUBLE : MAT_C_UINT8,
                                      as_double ? sizeof(double) : 1);
  ds.labels.resize(n);  // [n]
  for (int64_t i = 0; i < n; ++i) {
    const double label = as_double ? static_cast<const double*>(labels->data)[i]
                                   : static_cast<const uint8_t*>(labels->data)[i];
    if (!(label >= 1 && label <= 10 && label == std::floor(label))) {
      char text[32];
      std::snprintf(text, sizeof text, "%.17g", label);
      throw Error(path, "y[" + std::to_string(i) + "] = " + text +
                            " is not an SVHN label (an integer 1..10, 10 standing for digit 0)");
    }
    ds.labels[i] = label == 10 ? 0 : static_cast<int32_t>(label);
  }
  {
    const MatVar images = read_variable(mat.get(), path, x, MAT_C_UINT8, 1);
    const float* table = pixel_intensities();  // 255 -> exactly 1
    // Column-major X(h, w, c, i) sits at h + 32 w + 1024 c + 3072 i; each image becomes
    // [c][h][w] row-major: every 32x32 plane is transposed.
    // Output element o = (plane, h, w) reads the plane's byte at w · 32 + h; written in output
    // order, each float once (no zero-filled pass first).
    static_assert(kSide == 32, "the index arithmetic below is for 32 x 32 planes");
    const uint8_t* src = static_cast<const uint8_t*>(images->data);
    assign_generated(ds.images, std::ptrdiff_t(n) * std::ptrdiff_t(kImageBytes),  // [n, 3, 32, 32]
                     [src, table](std::ptrdiff_t o) {
                       const std::ptrdiff_t plane = o >> 10, h = (o >> 5) & 31, w = o & 31;
                       return table[src[(plane << 10) | (w << 5) | h]];
                     });
  }
  return ds;
}

SvhnFiles find_svhn_files(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  check(fs::exists(dir, ec), dir, "does not exist (looking for SVHN .mat files)");
  check(fs::is_directory(dir, ec), dir, "not a directory (looking for SVHN .mat files)");
  const SvhnFiles files = svhn_file_paths(dir);
  for (const std::string& path : {files.train, files.test}) {
    const std::string why = not_a_file_to_read(path);
    check(why.empty(), dir, why);
    check(fs::is_regular_file(path, ec), dir, "missing " + fs::path(path).filename().string());
  }
  return files;
}

SvhnFiles svhn_file_paths(const std::string& dir) {
  const std::filesystem::path d(dir);
  return {(d / "train_32x32.mat").string(), (d / "test_32x32.mat").string()};
}

std::string svhn_file_unusable(const std::string& dir) {
  return not_a_file_to_read(svhn_file_paths(dir).train);
}

bool is_svhn_dir(const std::string& dir) {
  std::error_code ec;
  return std::filesystem::is_regular_file(std::filesystem::path(dir) / "train_32x32.mat", ec);
}

}  // namespace equivae
