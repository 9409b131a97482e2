// The CUDA-on-CPU emulator's own semantics (indices, shared memory, barriers, shuffles, votes,
// atomics, launch checks), and proof that it can fail: a reduction missing a barrier gives
// wrong sums under shuffled schedules, the shared-memory race check flags it (and flags
// out-of-bounds shared indices) in every seed, and a barrier in a divergent branch is reported
// as a deadlock instead of hanging. (The older "can fail" kernels keep plain __shared__ arrays,
// which are not race-checked, so they still show the wrong results themselves.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/reduce.cuh"
#include "kernels/philox.h"

namespace {

using equivae::cuda::BlockReduce;
using equivae::cuda::kFullWarp;

// ---------------------------------------------------------------- indices and dims
__global__ void kernel_indices(int* out) {
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
  int* o = out + 4 * (size_t(block) * threads + thread);
  o[0] = int(threadIdx.x + 10 * threadIdx.y + 100 * threadIdx.z);
  o[1] = int(blockIdx.x + 10 * blockIdx.y + 100 * blockIdx.z);
  o[2] = int(blockDim.x + 10 * blockDim.y + 100 * blockDim.z);
  o[3] = int(gridDim.x + 10 * gridDim.y + 100 * gridDim.z);
}

TEST(Emu, ThreadAndBlockIndicesCover3DGridAndBlock) {
  const dim3 grid(3, 2, 2), block(5, 3, 2);
  const int threads = 5 * 3 * 2, blocks = 3 * 2 * 2;
  std::vector<int> out(4 * threads * blocks, -1);
  EQUIVAE_LAUNCH(kernel_indices, grid, block, 0, nullptr, out.data());
  for (int bz = 0, b = 0; bz < 2; ++bz)
    for (int by = 0; by < 2; ++by)
      for (int bx = 0; bx < 3; ++bx, ++b)
        for (int tz = 0, t = 0; tz < 2; ++tz)
          for (int ty = 0; ty < 3; ++ty)
            for (int tx = 0; tx < 5; ++tx, ++t) {
              const int* o = &out[4 * (b * threads + t)];
              EXPECT_EQ(o[0], tx + 10 * ty + 100 * tz);
              EXPECT_EQ(o[1], bx + 10 * by + 100 * bz);
              EXPECT_EQ(o[2], 5 + 30 + 200);
              EXPECT_EQ(o[3], 3 + 20 + 200);
            }
}

// ---------------------------------------------------------------- shared memory
__global__ void kernel_reverse_static(const int* in, int* out) {
  __shared__ int s[1024];
  const int n = int(blockDim.x), t = int(threadIdx.x);
  s[t] = in[blockIdx.x * n + t];
  __syncthreads();
  out[blockIdx.x * n + t] = s[n - 1 - t];
}

TEST(Emu, StaticSharedMemoryIsSharedWithinTheBlock) {
  for (int n : {1, 33, 200, 1024}) {
    std::vector<int> in(3 * n), out(3 * n, -1);
    std::iota(in.begin(), in.end(), 7);
    for (uint64_t seed = 1; seed <= 3; ++seed) {
      emu::set_schedule_seed(seed);
      EQUIVAE_LAUNCH(kernel_reverse_static, 3, n, 0, nullptr, in.data(), out.data());
      for (int b = 0; b < 3; ++b)
        for (int t = 0; t < n; ++t) ASSERT_EQ(out[b * n + t], in[b * n + n - 1 - t]) << n;
    }
  }
}

__global__ void kernel_reverse_dynamic(const float* in, float* out, int* poisoned) {
  EQUIVAE_DYNAMIC_SHARED(float, s);
  const int n = int(blockDim.x), t = int(threadIdx.x);
  if (std::isnan(s[t])) atomicAdd(poisoned, 1);  // the emulator fills it with 0xFF bytes
  s[t] = in[blockIdx.x * n + t];
  __syncthreads();
  out[blockIdx.x * n + t] = s[n - 1 - t];
}

TEST(Emu, DynamicSharedMemoryIsPerBlockAndStartsPoisoned) {
  const int n = 96, blocks = 4;
  std::vector<float> in(blocks * n), out(blocks * n, -1);
  for (int i = 0; i < blocks * n; ++i) in[i] = float(i) * 0.5f;
  int poisoned = 0;
  EQUIVAE_LAUNCH(kernel_reverse_dynamic, blocks, n, n * sizeof(float), nullptr, in.data(),
                 out.data(), &poisoned);
  EXPECT_EQ(poisoned, blocks * n) << "every block must start from poisoned dynamic shared memory";
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < n; ++t) ASSERT_EQ(out[b * n + t], in[b * n + n - 1 - t]);
}

// ---------------------------------------------------------------- shuffles and votes
template <class T>
__global__ void kernel_shuffles(T* out) {
  const int t = int(threadIdx.x), lane = t % 32;
  const T v = T(t * 3 + 1);
  T* o = out + 8 * t;
  o[0] = __shfl_sync(kFullWarp, v, 3);
  o[1] = __shfl_sync(kFullWarp, v, lane + 9, 8);  // (lane + 9) mod 8 within 8-lane groups
  o[2] = __shfl_down_sync(kFullWarp, v, 5);
  o[3] = __shfl_down_sync(kFullWarp, v, 3, 16);
  o[4] = __shfl_up_sync(kFullWarp, v, 2);
  o[5] = __shfl_up_sync(kFullWarp, v, 1, 4);
  o[6] = __shfl_xor_sync(kFullWarp, v, 1);
  o[7] = __shfl_xor_sync(kFullWarp, v, 12, 8);  // xor reaches into a later group: own value
}

template <class T>
void check_shuffles() {
  const int n = 64;
  std::vector<T> out(8 * n);
  EQUIVAE_LAUNCH(kernel_shuffles<T>, 1, n, 0, nullptr, out.data());
  auto value = [](int t) { return T(t * 3 + 1); };
  for (int t = 0; t < n; ++t) {
    const int lane = t % 32, warp0 = t - lane;
    const T* o = &out[8 * t];
    EXPECT_EQ(o[0], value(warp0 + 3));
    EXPECT_EQ(o[1], value(warp0 + (lane & ~7) + ((lane + 9) & 7)));
    EXPECT_EQ(o[2], value(lane + 5 < 32 ? t + 5 : t));
    EXPECT_EQ(o[3], value((lane & 15) + 3 < 16 ? t + 3 : t));
    EXPECT_EQ(o[4], value(lane >= 2 ? t - 2 : t));
    EXPECT_EQ(o[5], value((lane & 3) >= 1 ? t - 1 : t));
    EXPECT_EQ(o[6], value(t ^ 1));
    const int x = lane ^ 12;
    EXPECT_EQ(o[7], value(x >= (lane & ~7) + 8 ? t : warp0 + x)) << "lane " << lane;
  }
}

