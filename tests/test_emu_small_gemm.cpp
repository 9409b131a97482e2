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
#include <string>
#include <vector>

#include "kernels/cuda/small_gemm.cu"

namespace equivae::cuda {
namespace {

struct Problem {
  int M, N, K;
  bool trans_b;
  std::vector<float> A, B, C, bias, db, partials;
  std::vector<uint8_t> mask;
  std::vector<unsigned> arrivals;
  int lda() const { return K; }
  int ldb() const { return trans_b ? K : N; }
  Problem(int m, int n, int k, bool t) : M(m), N(n), K(k), trans_b(t) {
    A.resize(size_t(M) * K), B.resize(size_t(K) * N), C.assign(size_t(M) * N, NAN);
    for (size_t i = 0; i < A.size(); ++i) A[i] = float(int(i * 7919 % 61) - 30) / 32.0f;
    for (size_t i = 0; i < B.size(); ++i) B[i] = float(int(i * 104729 % 53) - 26) / 32.0f;
    bias.assign(size_t(N), 0.25f), db.assign(size_t(N), NAN);
    partials.resize(small_gemm_partials(M, N)), arrivals.assign(small_gemm_arrivals(N), 0u);
    mask.assign(size_t(M) * size_t((N + 31) / 32 * 4), 0xFF);  // drelu_bgrad: every cell kept
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
    default:
      return "none";
  }
}

// The launch of one variant; returns the emulator's error ("" if none).
template <Defect kDefect>
std::string error_of(Problem& p) {
  const dim3 grid(unsigned((p.N + kTile - 1) / kTile), unsigned((p.M + kTile - 1) / kTile));
  const std::string name = std::string("kernel_small_gemm<") + (p.trans_b ? "true" : "false") +
                           ", Defect::" + defect_name(kDefect) + ">";
  try {
    if (p.trans_b)
      launch_named(name.c_str(), kernel_small_gemm<true, kDefect>, grid, kThreads, 0, nullptr,
                   p.A.data(), p.B.data(), p.C.data(), p.M, p.N, p.K, p.lda(), p.ldb(), p.N, 0.0f,
                   p.tail(GemmTail::none));
    else
      launch_named(name.c_str(), kernel_small_gemm<false, kDefect>, grid, kThreads, 0, nullptr,
                   p.A.data(), p.B.data(), p.C.data(), p.M, p.N, p.K, p.lda(), p.ldb(), p.N, 0.0f,
                   p.tail(GemmTail::none));
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

TEST(EmuSmallGemm, TheEnginesKernelIsCleanUnderTheRaceCheckInEverySeed) {
  ASSERT_TRUE(emu::race_check()) << "EQUIVAE_EMU_RACE_CHECK=0 turns off what this file tests";
  for (const bool trans_b : {false, true})
    for (const GemmTail kind : {GemmTail::none, GemmTail::drelu_bgrad})  // drelu: 3 more phases
      for (uint64_t seed = 1; seed <= kSeeds; ++seed) {
        emu::set_schedule_seed(seed);
        Problem p(kM, kN, kK, trans_b);
        EXPECT_NO_THROW(small_gemm_tf32(p.A.data(), p.B.data(), p.C.data(), p.M, p.N, p.K, p.lda(),
                                        p.ldb(), p.N, trans_b, 0.0f, p.tail(kind), nullptr))
            << "seed " << seed;
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
template <Defect kDefect>
std::vector<std::string> errors_in_every_seed() {
  std::vector<std::string> errors;
  for (const bool trans_b : {false, true})
    for (uint64_t seed = 1; seed <= kSeeds; ++seed) {
      emu::set_schedule_seed(seed);
      Problem p(kM, kN, kK, trans_b);
      const std::string e = error_of<kDefect>(p);
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

}  // namespace
}  // namespace equivae::cuda
