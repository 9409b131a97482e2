// SVHN .mat reader: files written by libmatio (compressed and not, y as double and as uint8)
// load with every pixel where the layout says; files built byte by byte here cover what
// libmatio does not write (big-endian, MATLAB's rank-3 X for one image, y stored compacted,
// other variables) and every fault, each with its message; then the SVHN splits.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <matio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "error_checks.h"
#include "memory_cap.h"
#include "model/data_splits.h"
#include "model/svhn_dataset.h"
#include "runtime/error.h"
#include "scratch_files.h"

namespace equivae {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;
using test::exit_under_memory_cap;
using test::expect_error;
using testing::HasSubstr;

// MAT 5 element types and array classes the tests build with.
constexpr uint32_t miINT8 = 1, miUINT8 = 2, miINT32 = 5, miUINT32 = 6, miSINGLE = 7, miDOUBLE = 9,
                   miMATRIX = 14, miCOMPRESSED = 15;
constexpr uint32_t mxSTRUCT = 2, mxCHAR = 4, mxDOUBLE = 6, mxSINGLE = 7, mxUINT8 = 9;

// The made-up pixel at row h, column w, colour c of image n. Moving any one index by less
// than 32 changes it (7, 13, 101 and 37 are odd and differ), so a swapped or misplaced axis
// shows up as a wrong pixel.
uint8_t pixel(int h, int w, int c, int64_t n) {
  return static_cast<uint8_t>((7 * h + 13 * w + 101 * c + 37 * n) % 256);
}

// X as MATLAB stores it: column-major 32x32x3xN, X(h, w, c, n) at h + 32 w + 1024 c + 3072 n.
Bytes column_major_images(int64_t n) {
  Bytes x(3072 * n);
  for (int64_t i = 0; i < n; ++i)
    for (int c = 0; c < 3; ++c)
      for (int w = 0; w < 32; ++w)
        for (int h = 0; h < 32; ++h) x[h + 32 * w + 1024 * c + 3072 * i] = pixel(h, w, c, i);
  return x;
}

// Every pixel where load_svhn_mat's layout puts it: image(i)[c * 1024 + h * 32 + w].
void expect_pixels(const Dataset& ds, int64_t n) {
  ASSERT_EQ(ds.n, n);
  EXPECT_EQ(ds.rows, 32);
  EXPECT_EQ(ds.cols, 32);
  EXPECT_EQ(ds.channels, 3);
  EXPECT_EQ(ds.dim, 3072);
  EXPECT_EQ(ds.num_classes, 10);
  ASSERT_EQ(ds.images.size(), size_t(3072 * n));
  int64_t wrong = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int c = 0; c < 3; ++c)
      for (int h = 0; h < 32; ++h)
        for (int w = 0; w < 32; ++w) {
          const float want = pixel(h, w, c, i) / 255.0f;
          const float got = ds.image(i)[c * 1024 + h * 32 + w];
          if (got != want && ++wrong <= 5)
            ADD_FAILURE() << "image " << i << " c " << c << " h " << h << " w " << w << ": got "
                          << got << ", want " << want;
        }
  EXPECT_EQ(wrong, 0) << "wrong pixels";
  EXPECT_EQ(ds.image(0)[0], 0.0f);  // pixel(0, 0, 0, 0) = 0
  // pixel(3, 18, 0, 0) = 21 + 234 = 255 maps to exactly 1; its transpose (18, 3) is 165.
  EXPECT_EQ(ds.image(0)[3 * 32 + 18], 1.0f);
  EXPECT_EQ(ds.image(0)[18 * 32 + 3], 165 / 255.0f);
}

// --- files through libmatio's writer -------------------------------------------------------------

enum class LabelClass { kDouble, kUint8 };

// X (n images) and y (labels 1..10) written by libmatio, compressed or not.
void write_with_matio(const std::string& path, const std::vector<double>& labels,
                      matio_compression compression, LabelClass label_class) {
  const int64_t n = static_cast<int64_t>(labels.size());
  mat_t* mat = Mat_CreateVer(path.c_str(), nullptr, MAT_FT_MAT5);
  ASSERT_NE(mat, nullptr) << path;
  Bytes x = column_major_images(n);
  size_t xdims[4] = {32, 32, 3, size_t(n)};
  matvar_t* var = Mat_VarCreate("X", MAT_C_UINT8, MAT_T_UINT8, 4, xdims, x.data(), 0);
  ASSERT_NE(var, nullptr);
  EXPECT_EQ(Mat_VarWrite(mat, var, compression), 0);
  Mat_VarFree(var);
  size_t ydims[2] = {size_t(n), 1};
  std::vector<double> y_double = labels;
  Bytes y_uint8(labels.begin(), labels.end());
  var = label_class == LabelClass::kDouble
            ? Mat_VarCreate("y", MAT_C_DOUBLE, MAT_T_DOUBLE, 2, ydims, y_double.data(), 0)
            : Mat_VarCreate("y", MAT_C_UINT8, MAT_T_UINT8, 2, ydims, y_uint8.data(), 0);
  ASSERT_NE(var, nullptr);
  EXPECT_EQ(Mat_VarWrite(mat, var, compression), 0);
  Mat_VarFree(var);
  EXPECT_EQ(Mat_Close(mat), 0);
}