TEST(Emu, WarpShufflesFollowCudaLaneArithmetic) {
  check_shuffles<float>();
  check_shuffles<double>();
  check_shuffles<int>();
  check_shuffles<long long>();
}

// shfl.sync reads only bits 4:0 of its lane / offset operand: 33 acts as 1, -31 as 1 too.
__global__ void kernel_shuffle_wide_offsets(int* out) {
  const int t = int(threadIdx.x);
  int* o = out + 6 * t;
  o[0] = __shfl_xor_sync(kFullWarp, t, 33);
  o[1] = __shfl_xor_sync(kFullWarp, t, -31);
  o[2] = __shfl_down_sync(kFullWarp, t, 34u);
  o[3] = __shfl_down_sync(kFullWarp, t, 33u, 8);
  o[4] = __shfl_up_sync(kFullWarp, t, 35u);
  o[5] = __shfl_up_sync(kFullWarp, t, 0xFFFFFFE1u);  // bits 4:0 are 1
}

TEST(Emu, WarpShufflesUseTheLowFiveBitsOfTheLaneOperand) {
  const int n = 64;
  std::vector<int> out(6 * n, -1);
  EQUIVAE_LAUNCH(kernel_shuffle_wide_offsets, 1, n, 0, nullptr, out.data());
  for (int t = 0; t < n; ++t) {
    const int lane = t % 32;
    const int* o = &out[6 * t];
    EXPECT_EQ(o[0], t ^ 1) << "lane " << lane;
    EXPECT_EQ(o[1], t ^ 1) << "lane " << lane;
    EXPECT_EQ(o[2], lane + 2 < 32 ? t + 2 : t) << "lane " << lane;
    EXPECT_EQ(o[3], (lane & 7) + 1 < 8 ? t + 1 : t) << "lane " << lane;
    EXPECT_EQ(o[4], lane >= 3 ? t - 3 : t) << "lane " << lane;
    EXPECT_EQ(o[5], lane >= 1 ? t - 1 : t) << "lane " << lane;
  }
}

__global__ void kernel_votes(unsigned* out) {
  const int t = int(threadIdx.x), lane = t % 32;
  unsigned* o = out + 5 * t;
  o[0] = __ballot_sync(kFullWarp, lane % 3 == 0);
  o[1] = unsigned(__any_sync(kFullWarp, t == 40));
  o[2] = unsigned(__all_sync(kFullWarp, t < 40));
  o[3] = unsigned(__all_sync(kFullWarp, t >= 0));
  o[4] = 0;
  if (lane < 16) o[4] = __ballot_sync(0x0000ffffu, lane & 1);  // a half-warp vote
}

TEST(Emu, WarpVotes) {
  const int n = 64;
  std::vector<unsigned> out(5 * n);
  EQUIVAE_LAUNCH(kernel_votes, 1, n, 0, nullptr, out.data());
  unsigned every_third = 0;
  for (int l = 0; l < 32; l += 3) every_third |= 1u << l;
  for (int t = 0; t < n; ++t) {
    const unsigned* o = &out[5 * t];
    EXPECT_EQ(o[0], every_third);
    EXPECT_EQ(o[1], t >= 32 ? 1u : 0u);  // only warp 1 holds thread 40
    EXPECT_EQ(o[2], t < 32 ? 1u : 0u);
    EXPECT_EQ(o[3], 1u);
    EXPECT_EQ(o[4], t % 32 < 16 ? 0xAAAAu : 0u);
  }
}

__global__ void kernel_sync_predicates(int* out) {
  const int t = int(threadIdx.x);
  out[3 * t + 0] = __syncthreads_count(t % 4 == 0);
  out[3 * t + 1] = __syncthreads_and(t < 1000);
  out[3 * t + 2] = __syncthreads_or(t == 77);
}

TEST(Emu, SyncthreadsCountAndOr) {
  const int n = 100;
  std::vector<int> out(3 * n);
  EQUIVAE_LAUNCH(kernel_sync_predicates, 1, n, 0, nullptr, out.data());
  for (int t = 0; t < n; ++t) {
    EXPECT_EQ(out[3 * t], 25);
    EXPECT_EQ(out[3 * t + 1], 1);
    EXPECT_EQ(out[3 * t + 2], 1);
  }
}

// ---------------------------------------------------------------- atomics
__global__ void kernel_atomics(float* f, double* d, int* i, unsigned* u, int* max_id, int* cas) {
  const int id = int(blockIdx.x * blockDim.x + threadIdx.x);
  atomicAdd(f, 1.0f);
  atomicAdd(d, 0.5);
  atomicAdd(i, 2);
  atomicAdd(u, 1u);
  atomicMax(max_id, id);
  int old = *cas, seen;
  while ((seen = atomicCAS(cas, old, old + 1)) != old) old = seen;
}

TEST(Emu, AtomicsAreExact) {
  float f = 0;
  double d = 0;
  int i = 0, max_id = -1, cas = 0;
  unsigned u = 0;
  EQUIVAE_LAUNCH(kernel_atomics, 8, 256, 0, nullptr, &f, &d, &i, &u, &max_id, &cas);
  EXPECT_EQ(f, 2048.0f);
  EXPECT_EQ(d, 1024.0);
  EXPECT_EQ(i, 4096);
  EXPECT_EQ(u, 2048u);
  EXPECT_EQ(max_id, 2047);
  EXPECT_EQ(cas, 2048);
  int x = 5;
  EXPECT_EQ(atomicExch(&x, 9), 5);
  EXPECT_EQ(x, 9);
  EXPECT_EQ(atomicMin(&x, 3), 9);
  EXPECT_EQ(x, 3);
}

// ---------------------------------------------------------------- block reductions
template <int kThreads>
__global__ void kernel_block_sum(const float* x, float* out, int n) {
  __shared__ typename BlockReduce<float, kThreads>::TempStorage storage;
  float acc = 0;
  for (int j = int(threadIdx.x); j < n; j += kThreads) acc += x[size_t(blockIdx.x) * n + j];
  const float total = BlockReduce<float, kThreads>(storage).sum(acc);
  if (threadIdx.x == 0) out[blockIdx.x] = total;
}

