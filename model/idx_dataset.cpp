// IDX reader: whole file into memory (gunzipped when it starts with the gzip
// magic, never past the size its header implies), then the header and payload
// are checked against each other before a single pixel is converted. See
// idx_dataset.h for the format.
#include "model/idx_dataset.h"

#include <libdeflate.h>
#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <utility>

#include "runtime/default_init_allocator.h"
#include "runtime/error.h"
#include "runtime/generated_iterator.h"
#include "runtime/path_checks.h"

namespace equivae {
namespace {

constexpr uint32_t kImagesMagic = 0x00000803;  // type 0x08 (uint8), 3 dims
constexpr uint32_t kLabelsMagic = 0x00000801;  // type 0x08 (uint8), 1 dim
constexpr size_t kImagesHeader = 16;           // magic, n, rows, cols
constexpr size_t kLabelsHeader = 8;            // magic, n

// A file's bytes; resized without zero-filling (each byte is then written once, by the read or
// the inflation).
using Bytes = std::vector<uint8_t, DefaultInitAllocator<uint8_t>>;

struct FileBytes {
  Bytes data;  // decompressed when the file was gzip
  bool gzip = false;
  // Reading stopped at the size the header implies, one byte past it found: the file (or the
  // gzip stream) holds more, trailing data, which is not read (a gzip bomb's gigabytes, a
  // wrong file's size).
  bool capped = false;
  uint64_t plain_size = 0;  // a capped plain file's size on disk, 0 where unknown (a pipe)
};

// Which IDX file a path should hold: its magic and header size.
struct IdxLayout {
  uint32_t magic;
  size_t header;
};

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

uint32_t be32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | uint32_t{p[3]};
}

// The whole file size (header + payload) an IDX header implies: the most bytes worth inflating.
// Just the header when the magic is wrong or the image size is out of range: the parse reports
// those faults without the payload.
uint64_t implied_size(const IdxLayout& layout, const uint8_t* header) {
  if (be32(header) != layout.magic) return layout.header;
  const uint64_t n = be32(header + 4);
  if (layout.magic == kLabelsMagic) return kLabelsHeader + n;
  const uint64_t dim = uint64_t{be32(header + 8)} * be32(header + 12);
  if (dim > INT_MAX) return kImagesHeader;
  return kImagesHeader + n * dim;  // n < 2^32, dim < 2^31: fits
}

// What a found magic number looks like, so "wrong magic" says what the file is.
std::string describe_magic(uint32_t m) {
  if (m == kImagesMagic) return "an IDX uint8 image file";
  if (m == kLabelsMagic) return "an IDX uint8 label file";
  if ((m >> 16) != 0) return "not an IDX file";
  const uint32_t type = (m >> 8) & 0xff, ndims = m & 0xff;
  const char* name = type == 0x08   ? "uint8"
                     : type == 0x09 ? "int8"
                     : type == 0x0b ? "int16"
                     : type == 0x0c ? "int32"
                     : type == 0x0d ? "float32"
                     : type == 0x0e ? "float64"
                                    : nullptr;
  if (!name) return "not an IDX file";
  return "IDX " + std::string(name) + " with " + std::to_string(ndims) + " dims";
}

// The size the IDX header at the start of a gzip stream implies, inflating only that header;
// 0 when the stream does not get that far.
uint64_t gzip_implied_size(const Bytes& in, const IdxLayout& layout) {
  z_stream s{};
  if (inflateInit2(&s, 16 + MAX_WBITS) != Z_OK) return 0;
  std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&s, inflateEnd);
  std::array<uint8_t, kImagesHeader> header{};
  s.next_in = const_cast<Bytef*>(in.data());
  s.avail_in = static_cast<uInt>(std::min<size_t>(in.size(), UINT_MAX));
  s.next_out = header.data();
  s.avail_out = static_cast<uInt>(layout.header);
  while (s.avail_out > 0) {
    const int ret = inflate(&s, Z_NO_FLUSH);
    if (ret != Z_OK) break;
  }
  return s.avail_out == 0 ? implied_size(layout, header.data()) : 0;
}

