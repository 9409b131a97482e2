// The emulator's tensor-core API (kernels/emu/emu_wmma.h, reached through kernels/cuda/wmma.cuh):
// TF32 rounding, one warp's m16n16k8 product in every operand and accumulator layout against a
// double reference, the warp-wide contract (a partial warp is an error), and proof that a
// kernel which loads a fragment from shared memory before the other warps have written it
// (no barrier) gives wrong products under shuffled schedules.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <type_traits>
#include <vector>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/wmma.cuh"

namespace {

namespace wmma = nvcuda::wmma;

TEST(EmuWmma, Tf32RoundsToNearestTiesAwayFromZero) {
  const float one = 1.0f, ulp = std::ldexp(1.0f, -10);  // TF32 keeps 10 mantissa bits
  EXPECT_EQ(wmma::__float_to_tf32(one + std::ldexp(1.0f, -11)), one + ulp);  // tie: away
  EXPECT_EQ(wmma::__float_to_tf32(-one - std::ldexp(1.0f, -11)), -one - ulp);
  EXPECT_EQ(wmma::__float_to_tf32(one + std::ldexp(1.0f, -12)), one);        // below half
  EXPECT_EQ(wmma::__float_to_tf32(one + std::ldexp(3.0f, -12)), one + ulp);  // above half
  EXPECT_EQ(wmma::__float_to_tf32(0.0f), 0.0f);
  EXPECT_TRUE(std::isinf(wmma::__float_to_tf32(INFINITY)));
  EXPECT_TRUE(std::isnan(wmma::__float_to_tf32(std::bit_cast<float>(0x7FC00001u))));
}

// One warp: D = A·B + C with A (16×8), B (8×16) and C (16×16) read in the given layouts from
// global memory, D stored row-major.
template <class LayoutA, class LayoutB, wmma::layout_t kLayoutC>
__global__ void kernel_one_mma(const float* A, const float* B, const float* C, float* D) {
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, LayoutA> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, LayoutB> b;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> c;
  constexpr bool a_row = std::is_same_v<LayoutA, wmma::row_major>;
  constexpr bool b_row = std::is_same_v<LayoutB, wmma::row_major>;
  wmma::load_matrix_sync(a, A, a_row ? 8 : 16);
  wmma::load_matrix_sync(b, B, b_row ? 16 : 8);
  wmma::load_matrix_sync(c, C, 16, kLayoutC);
  wmma::mma_sync(c, a, b, c);
  wmma::store_matrix_sync(D, c, 16, wmma::mem_row_major);
}

// Values with few mantissa bits, so TF32 holds them exactly and float sums them exactly: the
// product must equal the double reference exactly.
float exact_value(int i, int salt) {
  return float(((i * 37 + salt * 11) % 17) - 8) / 8.0f;
}

template <class LayoutA, class LayoutB, wmma::layout_t kLayoutC>
void check_one_mma() {
  constexpr bool a_row = std::is_same_v<LayoutA, wmma::row_major>;
  constexpr bool b_row = std::is_same_v<LayoutB, wmma::row_major>;
  std::vector<float> A(16 * 8), B(8 * 16), C(16 * 16), D(16 * 16, NAN);
  for (int r = 0; r < 16; ++r)
    for (int k = 0; k < 8; ++k) A[a_row ? r * 8 + k : k * 16 + r] = exact_value(r * 8 + k, 1);
  for (int k = 0; k < 8; ++k)
    for (int c = 0; c < 16; ++c) B[b_row ? k * 16 + c : c * 8 + k] = exact_value(k * 16 + c, 2);
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      C[kLayoutC == wmma::mem_row_major ? r * 16 + c : c * 16 + r] = exact_value(r * 16 + c, 3);
  for (uint64_t seed : {1, 2, 3}) {
    emu::set_schedule_seed(seed);
    equivae::cuda::launch(kernel_one_mma<LayoutA, LayoutB, kLayoutC>, 1, 32, 0, nullptr, A.data(),
                          B.data(), C.data(), D.data());
    for (int r = 0; r < 16; ++r)
      for (int c = 0; c < 16; ++c) {
        double want = exact_value(r * 16 + c, 3);
        for (int k = 0; k < 8; ++k)
          want += double(exact_value(r * 8 + k, 1)) * double(exact_value(k * 16 + c, 2));
        ASSERT_EQ(double(D[size_t(r) * 16 + c]), want) << "row " << r << " col " << c;
      }
  }
}

TEST(EmuWmma, OneWarpProductInEveryLayout) {
  check_one_mma<wmma::row_major, wmma::row_major, wmma::mem_row_major>();
  check_one_mma<wmma::row_major, wmma::col_major, wmma::mem_col_major>();
  check_one_mma<wmma::col_major, wmma::row_major, wmma::mem_col_major>();
  check_one_mma<wmma::col_major, wmma::col_major, wmma::mem_row_major>();
}

TEST(EmuWmma, ProductReadsOperandsAsTf32) {
  // 1 + 2⁻¹² is below TF32's resolution: the tensor core sees 1 (the low bits are dropped even
  // when the kernel does not round), so 1·1 summed over k = 8 gives exactly 8.
  std::vector<float> A(16 * 8, 1.0f + std::ldexp(1.0f, -12)), B(8 * 16, 1.0f), C(256, 0.0f),
      D(256, NAN);
  equivae::cuda::launch(kernel_one_mma<wmma::row_major, wmma::row_major, wmma::mem_row_major>, 1,
                        32, 0, nullptr, A.data(), B.data(), C.data(), D.data());
  for (float d : D) ASSERT_EQ(d, 8.0f);
}

TEST(EmuWmma, PartialWarpIsAnError) {
  std::vector<float> A(128, 1.0f), B(128, 1.0f), C(256, 0.0f), D(256);
  EXPECT_THROW(
      equivae::cuda::launch(kernel_one_mma<wmma::row_major, wmma::row_major, wmma::mem_row_major>,
                            1, 16, 0, nullptr, A.data(), B.data(), C.data(), D.data()),
      emu::Error);
}

// Four warps each write one 4-row quarter of a 16×8 A tile in shared memory; warp 0 then
// multiplies the whole tile by B = ones (so D[r][c] = Σ_k A[r][k]). kBarrier = false drops the
// barrier between the writes and warp 0's load: warp 0 may then read rows another warp has
// not written yet (stale values of the previous launch).
template <bool kBarrier>
__global__ void kernel_tile_then_mma(const float* A, float* D) {
  __shared__ __align__(32) float tile[16][8];
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  tile[warp * 4 + lane / 8][lane % 8] = A[(warp * 4 + lane / 8) * 8 + lane % 8];
  if (kBarrier) __syncthreads();
  if (warp != 0) return;
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> b;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> c;
  wmma::load_matrix_sync(a, &tile[0][0], 8);
  wmma::fill_fragment(b, 1.0f);
  wmma::fill_fragment(c, 0.0f);
  wmma::mma_sync(c, a, b, c);
  wmma::store_matrix_sync(D, c, 16, wmma::mem_row_major);
}

template <bool kBarrier>
int wrong_seeds() {
  int wrong = 0;
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    emu::set_schedule_seed(seed);
    std::vector<float> A(128), D(256, NAN);
    // New values every run (so a stale tile is wrong), exact in TF32 (≤ 11 significant bits).
    for (int i = 0; i < 128; ++i) A[size_t(i)] = float(seed * 64 + uint64_t(i % 64));
    equivae::cuda::launch(kernel_tile_then_mma<kBarrier>, 1, 128, 0, nullptr, A.data(), D.data());
    bool right = true;
    for (int r = 0; r < 16; ++r) {
      double want = 0;
      for (int k = 0; k < 8; ++k) want += A[size_t(r) * 8 + k];
      right = right && double(D[size_t(r) * 16]) == want;
    }
    wrong += !right;
  }
  return wrong;
}

