#pragma once
// Philox4x32-10, the counter-based RNG of Salmon, Moraes, Dror & Shaw, "Parallel random
// numbers: as easy as 1, 2, 3" (SC'11), bit-identical to Random123's philox4x32_R(10, ...).
//
// Why counter-based: the engine's noise is a pure function of (seed, step, row, col), so the
// CPU backend, the CUDA kernels and the CUDA-on-CPU emulator draw the same epsilon for the
// same element no matter how the work is split over threads, blocks or OpenMP chunks, and a
// run resumed from a checkpoint at step s replays exactly the noise it would have seen.
//
// Header-only and nvcc-compatible: no std:: containers, no exceptions, only <cstdint> and
// <cmath>; every function callable from device code is marked EQUIVAE_HD.
#include <cmath>
#include <cstdint>

#ifndef EQUIVAE_HD
#if defined(__CUDACC__)
#define EQUIVAE_HD __host__ __device__
#else
#define EQUIVAE_HD
#endif
#endif

namespace equivae {

struct PhiloxState {
  uint32_t v[4];
};

namespace philox_detail {

constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kWeyl1 = 0xBB67AE85u;  // sqrt(3) - 1

// One Philox S-box round: two 32x32->64 multiplies, the high halves xor-ed with the other
// counter words and the key. (nvcc turns the 64-bit product into one mul.wide.u32.)
EQUIVAE_HD inline PhiloxState mix_round(PhiloxState c, uint32_t k0, uint32_t k1) {
  const uint64_t p0 = static_cast<uint64_t>(kMul0) * c.v[0];
  const uint64_t p1 = static_cast<uint64_t>(kMul1) * c.v[2];
  const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
  const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
  PhiloxState out;
  out.v[0] = hi1 ^ c.v[1] ^ k0;
  out.v[1] = lo1;
  out.v[2] = hi0 ^ c.v[3] ^ k1;
  out.v[3] = lo0;
  return out;
}

// Overloads rather than std:: calls so the same source resolves to the CUDA device math
// functions under nvcc and to libm on the host.
EQUIVAE_HD inline float log_(float x) {
  return logf(x);
}
EQUIVAE_HD inline double log_(double x) {
  return log(x);
}
EQUIVAE_HD inline float cos_(float x) {
  return cosf(x);
}
EQUIVAE_HD inline double cos_(double x) {
  return cos(x);
}
EQUIVAE_HD inline float sqrt_(float x) {
  return sqrtf(x);
}
EQUIVAE_HD inline double sqrt_(double x) {
  return sqrt(x);
}

template <class T>
struct Unit;
template <>
struct Unit<float> {
  // (x + 0.5) * 2^-32, computed in float. Small x keep their full resolution (the smallest
  // value is 2^-33, so log(u) stays finite), but float(x) rounds to 2^32 for x >= 2^32 - 128,
  // which would give exactly 1.0; those are clamped to the largest float below 1.
  EQUIVAE_HD static float from(uint32_t x) {
    const float u = (static_cast<float>(x) + 0.5f) * 0x1p-32f;
    const float below_one = 0x1.fffffep-1f;  // 1 - 2^-24
    return u < below_one ? u : below_one;
  }
};
template <>
struct Unit<double> {
  // Exact in double: x + 0.5 needs 33 bits, so the result lies in [2^-33, 1 - 2^-33].
  EQUIVAE_HD static double from(uint32_t x) { return (static_cast<double>(x) + 0.5) * 0x1p-32; }
};

}  // namespace philox_detail

// The standard Philox4x32 with 10 rounds; the key is bumped by the Weyl constants between
// rounds (9 bumps), exactly as Random123 does, so its known-answer vectors apply.
EQUIVAE_HD inline PhiloxState philox4x32_10(PhiloxState counter, uint32_t key0, uint32_t key1) {
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      key0 += philox_detail::kWeyl0;
      key1 += philox_detail::kWeyl1;
    }
    counter = philox_detail::mix_round(counter, key0, key1);
  }
  return counter;
}

// The engine's noise contract: the four output words for element (row, col) of the draw
// made at training step `step` of a run seeded with `seed`.
// counter = {col, row, lo(step), hi(step)}, key = {lo(seed), hi(seed)}.
EQUIVAE_HD inline PhiloxState philox_block(uint64_t seed, uint64_t step, uint32_t row,
                                           uint32_t col) {
  const PhiloxState counter = {
      {col, row, static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32)}};
  return philox4x32_10(counter, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Maps a 32-bit output word to the open interval (0, 1): (x + 0.5) * 2^-32 in T.
// Never 0 (log is safe) and never 1 (float clamps the few words that would round up to 1).
template <class T>
EQUIVAE_HD inline T philox_unit(uint32_t x) {
  return philox_detail::Unit<T>::from(x);
}

// Uniform in (0, 1) from output word 0.
template <class T>
EQUIVAE_HD inline T philox_uniform(uint64_t seed, uint64_t step, uint32_t row, uint32_t col) {
  return philox_unit<T>(philox_block(seed, step, row, col).v[0]);
}

// Standard normal by Box-Muller from output words 0 and 1, computed in T:
// sqrt(-2 ln u1) * cos(2 pi u2). Only the cosine branch is used, so each (row, col) owns
// exactly one normal and no element depends on its neighbour. float and double agree to
// float rounding of u1, u2 and of logf/cosf (and CPU libm vs CUDA intrinsics differ by a
// few ulp, which the cross-backend tests tolerate).
template <class T>
EQUIVAE_HD inline T philox_normal(uint64_t seed, uint64_t step, uint32_t row, uint32_t col) {
  const PhiloxState b = philox_block(seed, step, row, col);
  const T u1 = philox_unit<T>(b.v[0]);
  const T u2 = philox_unit<T>(b.v[1]);
  const T two_pi = static_cast<T>(6.283185307179586476925286766559);
  using namespace philox_detail;
  return sqrt_(static_cast<T>(-2) * log_(u1)) * cos_(two_pi * u2);
}

// Uniform integer in [0, n) for host-side samplers (batch composition, m_i, permutations),
// from output words 2 and 3 (so it can share a counter with philox_uniform/normal without
// reusing their bits). The 64-bit word r = w3:w2 is reduced by multiply-high (Lemire):
// floor(r * n / 2^64). Every value in [0, n) is hit by either floor(2^64 / n) or
// ceil(2^64 / n) of the 2^64 words, a relative bias of at most n / 2^64 (< 2^-32 for any
// 32-bit n): negligible, and no rejection loop, so one counter gives one result.
// n == 0 returns 0.
EQUIVAE_HD inline uint32_t philox_below(uint32_t n, uint64_t seed, uint64_t step, uint32_t row,
                                        uint32_t col) {
  const PhiloxState b = philox_block(seed, step, row, col);
  // High 64 bits of the 96-bit product (w3 * 2^32 + w2) * n, without a 128-bit type:
  // floor((w3 * n * 2^32 + w2 * n) / 2^64) = floor((w3 * n + floor(w2 * n / 2^32)) / 2^32).
  const uint64_t low = static_cast<uint64_t>(b.v[2]) * n;
  const uint64_t high = static_cast<uint64_t>(b.v[3]) * n + (low >> 32);
  return static_cast<uint32_t>(high >> 32);
}

}  // namespace equivae