// The common case, about 3× faster than zlib's streaming inflate (libdeflate, whole buffer):
// one gzip member whose IDX header implies the size its trailer states (ISIZE), at most 16
// times the compressed bytes (MNIST's are 5×), that inflates to exactly ISIZE bytes (CRC-32
// checked). Only the header is inflated before ISIZE bytes are allocated. False for anything
// else (several members, trailing data, a damaged stream, a size the header does not match,
// a ratio a bomb would have): gunzip's zlib path then finds and names the fault.
bool gunzip_whole(const Bytes& in, const IdxLayout& layout, FileBytes& file) {
  if (in.size() < 18) return false;  // a gzip header and trailer alone take 18 bytes
  const uint8_t* trailer = in.data() + in.size() - 4;
  const uint64_t isize = uint64_t{trailer[0]} | uint64_t{trailer[1]} << 8 |
                         uint64_t{trailer[2]} << 16 | uint64_t{trailer[3]} << 24;
  if (isize < layout.header || isize > 16 * uint64_t(in.size())) return false;
  if (gzip_implied_size(in, layout) != isize) return false;
  std::unique_ptr<libdeflate_decompressor, void (*)(libdeflate_decompressor*)> d(
      libdeflate_alloc_decompressor(), libdeflate_free_decompressor);
  if (!d) return false;
  file.data.resize(isize);
  size_t in_used = 0, out_made = 0;
  const libdeflate_result r = libdeflate_gzip_decompress_ex(
      d.get(), in.data(), in.size(), file.data.data(), isize, &in_used, &out_made);
  if (r != LIBDEFLATE_SUCCESS || in_used != in.size() || out_made != isize ||
      implied_size(layout, file.data.data()) != isize) {
    file.data = {};
    return false;
  }
  file.gzip = true;
  return true;
}

// Inflates a whole gzip file (every member of `cat a.gz b.gz`), but never past the size its
// IDX header implies plus one byte: a small file that inflates to gigabytes stops there
// (FileBytes::capped) before any large allocation.
FileBytes gunzip(const Bytes& in, const std::string& path, const IdxLayout& layout) {
  check(in.size() <= UINT_MAX, path, "gzip file larger than 4 GiB is not supported");
  if (FileBytes whole; gunzip_whole(in, layout, whole)) return whole;
  z_stream s{};
  // 16 + MAX_WBITS: gzip wrapper only (header, CRC32 and length are checked by zlib).
  if (inflateInit2(&s, 16 + MAX_WBITS) != Z_OK) throw Error(path, "zlib inflateInit2 failed");
  std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&s, inflateEnd);
  s.next_in = const_cast<Bytef*>(in.data());
  s.avail_in = static_cast<uInt>(in.size());

  FileBytes file;
  file.gzip = true;
  Bytes& out = file.data;
  // Unknown until the header is inflated; then the implied size + 1 (one byte shows trailing data).
  // The buffer grows with what the stream yields, never ahead of it.
  uint64_t limit = UINT64_MAX;
  out.resize(size_t{1} << 16);
  size_t produced = 0;
  for (;;) {
    if (limit == UINT64_MAX && produced >= layout.header)
      limit = implied_size(layout, out.data()) + 1;
    if (produced >= limit) {  // one inflate call may go past it: drop the excess
      produced = limit;
      file.capped = true;
      break;
    }
    if (produced == out.size()) out.resize(std::min<uint64_t>(2 * out.size(), limit));
    const size_t room = std::min<size_t>(out.size() - produced, UINT_MAX);
    s.next_out = out.data() + produced;
    s.avail_out = static_cast<uInt>(room);
    const int ret = inflate(&s, Z_NO_FLUSH);
    produced += room - s.avail_out;
    const size_t consumed = in.size() - s.avail_in;

    if (ret == Z_STREAM_END) {
      if (s.avail_in == 0) break;
      // `cat a.gz b.gz` is valid gzip: go on with the next member. Anything
      // else after the end is damage we refuse to guess about.
      if (s.avail_in >= 2 && s.next_in[0] == 0x1f && s.next_in[1] == 0x8b) {
        inflateReset(&s);
        continue;
      }
      throw Error(path, "corrupt gzip: " + std::to_string(s.avail_in) +
                            " bytes of trailing data after the gzip stream ends at byte " +
                            std::to_string(consumed));
    }
    if (ret != Z_OK && ret != Z_BUF_ERROR) {
      throw Error(path, std::string("corrupt gzip stream: ") + (s.msg ? s.msg : "zlib error") +
                            " (at compressed byte " + std::to_string(consumed) + " of " +
                            std::to_string(in.size()) + ")");
    }
    if (s.avail_out == 0) continue;  // out of room: grow (or stop at the limit) and go on
    // inflate stops early only when the input runs out: the stream was cut
    // short (the case gzread would report as a silently short read).
    if (s.avail_in == 0) {
      throw Error(path, "truncated gzip stream: all " + std::to_string(in.size()) +
                            " compressed bytes used (" + std::to_string(produced) +
                            " bytes decompressed) without reaching the end of the stream");
    }
    throw Error(path, "corrupt gzip stream: zlib made no progress at compressed byte " +
                          std::to_string(consumed));
  }
  out.resize(produced);
  return file;
}

