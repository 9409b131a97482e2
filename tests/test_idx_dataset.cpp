// IDX reader: happy paths on files the tests write (plain and gzip), every
// fault with its message, find_mnist_files, and the real data sets.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "error_checks.h"
#include "memory_cap.h"
#include "model/data_splits.h"
#include "model/idx_dataset.h"
#include "runtime/error.h"
#include "scratch_files.h"

namespace equivae {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;
using test::exit_under_memory_cap;
using test::expect_error;
using testing::HasSubstr;

void put_be32(Bytes& b, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) b.push_back(static_cast<uint8_t>(v >> shift));
}

// IDX image file: magic, n, rows, cols, then the pixels as given (may be
// deliberately too few or too many).
Bytes idx_images(uint32_t n, uint32_t rows, uint32_t cols, const Bytes& pixels,
                 uint32_t magic = 0x00000803) {
  Bytes b;
  put_be32(b, magic);
  put_be32(b, n);
  put_be32(b, rows);
  put_be32(b, cols);
  b.insert(b.end(), pixels.begin(), pixels.end());
  return b;
}

Bytes idx_labels(uint32_t n, const Bytes& labels, uint32_t magic = 0x00000801) {
  Bytes b;
  put_be32(b, magic);
  put_be32(b, n);
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

// One gzip member in memory, so tests can cut or damage the compressed bytes.
Bytes gzip(const Bytes& raw) {
  z_stream s{};
  EXPECT_EQ(deflateInit2(&s, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  Bytes out(deflateBound(&s, raw.size()));
  s.next_in = const_cast<Bytef*>(raw.data());
  s.avail_in = static_cast<uInt>(raw.size());
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&s, Z_FINISH), Z_STREAM_END);
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;
}

// One gzip member of `head` followed by `zeros` zero bytes, deflated a chunk at a time so the
// test never holds the inflated size itself (100 MB of zeros deflate to about 100 KB).
Bytes gzip_with_zeros(const Bytes& head, size_t zeros) {
  z_stream s{};
  EXPECT_EQ(deflateInit2(&s, 9, Z_DEFLATED, 16 + MAX_WBITS, 9, Z_RLE), Z_OK);
  Bytes out;
  const Bytes chunk(1 << 20, 0);
  Bytes buf(1 << 16);
  auto feed = [&](const uint8_t* data, size_t size, int flush) {
    s.next_in = const_cast<Bytef*>(data);
    s.avail_in = static_cast<uInt>(size);
    do {
      s.next_out = buf.data();
      s.avail_out = static_cast<uInt>(buf.size());
      deflate(&s, flush);
      out.insert(out.end(), buf.data(), buf.data() + (buf.size() - s.avail_out));
    } while (s.avail_out == 0);
  };
  feed(head.data(), head.size(), Z_NO_FLUSH);
  for (size_t left = zeros; left > 0;) {
    const size_t n = std::min(left, chunk.size());
    left -= n;
    feed(chunk.data(), n, left == 0 ? Z_FINISH : Z_NO_FLUSH);
  }
  deflateEnd(&s);
  return out;
}

Bytes concat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// 3 images of 2x3 with distinctive pixels, and their labels.
const Bytes kPixels = {0, 255, 51, 1, 2, 3, 10, 20, 30, 40, 50, 60, 255, 254, 0, 128, 7, 9};
const Bytes kLabels = {0, 9, 4};

class IdxTest : public test::ScratchDirTest {
 protected:
  IdxTest() : ScratchDirTest("equivae_idx_") {}
  std::string good_images() { return write("images", idx_images(3, 2, 3, kPixels)); }
  std::string good_labels() { return write("labels", idx_labels(3, kLabels)); }
};

void expect_good(const Dataset& ds) {
  EXPECT_EQ(ds.n, 3);
  EXPECT_EQ(ds.rows, 2);
  EXPECT_EQ(ds.cols, 3);
  EXPECT_EQ(ds.dim, 6);
  EXPECT_EQ(ds.num_classes, 10);
  ASSERT_EQ(ds.images.size(), kPixels.size());
  for (size_t i = 0; i < kPixels.size(); ++i)
    EXPECT_FLOAT_EQ(ds.images[i], kPixels[i] / 255.0f) << "pixel " << i;
  EXPECT_EQ(ds.images[0], 0.0f);
  EXPECT_EQ(ds.images[1], 1.0f);  // 255 is exactly 1, not 0.99999
  EXPECT_EQ(ds.images[12], 1.0f);
  EXPECT_EQ(ds.image(2), ds.images.data() + 12);
  EXPECT_EQ(ds.image(2)[0], 1.0f);
  EXPECT_EQ(ds.labels, (std::vector<int32_t>{0, 9, 4}));
}

// --- happy paths --------------------------------------------------------------

TEST_F(IdxTest, LoadsPlainFiles) {
  const std::string images = good_images(), labels = good_labels();
  const Dataset ds = load_idx(images, labels);
  expect_good(ds);
  EXPECT_THAT(ds.source, HasSubstr(images));
  EXPECT_THAT(ds.source, HasSubstr(labels));
}

TEST_F(IdxTest, LoadsGzipFiles) {
  expect_good(load_idx(write("images.gz", gzip(idx_images(3, 2, 3, kPixels))),
                       write("labels.gz", gzip(idx_labels(3, kLabels)))));
}

TEST_F(IdxTest, GzipIsDetectedByContentNotByName) {
  // A gzip file without ".gz" and a plain file with ".gz" both load.
  expect_good(load_idx(write("images-no-suffix", gzip(idx_images(3, 2, 3, kPixels))),
                       write("labels-plain.gz", idx_labels(3, kLabels))));
}

TEST_F(IdxTest, LoadsConcatenatedGzipMembers) {
  // `cat a.gz b.gz` is a valid gzip file of the two payloads joined.
  const Bytes raw = idx_images(3, 2, 3, kPixels);
  const Bytes head(raw.begin(), raw.begin() + 20), tail(raw.begin() + 20, raw.end());
  expect_good(load_idx(write("images.gz", concat(gzip(head), gzip(tail))), good_labels()));
}

TEST_F(IdxTest, HonoursNumClasses) {
  const Dataset ds = load_idx(good_images(), good_labels(), 12);
  EXPECT_EQ(ds.num_classes, 12);
  expect_error([&] { load_idx(good_images(), good_labels(), 9); },
               {"label 9 at index 1", "[0, 9)"});
  expect_error([&] { load_idx(good_images(), good_labels(), 0); },
               {"num_classes must be at least 1, got 0"});
}

TEST_F(IdxTest, Slice) {
  const Dataset ds = load_idx(good_images(), good_labels());
  const Dataset s = ds.slice(1, 3);
  EXPECT_EQ(s.n, 2);
  EXPECT_EQ(s.rows, 2);
  EXPECT_EQ(s.cols, 3);
  EXPECT_EQ(s.dim, 6);
  EXPECT_EQ(s.num_classes, ds.num_classes);
  EXPECT_EQ(s.labels, (std::vector<int32_t>{9, 4}));
  EXPECT_EQ(s.images, std::vector<float>(ds.images.begin() + 6, ds.images.end()));
  EXPECT_THAT(s.source, HasSubstr(ds.source));
  EXPECT_THAT(s.source, HasSubstr("[1, 3)"));
  EXPECT_EQ(ds.slice(0, 3).images, ds.images);
  EXPECT_EQ(ds.slice(2, 2).n, 0);  // an empty range is a valid range

  expect_error([&] { ds.slice(-1, 2); }, {"bad slice [-1, 2)", "3 rows"});
  expect_error([&] { ds.slice(0, 4); }, {"bad slice [0, 4)", "3 rows"});
  expect_error([&] { ds.slice(2, 1); }, {"bad slice [2, 1)"});
}

// --- faults -------------------------------------------------------------------

TEST_F(IdxTest, MissingFile) {
  const std::string missing = (dir_ / "nope-images").string();
  expect_error([&] { load_idx(missing, good_labels()); }, {missing, "cannot open", "No such file"});
  const std::string missing_labels = (dir_ / "nope-labels").string();
  expect_error([&] { load_idx(good_images(), missing_labels); }, {missing_labels, "cannot open"});
}

TEST_F(IdxTest, DirectoryInsteadOfFile) {
  expect_error([&] { load_idx(dir_.string(), good_labels()); },
               {dir_.string(), "cannot open: is a directory"});
}

TEST_F(IdxTest, WrongMagicImages) {
  // The classic mistake: image and label paths swapped.
  const std::string images = good_images(), labels = good_labels();
  expect_error([&] { load_idx(labels, images); },
               {labels, "wrong magic 0x00000801 (an IDX uint8 label file)",
                "expected 0x00000803 (IDX uint8 images)"});
  const std::string text = write("text", Bytes{'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l',
                                               'd', '!', '!', '!', '!', '!', '!'});
  expect_error([&] { load_idx(text, labels); }, {text, "wrong magic 0x68656c6c (not an IDX file)"});
  const std::string floats = write("floats", idx_images(3, 2, 3, kPixels, 0x00000d03));
  expect_error([&] { load_idx(floats, labels); },
               {"wrong magic 0x00000d03 (IDX float32 with 3 dims)"});
}

TEST_F(IdxTest, WrongMagicLabels) {
  const std::string images = good_images();
  const std::string labels = write("labels", idx_labels(3, kLabels, 0x00000803));
  expect_error([&] { load_idx(images, labels); },
               {labels, "wrong magic 0x00000803", "expected 0x00000801 (IDX uint8 labels)"});
}

TEST_F(IdxTest, TruncatedImagePayload) {
  const Bytes short_pixels(kPixels.begin(), kPixels.end() - 1);
  const std::string images = write("images", idx_images(3, 2, 3, short_pixels));
  expect_error([&] { load_idx(images, good_labels()); },
               {images, "truncated: header declares 3 images of 2x3 = 18 bytes, file holds 17"});
}

TEST_F(IdxTest, TruncatedImagePayloadInsideGzip) {
  // A complete gzip stream whose IDX payload is short: the IDX check catches it.
  const Bytes short_pixels(kPixels.begin(), kPixels.begin() + 10);
  const std::string images = write("images.gz", gzip(idx_images(3, 2, 3, short_pixels)));
  expect_error([&] { load_idx(images, good_labels()); },
               {images, "truncated: header declares 3 images of 2x3 = 18 bytes, file holds 10",
                "(after gunzip)"});
}

TEST_F(IdxTest, TruncatedLabelPayload) {
  const std::string labels = write("labels", idx_labels(3, {0, 9}));
  expect_error([&] { load_idx(good_images(), labels); },
               {labels, "truncated: header declares 3 labels = 3 bytes, file holds 2"});
}

TEST_F(IdxTest, TruncatedImageHeader) {
  const Bytes full = idx_images(3, 2, 3, kPixels);
  const std::string images = write("images", Bytes(full.begin(), full.begin() + 10));
  expect_error([&] { load_idx(images, good_labels()); },
               {images, "header truncated: file holds 10 bytes", "header needs 16"});
  // Shorter than the magic itself, and empty.
  const std::string tiny = write("tiny", Bytes{0, 0});
  expect_error([&] { load_idx(tiny, good_labels()); },
               {tiny, "header truncated: file holds 2 bytes"});
  const std::string empty = write("empty", Bytes{});
  expect_error([&] { load_idx(empty, good_labels()); },
               {empty, "header truncated: file holds 0 bytes"});
}

TEST_F(IdxTest, TruncatedLabelHeader) {
  const std::string labels = write("labels", Bytes{0, 0, 8, 1, 0, 0});
  expect_error([&] { load_idx(good_images(), labels); },
               {labels, "header truncated: file holds 6 bytes", "labels header needs 8"});
}

TEST_F(IdxTest, TrailingBytesImages) {
  const std::string images = write("images", idx_images(3, 2, 3, concat(kPixels, {1, 2, 3, 4, 5})));
  expect_error([&] { load_idx(images, good_labels()); },
               {images, "size mismatch: header declares 3 images of 2x3 = 18 bytes, file holds 23",
                "5 bytes of trailing data"});
}

TEST_F(IdxTest, TrailingBytesLabels) {
  const std::string labels = write("labels", idx_labels(3, {0, 9, 4, 4}));
  expect_error([&] { load_idx(good_images(), labels); },
               {labels, "size mismatch: header declares 3 labels = 3 bytes, file holds 4",
                "1 bytes of trailing data"});
}

TEST_F(IdxTest, CountMismatch) {
  const std::string images = good_images();
  const std::string labels = write("labels2", idx_labels(2, {0, 9}));
  expect_error([&] { load_idx(images, labels); },
               {images, labels, "holds 3 images", "holds 2 labels"});
}

TEST_F(IdxTest, LabelOutOfRange) {
  const std::string labels = write("labels", idx_labels(3, {1, 10, 2}));
  expect_error([&] { load_idx(good_images(), labels); },
               {labels, "label 10 at index 1 is out of range [0, 10)"});
  const std::string big = write("labels-big", idx_labels(3, {1, 2, 255}));
  expect_error([&] { load_idx(good_images(), big); }, {"label 255 at index 2"});
}

TEST_F(IdxTest, EmptySet) {
  const std::string images = write("images", idx_images(0, 2, 3, {}));
  const std::string labels = write("labels0", idx_labels(0, {}));
  expect_error([&] { load_idx(images, labels); },
               {images, "empty data set: header declares 0 images"});
  expect_error([&] { load_idx(good_images(), labels); },
               {labels, "empty data set: header declares 0 labels"});
}

TEST_F(IdxTest, ZeroDims) {
  const std::string zero_rows = write("zero-rows", idx_images(3, 0, 3, {}));
  expect_error([&] { load_idx(zero_rows, good_labels()); },
               {zero_rows, "zero-sized images: header declares 0x3"});
  const std::string zero_cols = write("zero-cols", idx_images(3, 2, 0, {}));
  expect_error([&] { load_idx(zero_cols, good_labels()); },
               {zero_cols, "zero-sized images: header declares 2x0"});
}

TEST_F(IdxTest, HugeHeaderDoesNotOverflow) {
  // 2^32-1 images of 65535x65535 would overflow 32-bit arithmetic; must fail cleanly.
  const std::string images = write("huge", idx_images(0xffffffff, 0xffff, 0xffff, kPixels));
  expect_error([&] { load_idx(images, good_labels()); }, {images, "too large"});
  const std::string many = write("many", idx_images(0xffffffff, 28, 28, kPixels));
  expect_error([&] { load_idx(many, good_labels()); },
               {many, "truncated: header declares 4294967295 images of 28x28 = 3367254359280"});
}

TEST_F(IdxTest, CorruptGzip) {
  const Bytes gz = gzip(idx_images(3, 2, 3, kPixels));
  // Damaged CRC32 in the trailer: every byte arrives, but the check fails.
  Bytes bad_crc = gz;
  bad_crc[bad_crc.size() - 8] ^= 0xff;
  const std::string crc = write("crc.gz", bad_crc);
  expect_error([&] { load_idx(crc, good_labels()); },
               {crc, "corrupt gzip stream: incorrect data check"});
  // Gzip magic, then an unknown compression method.
  Bytes bad_method = gz;
  bad_method[2] = 7;
  const std::string method = write("method.gz", bad_method);
  expect_error([&] { load_idx(method, good_labels()); },
               {method, "corrupt gzip stream", "unknown compression method"});
  // Gzip magic followed by junk.
  const std::string junk = write("junk.gz", Bytes{0x1f, 0x8b, 'n', 'o', 't', ' ', 'g', 'z'});
  expect_error([&] { load_idx(junk, good_labels()); }, {junk, "corrupt gzip"});
  // A complete stream followed by bytes that are not another member.
  const std::string trailing = write("trailing.gz", concat(gz, {0, 0, 0}));
  expect_error([&] { load_idx(trailing, good_labels()); },
               {trailing, "3 bytes of trailing data after the gzip stream"});
}

TEST_F(IdxTest, TruncatedGzip) {
  const Bytes gz = gzip(idx_images(3, 2, 3, kPixels));
  // Cut mid-stream, and cut just the 8-byte trailer (all data present, no CRC):
  // both must be "truncated", never silently short data.
  for (size_t keep : {gz.size() / 2, gz.size() - 8, gz.size() - 1, size_t{12}}) {
    SCOPED_TRACE("keep " + std::to_string(keep) + " of " + std::to_string(gz.size()));
    const std::string images = write("cut.gz", Bytes(gz.begin(), gz.begin() + keep));
    expect_error([&] { load_idx(images, good_labels()); },
                 {images, "truncated gzip stream", std::to_string(keep) + " compressed bytes"});
  }
  const Bytes gz_labels = gzip(idx_labels(3, kLabels));
  const std::string labels = write("labels-cut.gz", Bytes(gz_labels.begin(), gz_labels.end() - 4));
  expect_error([&] { load_idx(good_images(), labels); }, {labels, "truncated gzip stream"});
}

TEST_F(IdxTest, GzipBombStopsAtTheSizeItsHeaderImplies) {
  // The header declares 10 images of 28x28 (7,840 bytes); the stream goes on to 100 MB of
  // zeros. gunzip stops one byte past the declared size: no 100 MB buffer, no waiting.
  constexpr size_t kInflated = 100u << 20;
  const Bytes images_gz = gzip_with_zeros(idx_images(10, 28, 28, {}), kInflated);
  ASSERT_LT(images_gz.size(), size_t{1} << 20);  // a file of about 100 KB
  const std::string images = write("bomb-images.gz", images_gz);
  const std::string labels =
      write("bomb-labels.gz", gzip_with_zeros(idx_labels(10, {}), kInflated));
  const std::string ten_labels = write("labels10", idx_labels(10, Bytes(10, 1)));
  const std::string ten_images = write("images10", idx_images(10, 28, 28, Bytes(7840, 9)));

  const auto start = std::chrono::steady_clock::now();
  expect_error([&] { load_idx(images, ten_labels); },
               {images, "size mismatch: header declares 10 images of 28x28 = 7840 bytes",
                "the gzip stream inflates past them (stopped at 7841 bytes after the 16-byte "
                "header",
                "trailing data"});
  expect_error([&] { load_idx(ten_images, labels); },
               {labels, "size mismatch: header declares 10 labels = 10 bytes",
                "the gzip stream inflates past them (stopped at 11 bytes after the 8-byte header"});
  // Inflating the 100 MB takes about 0.2 s here; stopping at the header size, microseconds.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
#if !defined(__SANITIZE_ADDRESS__)
  // With 32 MiB of address space to spare the reader still fails with its message: it never
  // asks for the 100 MB.
  EXPECT_EQ(exit_under_memory_cap([&] { load_idx(images, ten_labels); }, "inflates past them",
                                  size_t{32} << 20),
            0)
      << "1: loaded, 2: another error, 3: an allocation failed";
#endif

  // The same header with exactly its payload still loads through the capped path, and a short
  // stream is still "truncated".
  const Bytes exact = gzip(idx_images(10, 28, 28, Bytes(7840, 200)));
  EXPECT_EQ(load_idx(write("exact.gz", exact), ten_labels).n, 10);
  const std::string short_gz = write("short.gz", gzip(idx_images(10, 28, 28, Bytes(7839, 1))));
  expect_error([&] { load_idx(short_gz, ten_labels); },
               {"truncated: header declares 10 images of 28x28 = 7840 bytes, file holds 7839"});
}

TEST_F(IdxTest, GzipWithWrongMagicStopsAfterTheHeader) {
  // A label file where images belong, gzip-bombed: the magic is refused without the bomb.
  const std::string wrong = write("wrong.gz", gzip_with_zeros(idx_labels(10, {}), 50u << 20));
  expect_error([&] { load_idx(wrong, good_labels()); },
               {wrong, "wrong magic 0x00000801 (an IDX uint8 label file)"});
#if !defined(__SANITIZE_ADDRESS__)
  EXPECT_EQ(exit_under_memory_cap([&] { load_idx(wrong, good_labels()); }, "wrong magic",
                                  size_t{32} << 20),
            0);
#endif
}

TEST_F(IdxTest, PlainFileIsReadNoFurtherThanItsHeaderImplies) {
  // 48 MB: a wrong file (zeros, so a wrong magic) and a right header followed by the rest.
  constexpr size_t kBig = size_t{48} << 20;
  const std::string zeros = write("zeros", Bytes(kBig, 0));
  const std::string long_images =
      write("long", idx_images(3, 2, 3, concat(kPixels, Bytes(kBig, 7))));
  expect_error([&] { load_idx(zeros, good_labels()); }, {zeros, "wrong magic 0x00000000"});
  expect_error([&] { load_idx(long_images, good_labels()); },
               {long_images, "size mismatch: header declares 3 images of 2x3 = 18 bytes",
                "file holds " + std::to_string(18 + kBig) + " bytes after the 16-byte header (" +
                    std::to_string(kBig) + " bytes of trailing data)"});
#if !defined(__SANITIZE_ADDRESS__)
  // With 16 MiB to spare both are refused with their messages: neither file is read whole.
  EXPECT_EQ(exit_under_memory_cap([&] { load_idx(zeros, good_labels()); }, "wrong magic",
                                  size_t{16} << 20),
            0)
      << "1: loaded, 2: another error, 3: an allocation failed";
  EXPECT_EQ(exit_under_memory_cap([&] { load_idx(long_images, good_labels()); }, "trailing data",
                                  size_t{16} << 20),
            0);
#endif
}

TEST_F(IdxTest, GzipAllocatesWhatItsStreamYieldsNotWhatItsTrailerClaims) {
  // 12 MB of incompressible bytes behind a wrong magic, gzipped; the trailer's size (ISIZE)
  // forged to 60 times the file, as a bomb's would be.
  Bytes noise(size_t{12} << 20);
  uint64_t x = 88172645463325252ull;
  for (uint8_t& b : noise) x ^= x << 13, x ^= x >> 7, x ^= x << 17, b = uint8_t(x);
  Bytes gz = gzip(noise);
  const uint32_t forged = uint32_t(std::min<uint64_t>(60 * uint64_t(gz.size()), UINT32_MAX));
  for (int k = 0; k < 4; ++k) gz[gz.size() - 4 + k] = uint8_t(forged >> (8 * k));
  const std::string path = write("noise.gz", gz);
  expect_error([&] { load_idx(path, good_labels()); }, {path, "wrong magic"});
#if !defined(__SANITIZE_ADDRESS__)
  // The compressed bytes and 24 MiB to spare: neither the forged size (720 MB) nor a guess of 4
  // times the file (48 MB) is allocated before the header is seen.
  EXPECT_EQ(exit_under_memory_cap([&] { load_idx(path, good_labels()); }, "wrong magic",
                                  size_t{24} << 20),
            0)
      << "1: loaded, 2: another error, 3: an allocation failed";
#endif
}

// --- find_mnist_files -----------------------------------------------------------

TEST_F(IdxTest, FindMnistFilesPlain) {
  for (const char* name : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"})
    write(name, {});
  const MnistFiles f = find_mnist_files(dir_.string());
  EXPECT_EQ(f.train_images, (dir_ / "train-images-idx3-ubyte").string());
  EXPECT_EQ(f.train_labels, (dir_ / "train-labels-idx1-ubyte").string());
  EXPECT_EQ(f.test_images, (dir_ / "t10k-images-idx3-ubyte").string());
  EXPECT_EQ(f.test_labels, (dir_ / "t10k-labels-idx1-ubyte").string());
}

TEST_F(IdxTest, FindMnistFilesGzipAndDotted) {
  // A mix: gzip names, and the dotted variant some mirrors use.
  for (const char* name : {"train-images-idx3-ubyte.gz", "train-labels.idx1-ubyte",
                           "t10k-images.idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"})
    write(name, {});
  const MnistFiles f = find_mnist_files(dir_.string());
  EXPECT_EQ(f.train_images, (dir_ / "train-images-idx3-ubyte.gz").string());
  EXPECT_EQ(f.train_labels, (dir_ / "train-labels.idx1-ubyte").string());
  EXPECT_EQ(f.test_images, (dir_ / "t10k-images.idx3-ubyte.gz").string());
  EXPECT_EQ(f.test_labels, (dir_ / "t10k-labels-idx1-ubyte.gz").string());
}

TEST_F(IdxTest, FindMnistFilesLoadsWhatItFinds) {
  write("train-images-idx3-ubyte.gz", gzip(idx_images(3, 2, 3, kPixels)));
  write("train-labels-idx1-ubyte.gz", gzip(idx_labels(3, kLabels)));
  write("t10k-images-idx3-ubyte", idx_images(3, 2, 3, kPixels));
  write("t10k-labels-idx1-ubyte", idx_labels(3, kLabels));
  const MnistFiles f = find_mnist_files(dir_.string());
  expect_good(load_idx(f.train_images, f.train_labels));
  expect_good(load_idx(f.test_images, f.test_labels));
}

TEST_F(IdxTest, FindMnistFilesMissing) {
  for (const char* name :
       {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"})
    write(name, {});
  expect_error([&] { find_mnist_files(dir_.string()); },
               {dir_.string(), "missing t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte.gz"});
  // A directory of the file's name is not the file.
  fs::create_directory(dir_ / "t10k-labels-idx1-ubyte");
  expect_error([&] { find_mnist_files(dir_.string()); }, {"missing t10k-labels-idx1-ubyte"});
  const std::string nodir = (dir_ / "no-such-dir").string();
  expect_error([&] { find_mnist_files(nodir); }, {nodir, "does not exist"});
  const std::string file = write("a-file", {});
  expect_error([&] { find_mnist_files(file); }, {file, "not a directory"});
}

// --- load_splits: which files the data flags name -------------------------------

TEST_F(IdxTest, SplitsTakeTheBundledDigitsOnlyWhenNoDataFlagNamesAFile) {
  for (std::string DataSource::*field : {&DataSource::train_images, &DataSource::train_labels,
                                         &DataSource::test_images, &DataSource::test_labels}) {
    DataSource src;
    src.bundled_dir = "no-bundled-digits-here";  // would fail to open if they were read
    src.*field = good_images();
    EXPECT_FALSE(src.bundled());
    // Each alone: its pair is missing, or the training files are.
    expect_error([&] { load_splits(src); }, {"needs --"});
  }
  // The test pair alone: training files or --data are needed, the bundled digits not taken.
  DataSource src;
  src.bundled_dir = "no-bundled-digits-here";
  src.test_images = good_images();
  src.test_labels = good_labels();
  expect_error([&] { load_splits(src); },
               {"--test-images", "needs --train-images and --train-labels or --data DIR",
                "only when no data flag is given"});
}

TEST_F(IdxTest, SplitsPairEveryImageFileWithItsOwnLabels) {
  DataSource src;
  src.train_images = good_images();
  src.train_labels = good_labels();
  src.validation = 0;
  // The training pair alone: the test pair is needed, said in one readable line.
  expect_error([&] { load_splits(src); },
               {"--train-images: needs --test-images and --test-labels"});
  src.test_images = write("my-images", idx_images(3, 2, 3, kPixels));
  expect_error([&] { load_splits(src); }, {"--test-images", "needs --test-labels"});
  src.test_labels = write("my-labels", idx_labels(3, {2, 2, 2}));
  EXPECT_EQ(load_splits(src).test.labels, (std::vector<int32_t>{2, 2, 2}));
  src.test_images.clear();
  expect_error([&] { load_splits(src); }, {"--test-labels", "needs --test-images"});
}

// --data names a directory's four files; a file flag beside it would mix two data sets (the
// user's training files tested on the directory's test files, 95% error on Fashion-MNIST).
TEST_F(IdxTest, SplitsRefuseADirectoryWithFilesBesideIt) {
  write("train-images-idx3-ubyte", idx_images(3, 2, 3, kPixels));
  write("train-labels-idx1-ubyte", idx_labels(3, kLabels));
  write("t10k-images-idx3-ubyte", idx_images(3, 2, 3, kPixels));
  write("t10k-labels-idx1-ubyte", idx_labels(3, {1, 1, 1}));
  DataSource src;
  src.directory = dir_.string();
  src.validation = 0;
  EXPECT_EQ(load_splits(src).test.labels, (std::vector<int32_t>{1, 1, 1}));
  for (std::string DataSource::*field : {&DataSource::train_images, &DataSource::train_labels,
                                         &DataSource::test_images, &DataSource::test_labels}) {
    DataSource both = src;
    both.*field = good_images();
    expect_error([&] { load_splits(both); }, {"cannot be combined with --data"});
  }
}

TEST_F(IdxTest, SplitsRefuseTestImagesOfAnotherShape) {
  // 3x2 test images against 2x3 training ones: the same 6 values, not the same images.
  DataSource src;
  src.train_images = good_images();
  src.train_labels = good_labels();
  src.test_images = write("images-3x2", idx_images(3, 3, 2, kPixels));
  src.test_labels = good_labels();
  src.validation = 0;
  expect_error([&] { load_splits(src); },
               {src.test_images, "test images are 1x3x2, training images 1x2x3"});
  src.test_images = good_images();
  EXPECT_EQ(load_splits(src).test.n, 3);
}

// --- real data ------------------------------------------------------------------

// Per-class counts of a loaded set.
std::vector<int64_t> class_counts(const Dataset& ds) {
  std::vector<int64_t> counts(ds.num_classes, 0);
  for (int32_t label : ds.labels) {
    EXPECT_GE(label, 0);
    EXPECT_LT(label, ds.num_classes);
    if (label >= 0 && label < ds.num_classes) ++counts[label];
  }
  return counts;
}

TEST(IdxRealData, BundledMnist10k) {
  const Dataset ds = load_idx(EQUIVAE_SOURCE_DIR "/data/mnist10k-images-idx3-ubyte.gz",
                              EQUIVAE_SOURCE_DIR "/data/mnist10k-labels-idx1-ubyte.gz");
  EXPECT_EQ(ds.n, 10000);
  EXPECT_EQ(ds.rows, 28);
  EXPECT_EQ(ds.cols, 28);
  EXPECT_EQ(ds.dim, 784);
  ASSERT_EQ(ds.images.size(), size_t{10000} * 784);
  ASSERT_EQ(ds.labels.size(), size_t{10000});
  // Class counts from data/README.md (first 10,000 MNIST training digits).
  EXPECT_EQ(class_counts(ds),
            (std::vector<int64_t>{1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978}));
  double sum = 0;
  int64_t ones = 0;
  for (float p : ds.images) {
    ASSERT_GE(p, 0.0f);
    ASSERT_LE(p, 1.0f);
    sum += p;
    ones += p == 1.0f;
  }
  // MNIST's well-known mean pixel is 0.1307; saturated strokes give many exact 1s.
  EXPECT_NEAR(sum / ds.images.size(), 0.1307, 0.01);
  EXPECT_GT(ones, 10000);
}

TEST(IdxRealData, DebianFashionMnist) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::is_directory(dir))
    GTEST_SKIP() << dir << " is absent (scripts/setup.sh installs dataset-fashion-mnist)";
  const MnistFiles f = find_mnist_files(dir);
  EXPECT_EQ(f.train_images, dir + "/train-images-idx3-ubyte.gz");
  EXPECT_EQ(f.test_labels, dir + "/t10k-labels-idx1-ubyte.gz");
  const Dataset train = load_idx(f.train_images, f.train_labels);
  const Dataset test = load_idx(f.test_images, f.test_labels);
  EXPECT_EQ(train.n, 60000);
  EXPECT_EQ(test.n, 10000);
  for (const Dataset* ds : {&train, &test}) {
    EXPECT_EQ(ds->rows, 28);
    EXPECT_EQ(ds->cols, 28);
    EXPECT_EQ(ds->dim, 784);
  }
  // Fashion-MNIST is exactly balanced: 6,000 / 1,000 per class.
  EXPECT_EQ(class_counts(train), std::vector<int64_t>(10, 6000));
  EXPECT_EQ(class_counts(test), std::vector<int64_t>(10, 1000));
}

}  // namespace
}  // namespace equivae
