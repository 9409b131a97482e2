// Philox4x32-10: Random123 known answers, the engine's (seed, step, row, col) counter contract,
// and the distributions built on it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <tuple>
#include <vector>

#include "kernels/philox.h"

namespace equivae {
namespace {

// Random123 1.14 examples/kat_vectors, the three "philox4x32 10" lines
// (columns: counter[4], key[2], expected output[4]).
struct Kat {
  PhiloxState counter;
  uint32_t key0, key1;
  PhiloxState expected;
};
const Kat kKats[] = {
    {{{0x00000000, 0x00000000, 0x00000000, 0x00000000}},
     0x00000000,
     0x00000000,
     {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}}},
    {{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}},
     0xffffffff,
     0xffffffff,
     {{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}}},
    {{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}},
     0xa4093822,
     0x299f31d0,
     {{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}},
};

TEST(Philox, Random123KnownAnswers) {
  for (const Kat& kat : kKats) {
    const PhiloxState out = philox4x32_10(kat.counter, kat.key0, kat.key1);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(out.v[i], kat.expected.v[i]) << "word " << i;
  }
}

// The counter layout is part of the engine's contract (CPU and CUDA must agree on it), so pin
// it: every bit of seed and step, including the high halves, must reach the generator.
TEST(Philox, CounterContract) {
  const uint64_t seed = 0x0123456789abcdefull, step = 0xfedcba9876543210ull;
  const uint32_t row = 77, col = 1234;
  const PhiloxState want =
      philox4x32_10({{col, row, 0x76543210u, 0xfedcba98u}}, 0x89abcdefu, 0x01234567u);
  const PhiloxState got = philox_block(seed, step, row, col);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(got.v[i], want.v[i]);
  EXPECT_EQ(philox_uniform<double>(seed, step, row, col), (want.v[0] + 0.5) * 0x1p-32);
  const double u1 = (want.v[0] + 0.5) * 0x1p-32, u2 = (want.v[1] + 0.5) * 0x1p-32;
  EXPECT_DOUBLE_EQ(philox_normal<double>(seed, step, row, col),
                   std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2));
}

TEST(Philox, Deterministic) {
  for (uint32_t i = 0; i < 1000; ++i) {
    EXPECT_EQ(philox_uniform<float>(42, 7, i, 3 * i), philox_uniform<float>(42, 7, i, 3 * i));
    EXPECT_EQ(philox_normal<double>(42, 7, i, 3 * i), philox_normal<double>(42, 7, i, 3 * i));
    EXPECT_EQ(philox_below(10, 42, 7, i, 3 * i), philox_below(10, 42, 7, i, 3 * i));
  }
}

// Changing any one coordinate, including only the high half of seed or step, must change the
// value: a layout bug (e.g. row and col swapped into the same word) would collide here.
TEST(Philox, DistinctCoordinatesGiveDistinctValues) {
  const uint64_t seeds[] = {0, 1, 2, 1ull << 32, (1ull << 32) + 1};
  const uint64_t steps[] = {0, 1, 2, 1ull << 32, (1ull << 32) + 1};
  const uint32_t idx[] = {0, 1, 2, 0x80000000u};
  std::set<std::tuple<uint32_t, uint32_t, uint32_t, uint32_t>> blocks;
  std::set<double> uniforms;
  size_t n = 0;
  for (uint64_t seed : seeds)
    for (uint64_t step : steps)
      for (uint32_t row : idx)
        for (uint32_t col : idx) {
          const PhiloxState b = philox_block(seed, step, row, col);
          blocks.insert({b.v[0], b.v[1], b.v[2], b.v[3]});
          uniforms.insert(philox_uniform<double>(seed, step, row, col));
          ++n;
        }
  EXPECT_EQ(blocks.size(), n);    // 128-bit outputs: a collision would be a bug
  EXPECT_EQ(uniforms.size(), n);  // 32-bit word 0: 400 draws collide with p ~ 2e-5
  // Swapping row and col must not give the same value either.
  EXPECT_NE(philox_uniform<double>(5, 5, 1, 2), philox_uniform<double>(5, 5, 2, 1));
}

