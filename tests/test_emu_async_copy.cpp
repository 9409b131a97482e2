// The emulator's cp.async (kernels/cuda/async_copy.cuh): a copy lands at the wait that covers
// its commit group, not before (so shared memory read before the wait holds its old value, as
// it may on a GPU), out-of-range copies write zeros without reading, and a 16-byte copy off a
// 16-byte boundary is an error.
#include <gtest/gtest.h>

#include <vector>

#include "kernels/cuda/async_copy.cuh"
#include "kernels/cuda/launch.h"

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

}  // namespace