FileBytes read_file(const std::string& path, const IdxLayout& layout) {
  check_input_file(path);  // a FIFO would block the open, a directory fail the read
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!f) throw Error(path, std::string("cannot open: ") + std::strerror(errno));
  FileBytes file;
  std::array<uint8_t, 1 << 16> chunk;
  // Reads on until the data holds `total` bytes or the file ends.
  auto read_up_to = [&](uint64_t total) {
    while (file.data.size() < total) {
      const size_t want = size_t(std::min<uint64_t>(chunk.size(), total - file.data.size()));
      const size_t got = std::fread(chunk.data(), 1, want, f.get());
      if (got == 0) break;
      file.data.insert(file.data.end(), chunk.begin(), chunk.begin() + got);
    }
    if (std::ferror(f.get())) throw Error(path, std::string("read error: ") + std::strerror(errno));
  };
  // Detect by content, not by the ".gz" suffix: files get renamed and re-packed.
  read_up_to(2);
  if (file.data.size() >= 2 && file.data[0] == 0x1f && file.data[1] == 0x8b) {
    // The compressed bytes, in a buffer of the file's size where it has one (no doubling);
    // gunzip inflates no further than needed.
    if (struct stat st{}; ::fstat(::fileno(f.get()), &st) == 0 && S_ISREG(st.st_mode))
      file.data.reserve(size_t(st.st_size));
    read_up_to(UINT64_MAX);
    return gunzip(file.data, path, layout);
  }
  // A plain file is read as far as its header implies and one byte more: a wrong magic or a
  // file far larger than its header says costs no more than that (/dev/zero included).
  read_up_to(layout.header);
  if (file.data.size() < layout.header) return file;  // the parse names the short header
  const uint64_t implied = implied_size(layout, file.data.data());
  read_up_to(implied + 1);
  if (file.data.size() > implied) {
    file.data.resize(implied);
    file.capped = true;
    struct stat st {};
    if (::fstat(::fileno(f.get()), &st) == 0 && S_ISREG(st.st_mode)) file.plain_size = st.st_size;
  }
  return file;
}

std::string holds(const FileBytes& f, size_t header) {
  return "file holds " + std::to_string(f.data.size() - header) + " bytes after the " +
         std::to_string(header) + "-byte header" + (f.gzip ? " (after gunzip)" : "");
}

// The fault of a file read no further than one byte past the declared payload.
std::string goes_past(const FileBytes& f, uint64_t have, size_t header) {
  if (f.gzip)
    return "the gzip stream inflates past them (stopped at " + std::to_string(have) +
           " bytes after the " + std::to_string(header) +
           "-byte header without inflating the rest): trailing data";
  if (f.plain_size > header)
    return "file holds " + std::to_string(f.plain_size - header) + " bytes after the " +
           std::to_string(header) + "-byte header (" +
           std::to_string(f.plain_size - header - have) + " bytes of trailing data)";
  return "the file goes on past them (not read further): trailing data";
}

// Checks the magic and that the whole header is present; returns nothing, throws on damage.
void check_header(const FileBytes& f, const std::string& path, uint32_t magic, size_t header,
                  const char* what) {
  const size_t size = f.data.size();
  const std::string gz = f.gzip ? " (after gunzip)" : "";
  if (size >= 4 && be32(f.data.data()) != magic) {
    const uint32_t found = be32(f.data.data());
    throw Error(path, "wrong magic " + hex32(found) + " (" + describe_magic(found) +
                          "), expected " + hex32(magic) + " (IDX uint8 " + what + ")");
  }
  if (size < header) {
    throw Error(path, "header truncated: file holds " + std::to_string(size) + " bytes" + gz +
                          ", an IDX " + what + " header needs " + std::to_string(header));
  }
}