// The float map is monotone in x (float(x), + 0.5f and the clamp are all non-decreasing and
// * 2^-32 is exact), so its extremes are at x = 0 and x = 2^32 - 1; check both ends of the
// range exhaustively (where rounding up to 1 would happen without the clamp) and the middle
// with a stride, for the open interval, monotonicity and agreement with double.
TEST(Philox, UnitMapIsOpenIntervalAndMonotone) {
  EXPECT_EQ(philox_unit<float>(0), 0x1p-33f);
  EXPECT_EQ(philox_unit<float>(0xffffffffu), 0x1.fffffep-1f);  // largest float below 1
  EXPECT_EQ(philox_unit<double>(0), 0x1p-33);
  EXPECT_EQ(philox_unit<double>(0xffffffffu), 1 - 0x1p-33);
  float previous = 0;
  double worst_rel = 0;
  int clamped = 0;
  const uint64_t ends = 1u << 22;
  for (uint64_t x = 0; x <= 0xffffffffull; x += (x < ends || x >= (1ull << 32) - ends) ? 1 : 997) {
    const float f = philox_unit<float>(static_cast<uint32_t>(x));
    const double d = philox_unit<double>(static_cast<uint32_t>(x));
    ASSERT_GT(f, 0.0f) << x;
    ASSERT_LT(f, 1.0f) << x;
    ASSERT_GE(f, previous) << x;
    previous = f;
    clamped += f == 0x1.fffffep-1f && d > 1 - 0x1p-25;
    worst_rel = std::max(worst_rel, std::fabs(f - d) / d);
  }
  EXPECT_EQ(clamped, 128) << "words >= 2^32 - 128 round to 1 in float and must be clamped";
  EXPECT_LE(worst_rel, 0x1p-23);
}

constexpr int kDraws = 1000000;

TEST(Philox, UniformMoments) {
  for (int precision = 0; precision < 2; ++precision) {
    double sum = 0, sum2 = 0;
    for (int i = 0; i < kDraws; ++i) {
      const uint32_t row = static_cast<uint32_t>(i / 1000), col = static_cast<uint32_t>(i % 1000);
      const double u = precision == 0 ? philox_uniform<float>(1234, 99, row, col)
                                      : philox_uniform<double>(1234, 99, row, col);
      ASSERT_GT(u, 0.0);
      ASSERT_LT(u, 1.0);
      sum += u;
      sum2 += u * u;
    }
    const double mean = sum / kDraws, var = sum2 / kDraws - mean * mean;
    // 5 standard errors: sd(mean) = sqrt(1/12 / n) ~ 2.9e-4; sd(var) = sqrt((1/80 - 1/144) / n)
    // ~ 7.5e-5.
    EXPECT_NEAR(mean, 0.5, 5 * 2.9e-4) << (precision ? "double" : "float");
    EXPECT_NEAR(var, 1.0 / 12, 5 * 7.5e-5) << (precision ? "double" : "float");
  }
}

TEST(Philox, NormalMomentsAndKolmogorovSmirnov) {
  std::vector<double> z(kDraws);
  double sum = 0, sum2 = 0, sum4 = 0;
  for (int i = 0; i < kDraws; ++i) {
    z[i] = philox_normal<double>(2024, 3, static_cast<uint32_t>(i % 160),
                                 static_cast<uint32_t>(i / 160));
    ASSERT_TRUE(std::isfinite(z[i]));
    sum += z[i];
    sum2 += z[i] * z[i];
    sum4 += z[i] * z[i] * z[i] * z[i];
  }
  const double mean = sum / kDraws, var = sum2 / kDraws - mean * mean;
  EXPECT_NEAR(mean, 0.0, 5 * 1e-3);             // sd(mean) = 1 / sqrt(n)
  EXPECT_NEAR(var, 1.0, 5 * 1.42e-3);           // sd(var) = sqrt(2 / n)
  EXPECT_NEAR(sum4 / kDraws, 3.0, 5 * 9.8e-3);  // sd(m4) = sqrt(96 / n)
  // Kolmogorov-Smirnov against Phi: sup |F_n - Phi|; the 0.1% critical value is 1.949/sqrt(n).
  std::sort(z.begin(), z.end());
  double d = 0;
  for (int i = 0; i < kDraws; ++i) {
    const double phi = 0.5 * std::erfc(-z[i] / std::sqrt(2.0));
    d = std::max({d, phi - double(i) / kDraws, double(i + 1) / kDraws - phi});
  }
  EXPECT_LT(d, 1.949 / std::sqrt(double(kDraws))) << "KS statistic " << d;
}

// The KS test must be able to fail: a plausible bug (using u1 in both Box-Muller slots) is
// rejected by the same statistic.
TEST(Philox, KolmogorovSmirnovDetectsBrokenBoxMuller) {
  const int n = 100000;
  std::vector<double> z(n);
  for (int i = 0; i < n; ++i) {
    const double u = philox_uniform<double>(1, 1, 0, static_cast<uint32_t>(i));
    z[i] = std::sqrt(-2 * std::log(u)) * std::cos(2 * M_PI * u);
  }
  std::sort(z.begin(), z.end());
  double d = 0;
  for (int i = 0; i < n; ++i) {
    const double phi = 0.5 * std::erfc(-z[i] / std::sqrt(2.0));
    d = std::max({d, phi - double(i) / n, double(i + 1) / n - phi});
  }
  EXPECT_GT(d, 1.949 / std::sqrt(double(n)));
}