TEST(EmuWmma, FragmentLoadedBeforeOtherWarpsWroteItIsWrongUnderShuffledSchedules) {
  const int racy = wrong_seeds<false>(), synced = wrong_seeds<true>();
  std::printf("tile product wrong in %d of 20 seeds without its barrier, %d with it\n", racy,
              synced);
  EXPECT_EQ(synced, 0);
  EXPECT_GE(racy, 1);
}

// A fragment stored into and loaded from a race-checked tile (EQUIVAE_SHARED_2D; `tile[0]` or
// `tile[0] + 0` is the checked pointer): each element is checked as an access of the lane that
// holds it. Warp 0 stores C; then warp `reader` loads the tile and stores it to D.
//   kBarrier = true, reader 1: clean. kBarrier = false, reader 1: warp 1's load meets warp 0's
//   store in one phase, a race in every seed. kBarrier = false, reader 0: warp 0 reloads its own
//   store into the same kind of fragment, each lane its own elements: clean.
template <bool kBarrier>
__global__ void kernel_store_then_load(const float* C, float* D, int reader) {
  EQUIVAE_SHARED_2D(float, tile, 16, 16) __align__(32);
  const int warp = int(threadIdx.x) / 32;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> c;
  if (warp == 0) {
    wmma::load_matrix_sync(c, C, 16, wmma::mem_row_major);
    wmma::store_matrix_sync(tile[0], c, 16, wmma::mem_row_major);
  }
  if (kBarrier) __syncthreads();
  if (warp == reader) {
    wmma::load_matrix_sync(c, tile[0] + 0, 16, wmma::mem_row_major);
    wmma::store_matrix_sync(D, c, 16, wmma::mem_row_major);
  }
}

TEST(EmuWmma, LoadOfAnotherWarpsStoreInTheSamePhaseIsARace) {
  std::vector<float> C(256), D(256);
  for (int i = 0; i < 256; ++i) C[size_t(i)] = float(i);
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    emu::set_schedule_seed(seed);
    for (int reader : {0, 1}) {
      std::fill(D.begin(), D.end(), NAN);
      EXPECT_NO_THROW(equivae::cuda::launch(kernel_store_then_load<true>, 1, 64, 0, nullptr,
                                            C.data(), D.data(), reader));
      EXPECT_EQ(D, C);
    }
    std::fill(D.begin(), D.end(), NAN);
    EXPECT_NO_THROW(equivae::cuda::launch(kernel_store_then_load<false>, 1, 64, 0, nullptr,
                                          C.data(), D.data(), 0));
    EXPECT_EQ(D, C);
    std::string e;
    try {
      EQUIVAE_LAUNCH(kernel_store_then_load<false>, 1, 64, 0, nullptr, C.data(), D.data(), 1);
    } catch (const emu::Error& error) {
      e = error.what();
    }
    EXPECT_NE(e.find("emu: shared-memory race (array 'tile')"), std::string::npos) << e;
    EXPECT_NE(e.find("in the same barrier phase"), std::string::npos) << e;
    if (seed == 1) std::printf("%s\n", e.c_str());
  }
}

}  // namespace