// --- files built byte by byte --------------------------------------------------------------------

size_t type_size(uint32_t type) {
  switch (type) {
    case miINT32:
    case miUINT32:
    case miSINGLE:
      return 4;
    case miDOUBLE:
      return 8;
    default:
      return 1;
  }
}

// One variable to build: its class, dimensions, name and data (values in little-endian
// order; swapped per element for a big-endian file).
struct Var {
  std::string name;
  uint32_t cls = mxDOUBLE;
  std::vector<int32_t> dims;
  uint32_t type = miDOUBLE;
  Bytes data;
  uint32_t flags = 0;  // extra array flags (0x0800: complex)
};

class MatBuilder {
 public:
  explicit MatBuilder(bool big_endian = false) : big_(big_endian) {}

  void u32(Bytes& b, uint32_t v) const {
    for (int i = 0; i < 4; ++i) b.push_back(uint8_t(v >> (big_ ? 24 - 8 * i : 8 * i)));
  }
  void pad8(Bytes& b) const {
    while (b.size() % 8) b.push_back(0);
  }
  // A subelement: small format (type and size in one word) when it holds at most 4 bytes,
  // as MATLAB writes short names.
  void sub(Bytes& b, uint32_t type, const Bytes& data, size_t elem = 1) const {
    Bytes d = data;
    if (big_ && elem > 1)
      for (size_t i = 0; i + elem <= d.size(); i += elem) std::reverse(&d[i], &d[i] + elem);
    if (!d.empty() && d.size() <= 4) {
      u32(b, uint32_t(d.size()) << 16 | type);
      b.insert(b.end(), d.begin(), d.end());
      while (b.size() % 8) b.push_back(0);
      return;
    }
    u32(b, type);
    u32(b, uint32_t(d.size()));
    b.insert(b.end(), d.begin(), d.end());
    pad8(b);
  }
  // A miMATRIX element (tag included).
  Bytes matrix(const Var& v) const {
    Bytes body;
    Bytes flags;
    for (int i = 0; i < 4; ++i) flags.push_back(uint8_t((v.cls | v.flags) >> 8 * i));
    flags.resize(8, 0);
    sub(body, miUINT32, flags, 4);
    Bytes dims;
    for (int32_t d : v.dims)
      for (int i = 0; i < 4; ++i) dims.push_back(uint8_t(uint32_t(d) >> 8 * i));
    // dimensions always in the normal format (MATLAB never packs them small)
    u32(body, miINT32);
    u32(body, uint32_t(dims.size()));
    Bytes swapped = dims;
    if (big_)
      for (size_t i = 0; i + 4 <= swapped.size(); i += 4)
        std::reverse(&swapped[i], &swapped[i] + 4);
    body.insert(body.end(), swapped.begin(), swapped.end());
    pad8(body);
    sub(body, miINT8, Bytes(v.name.begin(), v.name.end()));
    sub(body, v.type, v.data, type_size(v.type));
    Bytes out;
    u32(out, miMATRIX);
    u32(out, uint32_t(body.size()));
    out.insert(out.end(), body.begin(), body.end());
    return out;
  }
  // A miCOMPRESSED element holding `inner` (a whole element, tag included) as one zlib stream.
  Bytes compressed(const Bytes& inner) const { return wrap(zlib(inner)); }
  Bytes wrap(const Bytes& stream) const {
    Bytes out;
    u32(out, miCOMPRESSED);
    u32(out, uint32_t(stream.size()));
    out.insert(out.end(), stream.begin(), stream.end());
    return out;
  }
  static Bytes zlib(const Bytes& raw) {
    uLongf size = compressBound(raw.size());
    Bytes out(size);
    EXPECT_EQ(compress2(out.data(), &size, raw.data(), raw.size(), 6), Z_OK);
    out.resize(size);
    return out;
  }
  // The 128-byte header, then the elements.
  Bytes file(std::initializer_list<Bytes> elements, uint16_t version = 0x0100) const {
    Bytes b(116, ' ');
    const std::string text = "MATLAB 5.0 MAT-file, built by test_svhn_dataset";
    std::copy(text.begin(), text.end(), b.begin());
    b.resize(124, 0);  // subsystem data offset
    b.push_back(uint8_t(big_ ? version >> 8 : version));
    b.push_back(uint8_t(big_ ? version : version >> 8));
    b.push_back(big_ ? 'M' : 'I');
    b.push_back(big_ ? 'I' : 'M');
    for (const Bytes& e : elements) b.insert(b.end(), e.begin(), e.end());
    return b;
  }