template <int kThreads>
void check_block_sum(int n) {
  const int blocks = 3;
  std::vector<float> x(size_t(blocks) * n), out(blocks, -1);
  for (size_t k = 0; k < x.size(); ++k) x[k] = float(int(k * 7919 % 61) - 30);  // exact sums
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    emu::set_schedule_seed(seed);
    EQUIVAE_LAUNCH(kernel_block_sum<kThreads>, blocks, kThreads, 0, nullptr, x.data(), out.data(),
                   n);
    for (int b = 0; b < blocks; ++b) {
      double expected = 0;
      for (int j = 0; j < n; ++j) expected += x[size_t(b) * n + j];
      ASSERT_EQ(double(out[b]), expected) << kThreads << " threads, n " << n << ", seed " << seed;
    }
  }
}

TEST(Emu, BlockReduceHelperUpTo1024Threads) {
  check_block_sum<32>(45);
  check_block_sum<256>(784);
  check_block_sum<1024>(1000);
}

// ---------------------------------------------------------------- the harness can fail
// Tree reduction in shared memory; kFirstBarrier = false drops the barrier between the
// stores and the first tree level, the classic bug.
template <bool kFirstBarrier>
__global__ void kernel_tree_sum(const int* x, int* out) {
  __shared__ int s[256];
  const int t = int(threadIdx.x);
  s[t] = x[blockIdx.x * 256 + t];
  if (kFirstBarrier) __syncthreads();
  for (int stride = 128; stride > 0; stride >>= 1) {
    if (t < stride) s[t] += s[t + stride];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = s[0];
}

// Runs the tree sum under 20 schedule seeds with fresh data each time; returns how many
// seeds gave a wrong sum in some block.
template <bool kFirstBarrier>
int wrong_sums_in_20_seeds() {
  const int blocks = 4;
  int wrong = 0;
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    std::vector<int> x(blocks * 256), out(blocks, 0);
    for (size_t k = 0; k < x.size(); ++k)
      x[k] = int(equivae::philox_below(1000, 0xF00D, seed, 0, uint32_t(k)));
    emu::set_schedule_seed(seed);
    EQUIVAE_LAUNCH(kernel_tree_sum<kFirstBarrier>, blocks, 256, 0, nullptr, x.data(), out.data());
    bool ok = true;
    for (int b = 0; b < blocks; ++b)
      ok = ok && out[b] == std::accumulate(x.begin() + b * 256, x.begin() + (b + 1) * 256, 0);
    wrong += !ok;
  }
  return wrong;
}

TEST(Emu, MissingBarrierGivesWrongSumsUnderShuffledSchedules) {
  const int racy = wrong_sums_in_20_seeds<false>();
  const int correct = wrong_sums_in_20_seeds<true>();
  std::printf("tree sum wrong in %d of 20 seeds without its barrier, %d of 20 with it\n", racy,
              correct);
  EXPECT_GE(racy, 5);
  EXPECT_EQ(correct, 0);
}

// Two rounds of "each warp reduces, warp 0 combines the partials" sharing one partial[]
// array. kSecondBarrier = false drops the barrier that keeps a fast warp from overwriting its
// round-1 partial before warp 0 has read it. Every warp must pass five shuffles before it can
// write, so this race only shows when warps run ahead of each other (the scheduler's random
// warp delays).
template <bool kSecondBarrier>
__global__ void kernel_two_rounds(const float* x, float* out) {
  __shared__ float partial[8];
  const int t = int(threadIdx.x), warp = t / 32, lane = t % 32;
  for (int round = 0; round < 2; ++round) {
    const float v = equivae::cuda::warp_all_sum(x[round * 256 + t]);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (t == 0) {
      float total = 0;
      for (int w = 0; w < 8; ++w) total += partial[w];
      out[round] = total;
    }
    if (kSecondBarrier) __syncthreads();
  }
}

template <bool kSecondBarrier>
int wrong_two_rounds_in_20_seeds() {
  std::vector<float> x(512), out(2);
  for (int k = 0; k < 512; ++k) x[k] = float(k < 256 ? 1 : 1000);  // rounds sum to 256 and 256000
  int wrong = 0;
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    emu::set_schedule_seed(seed);
    EQUIVAE_LAUNCH(kernel_two_rounds<kSecondBarrier>, 1, 256, 0, nullptr, x.data(), out.data());
    wrong += out[0] != 256.0f || out[1] != 256000.0f;
  }
  return wrong;
}

TEST(Emu, WarpsRunAheadOfEachOtherAcrossShuffles) {
  const int racy = wrong_two_rounds_in_20_seeds<false>();
  const int correct = wrong_two_rounds_in_20_seeds<true>();
  std::printf("two-round reduction wrong in %d of 20 seeds without its barrier, %d with it\n", racy,
              correct);
  EXPECT_GE(racy, 5);
  EXPECT_EQ(correct, 0);
}

// A "warp-synchronous" read without __syncwarp: lanes read a neighbour's shared slot with no
// synchronisation at all. Correct only if the neighbour happened to run first.
__global__ void kernel_unsynchronised_neighbour(int* out, int round) {
  __shared__ int s[32];
  const int lane = int(threadIdx.x);
  s[lane] = lane + 100 * round;
  out[lane] = s[(lane + 1) % 32];
}

TEST(Emu, ShuffledOrderExposesUnsynchronisedWarpReads) {
  int wrong = 0;
  for (int seed = 1; seed <= 20; ++seed) {
    emu::set_schedule_seed(uint64_t(seed));
    std::vector<int> out(32);
    EQUIVAE_LAUNCH(kernel_unsynchronised_neighbour, 1, 32, 0, nullptr, out.data(), seed);
    for (int lane = 0; lane < 32; ++lane)
      if (out[lane] != (lane + 1) % 32 + 100 * seed) {
        ++wrong;
        break;
      }
  }
  EXPECT_GE(wrong, 15);
}

// ---------------------------------------------------------------- the shared-memory race check
// Shared arrays declared through EQUIVAE_SHARED (and BlockReduce's TempStorage, and
// emu::dynamic_shared<T>()) are race-checked: two threads touching a word in one barrier phase,
// one of them writing, is an emu::Error whatever the schedule.
// The message of the emu::Error that `launch` throws, or "" when it runs through.
template <class F>
std::string launch_error_of(F launch) {
  try {
    launch();
  } catch (const emu::Error& e) {
    return e.what();
  }
  return "";
}

