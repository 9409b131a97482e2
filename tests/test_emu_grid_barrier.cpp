// The emulator's cooperative launches and the grid-wide barrier (kernels/cuda/grid_sync.cuh):
// every block of a cooperative grid is alive at once, so blocks meet at the barrier and each
// sees every block's writes after it; without the barrier a block reads what the others have
// not written yet, in every seed (the emulator runs one block until it waits); a block that
// leaves early, a barrier in a kernel not launched cooperatively and a grid larger than the
// emulator holds are errors, not hangs; an error in one block is the launch's error.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/grid_sync.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/shared.cuh"
#include "tests/error_checks.h"

namespace {

using equivae::cuda::grid_barrier;
using equivae::cuda::GridBarrier;

// Each round: every block writes its slot (round + block), meets the others, and block b sums
// all slots into sums[round · blocks + b]; a second barrier keeps the next round's writes from
// overtaking the sums. `barriers`: 0 drops both (the broken variant).
__global__ void kernel_rounds(int* slots, int* sums, int rounds, GridBarrier barrier,
                              int barriers) {
  equivae::cuda::grid_dependency_prologue();
  const int blocks = int(gridDim.x), b = int(blockIdx.x);
  for (int round = 0; round < rounds; ++round) {
    if (threadIdx.x == 0) slots[b] = round * 100 + b;
    if (barriers) grid_barrier(barrier);
    if (threadIdx.x == 0) {
      int sum = 0;
      for (int i = 0; i < blocks; ++i) sum += slots[i];
      sums[round * blocks + b] = sum;
    }
    if (barriers) grid_barrier(barrier);
  }
}

struct Rounds {
  int blocks, rounds;
  std::vector<int> slots, sums;
  unsigned counters[2] = {0, 0};
  Rounds(int b, int r) : blocks(b), rounds(r), slots(size_t(b), -1), sums(size_t(b * r), -1) {}
  GridBarrier barrier() { return {&counters[0], &counters[1]}; }
  int expected(int round) const { return blocks * round * 100 + blocks * (blocks - 1) / 2; }
};

TEST(EmuGridBarrier, EveryBlockSeesEveryWriteAfterTheBarrierInEverySeed) {
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    emu::set_schedule_seed(seed);
    for (int blocks : {1, 2, 5, 16}) {
      Rounds r(blocks, 3);
      EQUIVAE_LAUNCH_COOPERATIVE(kernel_rounds, dim3(unsigned(blocks)), 64, 0, nullptr,
                                 r.slots.data(), r.sums.data(), r.rounds, r.barrier(), 1);
      for (int round = 0; round < r.rounds; ++round)
        for (int b = 0; b < blocks; ++b)
          EXPECT_EQ(r.sums[size_t(round * blocks + b)], r.expected(round))
              << "seed " << seed << ", " << blocks << " blocks, round " << round << ", block " << b;
      EXPECT_EQ(r.counters[0], 0u) << "the arrival count is left zero for the next launch";
      EXPECT_EQ(r.counters[1], unsigned(2 * r.rounds)) << "one generation per barrier";
    }
  }
}

TEST(EmuGridBarrier, WithoutTheBarrierBlocksReadUnwrittenSlotsInEverySeed) {
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    emu::set_schedule_seed(seed);
    Rounds r(4, 2);
    EQUIVAE_LAUNCH_COOPERATIVE(kernel_rounds, dim3(4), 64, 0, nullptr, r.slots.data(),
                               r.sums.data(), r.rounds, r.barrier(), 0);
    int wrong = 0;
    for (int round = 0; round < r.rounds; ++round)
      for (int b = 0; b < r.blocks; ++b)
        wrong += r.sums[size_t(round * r.blocks + b)] != r.expected(round);
    EXPECT_GT(wrong, 0) << "seed " << seed << ": the broken kernel gave the right sums";
  }
}

// The emulator's error from a launch ("(no error)" if none).
template <class F>
std::string error_of(F&& launch) {
  return equivae::test::error_of<emu::Error>(std::forward<F>(launch));
}

// Block 0 returns before the barrier the others wait at.
__global__ void kernel_block_leaves_early(GridBarrier barrier) {
  equivae::cuda::grid_dependency_prologue();
  if (blockIdx.x == 0) return;
  grid_barrier(barrier);
}

TEST(EmuGridBarrier, ABlockThatLeavesEarlyIsADeadlockNotAHang) {
  unsigned counters[2] = {0, 0};
  const std::string e = error_of([&] {
    EQUIVAE_LAUNCH_COOPERATIVE(kernel_block_leaves_early, dim3(3), 32, 0, nullptr,
                               GridBarrier{&counters[0], &counters[1]});
  });
  EXPECT_NE(e.find("deadlock at a grid-wide barrier"), std::string::npos) << e;
}

__global__ void kernel_barrier_once(GridBarrier barrier) {
  equivae::cuda::grid_dependency_prologue();
  grid_barrier(barrier);
}

TEST(EmuGridBarrier, ABarrierNeedsACooperativeLaunchThatFits) {
  unsigned counters[2] = {0, 0};
  const GridBarrier barrier{&counters[0], &counters[1]};
  std::string e =
      error_of([&] { EQUIVAE_LAUNCH(kernel_barrier_once, dim3(2), 32, 0, nullptr, barrier); });
  EXPECT_NE(e.find("not launched cooperatively"), std::string::npos) << e;
  e = error_of([&] {
    EQUIVAE_LAUNCH_COOPERATIVE(kernel_barrier_once, dim3(emu::detail::kMaxCooperativeBlocks + 1),
                               32, 0, nullptr, barrier);
  });
  EXPECT_NE(e.find("cooperative grid of 65 blocks"), std::string::npos) << e;
}

// Block 1 fails (a shared index out of bounds) while the others wait at the barrier.
__global__ void kernel_one_block_fails(GridBarrier barrier) {
  equivae::cuda::grid_dependency_prologue();
  EQUIVAE_SHARED(int, s, 4);
  if (blockIdx.x == 1) s[threadIdx.x + 4] = 1;
  grid_barrier(barrier);
}

TEST(EmuGridBarrier, OneBlocksErrorIsTheLaunchsError) {
  unsigned counters[2] = {0, 0};
  const std::string e = error_of([&] {
    EQUIVAE_LAUNCH_COOPERATIVE(kernel_one_block_fails, dim3(4), 32, 0, nullptr,
                               GridBarrier{&counters[0], &counters[1]});
  });
  EXPECT_NE(e.find("out-of-bounds shared-memory access"), std::string::npos) << e;
}

}  // namespace