 private:
  bool big_;
};

Bytes doubles(const std::vector<double>& v) {
  Bytes b(v.size() * 8);
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

Var images_var(int64_t n, bool rank3 = false) {
  Var v{"X", mxUINT8, {32, 32, 3, int32_t(n)}, miUINT8, column_major_images(n)};
  if (rank3) v.dims.pop_back();
  return v;
}
Var labels_var(const std::vector<double>& labels) {
  return {"y", mxDOUBLE, {int32_t(labels.size()), 1}, miDOUBLE, doubles(labels)};
}

const std::vector<double> kLabels = {10, 1, 5};  // -> digits 0, 1, 5
const std::vector<int32_t> kDigits = {0, 1, 5};

// The top-level elements of a little-endian MAT file: (offset of the tag, type, size).
struct Element {
  size_t offset;
  uint32_t type, nbytes;
};
uint32_t le32(const Bytes& b, size_t at) {
  return uint32_t(b[at]) | uint32_t(b[at + 1]) << 8 | uint32_t(b[at + 2]) << 16 |
         uint32_t(b[at + 3]) << 24;
}
void put_le32(Bytes& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = uint8_t(v >> 8 * i);
}
std::vector<Element> elements(const Bytes& file) {
  std::vector<Element> out;
  for (size_t at = 128; at + 8 <= file.size();) {
    out.push_back({at, le32(file, at), le32(file, at + 4)});
    at += 8 + out.back().nbytes;
  }
  return out;
}

class SvhnTest : public test::ScratchDirTest {
 protected:
  SvhnTest() : ScratchDirTest("equivae_svhn_") {}
  static Bytes read(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(in), {});
  }
  // A libmatio-written file's bytes.
  Bytes matio_file(matio_compression compression, LabelClass cls = LabelClass::kDouble,
                   const std::vector<double>& labels = kLabels) {
    const std::string p = path("matio.mat");
    write_with_matio(p, labels, compression, cls);
    return read(p);
  }
  // Expects loading `bytes` to fail with every part in the message (and the path).
  void expect_bad(const Bytes& bytes, std::initializer_list<std::string> parts) {
    const std::string p = write("bad.mat", bytes);
    try {
      load_svhn_mat(p);
      ADD_FAILURE() << "expected an equivae::Error";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr(p));
      for (const std::string& part : parts) EXPECT_THAT(e.what(), HasSubstr(part));
    }
  }
};

// --- happy paths: libmatio's writer --------------------------------------------------------------

TEST_F(SvhnTest, LoadsWhatLibmatioWrites) {
  for (matio_compression compression : {MAT_COMPRESSION_ZLIB, MAT_COMPRESSION_NONE}) {
    for (LabelClass cls : {LabelClass::kDouble, LabelClass::kUint8}) {
      SCOPED_TRACE(std::string(compression == MAT_COMPRESSION_ZLIB ? "zlib" : "uncompressed") +
                   (cls == LabelClass::kDouble ? ", y double" : ", y uint8"));
      const std::string p = path("svhn.mat");
      write_with_matio(p, kLabels, compression, cls);
      const Dataset ds = load_svhn_mat(p);
      expect_pixels(ds, 3);
      EXPECT_EQ(ds.labels, kDigits);  // 10 -> 0
      EXPECT_EQ(ds.source, p);
    }
  }
}

TEST_F(SvhnTest, EveryLabelMaps) {
  const std::vector<double> all = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  for (LabelClass cls : {LabelClass::kDouble, LabelClass::kUint8}) {
    const std::string p = path("all.mat");
    write_with_matio(p, all, MAT_COMPRESSION_ZLIB, cls);
    EXPECT_EQ(load_svhn_mat(p).labels, (std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 0}));
  }
}

TEST_F(SvhnTest, SliceKeepsChannels) {
  const std::string p = path("svhn.mat");
  write_with_matio(p, kLabels, MAT_COMPRESSION_ZLIB, LabelClass::kDouble);
  const Dataset ds = load_svhn_mat(p);
  const Dataset s = ds.slice(1, 3);
  EXPECT_EQ(s.channels, 3);
  EXPECT_EQ(s.dim, 3072);
  EXPECT_EQ(s.rows, 32);
  EXPECT_EQ(s.labels, (std::vector<int32_t>{1, 5}));
  EXPECT_EQ(s.image(0)[5], ds.image(1)[5]);
}

// --- happy paths: built here ---------------------------------------------------------------------