template <bool kFirstBarrier>
__global__ void kernel_checked_tree_sum(const int* x, int* out) {
  EQUIVAE_SHARED(int, s, 256);
  const int t = int(threadIdx.x);
  s[t] = x[blockIdx.x * 256 + t];
  if (kFirstBarrier) __syncthreads();
  for (int stride = 128; stride > 0; stride >>= 1) {
    if (t < stride) s[t] += s[t + stride];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = s[0];
}

TEST(EmuRaceCheck, IsOnByDefault) {
  if (const char* v = std::getenv("EQUIVAE_EMU_RACE_CHECK"); v && std::string(v) == "0")
    GTEST_SKIP() << "turned off by EQUIVAE_EMU_RACE_CHECK=0";
  EXPECT_TRUE(emu::race_check());
}

TEST(EmuRaceCheck, ReductionMissingItsBarrierIsFlaggedInEverySeed) {
  std::vector<int> x(4 * 256), out(4);
  std::iota(x.begin(), x.end(), 1);
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    emu::set_schedule_seed(seed);
    const std::string e = launch_error_of([&] {
      EQUIVAE_LAUNCH(kernel_checked_tree_sum<false>, 4, 256, 0, nullptr, x.data(), out.data());
    });
    ASSERT_NE(e.find("shared-memory race"), std::string::npos) << "seed " << seed << ": " << e;
    EXPECT_NE(e.find("kernel_checked_tree_sum<false>"), std::string::npos) << e;
    EXPECT_NE(e.find("block (0,0,0)"), std::string::npos) << e;
    if (seed == 1) std::printf("%s\n", e.c_str());
  }
}

TEST(EmuRaceCheck, CorrectReductionIsNotFlagged) {
  std::vector<int> x(4 * 256), out(4);
  std::iota(x.begin(), x.end(), 1);
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    emu::set_schedule_seed(seed);
    EXPECT_NO_THROW(
        EQUIVAE_LAUNCH(kernel_checked_tree_sum<true>, 4, 256, 0, nullptr, x.data(), out.data()));
    for (int b = 0; b < 4; ++b)
      ASSERT_EQ(out[b], std::accumulate(x.begin() + b * 256, x.begin() + (b + 1) * 256, 0));
  }
}

// Threads 3 and 40 write word 5, which thread 5 writes too.
__global__ void kernel_two_writers(int* out) {
  EQUIVAE_SHARED(int, s, 64);
  const int t = int(threadIdx.x);
  s[t] = t;
  if (t == 3 || t == 40) s[5] = t;
  __syncthreads();
  out[t] = s[t];
}

TEST(EmuRaceCheck, TwoThreadsWritingOneWordAreFlaggedWithBothThreadsAndTheWord) {
  std::vector<int> out(64);
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    emu::set_schedule_seed(seed);
    const std::string e =
        launch_error_of([&] { EQUIVAE_LAUNCH(kernel_two_writers, 1, 64, 0, nullptr, out.data()); });
    ASSERT_NE(e.find("shared-memory race"), std::string::npos) << e;
    EXPECT_NE(e.find("word 5 "), std::string::npos) << e;
    EXPECT_NE(e.find("kernel_two_writers"), std::string::npos) << e;
    // The report names two of the three writers (which two depends on the schedule).
    int named = 0;
    for (const char* t : {"thread (3,0,0) ", "thread (5,0,0) ", "thread (40,0,0) "})
      named += e.find(t) != std::string::npos;
    EXPECT_GE(named, 2) << e;
  }
}

// The two-round reduction of WarpsRunAheadOfEachOtherAcrossShuffles, checked: without the
// second barrier a warp's round-2 store meets thread 0's round-1 load in one phase.
template <bool kSecondBarrier>
__global__ void kernel_checked_two_rounds(const float* x, float* out) {
  EQUIVAE_SHARED(float, partial, 8);
  const int t = int(threadIdx.x), warp = t / 32, lane = t % 32;
  for (int round = 0; round < 2; ++round) {
    const float v = equivae::cuda::warp_all_sum(x[round * 256 + t]);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (t == 0) {
      float total = 0;
      for (int w = 0; w < 8; ++w) total += partial[w];
      out[round] = total;
    }
    if (kSecondBarrier) __syncthreads();
  }
}

TEST(EmuRaceCheck, MissingSecondBarrierIsFlaggedEvenWhenTheResultIsRight) {
  std::vector<float> x(512, 1.0f), out(2);
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    emu::set_schedule_seed(seed);
    const std::string e = launch_error_of([&] {
      EQUIVAE_LAUNCH(kernel_checked_two_rounds<false>, 1, 256, 0, nullptr, x.data(), out.data());
    });
    ASSERT_NE(e.find("shared-memory race"), std::string::npos) << "seed " << seed << ": " << e;
    EXPECT_NO_THROW(
        EQUIVAE_LAUNCH(kernel_checked_two_rounds<true>, 1, 256, 0, nullptr, x.data(), out.data()));
    EXPECT_EQ(out[0], 256.0f);
    EXPECT_EQ(out[1], 256.0f);
  }
}

// Warp-synchronous exchange through shared memory: correct only with a full-warp sync (here
// __syncwarp, or a shuffle) between the store and the neighbour's load.
template <int kSync>  // 0: none, 1: __syncwarp, 2: a shuffle, 3: a half-warp __syncwarp
__global__ void kernel_warp_neighbour(int* out) {
  EQUIVAE_SHARED(int, s, 64);
  const int t = int(threadIdx.x), lane = t % 32;
  s[t] = t;
  if (kSync == 1) __syncwarp();
  if (kSync == 2) out[64 + t] = __shfl_xor_sync(kFullWarp, t, 1);
  if (kSync == 3) __syncwarp(lane < 16 ? 0x0000ffffu : 0xffff0000u);
  out[t] = s[(t & ~31) + (lane + 1) % 32];
}

TEST(EmuRaceCheck, WarpSynchronousAccessesNeedAFullWarpSync) {
  std::vector<int> out(128);
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    emu::set_schedule_seed(seed);
    EXPECT_NE(launch_error_of([&] {
                EQUIVAE_LAUNCH(kernel_warp_neighbour<0>, 1, 64, 0, nullptr, out.data());
              }).find("shared-memory race"),
              std::string::npos);
    EXPECT_NE(launch_error_of([&] {
                EQUIVAE_LAUNCH(kernel_warp_neighbour<3>, 1, 64, 0, nullptr, out.data());
              }).find("shared-memory race"),
              std::string::npos)
        << "partial-mask syncs do not order accesses (lane 15 reads lane 16's word)";
    EXPECT_NO_THROW(EQUIVAE_LAUNCH(kernel_warp_neighbour<1>, 1, 64, 0, nullptr, out.data()));
    for (int t = 0; t < 64; ++t) ASSERT_EQ(out[t], (t & ~31) + (t % 32 + 1) % 32);
    EXPECT_NO_THROW(EQUIVAE_LAUNCH(kernel_warp_neighbour<2>, 1, 64, 0, nullptr, out.data()));
  }
}