void parse_images(const FileBytes& f, const std::string& path, Dataset& ds) {
  check_header(f, path, kImagesMagic, kImagesHeader, "images");
  const uint8_t* p = f.data.data();
  const uint32_t n = be32(p + 4), rows = be32(p + 8), cols = be32(p + 12);
  const std::string shape = std::to_string(rows) + "x" + std::to_string(cols);
  check(rows > 0 && cols > 0, path, "zero-sized images: header declares " + shape);
  check(n > 0, path, "empty data set: header declares 0 images");
  const uint64_t dim = uint64_t{rows} * cols;  // < 2^64, no overflow
  check(dim <= INT_MAX, path, "image size " + shape + " is too large");
  const uint64_t want = uint64_t{n} * dim;  // n < 2^32, dim < 2^31: fits
  const uint64_t have = f.data.size() - kImagesHeader;
  const std::string declares = "header declares " + std::to_string(n) + " images of " + shape +
                               " = " + std::to_string(want) + " bytes, ";
  check(have >= want, path, "truncated: " + declares + holds(f, kImagesHeader));
  check(!f.capped, path, "size mismatch: " + declares + goes_past(f, have, kImagesHeader));
  check(have == want, path,
        "size mismatch: " + declares + holds(f, kImagesHeader) + " (" +
            std::to_string(have - want) + " bytes of trailing data)");

  ds.n = n;
  ds.rows = static_cast<int>(rows);
  ds.cols = static_cast<int>(cols);
  ds.dim = static_cast<int>(dim);
  const float* table = pixel_intensities();
  const uint8_t* pixels = p + kImagesHeader;
  assign_generated(ds.images, std::ptrdiff_t(want),  // [n, dim], each float written once
                   [=](std::ptrdiff_t i) { return table[pixels[i]]; });
}

void parse_labels(const FileBytes& f, const std::string& path, Dataset& ds) {
  check_header(f, path, kLabelsMagic, kLabelsHeader, "labels");
  const uint32_t n = be32(f.data.data() + 4);
  check(n > 0, path, "empty data set: header declares 0 labels");
  const uint64_t have = f.data.size() - kLabelsHeader;
  const std::string declares =
      "header declares " + std::to_string(n) + " labels = " + std::to_string(n) + " bytes, ";
  check(have >= n, path, "truncated: " + declares + holds(f, kLabelsHeader));
  check(!f.capped, path, "size mismatch: " + declares + goes_past(f, have, kLabelsHeader));
  check(have == n, path,
        "size mismatch: " + declares + holds(f, kLabelsHeader) + " (" + std::to_string(have - n) +
            " bytes of trailing data)");

  const uint8_t* values = f.data.data() + kLabelsHeader;
  ds.labels.resize(n);  // [n]
  for (uint32_t i = 0; i < n; ++i) {
    if (values[i] >= ds.num_classes) {
      throw Error(path, "label " + std::to_string(values[i]) + " at index " + std::to_string(i) +
                            " is out of range [0, " + std::to_string(ds.num_classes) + ")");
    }
    ds.labels[i] = values[i];
  }
}

}  // namespace

const float* pixel_intensities() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = static_cast<float>(i) / 255.0f;
    return t;
  }();
  return table.data();
}

void Dataset::check_pixels() const {
  check(n >= 0 && images.size() == size_t(n) * size_t(dim), source,
        "holds " + std::to_string(images.size()) +
            " pixel values, not n·dim = " + std::to_string(n) + "·" + std::to_string(dim));
  // Blocks of 4,096 checked without a branch per pixel (which lets the compiler vectorise the
  // block's test); only a block that fails is walked pixel by pixel, to name the first bad one.
  constexpr size_t kBlock = 4096;
  size_t k = 0;
  for (; k < images.size(); k += kBlock) {
    const size_t end = std::min(images.size(), k + kBlock);
    bool in_range = true;
    for (size_t j = k; j < end; ++j) in_range &= (images[j] >= 0.f) & (images[j] <= 1.f);
    if (!in_range) break;  // (false for NaN too)
  }
  for (; k < images.size(); ++k) {
    const float p = images[k];
    if (p >= 0.f && p <= 1.f) continue;
    char value[32];
    std::snprintf(value, sizeof value, "%g", double(p));
    throw Error(source, "image " + std::to_string(k / size_t(dim)) + ", pixel " +
                            std::to_string(k % size_t(dim)) + " is " + value +
                            ": pixels must be finite intensities in [0, 1]");
  }
}