TEST_F(SvhnTest, BigAndLittleEndianBuiltFilesLoad) {
  for (bool big : {false, true}) {
    for (bool zipped : {false, true}) {
      SCOPED_TRACE(std::string(big ? "big" : "little") + (zipped ? ", zlib" : ", plain"));
      const MatBuilder m(big);
      Bytes x = m.matrix(images_var(3)), y = m.matrix(labels_var(kLabels));
      if (zipped) x = m.compressed(x), y = m.compressed(y);
      const Dataset ds = load_svhn_mat(write("built.mat", m.file({x, y})));
      expect_pixels(ds, 3);
      EXPECT_EQ(ds.labels, kDigits);
    }
  }
}

TEST_F(SvhnTest, OneImageAsMatlabWritesIt) {
  // MATLAB drops trailing singleton dimensions: one image is 32x32x3, its label 1x1.
  const MatBuilder m;
  const Bytes file = m.file({m.compressed(m.matrix(images_var(1, /*rank3=*/true))),
                             m.matrix({"y", mxDOUBLE, {1, 1}, miDOUBLE, doubles({7})})});
  const Dataset ds = load_svhn_mat(write("one.mat", file));
  expect_pixels(ds, 1);
  EXPECT_EQ(ds.labels, (std::vector<int32_t>{7}));
}

TEST_F(SvhnTest, CompactedRowLabelsAndOtherVariables) {
  // y of class double stored as miUINT8 (MATLAB's compaction), as a 1xN row; other variables
  // (a char array, a double matrix) around X and y are skipped.
  const MatBuilder m;
  const Var note{"note", mxCHAR, {1, 3}, miUINT8, Bytes{'a', 'b', 'c'}};
  const Var other{"mean", mxDOUBLE, {2, 2}, miDOUBLE, doubles({1, 2, 3, 4})};
  const Bytes file =
      m.file({m.matrix(note), m.compressed(m.matrix(images_var(3))), m.compressed(m.matrix(other)),
              m.matrix({"y", mxDOUBLE, {1, 3}, miUINT8, Bytes{10, 1, 5}})});
  const Dataset ds = load_svhn_mat(write("mixed.mat", file));
  expect_pixels(ds, 3);
  EXPECT_EQ(ds.labels, kDigits);
}

// --- faults: not a MAT 5 file --------------------------------------------------------------------

TEST_F(SvhnTest, MissingFileAndDirectory) {
  const std::string missing = path("nope.mat");
  expect_error([&] { load_svhn_mat(missing); }, {missing, "cannot open", "No such file"});
  expect_error([&] { load_svhn_mat(dir_.string()); },
               {dir_.string(), "cannot open: is a directory"});
}

TEST_F(SvhnTest, EmptyAndShortFiles) {
  expect_bad({}, {"empty file (0 bytes)"});
  expect_bad(Bytes(100, 'M'), {"not a MAT file: 100 bytes, shorter than the 128-byte"});
}

TEST_F(SvhnTest, NotAMat5File) {
  // An IDX file (one 32x32 image) and text: no 'IM' / 'MI' at bytes 126-127.
  Bytes idx(16 + 1024, 7);
  const uint8_t idx_header[] = {0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 32, 0, 0, 0, 32};
  std::copy(std::begin(idx_header), std::end(idx_header), idx.begin());
  expect_bad(idx, {"not a MAT 5 file: bytes 126-127 are 0x0707", "'IM' or 'MI'"});
  expect_bad(Bytes(200, 'x'), {"not a MAT 5 file: bytes 126-127 are 0x7878"});
  // A good file with its endian indicator damaged.
  Bytes bad = MatBuilder().file({MatBuilder().matrix(images_var(1))});
  bad[126] = 'X';
  expect_bad(bad, {"not a MAT 5 file", "0x584d"});
}

TEST_F(SvhnTest, WrongVersion) {
  const MatBuilder m;
  const Bytes x = m.matrix(images_var(1)), y = m.matrix(labels_var({1}));
  expect_bad(m.file({x, y}, 0x0200), {"MAT v7.3 file (HDF5) is not supported", "-v7"});
  expect_bad(m.file({x, y}, 0x0300), {"not a MAT 5 file: header version 0x0300"});
  expect_bad(MatBuilder(true).file({}, 0x0200), {"MAT v7.3"});
}

// --- faults: variables ---------------------------------------------------------------------------

TEST_F(SvhnTest, MissingOrDuplicateVariables) {
  const MatBuilder m;
  const Bytes x = m.matrix(images_var(3)), y = m.matrix(labels_var(kLabels));
  expect_bad(m.file({y}), {"no variable 'X' (the images)", "the file holds 'y'"});
  expect_bad(m.file({x}), {"no variable 'y' (the labels)", "the file holds 'X'"});
  expect_bad(m.file({}), {"no variable 'X'", "the file holds no variables"});
  expect_bad(m.file({x, y, m.compressed(x)}), {"two variables named 'X'", "bytes 128 and"});
  // libmatio reads names as C strings: "X\0b" is another X to it.
  Var shadow = images_var(3);
  shadow.name = std::string("X\0b", 3);
  expect_bad(m.file({m.matrix(shadow), x, y}), {"two variables named 'X'"});
}