// Atomics on shared memory are not races; reading the result after a barrier is not either.
__global__ void kernel_shared_atomics(int* out) {
  EQUIVAE_SHARED(int, count, 1);
  if (threadIdx.x == 0) count[0] = 0;
  __syncthreads();
  atomicAdd(&count[0], 1);
  __syncthreads();
  out[threadIdx.x] = count[0];
}

TEST(EmuRaceCheck, SharedAtomicsAreNotRaces) {
  std::vector<int> out(96);
  EXPECT_NO_THROW(EQUIVAE_LAUNCH(kernel_shared_atomics, 2, 96, 0, nullptr, out.data()));
  for (int v : out) EXPECT_EQ(v, 96);
}

// Broadcast: every thread reads a word one thread wrote before the barrier; then (after a
// second barrier) one thread rewrites it.
__global__ void kernel_broadcast(int* out) {
  EQUIVAE_SHARED_2D(int, s, 2, 3);
  if (threadIdx.x == 0) s[1][2] = 42;
  __syncthreads();
  out[threadIdx.x] = s[1][2];
  __syncthreads();
  if (threadIdx.x == 7) s[1][2] = 0;
}

TEST(EmuRaceCheck, BroadcastReadsAreNotRacesAndAWriteAfterThemNeedsABarrier) {
  std::vector<int> out(128);
  EXPECT_NO_THROW(EQUIVAE_LAUNCH(kernel_broadcast, 1, 128, 0, nullptr, out.data()));
  for (int v : out) EXPECT_EQ(v, 42);
}

__global__ void kernel_write_after_reads_no_barrier(int* out) {
  EQUIVAE_SHARED(int, s, 1);
  if (threadIdx.x == 0) s[0] = 42;
  __syncthreads();
  out[threadIdx.x] = s[0];
  if (threadIdx.x == 100) s[0] = 0;  // other threads may still read it
}

TEST(EmuRaceCheck, WriteAfterOtherThreadsReadsIsFlagged) {
  std::vector<int> out(128);
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    emu::set_schedule_seed(seed);
    const std::string e = launch_error_of([&] {
      EQUIVAE_LAUNCH(kernel_write_after_reads_no_barrier, 1, 128, 0, nullptr, out.data());
    });
    EXPECT_NE(e.find("shared-memory race"), std::string::npos) << e;
    EXPECT_NE(e.find("thread (100,0,0)"), std::string::npos) << e;
  }
}

// Out of bounds: one past the end of a static array, a negative index, the second index of a
// 2-D array, and past the end of the dynamic buffer.
__global__ void kernel_oob_static(int* out) {
  EQUIVAE_SHARED(int, s, 32);
  s[threadIdx.x + 1] = 1;  // thread 31 writes s[32]
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}
__global__ void kernel_oob_negative(int* out) {
  EQUIVAE_SHARED(int, s, 32);
  s[int(threadIdx.x) - 1] = 1;
  out[threadIdx.x] = 0;
}
__global__ void kernel_oob_2d(int* out) {
  EQUIVAE_SHARED_2D(int, s, 4, 8);
  s[threadIdx.x / 8][threadIdx.x % 8 + (threadIdx.x == 31)] = 1;  // thread 31: s[3][8]
  out[threadIdx.x] = 0;
}
__global__ void kernel_oob_dynamic(float* out) {
  emu::SharedSpan<float> s = emu::dynamic_shared<float>();
  s[threadIdx.x == 32 ? 64 : threadIdx.x] = 1.0f;  // 64 floats of buffer: thread 32 writes s[64]
  out[threadIdx.x] = 0;
}

TEST(EmuRaceCheck, OutOfBoundsSharedAccessesAreFlagged) {
  std::vector<int> out(64);
  std::vector<float> fout(64);
  std::string e =
      launch_error_of([&] { EQUIVAE_LAUNCH(kernel_oob_static, 1, 32, 0, nullptr, out.data()); });
  EXPECT_NE(e.find("out-of-bounds shared-memory access"), std::string::npos) << e;
  EXPECT_NE(e.find("index 32 of __shared__ array of 32 elements"), std::string::npos) << e;
  EXPECT_NE(e.find("thread (31,0,0)"), std::string::npos) << e;
  EXPECT_NE(e.find("kernel_oob_static"), std::string::npos) << e;
  e = launch_error_of([&] { EQUIVAE_LAUNCH(kernel_oob_negative, 1, 32, 0, nullptr, out.data()); });
  EXPECT_NE(e.find("index -1 of"), std::string::npos) << e;
  e = launch_error_of([&] { EQUIVAE_LAUNCH(kernel_oob_2d, 1, 32, 0, nullptr, out.data()); });
  EXPECT_NE(e.find("out-of-bounds shared-memory access"), std::string::npos) << e;
  EXPECT_NE(e.find("index 8 of"), std::string::npos) << e;
  e = launch_error_of(
      [&] { EQUIVAE_LAUNCH(kernel_oob_dynamic, 1, 64, 64 * sizeof(float), nullptr, fout.data()); });
  EXPECT_NE(e.find("index 64 of dynamic shared memory of 64 elements"), std::string::npos) << e;
  // Out-of-bounds is checked with the race check off too.
  emu::set_race_check(false);
  e = launch_error_of([&] { EQUIVAE_LAUNCH(kernel_oob_static, 1, 32, 0, nullptr, out.data()); });
  emu::set_race_check(true);
  EXPECT_NE(e.find("out-of-bounds shared-memory access"), std::string::npos) << e;
}

// The dynamic buffer through emu::dynamic_shared<T>(): the reversal is clean, the same
// reversal without its barrier is a race.
template <bool kBarrier>
__global__ void kernel_checked_dynamic_reverse(const float* in, float* out) {
  emu::SharedSpan<float> s = emu::dynamic_shared<float>();
  const int n = int(blockDim.x), t = int(threadIdx.x);
  s[t] = in[blockIdx.x * n + t];
  if (kBarrier) __syncthreads();
  out[blockIdx.x * n + t] = s[n - 1 - t];
}

TEST(EmuRaceCheck, DynamicSharedMemoryIsChecked) {
  const int n = 96;
  std::vector<float> in(2 * n), out(2 * n);
  std::iota(in.begin(), in.end(), 0.0f);
  EXPECT_NO_THROW(EQUIVAE_LAUNCH(kernel_checked_dynamic_reverse<true>, 2, n, n * sizeof(float),
                                 nullptr, in.data(), out.data()));
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < n; ++t) ASSERT_EQ(out[b * n + t], in[b * n + n - 1 - t]);
  const std::string e = launch_error_of([&] {
    EQUIVAE_LAUNCH(kernel_checked_dynamic_reverse<false>, 2, n, n * sizeof(float), nullptr,
                   in.data(), out.data());
  });
  EXPECT_NE(e.find("shared-memory race"), std::string::npos) << e;
  EXPECT_NE(e.find("of dynamic shared memory"), std::string::npos) << e;
}

