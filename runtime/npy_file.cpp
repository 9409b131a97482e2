#include "runtime/npy_file.h"

#include <bit>
#include <cstring>

#include "runtime/atomic_file.h"
#include "runtime/error.h"

namespace equivae {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the .npy writer copies memory as little-endian data");

template <class V>
void write_array(const std::string& path, const std::string& descr, const std::vector<V>& data,
                 const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t d : shape) {
    check(d >= 0, path, "negative extent in the array shape");
    count *= d;
  }
  check(count == int64_t(data.size()), path,
        "array shape holds " + std::to_string(count) + " elements, data has " +
            std::to_string(data.size()));
  std::string bytes = npy_header(descr, shape);
  const size_t header = bytes.size();
  bytes.resize(header + data.size() * sizeof(V));
  if (!data.empty()) std::memcpy(bytes.data() + header, data.data(), data.size() * sizeof(V));
  write_file_atomically(path, bytes.data(), bytes.size());
}

}  // namespace

std::string npy_header(const std::string& descr, const std::vector<int64_t>& shape) {
  std::string dims;
  for (int64_t d : shape) dims += std::to_string(d) + ", ";
  if (shape.size() > 1) dims.resize(dims.size() - 2);  // (n,) for 1-D, (a, b) otherwise
  if (shape.size() == 1) dims.pop_back();
  std::string dict =
      "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  const size_t preamble = 10;  // magic (6) + version (2) + header length (2)
  const size_t total = (preamble + dict.size() + 1 + 63) / 64 * 64;
  dict.append(total - preamble - dict.size() - 1, ' ');
  dict += '\n';
  const size_t length = dict.size();  // < 65536: shapes here have a few dimensions
  std::string out = "\x93NUMPY";
  out += char(1);
  out += char(0);
  out += char(length & 0xff);
  out += char(length >> 8);
  return out + dict;
}

void write_npy(const std::string& path, const std::vector<float>& data,
               const std::vector<int64_t>& shape) {
  write_array(path, "<f4", data, shape);
}

void write_npy(const std::string& path, const std::vector<double>& data,
               const std::vector<int64_t>& shape) {
  write_array(path, "<f8", data, shape);
}

void write_npy(const std::string& path, const std::vector<int32_t>& data,
               const std::vector<int64_t>& shape) {
  write_array(path, "<i4", data, shape);
}

}  // namespace equivae
