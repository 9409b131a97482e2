// The emulator's cp.async (kernels/cuda/async_copy.cuh): a copy lands at the wait that covers
// its commit group, not before (so shared memory read before the wait holds its old value, as
// it may on a GPU), out-of-range copies write zeros without reading, and a 16-byte copy off a
// 16-byte boundary is an error. Copies into a race-checked array are race-checked: reading a
// word while a copy to it is in flight, or another thread's landed copy without a barrier after
// the wait, is an emu::Error; so is a copy out of the array's bounds.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/cuda/async_copy.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/reduce.cuh"

namespace {

using equivae::cuda::AsyncCopies;

// One thread, three groups of one copy each; out[] records what shared memory held after each
// step: [0] before any wait, [1] after wait<2> (group 0 landed), [2] after wait<1> (group 1),
// [3] after wait<0> (all), [4] a zero-filled copy, [5..8] a 16-byte copy.
__global__ void kernel_groups(const float* src, float* out) {
  __shared__ __align__(16) float s[8];
  for (int i = 0; i < 8; ++i) s[i] = -1.0f;
  AsyncCopies<8> copies;
  for (int g = 0; g < 3; ++g) {
    copies.copy4(&s[g], &src[g], true);
    copies.commit();
  }
  out[0] = s[0];
  copies.wait<2>();
  out[1] = s[0] + 10 * s[1];
  copies.wait<1>();
  out[2] = s[1] + 10 * s[2];
  copies.wait<0>();
  out[3] = s[2];
  copies.copy4(&s[3], src, false);
  copies.copy16(&s[4], &src[4], true);
  copies.commit();
  copies.wait<0>();
  out[4] = s[3];
  for (int i = 0; i < 4; ++i) out[5 + i] = s[4 + i];
}

TEST(EmuAsyncCopy, CopiesLandAtTheWaitThatCoversTheirGroup) {
  alignas(16) float src[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<float> out(9, 0.0f);
  equivae::cuda::launch(kernel_groups, 1, 1, 0, nullptr, src, out.data());
  EXPECT_EQ(out[0], -1.0f) << "a copy landed before any wait";
  EXPECT_EQ(out[1], 1.0f + 10 * -1.0f) << "wait<2>: group 0 only";
  EXPECT_EQ(out[2], 2.0f + 10 * -1.0f) << "wait<1>: groups 0 and 1 only";
  EXPECT_EQ(out[3], 3.0f);
  EXPECT_EQ(out[4], 0.0f) << "an invalid copy writes zeros";
  for (int i = 0; i < 4; ++i) EXPECT_EQ(out[size_t(5 + i)], float(5 + i));
}

__global__ void kernel_misaligned(const float* src) {
  __shared__ __align__(16) float s[8];
  AsyncCopies<2> copies;
  copies.copy16(&s[0], src + 1, true);  // src + 1 is 4 bytes off a 16-byte boundary
  copies.commit();
  copies.wait<0>();
}

TEST(EmuAsyncCopy, SixteenByteCopyOffItsBoundaryIsAnError) {
  alignas(16) float src[8] = {};
  EXPECT_THROW(equivae::cuda::launch(kernel_misaligned, 1, 1, 0, nullptr, src), emu::Error);
}

// Thread t copies word t of row 0 of a checked array (and, for t < 16, four words of row 1 in
// one 16-byte copy), then reads its neighbour's word (or its own):
//   0: wait, barrier, read the neighbour's: clean.
//   1: wait, read the neighbour's without a barrier: its copy landed in this phase (a race with
//      the landing), or is in flight, or not even issued yet (a race with the issue).
//   2: barrier, read the neighbour's, then wait: its copy is in flight.
//   3: read its own word before its wait: its own copy is in flight.
//   4: wait, read its own word without a barrier: clean (a thread sees its own copies).
//   5: a copy one past the end of the array.
template <int kMode>
__global__ void kernel_checked_copies(const float* src, float* out) {
  EQUIVAE_SHARED_2D(float, s, 2, 64) __align__(16);
  const int t = int(threadIdx.x), n = int(blockDim.x), next = (t + 1) % n;
  AsyncCopies<3> copies;
  copies.copy4(s[0] + t, src + t, true);
  if (t < 16) copies.copy16(s[1] + 4 * t, src + 4 * t, true);
  if (kMode == 5 && t == 3) copies.copy4(s[1] + 64, src, true);
  copies.commit();
  if (kMode == 0 || kMode == 1 || kMode == 4) copies.wait<0>();
  if (kMode == 0 || kMode == 2) __syncthreads();
  if (kMode == 0) out[t] = s[0][next] + s[1][next];
  if (kMode == 1 || kMode == 2) out[t] = s[0][next];
  if (kMode == 3 || kMode == 4) out[t] = s[0][t];
  if (kMode == 2 || kMode == 3) copies.wait<0>();
}

template <int kMode>
std::string checked_copies_error(std::vector<float>& out) {
  static const std::vector<float> src = [] {
    std::vector<float> v(64);
    for (int i = 0; i < 64; ++i) v[size_t(i)] = float(i);
    return v;
  }();
  try {
    EQUIVAE_LAUNCH(kernel_checked_copies<kMode>, 1, 64, 0, nullptr, src.data(), out.data());
  } catch (const emu::Error& e) {
    return e.what();
  }
  return "";
}

TEST(EmuAsyncCopy, CopiesIntoACheckedArrayAreRaceChecked) {
  std::vector<float> out(64);
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    emu::set_schedule_seed(seed);
    EXPECT_EQ(checked_copies_error<0>(out), "") << "seed " << seed;
    for (int t = 0; t < 64; ++t) ASSERT_EQ(out[size_t(t)], float(2 * ((t + 1) % 64)));
    EXPECT_EQ(checked_copies_error<4>(out), "") << "seed " << seed;
    for (int t = 0; t < 64; ++t) ASSERT_EQ(out[size_t(t)], float(t));

    std::string e = checked_copies_error<1>(out);
    EXPECT_NE(e.find("emu: shared-memory race (array 's')"), std::string::npos) << e;
    e = checked_copies_error<2>(out);
    EXPECT_NE(e.find("emu: shared-memory race (array 's')"), std::string::npos) << e;
    EXPECT_NE(e.find(" reads word "), std::string::npos) << e;
    EXPECT_NE(e.find(" issued to it is in flight (no cp.async wait of the issuing thread covers it "
                     "yet; other threads also need a __syncthreads() after it)"),
              std::string::npos)
        << e;
    e = checked_copies_error<3>(out);
    EXPECT_NE(e.find("while the cp.async that it issued to it is in flight"), std::string::npos)
        << e;
    if (seed == 1) std::printf("%s\n", e.c_str());
  }
  const std::string e = checked_copies_error<5>(out);
  EXPECT_NE(e.find("emu: out-of-bounds shared-memory access (array 's')"), std::string::npos) << e;
  EXPECT_NE(e.find("index 128 of __shared__ array of 128 elements"), std::string::npos) << e;
}

}  // namespace
