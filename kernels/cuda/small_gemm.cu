// Small-batch GEMM on the tensor cores (ops.h: small_gemm_tf32), with the dense layer's
// epilogue in the same kernel.
//
// Why: at B = 160 a training step's GEMMs are 160 × 512 × 512 and smaller; a library's tiles
// (128 × 128 and up) cover such an output with a handful of blocks, or split K and add a
// reduction kernel (13 of them in a step of the H200 profile, ~3 µs each on the critical
// path). Here a block owns a 32 × 32 tile of C, so a 160 × 512 output is 80 blocks, and no
// second kernel runs. Walking the whole K range in one block made it slower than cuBLAS on an
// H200 (13.2 against 6.3 µs at 160 × 512 × 512: 16 stages, each about an L2 round trip), so K
// is split too (SmallGemmSplit, grid z): each of a tile's blocks walks at most 4 stages and
// writes its partial tile to scratch, and the tile's last block to arrive adds the partials up
// in split order and runs the epilogue (deterministic; a counter per tile, none on data).
//
// Launch geometry: grid (ceil(N / 32), ceil(M / 32), splits of K), 128 threads = 4 warps; warp w
// computes the 16 × 16 quarter (w / 2, w % 2) of the tile with one m16n16k8 TF32 accumulator. K is
// walked 32 at a time through a ring of 4 shared-memory stages filled by cp.async (async_copy.cuh):
// 3 stages of loads are in flight while the warps multiply the 4th, so the walk costs about a third
// of one L2 round trip per stage rather than a whole one (the MMAs of a stage take far less than a
// load's latency at these sizes). Each thread copies 2 × 16 bytes of A and of B per stage,
// coalesced (8 threads cover a row's 32 floats), 16-byte copies where the operand and its leading
// dimension allow it, else 4-byte ones; out-of-range rows, columns and depths are zero-filled, so
// any M, N, K work. One barrier per stage: it makes the stage's copies visible and frees the stage
// read before it for the next copies. The accumulators go through shared memory to the epilogue:
// each thread takes 8 consecutive columns of one row (a row's 32 floats are one 128-byte segment
// per warp), adds beta·C, the bias, the ReLU, and writes the mask's byte for those 8 columns; for a
// ReLU's backward it clears the cells the mask below says were ≤ 0, and the block's 32 column sums
// go to scratch, where the column tile's last block adds them up (the bias gradient).
//
// Shared memory: 4 stages × (A 32 × 36 + B 32 × 36) + C 32 × 36 floats = 40.5 KiB. The rows are
// padded from 32 to 36 floats: 16-byte multiples, as wmma's ldm and cp.async need, and every
// fragment's first element stays 32-byte aligned; the pad also moves consecutive rows 4 banks
// apart. The tiles are EQUIVAE_SHARED arrays, so the emulator race-checks the copies into them,
// the fragment loads and stores, and the epilogue's reads (pointers into them are written
// `As[s][row] + col`, the emulator's checked pointer).
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/async_copy.cuh"
#include "kernels/cuda/grid_sync.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/shared.cuh"
#include "kernels/cuda/wmma.cuh"

namespace equivae::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kTile = 32;       // rows and columns of C per block, and K per stage
constexpr int kLd = kTile + 4;  // padded shared row (floats)
constexpr int kThreads = 128;   // 4 warps
constexpr int kStages = 4;      // shared-memory ring: kStages − 1 stages of copies in flight
constexpr int kQuads = kTile * kTile / 4 / kThreads;  // 16-byte pieces per operand per stage: 2
// Copies a thread can have recorded (the emulator's bound): per stage at most 4 + 4 per piece.
constexpr int kPendingCopies = kStages * kQuads * 8;
using Copies = AsyncCopies<kPendingCopies>;

// The emulator's tests build the kernel with one barrier or wait wrong on purpose, to show that
// the race check names each (tests/test_emu_small_gemm.cpp); the engine launches only `none`.
enum class Defect {
  none,
  cs_barrier_dropped,     // no barrier between the fragments' stores into Cs and the epilogue
  stage_barrier_dropped,  // no barrier in the K loop
  issue_before_barrier,   // the next stage's copies issued before the loop's barrier
  short_wait,             // cp.async wait<kStages − 1>: stage t has not landed when it is read
  split_sum_one_short,    // the second-to-last block of a split tile adds the partials up
};
// The persistent chain (small_gemm_chain) without its grid barrier, for the same tests.
enum class ChainDefect {
  none,
  grid_barrier_dropped,  // a step starts before the step before it has ended
};