// float and double see the same words; they differ only by float rounding. For the normal,
// the float result must match the exact (double) Box-Muller formula evaluated at the float
// uniforms to a few float ulps; the uniforms themselves agree to float rounding.
TEST(Philox, FloatAndDoubleAgree) {
  double worst_uniform = 0, worst_formula = 0, worst_direct = 0;
  for (uint32_t i = 0; i < 200000; ++i) {
    const uint64_t seed = 77, step = (1ull << 40) + 5;
    const uint32_t row = i % 97;
    const double uf = philox_uniform<float>(seed, step, row, i);
    const double ud = philox_uniform<double>(seed, step, row, i);
    worst_uniform = std::max(worst_uniform, std::fabs(uf - ud) / ud);
    const PhiloxState b = philox_block(seed, step, row, i);
    const double u1f = philox_unit<float>(b.v[0]), u2f = philox_unit<float>(b.v[1]);
    const double radius = std::sqrt(-2 * std::log(u1f));
    const double exact_at_float_u = radius * std::cos(2 * M_PI * u2f);
    const double nf = philox_normal<float>(seed, step, row, i);
    const double nd = philox_normal<double>(seed, step, row, i);
    const double scale = std::max(1.0, std::fabs(nd));
    // The float angle 2*pi*u2 is off by ~ulp(2*pi) = 4.8e-7, an absolute error in cos that
    // the radius multiplies: measure relative to the radius, not to |z| (z ~ 0 near cos = 0).
    worst_formula =
        std::max(worst_formula, std::fabs(nf - exact_at_float_u) / std::max(1.0, radius));
    worst_direct = std::max(worst_direct, std::fabs(nf - nd) / scale);
  }
  EXPECT_LE(worst_uniform, 0x1p-23);
  EXPECT_LE(worst_formula, 16 * 0x1p-24) << "logf/sqrtf/cosf and 2*pi*u2 rounding in float";
  // Directly, the rounding of u1 is amplified where u1 is near 1 (d/du sqrt(-2 ln u) grows like
  // 1/sqrt(1 - u)): measured 4.5e-6 on these draws.
  EXPECT_LE(worst_direct, 1e-5);
}

// The multiply-high reduction is exact: floor(r * n / 2^64) for r = w3:w2, checked against a
// 128-bit product (large n make the carry from the low word matter).
TEST(Philox, BelowIsExactMultiplyHigh) {
  for (uint32_t n : {1u, 3u, 160u, 1000003u, 0x80000001u, 0xfffffff1u, 0xffffffffu}) {
    for (uint32_t i = 0; i < 20000; ++i) {
      const PhiloxState b = philox_block(11, 22, n, i);
      const uint64_t r = (uint64_t{b.v[3]} << 32) | b.v[2];
      const auto want = static_cast<uint32_t>((static_cast<unsigned __int128>(r) * n) >> 64);
      ASSERT_EQ(philox_below(n, 11, 22, n, i), want) << "n=" << n << " i=" << i;
    }
  }
}

TEST(Philox, BelowCoversRangeUniformly) {
  for (uint32_t n : {1u, 2u, 3u, 7u, 10u, 160u}) {
    std::vector<int> hist(n, 0);
    const int draws = 20000 * static_cast<int>(n);
    for (int i = 0; i < draws; ++i) {
      const uint32_t k = philox_below(n, 9, 1, 0, static_cast<uint32_t>(i));
      ASSERT_LT(k, n);
      ++hist[k];
    }
    // Chi-square with n - 1 degrees of freedom, 20000 expected per cell: every cell within
    // 6 sd (sd ~ 141) catches a missing value or a gross bias.
    for (uint32_t k = 0; k < n; ++k) EXPECT_NEAR(hist[k], 20000, 6 * 141.4) << "n=" << n;
  }
  EXPECT_EQ(philox_below(0, 1, 2, 3, 4), 0u);
  // A huge n stays in range and reaches the top of it.
  uint32_t top = 0;
  for (uint32_t i = 0; i < 10000; ++i) {
    const uint32_t k = philox_below(0xffffffffu, 3, 3, 3, i);
    ASSERT_LT(k, 0xffffffffu);
    top = std::max(top, k);
  }
  EXPECT_GT(top, 0xffffffffu - 0xffffffffu / 1000);
}

}  // namespace
}  // namespace equivae