TEST_F(SvhnTest, WrongImageClassOrShape) {
  const MatBuilder m;
  const Bytes y = m.matrix(labels_var(kLabels));
  Var x = images_var(3);
  x.cls = mxDOUBLE;
  expect_bad(m.file({m.matrix(x), y}),
             {"variable 'X' (element at byte 128) is double", "expected uint8 (32x32x3xN images)"});
  x = images_var(3);
  x.type = miINT8;
  expect_bad(m.file({m.matrix(x), y}), {"its data is miINT8, 9216 bytes; expected miUINT8"});
  x = images_var(3);
  x.flags = 0x0800;
  expect_bad(m.file({m.matrix(x), y}), {"'X' (element at byte 128) is complex"});
  for (const std::vector<int32_t>& dims : std::vector<std::vector<int32_t>>{
           {28, 28, 3, 3}, {32, 32, 1, 3}, {32, 32, 3, 3, 1}, {32, 96, 3}, {3072, 3}}) {
    x = images_var(3);
    x.dims = dims;
    std::string shape;
    for (int32_t d : dims) {
      if (!shape.empty()) shape += 'x';
      shape += std::to_string(d);
    }
    expect_bad(m.file({m.matrix(x), y}),
               {"'X' (element at byte 128) is " + shape, "expected 32x32x3xN"});
  }
  x = images_var(0);
  expect_bad(m.file({m.matrix(x), m.matrix(labels_var({}))}), {"X' (element at byte 128) holds "
                                                               "no images (32x32x3x0)"});
  x = images_var(3);
  x.dims[1] = -32;
  expect_bad(m.file({m.matrix(x), y}), {"dimension 2 is negative (-32)"});
  // A struct or cell never reaches libmatio.
  const Var s{"meta", mxSTRUCT, {1, 1}, miUINT8, {}};
  expect_bad(m.file({m.matrix(s), m.matrix(images_var(3)), y}),
             {"variable 'meta' (element at byte 128) has class struct",
              "only numeric and char arrays are read"});
}

TEST_F(SvhnTest, WrongLabelClassShapeOrCount) {
  const MatBuilder m;
  const Bytes x = m.matrix(images_var(3));
  Var y{"y", mxSINGLE, {3, 1}, miSINGLE, Bytes(12, 0)};
  expect_bad(m.file({x, m.matrix(y)}), {"variable 'y'", "is single, expected double or uint8"});
  y = labels_var({1, 2, 3, 4, 5, 6});
  y.dims = {3, 2};
  expect_bad(m.file({x, m.matrix(y)}), {"'y'", "is 3x2, expected a vector of labels (Nx1)"});
  expect_bad(m.file({x, m.matrix(labels_var({1, 2}))}),
             {"X holds 3 images but y holds 2 labels (2x1)"});
  y = labels_var(kLabels);
  y.data.resize(16);  // 2 doubles for 3 labels
  expect_bad(m.file({x, m.matrix(y)}), {"its data is miDOUBLE, 16 bytes; expected 3 numbers"});
}

TEST_F(SvhnTest, LabelsOutsideOneToTen) {
  const MatBuilder m;
  const Bytes x = m.matrix(images_var(3));
  for (double bad : {0.0, 11.0, 2.5, -1.0, std::nan("")}) {
    SCOPED_TRACE(bad);
    expect_bad(m.file({x, m.matrix(labels_var({1, bad, 3}))}),
               {"y[1] = ", "is not an SVHN label (an integer 1..10, 10 standing for digit 0)"});
  }
  expect_bad(m.file({x, m.matrix(labels_var({1, 2, 2.5}))}), {"y[2] = 2.5 is not"});
  for (uint8_t bad : {0, 11, 255}) {
    const Var y{"y", mxUINT8, {3, 1}, miUINT8, Bytes{1, 2, bad}};
    expect_bad(m.file({x, m.matrix(y)}), {"y[2] = " + std::to_string(bad) + " is not"});
  }
  // Through libmatio's writer too.
  const std::string p = path("eleven.mat");
  write_with_matio(p, {1, 11, 3}, MAT_COMPRESSION_ZLIB, LabelClass::kUint8);
  expect_error([&] { load_svhn_mat(p); }, {p, "y[1] = 11 is not an SVHN label"});
}

// --- faults: damaged files -----------------------------------------------------------------------

TEST_F(SvhnTest, TruncatedFiles) {
  for (matio_compression compression : {MAT_COMPRESSION_ZLIB, MAT_COMPRESSION_NONE}) {
    const Bytes good = matio_file(compression);
    const std::vector<Element> e = elements(good);
    ASSERT_EQ(e.size(), 2u);
    // Inside X's data, inside y, and inside a tag.
    for (size_t keep : {e[0].offset + 8 + e[0].nbytes / 2, good.size() - 3, size_t(132)}) {
      SCOPED_TRACE("keep " + std::to_string(keep) + " of " + std::to_string(good.size()));
      const Bytes cut(good.begin(), good.begin() + keep);
      expect_bad(cut, {"truncated: "});
    }
    expect_bad(Bytes(good.begin(), good.begin() + 128), {"no variable 'X'"});
  }
}