// Copies 4 floats of row r, columns c … c + 3 of a row-major operand (leading dimension ld,
// `rows` × `cols` in range) to dst (a float*; the emulator's checked pointer); out-of-range
// elements become zeros. `vec`: the operand and ld allow 16-byte copies.
template <class Dst>
__device__ __forceinline__ void copy_quad(Copies& copies, Dst dst, const float* src, int ld, int r,
                                          int c, int rows, int cols, bool vec) {
  const bool row_in = r < rows;
  if (vec && row_in && c + 3 < cols) {
    copies.copy16(dst, src + size_t(r) * ld + c, true);
  } else if (vec && !(row_in && c < cols)) {
    copies.copy16(dst, src, false);  // all four out of range: zeros, nothing read
  } else {
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const bool in = row_in && c + q < cols;
      copies.copy4(dst + q, in ? src + size_t(r) * ld + c + q : src, in);
    }
  }
}

// Stage k0 … k0 + 31 of both operands, as stored in shared memory ([row][col], 32 × 32):
//   A: [m][k]; B: [k][n] (row-major matrix_b), or [n][k] when trans_b (col-major matrix_b).
// Rows: float (*)[kLd] (the emulator's checked view of a ring slot).
template <bool kTransB, class Rows>
__device__ __forceinline__ void copy_stage(Copies& copies, Rows as, Rows bs, const float* A,
                                           const float* B, int M, int N, int K, int lda, int ldb,
                                           int m0, int n0, int k0, bool vec_a, bool vec_b) {
#pragma unroll
  for (int j = 0; j < kQuads; ++j) {
    const int piece = int(threadIdx.x) + j * kThreads, row = piece / 8, col = (piece % 8) * 4;
    copy_quad(copies, as[row] + col, A, lda, m0 + row, k0 + col, M, K, vec_a);
    if (kTransB)
      copy_quad(copies, bs[row] + col, B, ldb, n0 + row, k0 + col, N, K, vec_b);
    else
      copy_quad(copies, bs[row] + col, B, ldb, k0 + row, n0 + col, K, N, vec_b);
  }
}

