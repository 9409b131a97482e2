#pragma once
// NumPy .npy files, format version 1.0 (numpy.lib.format), for tools that hand arrays to
// Python: magic "\x93NUMPY", version 1.0, a little-endian uint16 header length, an ASCII
// dict {'descr': '<f4' | '<f8' | '<i4', 'fortran_order': False, 'shape': (...), } padded with
// spaces to end in '\n' at a multiple of 64 bytes, then the C-order little-endian data.
// Written atomically (runtime/atomic_file.h).
#include <cstdint>
#include <string>
#include <vector>

namespace equivae {

// The 10-byte preamble and padded header for a dtype descr ("<f4", "<i4") and shape.
std::string npy_header(const std::string& descr, const std::vector<int64_t>& shape);

// data holds product(shape) elements; throws Error naming the path on a mismatch or a
// failed write.
void write_npy(const std::string& path, const std::vector<float>& data,
               const std::vector<int64_t>& shape);
void write_npy(const std::string& path, const std::vector<double>& data,
               const std::vector<int64_t>& shape);
void write_npy(const std::string& path, const std::vector<int32_t>& data,
               const std::vector<int64_t>& shape);

}  // namespace equivae