TEST_F(SvhnTest, TruncatedCompressedElement) {
  // X's zlib stream cut short, the element's size made to match, y still after it: the file is
  // consistent to the byte, only the stream ends early (libmatio fills zeros in silence).
  // 20 images, so the cut is far past the variable's header.
  const Bytes good =
      matio_file(MAT_COMPRESSION_ZLIB, LabelClass::kDouble, std::vector<double>(20, 3));
  const std::vector<Element> e = elements(good);
  const uint32_t keep = e[0].nbytes / 2;
  Bytes cut(good.begin(), good.begin() + e[0].offset + 8 + keep);
  put_le32(cut, e[0].offset + 4, keep);
  cut.insert(cut.end(), good.begin() + e[1].offset, good.end());
  expect_bad(cut, {"element at byte 128", "truncated compressed element",
                   "compressed bytes end before its zlib stream does"});
}

TEST_F(SvhnTest, CompressedStreamShorterOrLongerThanDeclared) {
  const MatBuilder m;
  const Bytes x = m.matrix(images_var(3)), y = m.matrix(labels_var(kLabels));
  // A complete, valid zlib stream holding only 2 of the 3 images the header declares.
  const Bytes short_x(x.begin(), x.end() - 3072);
  expect_bad(m.file({m.compressed(short_x), y}),
             {"variable 'X' (element at byte 128): compressed element inflates to",
              "its miMATRIX tag declares " + std::to_string(x.size())});
  // One that holds more than its miMATRIX tag says.
  Bytes long_x = x;
  long_x.resize(x.size() + 8, 0);
  expect_bad(m.file({m.compressed(long_x), y}), {"'X' (element at byte 128): compressed "
                                                 "element inflates past the"});
  // Bytes after the end of the zlib stream, inside the element.
  Bytes stream = MatBuilder::zlib(x);
  stream.insert(stream.end(), {1, 2, 3});
  expect_bad(m.file({m.wrap(stream), y}), {"3 bytes of its", "follow the end of its zlib stream"});
}

TEST_F(SvhnTest, CorruptCompressedElement) {
  const MatBuilder m;
  const Bytes x = m.matrix(images_var(3)), y = m.matrix(labels_var(kLabels));
  Bytes stream = MatBuilder::zlib(x);
  Bytes bad_check = stream;
  bad_check.back() ^= 1;  // Adler-32 of the data (libmatio never reads that far)
  expect_bad(m.file({m.wrap(bad_check), y}),
             {"'X' (element at byte 128): corrupt compressed element: zlib: incorrect data check"});
  Bytes bad_header = stream;
  bad_header[0] = 0x77;  // not a zlib header
  expect_bad(m.file({m.wrap(bad_header), y}),
             {"element at byte 128: corrupt compressed element: zlib:"});
  expect_bad(m.file({m.wrap(Bytes{1, 2, 3, 4}), y}), {"element at byte 128", "compressed"});
  expect_bad(m.file({m.wrap({}), y}), {"element at byte 128: truncated compressed element"});
}

TEST_F(SvhnTest, LyingSizesNeverReachAnAllocation) {
  const MatBuilder m;
  const Bytes y = m.matrix(labels_var(kLabels));
  // 1,000,000 images (3 GB) declared by a compressed element of a few hundred bytes: refused
  // from the sizes alone, before anything is inflated or allocated.
  Var x = images_var(1);
  x.dims[3] = 1000000;
  Bytes inner = m.matrix(x);
  // Element layout: miMATRIX tag [0, 8), array flags [8, 24), dimensions [24, 48), name
  // (small) [48, 56), data tag [56, 64): its size at 60.
  put_le32(inner, 4, uint32_t(inner.size() - 8 + 3072u * 999999u));  // miMATRIX size
  put_le32(inner, 60, 3072u * 1000000u);                             // data size
  expect_bad(m.file({m.compressed(inner), y}), {"more than deflate can expand it to"});
  // The same uncompressed: the element would run past the end of the file.
  expect_bad(m.file({inner, y}), {"truncated: element at byte 128 declares"});
  // An uncompressed X whose data subelement claims more than its element holds.
  Bytes plain = m.matrix(images_var(3));
  put_le32(plain, 60, 3072 * 4);
  expect_bad(m.file({plain, y}), {"its data subelement (12288 bytes) runs past the end of the "
                                  "variable"});
}