// One block's work: tile (tile.x, tile.y) of C (column and row tile), split tile.z of K, in a
// grid of `tiles` (the kernel's blockIdx and gridDim, or a persistent kernel's virtual ones).
template <bool kTransB, Defect kDefect>
__device__ __forceinline__ void small_gemm_tile(const float* __restrict__ A,
                                                const float* __restrict__ B, float* C, int M, int N,
                                                int K, int lda, int ldb, int ldc, float beta,
                                                const SmallGemmTail& tail,
                                                const SmallGemmSplit& split, uint3 tile,
                                                uint3 tiles) {
  EQUIVAE_SHARED_3D(float, As, kStages, kTile, kLd) __align__(128);
  EQUIVAE_SHARED_3D(float, Bs, kStages, kTile, kLd) __align__(128);
  EQUIVAE_SHARED_2D(float, Cs, kTile, kLd) __align__(32);
  EQUIVAE_SHARED(bool, last_of_column, 1);
  EQUIVAE_SHARED(bool, last_of_tile, 1);
  constexpr int kWait = kDefect == Defect::short_wait ? kStages - 1 : kStages - 2;
  constexpr bool kEarlyIssue = kDefect == Defect::issue_before_barrier;
  using BLayout = std::conditional_t<kTransB, wmma::col_major, wmma::row_major>;

  const int m0 = int(tile.y) * kTile, n0 = int(tile.x) * kTile;
  const int warp = int(threadIdx.x) / 32;
  const int wr = (warp / 2) * 16, wc = (warp % 2) * 16;  // the warp's quarter of the tile
  const bool vec_a = lda % 4 == 0 && reinterpret_cast<uintptr_t>(A) % 16 == 0;
  const bool vec_b = ldb % 4 == 0 && reinterpret_cast<uintptr_t>(B) % 16 == 0;

  Copies copies;
  // This block's stages of K: split z of tiles.z walks stages [first, first + stages).
  const int all_stages = (K + kTile - 1) / kTile;
  const int per_split = (all_stages + int(tiles.z) - 1) / int(tiles.z);
  const int first = int(tile.z) * per_split;
  const int stages =
      first < all_stages ? (all_stages - first < per_split ? all_stages - first : per_split) : 0;
  auto issue = [&](int t) {  // the block's stage t into ring slot t % kStages, one commit group
    if (t < stages)
      copy_stage<kTransB>(copies, As[t % kStages], Bs[t % kStages], A, B, M, N, K, lda, ldb, m0, n0,
                          (first + t) * kTile, vec_a, vec_b);
    copies.commit();  // empty groups too: the wait below counts groups
  };
  for (int t = 0; t < kStages - 1; ++t) issue(t);

  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  for (int t = 0; t < stages; ++t) {
    copies.wait<kWait>();  // this thread's copies of stage t have landed
    if (kEarlyIssue) issue(t + kStages - 1);
    if (kDefect != Defect::stage_barrier_dropped)
      __syncthreads();  // everyone's; and stage t − 1's slot is free again
    if (!kEarlyIssue) issue(t + kStages - 1);
    const int s = t % kStages;
#pragma unroll
    for (int kk = 0; kk < kTile; kk += 8) {
      wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
      wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, BLayout> fb;
      wmma::load_matrix_sync(fa, As[s][wr] + kk, kLd);
      wmma::load_matrix_sync(fb, kTransB ? Bs[s][wc] + kk : Bs[s][kk] + wc, kLd);
#pragma unroll
      for (int i = 0; i < fa.num_elements; ++i) fa.x[i] = wmma::__float_to_tf32(fa.x[i]);
#pragma unroll
      for (int i = 0; i < fb.num_elements; ++i) fb.x[i] = wmma::__float_to_tf32(fb.x[i]);
      wmma::mma_sync(acc, fa, fb, acc);
    }
  }
  wmma::store_matrix_sync(Cs[wr] + wc, acc, kLd, wmma::mem_row_major);
  if (kDefect != Defect::cs_barrier_dropped) __syncthreads();

  // Each thread's cells of the tile from here on: row r, columns c0 … c0 + 7.
  const int r = int(threadIdx.x) / 4, c0 = (int(threadIdx.x) % 4) * 8;
  if (tiles.z > 1) {
    // Split K: this block's partial tile to scratch; the tile's last block to arrive adds the
    // partials up in split order into Cs (its own cells: no barrier needed before the epilogue).
    const size_t index = size_t(tile.y) * tiles.x + tile.x;
    float* mine = split.partials + (index * tiles.z + tile.z) * (kTile * kTile);
#pragma unroll
    for (int j = 0; j < 8; ++j) mine[r * kTile + c0 + j] = Cs[r][c0 + j];
    __threadfence();  // the partial visible to the block that adds the partials up
    __syncthreads();
    constexpr unsigned kShort = kDefect == Defect::split_sum_one_short ? 2u : 1u;
    if (threadIdx.x == 0)
      last_of_tile[0] = atomicAdd(&split.arrivals[index], 1u) == tiles.z - kShort;
    __syncthreads();
    if (!last_of_tile[0]) return;
    __threadfence();
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      float sum = 0.0f;
      for (unsigned z = 0; z < tiles.z; ++z)
        sum +=
            __ldcg(&split.partials[(index * tiles.z + z) * (kTile * kTile) + r * kTile + c0 + j]);
      Cs[r][c0 + j] = sum;
    }
    if (threadIdx.x == 0) split.arrivals[index] = 0;  // ready for the next call
  }

  // Epilogue. Every thread stays to the end (the bias gradient's barriers); cells outside C
  // count as zeros.
  const int m = m0 + r;
  const bool in_c = m < M && n0 + c0 < N;
  const GemmTail kind = tail.kind;
  const bool relu = kind == GemmTail::relu_bias || kind == GemmTail::relu_mask_bias;
  const bool drelu = kind == GemmTail::drelu_bgrad || kind == GemmTail::drelu;
  const size_t mask_byte = (size_t(m) * size_t(tail.mask_ld) + size_t(n0 + c0)) / 8;
  const unsigned below = in_c && drelu ? tail.mask[mask_byte] : 0u;
  unsigned bits = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int n = n0 + c0 + j;
    float v = 0.0f;
    if (in_c && n < N) {
      float* out = C + size_t(m) * ldc + n;
      v = Cs[r][c0 + j];
      if (beta != 0.0f) v += beta * *out;
      if (kind == GemmTail::bias || relu) v += tail.bias[n];
      if (relu) v = v < 0.0f ? 0.0f : v;
      if (drelu && !((below >> j) & 1u)) v = 0.0f;
      *out = v;
      if (v > 0.0f) bits |= 1u << j;
    }
    if (kind == GemmTail::drelu_bgrad) Cs[r][c0 + j] = v;  // this thread's own cells
  }
  if (in_c && kind == GemmTail::relu_mask_bias) tail.mask[mask_byte] = uint8_t(bits);
  if (kind != GemmTail::drelu_bgrad) return;

  // The bias gradient: the tile's column sums (rows in order) into partials[row tile][n]; the
  // last block of this column tile to arrive adds the row tiles up in order into db.
  __syncthreads();
  const int n = n0 + int(threadIdx.x);
  if (threadIdx.x < unsigned(kTile) && n < N) {
    float sum = 0.0f;
    for (int rr = 0; rr < kTile; ++rr) sum += Cs[rr][threadIdx.x];
    tail.partials[size_t(tile.y) * size_t(N) + size_t(n)] = sum;
  }
  __threadfence();  // the partial sums visible to the block that adds them up
  __syncthreads();
  if (threadIdx.x == 0) last_of_column[0] = atomicAdd(&tail.arrivals[tile.x], 1u) == tiles.y - 1;
  __syncthreads();
  if (!last_of_column[0]) return;
  __threadfence();
  if (threadIdx.x < unsigned(kTile) && n < N) {
    float sum = 0.0f;
    for (unsigned i = 0; i < tiles.y; ++i) sum += __ldcg(&tail.partials[size_t(i) * N + n]);
    tail.db[n] = sum;
  }
  if (threadIdx.x == 0) tail.arrivals[tile.x] = 0;  // ready for the next call
}

