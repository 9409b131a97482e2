// The small GEMM (kernels/cuda/small_gemm.cu) under the emulator's shared-memory race check:
// its tiles are EQUIVAE_SHARED arrays, so the cp.async copies into As/Bs, the fragment loads
// and stores and the epilogue's reads of Cs are all checked. The kernel as the engine launches
// it is clean in every seed; each deliberately broken variant (small_gemm.cu's Defect, one
// barrier or the cp.async wait wrong) is an emu::Error that names a race on the tile, in every
// seed, whatever values it happens to compute. This file compiles small_gemm.cu itself (its
// kernels are file-local), as the emulator's build of the kernels does.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/small_gemm.cu"

namespace equivae::cuda {
namespace {

struct Problem {
  int M, N, K;
  bool trans_b;
  std::vector<float> A, B, C, bias, db, partials, split_partials;
  std::vector<uint8_t> mask;
  std::vector<unsigned> arrivals, split_arrivals;
  int lda() const { return K; }
  int ldb() const { return trans_b ? K : N; }
  Problem(int m, int n, int k, bool t) : M(m), N(n), K(k), trans_b(t) {
    A.resize(size_t(M) * K), B.resize(size_t(K) * N), C.assign(size_t(M) * N, NAN);
    for (size_t i = 0; i < A.size(); ++i) A[i] = float(int(i * 7919 % 61) - 30) / 32.0f;
    for (size_t i = 0; i < B.size(); ++i) B[i] = float(int(i * 104729 % 53) - 26) / 32.0f;
    bias.assign(size_t(N), 0.25f), db.assign(size_t(N), NAN);
    partials.resize(small_gemm_partials(M, N)), arrivals.assign(small_gemm_arrivals(N), 0u);
    mask.assign(size_t(M) * size_t((N + 31) / 32 * 4), 0xFF);  // drelu_bgrad: every cell kept
    const size_t tiles = size_t((M + kTile - 1) / kTile) * size_t((N + kTile - 1) / kTile);
    split_partials.assign(tiles * 8 * kTile * kTile, NAN), split_arrivals.assign(tiles, 0u);
  }
  // Split-K into `splits` (0: the kernel's choice, 1: none) over this problem's scratch.
  SmallGemmSplit split(int splits) {
    return {splits, split_partials.data(), split_arrivals.data(), split_partials.size(),
            split_arrivals.size()};
  }
  SmallGemmTail tail(GemmTail kind) {
    return {kind,      bias.data(),     mask.data(),    (N + 31) / 32 * 32,
            db.data(), partials.data(), arrivals.data()};
  }
  double want(int m, int n) const {  // A·op(B) in double (the TF32 rounding is within 1e-2)
    double s = 0;
    for (int k = 0; k < K; ++k)
      s += double(A[size_t(m) * K + k]) *
           double(trans_b ? B[size_t(n) * K + k] : B[size_t(k) * N + n]);
    return s;
  }
};

const char* defect_name(Defect d) {
  switch (d) {
    case Defect::cs_barrier_dropped:
      return "cs_barrier_dropped";
    case Defect::stage_barrier_dropped:
      return "stage_barrier_dropped";
    case Defect::issue_before_barrier:
      return "issue_before_barrier";
    case Defect::short_wait:
      return "short_wait";
    case Defect::split_sum_one_short:
      return "split_sum_one_short";
    default:
      return "none";
  }
}

// The launch of one variant; returns the emulator's error ("" if none).
template <Defect kDefect>
std::string error_of(Problem& p, int splits = 1) {
  const SmallGemmSplit split = p.split(splits);
  const dim3 grid(unsigned((p.N + kTile - 1) / kTile), unsigned((p.M + kTile - 1) / kTile),
                  unsigned(small_gemm_splits(p.M, p.N, p.K, split)));
  const std::string name = std::string("kernel_small_gemm<") + (p.trans_b ? "true" : "false") +
                           ", Defect::" + defect_name(kDefect) + ">";
  try {
    if (p.trans_b)
      launch_named(name.c_str(), kernel_small_gemm<true, kDefect>, grid, kThreads, 0, nullptr,
                   p.A.data(), p.B.data(), p.C.data(), p.M, p.N, p.K, p.lda(), p.ldb(), p.N, 0.0f,
                   p.tail(GemmTail::none), split);
    else
      launch_named(name.c_str(), kernel_small_gemm<false, kDefect>, grid, kThreads, 0, nullptr,
                   p.A.data(), p.B.data(), p.C.data(), p.M, p.N, p.K, p.lda(), p.ldb(), p.N, 0.0f,
                   p.tail(GemmTail::none), split);
  } catch (const emu::Error& e) {
    return e.what();
  }
  return "";
}

bool has(const std::string& s, const char* part) {
  return s.find(part) != std::string::npos;
}

// K = 160: five stages, so the ring wraps (stage 4 reuses stage 0's slot) and every defect has
// a stage to show on; 70 × 45: ragged tiles, six blocks.
constexpr int kM = 70, kN = 45, kK = 160;
constexpr int kSeeds = 6;

// Split K (no split; the kernel's choice, 2 splits of K = 160's five stages; five splits of
// one stage each), each with and without the ReLU backward's tail.
TEST(EmuSmallGemm, TheEnginesKernelIsCleanUnderTheRaceCheckInEverySeed) {
  ASSERT_TRUE(emu::race_check()) << "EQUIVAE_EMU_RACE_CHECK=0 turns off what this file tests";
  for (const int splits : {1, 0, 5})
    for (const bool trans_b : {false, true})
      for (const GemmTail kind : {GemmTail::none, GemmTail::drelu_bgrad})  // drelu: more phases
        for (uint64_t seed = 1; seed <= kSeeds; ++seed) {
          emu::set_schedule_seed(seed);
          Problem p(kM, kN, kK, trans_b);
          EXPECT_NO_THROW(small_gemm_tf32(p.A.data(), p.B.data(), p.C.data(), p.M, p.N, p.K,
                                          p.lda(), p.ldb(), p.N, trans_b, 0.0f, p.tail(kind),
                                          nullptr, p.split(splits)))
              << "seed " << seed << ", splits " << splits;
          for (unsigned v : p.split_arrivals) ASSERT_EQ(v, 0u) << "split counters left set";
          for (unsigned v : p.arrivals) ASSERT_EQ(v, 0u) << "bias-gradient counters left set";
          for (int m = 0; m < kM; ++m)
            for (int n = 0; n < kN; ++n)
              ASSERT_NEAR(p.C[size_t(m) * kN + n], p.want(m, n), 1e-2) << m << "," << n;
          if (kind == GemmTail::drelu_bgrad) {
            for (int n = 0; n < kN; ++n) {
              double sum = 0;
              for (int m = 0; m < kM; ++m) sum += p.C[size_t(m) * kN + n];
              ASSERT_NEAR(p.db[size_t(n)], sum, 1e-3 * (1 + std::fabs(sum))) << n;
            }
          }
        }
}

// Runs a variant in seeds 1 … kSeeds with both B layouts, checks what every defect's error must
// say, and returns the errors for the defect's own checks.
// K and splits: a split launch's blocks each walk ceil(stages / splits) stages (five or more
// for the ring to wrap).
template <Defect kDefect>
std::vector<std::string> errors_in_every_seed(int K = kK, int splits = 1) {
  std::vector<std::string> errors;
  for (const bool trans_b : {false, true})
    for (uint64_t seed = 1; seed <= kSeeds; ++seed) {
      emu::set_schedule_seed(seed);
      Problem p(kM, kN, K, trans_b);
      const std::string e = error_of<kDefect>(p, splits);
      EXPECT_TRUE(has(e, "emu: shared-memory race (array '"))
          << "seed " << seed << (trans_b ? " NT" : " NN") << ": " << (e.empty() ? "no error" : e);
      EXPECT_TRUE(has(e, "kernel 'kernel_small_gemm<")) << e;
      EXPECT_TRUE(has(e, "block (")) << e;
      if (seed == 1 && !trans_b) std::printf("%s\n", e.c_str());
      errors.push_back(e);
    }
  return errors;
}

// (a) The epilogue reads Cs (8 columns of a row, half of them stored by another warp) with no
// barrier after the fragments' stores: the store and the read meet in one phase.
TEST(EmuSmallGemm, CsReadWithoutTheBarrierAfterTheFragmentStoresIsARace) {
  for (const std::string& e : errors_in_every_seed<Defect::cs_barrier_dropped>()) {
    EXPECT_TRUE(has(e, "(array 'Cs')")) << e;
    EXPECT_TRUE(has(e, "in the same barrier phase")) << e;
  }
}

// (b) The next stage's copies issued before the loop's barrier: they overwrite the slot of the
// stage before, which slower warps may still be loading fragments from. The copy's issue meets
// an earlier read of the word in its phase, or a later read meets the copy in flight. The
// values come out right under the emulator (its copies land only at their wait, after the
// slot's reads), so only the check sees this one.
TEST(EmuSmallGemm, StageOverwrittenBeforeTheBarrierThatFreesItIsARace) {
  for (const std::string& e : errors_in_every_seed<Defect::issue_before_barrier>()) {
    EXPECT_TRUE(has(e, "(array 'As')") || has(e, "(array 'Bs')")) << e;
    EXPECT_TRUE((has(e, " read word ") && has(e, " issues a cp.async to it in the same barrier")) ||
                has(e, "issued to it is in flight"))
        << e;
  }
}

// (b') No barrier in the K loop at all: a warp loads fragments of words that other threads'
// copies have not landed yet, or landed in the same phase.
TEST(EmuSmallGemm, KLoopWithoutItsBarrierIsARace) {
  for (const std::string& e : errors_in_every_seed<Defect::stage_barrier_dropped>()) {
    EXPECT_TRUE(has(e, "(array 'As')") || has(e, "(array 'Bs')")) << e;
    EXPECT_TRUE(has(e, "in the same barrier phase") || has(e, "issued to it is in flight")) << e;
  }
}

// (c) cp.async wait<kStages − 1>: stage t's group is still in flight when its fragments are
// loaded. Every thread's first load is of As, and all of stage 0 is then in flight, so the
// report is always a read of As during a cp.async, in every seed. (Were copies checked only at
// their issue and landing, this would still be a race, but found one iteration later, when the
// copy lands in the phase of the read.)
TEST(EmuSmallGemm, ShortCpAsyncWaitIsAReadOfACopyInFlight) {
  for (const std::string& e : errors_in_every_seed<Defect::short_wait>()) {
    EXPECT_TRUE(has(e, "(array 'As')")) << e;
    EXPECT_TRUE(has(e, " reads word ")) << e;
    EXPECT_TRUE(has(e, "issued to it is in flight (no cp.async wait of the issuing thread")) << e;
  }
}

// Each barrier or wait defect is found in a split launch too: K = 640 is 20 stages, four
// splits of five.
TEST(EmuSmallGemm, EveryDefectIsFoundWithKSplit) {
  errors_in_every_seed<Defect::cs_barrier_dropped>(640, 4);
  errors_in_every_seed<Defect::issue_before_barrier>(640, 4);
  errors_in_every_seed<Defect::stage_barrier_dropped>(640, 4);
  errors_in_every_seed<Defect::short_wait>(640, 4);
}

// Split K: the splits the kernel takes (a block per at most 4 stages; none without scratch
// or where a tile's partials do not fit; no split left without a stage).
TEST(EmuSmallGemm, SplitsTakeAtMostFourStagesEachWithinTheScratch) {
  Problem p(kM, kN, kK, false);  // K = 160: five stages
  EXPECT_EQ(small_gemm_splits(kM, kN, kK, p.split(0)), 2);
  EXPECT_EQ(small_gemm_splits(kM, kN, kK, p.split(5)), 5);
  EXPECT_EQ(small_gemm_splits(kM, kN, kK, p.split(4)), 3) << "4 would leave a split empty";
  EXPECT_EQ(small_gemm_splits(kM, kN, kK, p.split(9)), 5) << "at most one per stage";
  EXPECT_EQ(small_gemm_splits(kM, kN, kK, p.split(1)), 1);
  EXPECT_EQ(small_gemm_splits(kM, kN, 128, p.split(0)), 1) << "four stages: one block";
  EXPECT_EQ(small_gemm_splits(
                160, 512, 512,
                {0, p.split_partials.data(), p.split_arrivals.data(), size_t(80) * 4 * 1024, 80}),
            4);
  EXPECT_EQ(small_gemm_splits(
                160, 512, 784,
                {0, p.split_partials.data(), p.split_arrivals.data(), size_t(80) * 4 * 1024, 80}),
            4)
      << "25 stages, the scratch holds 4 partials a tile: 7 a split";
  EXPECT_EQ(small_gemm_splits(kM, kN, kK, {0, nullptr, nullptr, 0, 0}), 1) << "no scratch";
  SmallGemmSplit few = p.split(0);
  few.arrival_capacity = 5;  // six tiles
  EXPECT_EQ(small_gemm_splits(kM, kN, kK, few), 1);
}

// (d) Split K with the partials added up by the second-to-last block of a tile to arrive: it
// reads a partial not yet written (the scratch starts NaN), so C is wrong. The emulator runs a
// launch's blocks one after another (split 0 of every tile, then split 1, …): with 3 splits,
// split 1 adds up and split 2's partial is still NaN.
TEST(EmuSmallGemm, SplitTileAddedUpBeforeItsLastPartialIsWrong) {
  for (const bool trans_b : {false, true}) {
    Problem p(kM, kN, kK, trans_b);
    ASSERT_EQ(error_of<Defect::split_sum_one_short>(p, 3), "") << "no race: wrong values";
    int wrong = 0;
    for (int m = 0; m < kM; ++m)
      for (int n = 0; n < kN; ++n) {
        const float c = p.C[size_t(m) * kN + n];
        wrong += !std::isfinite(c) || std::fabs(c - p.want(m, n)) > 1e-2;
      }
    EXPECT_EQ(wrong, kM * kN) << (trans_b ? "NT" : "NN");
    Problem q(kM, kN, kK, trans_b);  // the kernel as launched: right
    ASSERT_EQ(error_of<Defect::none>(q, 3), "");
    for (int m = 0; m < kM; ++m)
      for (int n = 0; n < kN; ++n)
        ASSERT_NEAR(q.C[size_t(m) * kN + n], q.want(m, n), 1e-2) << m << "," << n;
  }
}

// The persistent chain without its grid barrier: a step's blocks run on into the next step,
// whose input is the first step's output, before the other blocks have written it, and whose
// partial tiles overwrite the first step's in the shared split scratch. The emulator runs one
// block until it waits at a grid barrier, so the broken chain's outputs are wrong in every seed;
// the engine's chain matches one call per step bit for bit.
template <ChainDefect kDefect>
std::vector<float> chain_outputs(uint64_t seed) {
  emu::set_schedule_seed(seed);
  Problem first(40, 48, 70, false), second(40, 36, 48, false);
  SmallGemmStep steps[2];
  for (int i = 0; i < 2; ++i) {
    Problem& p = i == 0 ? first : second;
    steps[i].A = i == 0 ? first.A.data() : first.C.data();
    steps[i].B = p.B.data(), steps[i].C = p.C.data();
    steps[i].M = p.M, steps[i].N = p.N, steps[i].K = p.K;
    steps[i].lda = p.K, steps[i].ldb = p.N, steps[i].ldc = p.N;
    steps[i].tail = p.tail(GemmTail::relu_bias);
    steps[i].splits = small_gemm_splits(p.M, p.N, p.K, first.split(2));
  }
  unsigned barrier[2] = {0, 0};
  EQUIVAE_LAUNCH_COOPERATIVE((kernel_small_gemm_chain<false, const SmallGemmStep*, kDefect>),
                             dim3(3), kThreads, 0, nullptr, steps, 2, first.split(2),
                             GridBarrier{barrier, barrier + 1});
  std::vector<float> out = first.C;
  out.insert(out.end(), second.C.begin(), second.C.end());
  return out;
}

TEST(EmuSmallGemm, ChainWithoutItsGridBarrierIsWrongInEverySeed) {
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    const std::vector<float> good = chain_outputs<ChainDefect::none>(seed),
                             broken = chain_outputs<ChainDefect::grid_barrier_dropped>(seed);
    size_t differ = 0;
    for (size_t i = 0; i < good.size(); ++i)
      differ += std::memcmp(&good[i], &broken[i], sizeof(float)) != 0;
    EXPECT_GT(differ, 0u) << "seed " << seed << ": the chain without its barrier was right";
    for (float v : good) ASSERT_FALSE(std::isnan(v)) << "seed " << seed;
  }
}

}  // namespace
}  // namespace equivae::cuda