TEST_F(SvhnTest, StreamShorterThanItsHeaderIsRefusedWithoutTheAllocation) {
  // X declares 40,000 images (123 MB); its stream holds 20 MB of zeros and 128 KB of noise, so
  // its size passes the deflate-ratio bound, but it inflates to 20 MB only. The scan inflates it
  // into a 64 KB buffer and refuses it; libmatio would have allocated the 123 MB first.
  const MatBuilder m;
  Var x = images_var(1);
  x.dims[3] = 40000;
  Bytes inner = m.matrix(x);
  inner.resize(64);  // the tags only: miMATRIX, flags, dimensions, name, data tag
  put_le32(inner, 4, uint32_t(56 + 3072u * 40000u));
  put_le32(inner, 60, 3072u * 40000u);
  Bytes payload = inner;
  payload.resize(payload.size() + (20u << 20), 0);
  uint32_t state = 1;
  for (int i = 0; i < (128 << 10); ++i) {
    state = state * 1664525u + 1013904223u;
    payload.push_back(uint8_t(state >> 24));
  }
  const Bytes file = m.file(
      {m.wrap(MatBuilder::zlib(payload)), m.matrix(labels_var(std::vector<double>(40000, 1)))});
  const std::string p = write("short.mat", file);
  expect_error([&] { load_svhn_mat(p); },
               {p,
                "variable 'X' (element at byte 128): compressed element inflates to 21102656 "
                "bytes, its miMATRIX tag declares 122880064"});
#if !defined(__SANITIZE_ADDRESS__)
  EXPECT_EQ(exit_under_memory_cap([&] { load_svhn_mat(p); }, "compressed element inflates to",
                                  size_t{64} << 20),
            0)
      << "1: loaded, 2: another error, 3: an allocation failed";
#endif
}

TEST_F(SvhnTest, DamagedElementHeaders) {
  const MatBuilder m;
  const Bytes x = m.matrix(images_var(3)), y = m.matrix(labels_var(kLabels));
  // A top-level element that is not a variable.
  Bytes stray;
  m.u32(stray, miINT8);
  m.u32(stray, 8);
  stray.resize(16, 0);
  expect_bad(m.file({stray, x, y}), {"element at byte 128 is miINT8, expected miMATRIX or "
                                     "miCOMPRESSED"});
  // An uncompressed element whose size is not a multiple of 8.
  Bytes odd = x;
  put_le32(odd, 4, le32(odd, 4) - 3);
  expect_bad(m.file({odd, y}), {"not padded to a multiple of 8"});
  // Array flags of the wrong type.
  Bytes flags = x;
  put_le32(flags, 8, miINT8);
  expect_bad(m.file({flags, y}),
             {"element at byte 128: its array flags subelement is miINT8, 8 bytes; expected "
              "miUINT32, 8"});
  // A name that claims more than the variable holds.
  Bytes name = x;
  put_le32(name, 8 + 16 + 24, uint32_t(40000) << 16 | miINT8);
  expect_bad(m.file({name, y}), {"its name subelement is a small data element of 40000 bytes"});
  // A variable header past 4 KiB (a rank-2000 array).
  Var wide{"w", mxDOUBLE, std::vector<int32_t>(2000, 1), miDOUBLE, doubles({1})};
  expect_bad(m.file({m.matrix(wide), x, y}), {"its header is longer than 4096 bytes"});
  // A compressed element that holds something else than a miMATRIX.
  Bytes not_matrix = x;
  put_le32(not_matrix, 0, miUINT8);
  expect_bad(m.file({m.compressed(not_matrix), y}),
             {"element at byte 128: compressed element holds miUINT8, expected miMATRIX"});
  // Trailing bytes after the last element, too few for a tag.
  Bytes tail = m.file({x, y});
  tail.insert(tail.end(), {0, 0, 0});
  expect_bad(tail, {"truncated: 3 bytes at byte", "too few for an element tag"});
}

// --- an independent writer: scipy.io.savemat (optional) ------------------------------------------

// The first python3 that imports scipy.io, or "" (scripts/setup.sh installs python3-scipy for
// this test; a build without it skips the cross-check).
std::string python_with_scipy() {
  for (const char* python : {"python3", "/usr/bin/python3"}) {
    const std::string probe = std::string(python) + " -c 'import numpy, scipy.io' >/dev/null 2>&1";
    if (std::system(probe.c_str()) == 0) return python;
  }
  return "";
}