template <bool kTransB, Defect kDefect = Defect::none>
__global__ void __launch_bounds__(kThreads)
    kernel_small_gemm(const float* __restrict__ A, const float* __restrict__ B, float* C, int M,
                      int N, int K, int lda, int ldb, int ldc, float beta, SmallGemmTail tail,
                      SmallGemmSplit split) {
  grid_dependency_prologue();
  small_gemm_tile<kTransB, kDefect>(A, B, C, M, N, K, lda, ldb, ldc, beta, tail, split, blockIdx,
                                    gridDim);
}

// The persistent chain: every step's tiles (and K splits) dealt round-robin over the blocks, a
// grid barrier between steps, so each step reads what the step before wrote.
// The steps of a chain: in device memory, or (the engine's chains, captured as they are
// issued) in the kernel's parameters.
__device__ __forceinline__ const SmallGemmStep& step_at(const SmallGemmStep* steps, int i) {
  return steps[i];
}
__device__ __forceinline__ const SmallGemmStep& step_at(const SmallGemmSteps& steps, int i) {
  return steps.step[i];
}

// Three blocks an SM: without the bound ptxas held it to 96 registers and spilled; with it, ~140.
template <bool kTransB, class Steps, ChainDefect kDefect = ChainDefect::none>
__global__ void __launch_bounds__(kThreads, 3)
    kernel_small_gemm_chain(Steps steps, int count, SmallGemmSplit split, GridBarrier barrier) {
  grid_dependency_prologue();
  for (int i = 0; i < count; ++i) {
    const SmallGemmStep s = step_at(steps, i);
    const uint3 tiles{unsigned((s.N + kTile - 1) / kTile), unsigned((s.M + kTile - 1) / kTile),
                      unsigned(s.splits)};
    const unsigned all = tiles.x * tiles.y * tiles.z;
    for (unsigned t = blockIdx.x; t < all; t += gridDim.x) {
      small_gemm_tile<kTransB, Defect::none>(
          s.A, s.B, s.C, s.M, s.N, s.K, s.lda, s.ldb, s.ldc, s.beta, s.tail, split,
          {t % tiles.x, t / tiles.x % tiles.y, t / (tiles.x * tiles.y)}, tiles);
      // The tile's epilogue has read Cs before the next tile's fragments are stored there (the
      // K loop's barriers separate them too, but for a split given no stage of K).
      __syncthreads();
    }
    // Between steps (after the last, the stream orders what follows).
    if (kDefect != ChainDefect::grid_barrier_dropped && i + 1 < count) grid_barrier(barrier);
  }
}

}  // namespace

size_t small_gemm_partials(int M, int N) {
  return size_t((M + kTile - 1) / kTile) * size_t(N > 0 ? N : 0);
}
size_t small_gemm_arrivals(int N) {
  return size_t((N + kTile - 1) / kTile);
}