TEST(EmuRaceCheck, CanBeTurnedOff) {
  std::vector<int> x(256, 1), out(1);
  emu::set_race_check(false);
  EXPECT_NO_THROW(
      EQUIVAE_LAUNCH(kernel_checked_tree_sum<false>, 1, 256, 0, nullptr, x.data(), out.data()));
  emu::set_race_check(true);
  EXPECT_THROW(
      EQUIVAE_LAUNCH(kernel_checked_tree_sum<false>, 1, 256, 0, nullptr, x.data(), out.data()),
      emu::Error);
}

// BlockReduce's TempStorage is checked: reusing it without the barrier its contract asks for
// is a race (warp 0's lane 0 stores round 2's partial while thread 0 still reads round 1's).
template <bool kBarrier>
__global__ void kernel_block_reduce_twice(const float* x, float* out) {
  __shared__ typename BlockReduce<float, 64>::TempStorage storage;
  const float a = BlockReduce<float, 64>(storage).sum(x[threadIdx.x]);
  if (kBarrier) __syncthreads();
  const float b = BlockReduce<float, 64>(storage).sum(2 * x[threadIdx.x]);
  if (threadIdx.x == 0) out[0] = a, out[1] = b;
}

TEST(EmuRaceCheck, BlockReduceStorageReusedWithoutBarrierIsFlagged) {
  std::vector<float> x(64, 1.0f), out(2);
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    emu::set_schedule_seed(seed);
    EXPECT_NE(launch_error_of([&] {
                EQUIVAE_LAUNCH(kernel_block_reduce_twice<false>, 1, 64, 0, nullptr, x.data(),
                               out.data());
              }).find("shared-memory race"),
              std::string::npos);
    EXPECT_NO_THROW(
        EQUIVAE_LAUNCH(kernel_block_reduce_twice<true>, 1, 64, 0, nullptr, x.data(), out.data()));
    EXPECT_EQ(out[0], 64.0f);
    EXPECT_EQ(out[1], 128.0f);
  }
}

// EQUIVAE_SHARED_3D: thread t owns element t of a 2 × 3 × 4 array; errors name the array and
// the element's three indices. Each index is bounds-checked, and a pointer from a row
// (`cube[s][i] + j`) may run on into later rows but not past the array.
template <int kMode>  // 0: clean; 1: no barrier; 2, 3, 4: one index out of range; 5: past the end
__global__ void kernel_cube(int* out) {
  EQUIVAE_SHARED_3D(int, cube, 2, 3, 4);
  const int t = int(threadIdx.x);
  cube[t / 12][t / 4 % 3][t % 4] = t;
  if (kMode != 1) __syncthreads();
  out[t] = (cube[0][0] + (23 - t))[0] + cube[1][2][3];  // element 23 − t, and thread 23's
  if (kMode == 2 && t == 5) out[t] = cube[2][0][0];
  if (kMode == 3 && t == 5) out[t] = cube[1][3][0];
  if (kMode == 4 && t == 5) out[t] = cube[1][2][4];
  if (kMode == 5 && t == 5) out[t] = (cube[1][2] + 4)[0];
}

TEST(EmuRaceCheck, ThreeDimensionalArraysAreCheckedAndErrorsNameTheElement) {
  std::vector<int> out(24);
  EXPECT_NO_THROW(EQUIVAE_LAUNCH(kernel_cube<0>, 2, 24, 0, nullptr, out.data()));
  for (int t = 0; t < 24; ++t) ASSERT_EQ(out[size_t(t)], 23 - t + 23);
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    emu::set_schedule_seed(seed);
    const std::string e =
        launch_error_of([&] { EQUIVAE_LAUNCH(kernel_cube<1>, 1, 24, 0, nullptr, out.data()); });
    EXPECT_NE(e.find("emu: shared-memory race (array 'cube') in kernel 'kernel_cube<1>'"),
              std::string::npos)
        << e;
    EXPECT_NE(e.find("4-byte elements: cube["), std::string::npos) << e;
  }
  std::string e =
      launch_error_of([&] { EQUIVAE_LAUNCH(kernel_cube<2>, 1, 24, 0, nullptr, out.data()); });
  EXPECT_NE(e.find("emu: out-of-bounds shared-memory access (array 'cube')"), std::string::npos)
      << e;
  EXPECT_NE(e.find("index 2 of __shared__ array (first index) of 2 elements (48 bytes each)"),
            std::string::npos)
      << e;
  e = launch_error_of([&] { EQUIVAE_LAUNCH(kernel_cube<3>, 1, 24, 0, nullptr, out.data()); });
  EXPECT_NE(e.find("index 3 of __shared__ array (row index) of 3 elements (16 bytes each)"),
            std::string::npos)
      << e;
  e = launch_error_of([&] { EQUIVAE_LAUNCH(kernel_cube<4>, 1, 24, 0, nullptr, out.data()); });
  EXPECT_NE(e.find("index 4 of __shared__ array of 24 elements"), std::string::npos) << e;
  e = launch_error_of([&] { EQUIVAE_LAUNCH(kernel_cube<5>, 1, 24, 0, nullptr, out.data()); });
  EXPECT_NE(e.find("index 24 of __shared__ array of 24 elements"), std::string::npos) << e;
}

// The element of a 1-D or 2-D array is named too.
__global__ void kernel_named_2d(int* out) {
  EQUIVAE_SHARED_2D(int, grid2, 4, 8);
  if (threadIdx.x != 13) grid2[threadIdx.x / 8][threadIdx.x % 8] = 1;
  __syncthreads();
  out[threadIdx.x] = grid2[threadIdx.x / 8][threadIdx.x % 8];
}

TEST(EmuUninitialisedShared, TheMessageNamesTheArrayAndTheElement) {
  std::vector<int> out(32);
  const std::string e =
      launch_error_of([&] { EQUIVAE_LAUNCH(kernel_named_2d, 1, 32, 0, nullptr, out.data()); });
  EXPECT_NE(e.find("emu: read of uninitialised shared memory (array 'grid2')"), std::string::npos)
      << e;
  EXPECT_NE(e.find("thread (13,0,0) read word 13 of __shared__ array (element 13 of 32, 4-byte "
                   "elements: grid2[1][5])"),
            std::string::npos)
      << e;
}