namespace {
// Everything of data's slice [begin, end) but its images and labels (checks the range).
Dataset slice_header(const Dataset& data, int64_t begin, int64_t end) {
  check(0 <= begin && begin <= end && end <= data.n, data.source,
        "bad slice [" + std::to_string(begin) + ", " + std::to_string(end) +
            ") of a data set with " + std::to_string(data.n) + " rows");
  Dataset out;
  out.n = end - begin;
  out.rows = data.rows;
  out.cols = data.cols;
  out.channels = data.channels;
  out.dim = data.dim;
  out.num_classes = data.num_classes;
  out.source = data.source + " [" + std::to_string(begin) + ", " + std::to_string(end) + ")";
  return out;
}
}  // namespace

Dataset Dataset::slice(int64_t begin, int64_t end) const& {
  Dataset out = slice_header(*this, begin, end);
  out.images.assign(images.begin() + begin * dim, images.begin() + end * dim);
  out.labels.assign(labels.begin() + begin, labels.begin() + end);
  return out;
}

Dataset Dataset::slice(int64_t begin, int64_t end) && {
  if (begin != 0) return static_cast<const Dataset&>(*this).slice(begin, end);
  Dataset out = slice_header(*this, begin, end);
  out.images = std::move(images);
  out.labels = std::move(labels);
  out.images.resize(size_t(end) * size_t(dim));  // shrinking keeps the storage: no copy
  out.labels.resize(size_t(end));
  return out;
}

Dataset load_idx(const std::string& images_path, const std::string& labels_path, int num_classes) {
  check(num_classes >= 1, labels_path,
        "num_classes must be at least 1, got " + std::to_string(num_classes));
  Dataset ds;
  ds.num_classes = num_classes;
  ds.source = images_path + " + " + labels_path;
  // File bytes are freed after each parse.
  parse_images(read_file(images_path, {kImagesMagic, kImagesHeader}), images_path, ds);
  parse_labels(read_file(labels_path, {kLabelsMagic, kLabelsHeader}), labels_path, ds);
  if (static_cast<int64_t>(ds.labels.size()) != ds.n) {
    throw Error(images_path, "image file holds " + std::to_string(ds.n) +
                                 " images but label file " + labels_path + " holds " +
                                 std::to_string(ds.labels.size()) + " labels");
  }
  return ds;
}

Dataset load_idx_images(const std::string& images_path) {
  Dataset ds;
  ds.source = images_path;
  parse_images(read_file(images_path, {kImagesMagic, kImagesHeader}), images_path, ds);
  return ds;
}

namespace {

// Each file's names: the official (dashed) one, the variant some mirrors use (dotted), each
// plain and gzipped, in the order find_mnist_files looks for them.
std::vector<std::string> mnist_names(const std::string& dashed, const std::string& dotted) {
  return {dashed, dashed + ".gz", dotted, dotted + ".gz"};
}
const std::pair<const char*, const char*> kMnistFiles[] = {
    {"train-images-idx3-ubyte", "train-images.idx3-ubyte"},
    {"train-labels-idx1-ubyte", "train-labels.idx1-ubyte"},
    {"t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"},
    {"t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"}};

}  // namespace

MnistFiles find_mnist_files(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  check(fs::exists(dir, ec), dir, "does not exist (looking for MNIST IDX files)");
  check(fs::is_directory(dir, ec), dir, "not a directory (looking for MNIST IDX files)");
  auto find = [&](const std::pair<const char*, const char*>& file) {
    const std::vector<std::string> names = mnist_names(file.first, file.second);
    std::string unusable;  // a name that is there but is not a file to read
    for (const std::string& name : names) {
      const std::string p = (fs::path(dir) / name).string();
      if (fs::is_regular_file(p, ec)) return p;
      const std::string why = not_a_file_to_read(p);
      if (!why.empty() && unusable.empty()) unusable = "; " + why;
    }
    throw Error(dir, "missing " + names[0] + " (also looked for " + names[1] + ", " + names[2] +
                         ", " + names[3] + ")" + unusable);
  };
  return {find(kMnistFiles[0]), find(kMnistFiles[1]), find(kMnistFiles[2]), find(kMnistFiles[3])};
}

std::vector<std::string> mnist_file_candidates(const std::string& dir) {
  std::vector<std::string> paths;
  for (const auto& [dashed, dotted] : kMnistFiles)
    for (const std::string& name : mnist_names(dashed, dotted))
      paths.push_back((std::filesystem::path(dir) / name).string());
  return paths;
}

}  // namespace equivae