int small_gemm_splits(int M, int N, int K, const SmallGemmSplit& split) {
  if (M <= 0 || N <= 0 || K <= 0 || !split.partials || !split.arrivals) return 1;
  const int stages = (K + kTile - 1) / kTile;
  const size_t tiles = size_t((M + kTile - 1) / kTile) * size_t((N + kTile - 1) / kTile);
  int splits = split.splits > 0
                   ? split.splits
                   : (stages + kSmallGemmStagesPerSplit - 1) / kSmallGemmStagesPerSplit;
  const size_t fits = split.capacity / (tiles * size_t(kTile * kTile));
  if (tiles > split.arrival_capacity || fits < 2) return 1;
  if (size_t(splits) > fits) splits = int(fits);
  if (splits > stages) splits = stages;
  if (splits > 65535) splits = 65535;  // the grid's z limit
  if (splits <= 1) return 1;
  // Every split walks ceil(stages / splits) stages but the last: none is left without one.
  const int per_split = (stages + splits - 1) / splits;
  return (stages + per_split - 1) / per_split;
}

void small_gemm_tf32(const float* A, const float* B, float* C, int M, int N, int K, int lda,
                     int ldb, int ldc, bool trans_b, float beta, const SmallGemmTail& tail,
                     cudaStream_t stream, const SmallGemmSplit& split) {
  if (M <= 0 || N <= 0 || K <= 0) return;
  const dim3 grid(unsigned((N + kTile - 1) / kTile), unsigned((M + kTile - 1) / kTile),
                  unsigned(small_gemm_splits(M, N, K, split)));
  if (trans_b)
    EQUIVAE_LAUNCH(kernel_small_gemm<true>, grid, kThreads, 0, stream, A, B, C, M, N, K, lda, ldb,
                   ldc, beta, tail, split);
  else
    EQUIVAE_LAUNCH(kernel_small_gemm<false>, grid, kThreads, 0, stream, A, B, C, M, N, K, lda, ldb,
                   ldc, beta, tail, split);
}

namespace {
template <class Steps>
void launch_chain(const Steps& steps, int count, bool trans_b, const SmallGemmSplit& split,
                  GridBarrier barrier, int blocks, cudaStream_t stream) {
  if (count <= 0 || blocks <= 0) return;
  if (trans_b)
    launch_cooperative_named("kernel_small_gemm_chain<true>", kernel_small_gemm_chain<true, Steps>,
                             dim3(unsigned(blocks)), kThreads, 0, stream, steps, count, split,
                             barrier);
  else
    launch_cooperative_named("kernel_small_gemm_chain<false>",
                             kernel_small_gemm_chain<false, Steps>, dim3(unsigned(blocks)),
                             kThreads, 0, stream, steps, count, split, barrier);
}
}  // namespace

void small_gemm_chain(const SmallGemmStep* steps, int count, bool trans_b,
                      const SmallGemmSplit& split, GridBarrier barrier, int blocks,
                      cudaStream_t stream) {
  launch_chain(steps, count, trans_b, split, barrier, blocks, stream);
}
void small_gemm_chain(const SmallGemmSteps& steps, int count, bool trans_b,
                      const SmallGemmSplit& split, GridBarrier barrier, int blocks,
                      cudaStream_t stream) {
  if (count > kMaxChainSteps)
    throw std::invalid_argument("small_gemm_chain: " + std::to_string(count) +
                                " steps in the launch's parameters; at most " +
                                std::to_string(kMaxChainSteps));
  launch_chain(steps, count, trans_b, split, barrier, blocks, stream);
}

int small_gemm_chain_blocks() {
#if defined(__CUDACC__)
  int device = 0, sms = 0, per_sm = 0, fewest = 1 << 30;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  const auto fit = [&](auto kernel) {  // every variant must fit: the launch takes any of them
    per_sm = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0) != cudaSuccess)
      per_sm = 0;
    fewest = per_sm < fewest ? per_sm : fewest;
  };
  fit(kernel_small_gemm_chain<true, const SmallGemmStep*>);
  fit(kernel_small_gemm_chain<false, const SmallGemmStep*>);
  fit(kernel_small_gemm_chain<true, SmallGemmSteps>);
  fit(kernel_small_gemm_chain<false, SmallGemmSteps>);
  cudaGetLastError();  // a failed query (0 blocks: the caller says so) leaves no error behind
  return sms * fewest;
#else
  return 4;
#endif
}

}  // namespace equivae::cuda