// ---------------------------------------------------------------- uninitialised shared reads
// A checked shared word that no thread of the running block has written holds garbage on a GPU
// (here: whatever the previous block left in the thread_local array, or zeros); reading it is
// an emu::Error naming the kernel, block, thread and element.
template <bool kEarlyRead>
__global__ void kernel_read_before_write(int* out) {
  EQUIVAE_SHARED(int, s, 64);
  const int t = int(threadIdx.x);
  if (kEarlyRead && t == 5) out[64] = s[9];  // before any thread wrote s[9]
  __syncthreads();
  s[t] = t;
  __syncthreads();
  out[t] = s[63 - t];
}

TEST(EmuUninitialisedShared, ReadBeforeAnyWriteIsFlaggedInEverySeed) {
  std::vector<int> out(65);
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    emu::set_schedule_seed(seed);
    const std::string e = launch_error_of(
        [&] { EQUIVAE_LAUNCH(kernel_read_before_write<true>, 1, 64, 0, nullptr, out.data()); });
    ASSERT_NE(e.find("read of uninitialised shared memory"), std::string::npos)
        << "seed " << seed << ": " << e;
    EXPECT_NE(e.find("kernel_read_before_write<true>"), std::string::npos) << e;
    EXPECT_NE(e.find("block (0,0,0)"), std::string::npos) << e;
    EXPECT_NE(e.find("thread (5,0,0) read word 9 of __shared__ array (element 9 of 64"),
              std::string::npos)
        << e;
    if (seed == 1) std::printf("%s\n", e.c_str());
  }
}

TEST(EmuUninitialisedShared, WriteBarrierReadIsClean) {
  std::vector<int> out(65);
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    emu::set_schedule_seed(seed);
    EXPECT_NO_THROW(EQUIVAE_LAUNCH(kernel_read_before_write<false>, 2, 64, 0, nullptr, out.data()));
    for (int t = 0; t < 64; ++t) ASSERT_EQ(out[t], 63 - t);
  }
}

TEST(EmuUninitialisedShared, IsOffWithTheRaceCheck) {
  std::vector<int> out(65);
  emu::set_race_check(false);
  const std::string e = launch_error_of(
      [&] { EQUIVAE_LAUNCH(kernel_read_before_write<true>, 1, 64, 0, nullptr, out.data()); });
  emu::set_race_check(true);
  EXPECT_EQ(e, "");
}

// Blocks below `writers` fill the array; the others only read it, which is a read of what an
// earlier block (or launch) left on this OS thread.
__global__ void kernel_reads_leftovers(int* out, unsigned writers) {
  EQUIVAE_SHARED(int, s, 32);
  const unsigned t = threadIdx.x;
  if (blockIdx.x < writers) s[t] = int(blockIdx.x * 32 + t);
  __syncthreads();
  out[blockIdx.x * 32 + t] = s[31 - t];
}

TEST(EmuUninitialisedShared, AnEarlierBlocksOrLaunchsWritesDoNotCount) {
  std::vector<int> out(64);
  EXPECT_NO_THROW(EQUIVAE_LAUNCH(kernel_reads_leftovers, 2, 32, 0, nullptr, out.data(), 2u));
  for (int i = 0; i < 64; ++i) ASSERT_EQ(out[i], (i & ~31) + 31 - i % 32);
  std::string e = launch_error_of(
      [&] { EQUIVAE_LAUNCH(kernel_reads_leftovers, 2, 32, 0, nullptr, out.data(), 1u); });
  EXPECT_NE(e.find("read of uninitialised shared memory"), std::string::npos) << e;
  EXPECT_NE(e.find("block (1,0,0)"), std::string::npos) << e;
  e = launch_error_of(
      [&] { EQUIVAE_LAUNCH(kernel_reads_leftovers, 1, 32, 0, nullptr, out.data(), 0u); });
  EXPECT_NE(e.find("read of uninitialised shared memory"), std::string::npos) << e;
  EXPECT_NE(e.find("block (0,0,0)"), std::string::npos) << e;
}

// Dynamic shared memory: thread 7 skips its store (in every block, or only in block 1), so the
// thread reading element 7 reads a word that this block never wrote.
template <bool kSkipEverywhere>
__global__ void kernel_dynamic_skipped_store(const float* in, float* out) {
  emu::SharedSpan<float> s = emu::dynamic_shared<float>();
  const int n = int(blockDim.x), t = int(threadIdx.x);
  if (t != 7 || (!kSkipEverywhere && blockIdx.x == 0)) s[t] = in[blockIdx.x * n + t];
  __syncthreads();
  out[blockIdx.x * n + t] = s[n - 1 - t];
}

TEST(EmuUninitialisedShared, DynamicSharedMemoryIsChecked) {
  const int n = 96;
  std::vector<float> in(2 * n, 1.0f), out(2 * n);
  for (bool everywhere : {true, false}) {
    const std::string e = launch_error_of([&] {
      if (everywhere)
        EQUIVAE_LAUNCH(kernel_dynamic_skipped_store<true>, 2, n, n * sizeof(float), nullptr,
                       in.data(), out.data());
      else
        EQUIVAE_LAUNCH(kernel_dynamic_skipped_store<false>, 2, n, n * sizeof(float), nullptr,
                       in.data(), out.data());
    });
    EXPECT_NE(e.find("read of uninitialised shared memory"), std::string::npos) << e;
    EXPECT_NE(e.find(everywhere ? "block (0,0,0)" : "block (1,0,0)"), std::string::npos) << e;
    EXPECT_NE(e.find("thread (88,0,0) read word 7 of dynamic shared memory (element 7 of 96"),
              std::string::npos)
        << e;
  }
}