TEST_F(SvhnTest, LoadsWhatScipyWrites) {
  const std::string python = python_with_scipy();
  if (python.empty()) GTEST_SKIP() << "no python3 with scipy (optional cross-check)";
  // X[h, w, c, n] = pixel(h, w, c, n), which savemat stores column-major as MATLAB does; y as an
  // Nx1 double column (compressed file) and as a 1-D uint8 array, which savemat writes as 1xN.
  const std::string script = path("write.py");
  std::ofstream(script) << "import sys, numpy as np, scipy.io\n"
                           "h, w, c, n = np.meshgrid(*[np.arange(k) for k in (32, 32, 3, 4)],\n"
                           "                         indexing='ij')\n"
                           "X = ((7 * h + 13 * w + 101 * c + 37 * n) % 256).astype(np.uint8)\n"
                           "y = np.array([10, 1, 5, 9])\n"
                           "scipy.io.savemat(sys.argv[1], {'X': X, 'y': y.reshape(4, 1).astype("
                           "float)}, do_compression=True)\n"
                           "scipy.io.savemat(sys.argv[2], {'y': y.astype(np.uint8), 'X': X},\n"
                           "                 do_compression=False)\n";
  const std::string zipped = path("scipy_zlib.mat"), plain = path("scipy_plain.mat");
  ASSERT_EQ(std::system((python + " " + script + " " + zipped + " " + plain).c_str()), 0);
  for (const std::string& file : {zipped, plain}) {
    SCOPED_TRACE(file);
    const Dataset ds = load_svhn_mat(file);
    expect_pixels(ds, 4);
    EXPECT_EQ(ds.labels, (std::vector<int32_t>{0, 1, 5, 9}));
  }
}

// --- SVHN splits ---------------------------------------------------------------------------------

TEST_F(SvhnTest, FindSvhnFiles) {
  expect_error([&] { find_svhn_files(dir_.string()); }, {dir_.string(), "missing train_32x32.mat"});
  write("train_32x32.mat", {});
  EXPECT_TRUE(is_svhn_dir(dir_.string()));
  expect_error([&] { find_svhn_files(dir_.string()); }, {"missing test_32x32.mat"});
  write("test_32x32.mat", {});
  const SvhnFiles f = find_svhn_files(dir_.string());
  EXPECT_EQ(f.train, path("train_32x32.mat"));
  EXPECT_EQ(f.test, path("test_32x32.mat"));
  EXPECT_FALSE(is_svhn_dir(path("no-such-dir")));
  expect_error([&] { find_svhn_files(path("no-such-dir")); }, {"does not exist"});
}

TEST_F(SvhnTest, SplitsHoldOutTheLastTrainingImages) {
  const std::vector<double> train = {1, 2, 3, 4, 10}, test = {9, 8};
  write_with_matio(path("train_32x32.mat"), train, MAT_COMPRESSION_ZLIB, LabelClass::kDouble);
  write_with_matio(path("test_32x32.mat"), test, MAT_COMPRESSION_NONE, LabelClass::kUint8);
  DataSource src;
  src.directory = dir_.string();
  src.validation = 2;
  const DataSplits s = load_splits(src);
  EXPECT_FALSE(s.bundled);
  EXPECT_EQ(s.train.n, 3);
  EXPECT_EQ(s.validation.n, 2);
  EXPECT_EQ(s.test.n, 2);
  EXPECT_EQ(s.train.labels, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(s.validation.labels, (std::vector<int32_t>{4, 0}));
  EXPECT_EQ(s.test.labels, (std::vector<int32_t>{9, 8}));
  for (const Dataset* d : {&s.train, &s.validation, &s.test}) {
    EXPECT_EQ(d->channels, 3);
    EXPECT_EQ(d->dim, 3072);
  }
  // The validation images are the training file's last two, pixel for pixel.
  EXPECT_EQ(s.validation.image(0)[1024 + 5 * 32 + 7], pixel(5, 7, 1, 3) / 255.0f);
  // The default (3,257) needs more images than this file holds: a clear refusal, which says
  // the count was the automatic default and how to give another.
  src.validation = -1;
  expect_error([&] { load_splits(src); },
               {"--validation: auto holds out 3257, the default for SVHN data, which would "
                "leave no training examples out of 5: give --validation N with N below 5"});
  src.validation = 5;
  expect_error([&] { load_splits(src); },
               {"--validation: 5 would leave no training examples out of 5"});
}

TEST_F(SvhnTest, DefaultSplitIsThe3257LastImages) {
  // SVHN's 73,257 training images split 70,000 / 3,257; here 3,300 images -> 43 / 3,257.
  std::vector<double> train(3300);
  for (size_t i = 0; i < train.size(); ++i) train[i] = 1 + double(i % 10);
  write_with_matio(path("train_32x32.mat"), train, MAT_COMPRESSION_ZLIB, LabelClass::kUint8);
  write_with_matio(path("test_32x32.mat"), {3}, MAT_COMPRESSION_ZLIB, LabelClass::kUint8);
  DataSource src;
  src.directory = dir_.string();
  const DataSplits s = load_splits(src);
  EXPECT_EQ(s.train.n, 43);
  EXPECT_EQ(s.validation.n, 3257);
  EXPECT_EQ(s.validation.labels.front(), int32_t(43 % 10 + 1));
  EXPECT_EQ(s.test.n, 1);
}

}  // namespace
}  // namespace equivae