// A wide store initialises every 4-byte word it covers: doubles written, floats read.
__global__ void kernel_dynamic_wide_store(float* out) {
  emu::SharedSpan<double> d = emu::dynamic_shared<double>();
  emu::SharedSpan<float> f = emu::dynamic_shared<float>();
  d[threadIdx.x] = double(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = f[2 * (31 - threadIdx.x) + 1];  // the high word of a double
}

TEST(EmuUninitialisedShared, WideDynamicStoresInitialiseEveryWordTheyCover) {
  std::vector<float> out(32);
  EXPECT_NO_THROW(
      EQUIVAE_LAUNCH(kernel_dynamic_wide_store, 1, 32, 32 * sizeof(double), nullptr, out.data()));
}

// A word initialised through its raw address (an atomic) counts as written.
__global__ void kernel_shared_atomic_init(int* out) {
  EQUIVAE_SHARED(int, s, 32);
  atomicExch(&s[threadIdx.x], int(threadIdx.x));
  __syncthreads();
  out[threadIdx.x] = s[31 - threadIdx.x];
}

TEST(EmuUninitialisedShared, WordsInitialisedThroughTheirAddressCountAsWritten) {
  std::vector<int> out(32);
  EXPECT_NO_THROW(EQUIVAE_LAUNCH(kernel_shared_atomic_init, 2, 32, 0, nullptr, out.data()));
  for (int t = 0; t < 32; ++t) EXPECT_EQ(out[t], 31 - t);
}

// ---------------------------------------------------------------- deadlocks and misuse
__global__ void kernel_barrier_in_divergent_branch(int* out) {
  if (threadIdx.x < 16) __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void kernel_shuffle_with_exited_lane(float* out) {
  if (threadIdx.x == 5) return;
  out[threadIdx.x] = __shfl_down_sync(kFullWarp, 1.0f, 1);
}

__global__ void kernel_shuffle_against_syncthreads(float* out) {
  if (threadIdx.x < 32)
    out[threadIdx.x] = __shfl_xor_sync(kFullWarp, 1.0f, 1);
  else if (threadIdx.x < 48)
    __syncthreads();
  else
    out[threadIdx.x] = __shfl_xor_sync(kFullWarp, 2.0f, 1);  // warp 1 split: lanes 0-15 wait
  __syncthreads();
}

__global__ void kernel_shuffle_mask_excludes_caller(float* out) {
  out[threadIdx.x] = __shfl_sync(0x1u, 1.0f, 0);
}

TEST(Emu, BarrierInDivergentBranchIsReportedNotHung) {
  std::vector<int> out(64);
  const std::string e = launch_error_of(
      [&] { EQUIVAE_LAUNCH(kernel_barrier_in_divergent_branch, 2, 64, 0, nullptr, out.data()); });
  ASSERT_FALSE(e.empty()) << "the launch must fail";
  EXPECT_NE(e.find("deadlock"), std::string::npos) << e;
  EXPECT_NE(e.find("16 of 64 threads wait at __syncthreads() while 48 have exited"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("kernel_barrier_in_divergent_branch"), std::string::npos) << e;
}

TEST(Emu, ShuffleWaitingForAnExitedLaneIsReported) {
  std::vector<float> out(32);
  const std::string e = launch_error_of(
      [&] { EQUIVAE_LAUNCH(kernel_shuffle_with_exited_lane, 1, 32, 0, nullptr, out.data()); });
  EXPECT_NE(e.find("deadlock"), std::string::npos) << e;
  EXPECT_NE(e.find("5(exited)"), std::string::npos) << e;
}

TEST(Emu, ShuffleAgainstSyncthreadsIsReported) {
  std::vector<float> out(64);
  const std::string e = launch_error_of(
      [&] { EQUIVAE_LAUNCH(kernel_shuffle_against_syncthreads, 1, 64, 0, nullptr, out.data()); });
  EXPECT_NE(e.find("deadlock"), std::string::npos) << e;
  EXPECT_NE(e.find("(at __syncthreads)"), std::string::npos) << e;
}

TEST(Emu, WarpPrimitiveWithMaskExcludingCallerIsReported) {
  std::vector<float> out(32);
  const std::string e = launch_error_of(
      [&] { EQUIVAE_LAUNCH(kernel_shuffle_mask_excludes_caller, 1, 32, 0, nullptr, out.data()); });
  EXPECT_NE(e.find("mask that excludes it"), std::string::npos) << e;
  EXPECT_NE(e.find("thread ("), std::string::npos) << e;
}

TEST(Emu, InvalidLaunchConfigurationsAreRejected) {
  std::vector<int> out(2048 * 4);
  EXPECT_THROW(EQUIVAE_LAUNCH(kernel_indices, 1, 1025, 0, nullptr, out.data()), emu::Error);
  EXPECT_THROW(EQUIVAE_LAUNCH(kernel_indices, 0, 32, 0, nullptr, out.data()), emu::Error);
  EXPECT_THROW(EQUIVAE_LAUNCH(kernel_indices, 1, dim3(1, 1, 65), 0, nullptr, out.data()),
               emu::Error);
  EXPECT_THROW(EQUIVAE_LAUNCH(kernel_indices, 1, 32, 49 * 1024, nullptr, out.data()), emu::Error);
  EXPECT_NO_THROW(EQUIVAE_LAUNCH(kernel_indices, 2, 1024, 0, nullptr, out.data()));
}

TEST(Emu, LaunchesWorkAgainAfterAFailure) {
  std::vector<int> out(64);
  EXPECT_THROW(EQUIVAE_LAUNCH(kernel_barrier_in_divergent_branch, 1, 64, 0, nullptr, out.data()),
               emu::Error);
  std::vector<int> in(256), rev(256);
  std::iota(in.begin(), in.end(), 0);
  EQUIVAE_LAUNCH(kernel_reverse_static, 1, 256, 0, nullptr, in.data(), rev.data());
  EXPECT_EQ(rev[0], 255);
  EXPECT_EQ(rev[255], 0);
}

// ---------------------------------------------------------------- the schedule
__global__ void kernel_record_order(int* counter, int* order) {
  order[threadIdx.x] = atomicAdd(counter, 1);
  __syncthreads();
  order[blockDim.x + threadIdx.x] = atomicAdd(counter, 1);
}

std::vector<int> order_for(uint64_t seed) {
  emu::set_schedule_seed(seed);
  int counter = 0;
  std::vector<int> order(2 * 128);
  EQUIVAE_LAUNCH(kernel_record_order, 1, 128, 0, nullptr, &counter, order.data());
  return order;
}

TEST(Emu, ScheduleIsShuffledPerPhaseAndReproducibleFromTheSeed) {
  const std::vector<int> a = order_for(11), b = order_for(11), c = order_for(12);
  EXPECT_EQ(a, b) << "the same seed must replay the same schedule";
  EXPECT_NE(a, c) << "another seed must give another schedule";
  std::vector<int> phase0(a.begin(), a.begin() + 128), phase1(a.begin() + 128, a.end());
  for (int& v : phase1) v -= 128;
  EXPECT_NE(phase0, phase1) << "each phase needs a fresh order";
  std::vector<int> sorted = phase0;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < 128; ++i) ASSERT_EQ(sorted[i], i);
  bool identity = true;
  for (int i = 0; i < 128; ++i) identity = identity && phase0[i] == i;
  EXPECT_FALSE(identity);
}

TEST(Emu, StatsCountLaunchesBlocksAndBarriers) {
  emu::reset_stats();
  std::vector<int> in(3 * 64), out(3 * 64);
  EQUIVAE_LAUNCH(kernel_reverse_static, 3, 64, 0, nullptr, in.data(), out.data());
  const emu::Stats s = emu::stats();
  EXPECT_EQ(s.launches, 1u);
  EXPECT_EQ(s.blocks, 3u);
  EXPECT_EQ(s.threads, 192u);
  EXPECT_EQ(s.block_barriers, 3u);
}

}  // namespace
