#pragma once
// The CUDA counterparts of kernels/cpu/ops.h: host-callable launchers taking device pointers
// and a stream, with the CPU ops' contracts and argument order (stream last). Instantiated
// for float (the engine's precision) and double (the tests' oracle runs, also on the
// emulator). Launchers enqueue and return: no synchronisation, no allocation, so a training
// step built from them can be captured into a CUDA graph.
//
// Built twice from the same sources: by nvcc into equivae_kernels_cuda (real GPU), and by g++
// against the emulator into equivae_kernels_cuda_emu (defines EQUIVAE_CUDA_EMULATED; a
// "device pointer" is then a host pointer and the stream a dummy).
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/ops.h"  // AdamConfig

#if defined(EQUIVAE_CUDA_EMULATED) && !defined(__CUDACC__)
#include "kernels/emu/emu_runtime.h"
#else
#include <cuda_runtime_api.h>
#endif

namespace equivae::cuda {

// ---- dense layer epilogues (the GEMM is cuBLAS on the GPU, the CPU GEMM under emulation)
// y[B,out] holds x·W; adds b[out] and, with relu, applies max(·, 0) in place (NaN propagates).
template <class T>
void dense_bias_act(T* y, const T* b, int B, int out, bool relu, cudaStream_t stream);
// Backward epilogue, fused: with relu, dy[B,out] is masked in place by (y > 0) so it holds
// dz after; db[out] = Σ_rows dz (overwritten, deterministic order). dW and dx are GEMMs.
// scratch[scratch_elems]: device memory for per-chunk partial sums (chunks·out elements,
// chunks = dense_backward_bias_chunks(B, out, scratch_elems)); the rows split into that many
// chunks so large batches fill the GPU. Any size works (0: one chunk, no scratch used).
template <class T>
void dense_backward_bias(T* dy, T* db, const T* y, int B, int out, bool relu, T* scratch,
                         size_t scratch_elems, cudaStream_t stream);
int dense_backward_bias_chunks(int B, int out, size_t scratch_elems);
// The ReLU's backward alone: dy[i] = 0 where y[i] ≤ 0 (or NaN), in place — what
// dense_backward_bias does with relu, for callers that take the bias gradient elsewhere.
template <class T>
void relu_mask(T* dy, const T* y, size_t n, cudaStream_t stream);

// ---- small-batch GEMM on the tensor cores (TF32 inputs, float accumulation), for the training
// step's critical path, where M (the batch) is ~160 and a library GEMM runs a handful of
// blocks or a split-K reduction after it. Row-major, as cblas with CblasRowMajor:
//   C[M,N] = A[M,K]·op(B) + beta·C,  op(B) = B[K,N] (trans_b false) or B[N,K]ᵀ (trans_b true),
// then the tail, as cuBLASLt's epilogues of the same names (runtime/cuda/gemm_epilogue.h):
//   bias:           C += bias[n]
//   relu_bias:      also max(·, 0) (NaN propagates)
//   relu_mask_bias: also the ReLU's bit mask: bit n + m·mask_ld set where the output is > 0
//                   (mask_ld a multiple of 128; bits of the last byte past N written as 0)
//   drelu_bgrad:    C[m,n] = 0 where that bit of mask is clear (a ReLU's backward), then
//                   db[n] = Σ_m C[m,n], summed per 32-row tile into `partials` and the tiles in
//                   order by the last block of each column tile (deterministic, no atomics on
//                   data; `arrivals` counts the blocks and is left zero for the next call).
//   drelu:          the mask alone, as drelu_bgrad without the bias gradient.
// Float only; any M, N, K ≥ 1 and leading dimensions.
enum class GemmTail { none, bias, relu_bias, relu_mask_bias, drelu_bgrad, drelu };
struct SmallGemmTail {
  GemmTail kind = GemmTail::none;
  const float* bias = nullptr;   // bias, relu_bias, relu_mask_bias: read
  uint8_t* mask = nullptr;       // relu_mask_bias: written; drelu_bgrad, drelu: read
  int64_t mask_ld = 0;           // bits per row of the mask
  float* db = nullptr;           // drelu_bgrad: written
  float* partials = nullptr;     // drelu_bgrad: small_gemm_partials(M, N) floats of scratch
  unsigned* arrivals = nullptr;  // drelu_bgrad: small_gemm_arrivals(N) counters, zero at first
};
size_t small_gemm_partials(int M, int N);
size_t small_gemm_arrivals(int N);
// Split-K: K's stages shared out among `splits` blocks per 32 × 32 tile (grid z), each writing
// its partial tile to `partials`; the tile's last block to arrive adds them up in split order
// (deterministic, no atomics on data) and runs the tail. A block then walks at most
// kSmallGemmStagesPerSplit stages of 32 rather than all of K (16 at K = 512: a chain of L2
// round trips that made the unsplit kernel slower than cuBLAS on an H200). splits = 0: the
// kernel's choice (small_gemm_splits); 1: no split. partials/arrivals: scratch of capacity
// floats and arrival_capacity counters (zero at first, left zero); without it, no split.
struct SmallGemmSplit {
  int splits = 1;
  float* partials = nullptr;
  unsigned* arrivals = nullptr;
  size_t capacity = 0, arrival_capacity = 0;
};
constexpr int kSmallGemmStagesPerSplit = 4;
// The splits a call of M × N × K takes for `requested` (0: ceil(stages / 4)), within the
// scratch: no split leaves a block without a stage.
int small_gemm_splits(int M, int N, int K, const SmallGemmSplit& split);
void small_gemm_tf32(const float* A, const float* B, float* C, int M, int N, int K, int lda,
                     int ldb, int ldc, bool trans_b, float beta, const SmallGemmTail& tail,
                     cudaStream_t stream, const SmallGemmSplit& split = {});

// ---- persistent GEMM chain: several small GEMMs in one launch
// A grid-wide barrier's state (kernels/cuda/grid_sync.cuh): two counters in device memory,
// zero before the first launch that uses them, left zero by every barrier.
struct GridBarrier {
  unsigned* arrived = nullptr;
  unsigned* generation = nullptr;
};
// One GEMM of a chain, as small_gemm_tf32 takes it; `splits`: its K splits, as
// small_gemm_splits gives them for the chain's scratch (1 without).
struct SmallGemmStep {
  const float* A = nullptr;
  const float* B = nullptr;
  float* C = nullptr;
  int M = 0, N = 0, K = 0, lda = 0, ldb = 0, ldc = 0;
  float beta = 0.0f;
  SmallGemmTail tail;
  int splits = 1;
};
// A chain's steps held in the launch's parameters (no device memory: an engine issues a chain
// as it captures the step's graph).
constexpr int kMaxChainSteps = 8;
struct SmallGemmSteps {
  SmallGemmStep step[kMaxChainSteps];
};
// Runs steps[0 … count) (device memory; every step of one trans_b) in order in one cooperative
// launch of `blocks` blocks: each step's tiles and K splits dealt over the blocks, a grid
// barrier between steps, so a step may read what an earlier one wrote. Each step computes
// exactly what small_gemm_tf32 computes for it, bit for bit. Why: at B = 160 a GEMM kernel
// of the step takes 4–9 µs on an H200, most of it launching, filling and draining the GPU;
// here the blocks stay resident and a grid barrier replaces the kernel boundary (what it costs:
// bench_gemm_chains, BM_GemmShape/route:4). `blocks` ≤ small_gemm_chain_blocks().
void small_gemm_chain(const SmallGemmStep* steps, int count, bool trans_b,
                      const SmallGemmSplit& split, GridBarrier barrier, int blocks,
                      cudaStream_t stream);
// The same with the steps in the launch's parameters (count ≤ kMaxChainSteps, else
// std::invalid_argument).
void small_gemm_chain(const SmallGemmSteps& steps, int count, bool trans_b,
                      const SmallGemmSplit& split, GridBarrier barrier, int blocks,
                      cudaStream_t stream);
// How many blocks of the chain kernel the current device runs at once (its SMs × the blocks
// an SM holds; 0 where the occupancy query fails); under the emulator 4.
int small_gemm_chain_blocks();

// ---- convolution epilogues, NCHW y[N, C, P] (P = H·W; the convolutions themselves are cuDNN
// on the GPU, the CPU's im2col + GEMM under emulation), for conv2d and conv_transpose2d:
// y += b[c] (b null: no bias) and, with relu, max(·, 0) in place (NaN propagates).
template <class T>
void conv_bias_act(T* y, const T* b, int N, int C, int P, bool relu, cudaStream_t stream);
// Scratch of the per-channel sums split over image slices (channel_sum.cuh): partials
// [slices, C] and one counter per channel, zero before the first call (each call leaves them
// zero). Empty: a channel is one block.
inline constexpr int kMaxChannelSumSlices = 64;
template <class T>
struct ChannelSumScratch {
  T* partials = nullptr;
  size_t partial_elems = 0;
  unsigned* arrivals = nullptr;
  size_t arrival_elems = 0;
};
// The slices such a call makes over N images of C channels of P pixels: ~8,192 of a channel's
// elements each, whole images, 1 to kMaxChannelSumSlices, none empty; with sums (a sum is wanted,
// not only the walk) bounded by the scratch's room for partials and counters.
int channel_sum_slices(int N, int C, int P, bool sums, size_t partial_elems, size_t arrival_elems);
// The images of each of those slices (the last may have fewer).
inline int channel_slice_images(int N, int slices) {
  return N > 0 ? (N + slices - 1) / slices : 1;
}
// Backward, fused: with relu, dy is masked in place by (y > 0) so it holds dz after;
// db[C] = Σ_{n,p} dz (overwritten, deterministic order; null: mask only), over image slices
// as far as the scratch allows.
template <class T>
void conv_backward_bias(T* dy, T* db, const T* y, int N, int C, int P, bool relu,
                        const ChannelSumScratch<T>& scratch, cudaStream_t stream);

// ---- convolutions lowered to GEMMs (kernels/cuda/conv_lowering.cu; runtime/cuda/gemm_conv.h)
// The forward convolution x[N, C, H, W] → y[N, Co, Ho, Wo] the lowering reads: its patches
// have K = C·KH·KW rows, its output Q = N·Ho·Wo pixels.
struct ConvLoweringShape {
  int N, C, H, W, KH, KW, stride, pad, Ho, Wo;
};
// col[K, Q] = the patches of x (zeros where a window leaves x), row (c·KH + i)·KW + j, column
// (n·Ho + oh)·Wo + ow.
template <class T>
void im2col(T* col, const T* x, const ConvLoweringShape& g, cudaStream_t stream);
// dx[N, C, H, W] = Σ of each element's entries of dcol[K, Q] (overwritten; a gather in a fixed
// order, deterministic), then + bias[c] (null: none) and with relu max(·, 0) — conv_bias_act's
// epilogue, in the same pass (a transpose's forward).
template <class T>
void col2im(T* dx, const T* dcol, const ConvLoweringShape& g, cudaStream_t stream,
            const T* bias = nullptr, bool relu = false);
// out[B, A, P] = in[A, B, P] with the two leading axes swapped (NCHW ↔ CNHW), then + bias[a]
// (null: none) and with relu max(·, 0) (a convolution's forward: CNHW → NCHW with its epilogue).
template <class T>
void swap_leading(T* out, const T* in, int A, int B, int P, cudaStream_t stream,
                  const T* bias = nullptr, bool relu = false);

// ---- Gaussian log-likelihood, log-variance logvar[C] per channel (C = 1: global), clamped
// to [−30, 20]; mu, x [B, C·P] (cpu::gaussian_ll_*'s contracts). dmu and dlogvar are
// overwritten, either null to skip; dlogvar's per-channel sums run over row slices as far as
// the scratch allows (ChannelSumScratch above).
template <class T>
void gaussian_ll_forward(T* ll, const T* mu, const T* x, const T* logvar, int B, int C, int P,
                         cudaStream_t stream);
template <class T>
void gaussian_ll_backward(T* dmu, T* dlogvar, const T* dll, const T* mu, const T* x,
                          const T* logvar, int B, int C, int P, const ChannelSumScratch<T>& scratch,
                          cudaStream_t stream);

// ---- segmented leave-one-out mean pooling over CSR sets (offsets[R+1], members[offsets[R]])
template <class T>
void pool_forward(T* r, const T* e, const int32_t* offsets, const int32_t* members, int R, int d,
                  cudaStream_t stream);
// de[N,d] overwritten (rows no set uses get 0). Deterministic gather, no atomics: each row j
// of de gathers dr[i]/m_i from the sets that contain it, listed by the transpose
// (inv_offsets[N+1], inv_rows: cpu::pool_transpose of offsets/members).
template <class T>
void pool_backward(T* de, const T* dr, const int32_t* offsets, const int32_t* inv_offsets,
                   const int32_t* inv_rows, int N, int d, cudaStream_t stream);

// ---- reparameterised sample + KL in one pass; ε = philox_normal<T>(seed, step, row0+i, j),
// the CPU's noise. The step_device overload reads the step from device memory (graph replay).
template <class T>
void sample_kl_forward(T* v, T* eps, T* kl, const T* mulv, int B, int d, uint64_t seed,
                       uint64_t step, uint32_t row0, cudaStream_t stream);
template <class T>
void sample_kl_forward(T* v, T* eps, T* kl, const T* mulv, int B, int d, uint64_t seed,
                       const uint64_t* step_device, uint32_t row0, cudaStream_t stream);
template <class T>
void sample_kl_backward(T* dmulv, const T* dv, const T* dkl, const T* mulv, const T* eps, int B,
                        int d, cudaStream_t stream);

// ---- inverted dropout, cpu::dropout_forward's contract and mask: element i is kept iff
// philox_uniform<double>(seed, step, stream_id, i) ≥ rate (decided in double for both T).
template <class T>
void dropout_forward(T* y, T* mask, const T* x, size_t n, T rate, uint64_t seed, uint64_t step,
                     uint32_t stream_id, cudaStream_t stream);
// dx = dy ⊙ mask (dx may alias dy)
template <class T>
void dropout_backward(T* dx, const T* dy, const T* mask, size_t n, cudaStream_t stream);

// ---- Bernoulli log-likelihood from logits (soft targets x ∈ [0,1])
template <class T>
void bernoulli_ll_forward(T* ll, const T* logits, const T* x, int B, int D, cudaStream_t stream);
template <class T>
void bernoulli_ll_backward(T* dlogits, const T* dll, const T* logits, const T* x, int B, int D,
                           cudaStream_t stream);
// Both in one kernel, where dll[B] is known before the forward: bit for bit the two above.
template <class T>
void bernoulli_ll_forward_backward(T* ll, T* dlogits, const T* dll, const T* logits, const T* x,
                                   int B, int D, cudaStream_t stream);

// ---- softmax cross-entropy
template <class T>
void softmax_xent_forward(T* loss, T* probs, const T* logits, const int32_t* labels, int B, int C,
                          cudaStream_t stream);
template <class T>
void softmax_xent_backward(T* dlogits, const T* dloss, const T* probs, const int32_t* labels, int B,
                           int C, cudaStream_t stream);

// ---- exact expectation over the C labels of an unlabelled item (eqs. 6–7):
// q[U,C] = softmax(logits); L[u] = Σ_y q_uy (ll − kl + log_prior[y] − log q_uy)[u·C+y]
template <class T>
void expectation_forward(T* L, T* q, const T* logits, const T* ll, const T* kl, const T* log_prior,
                         int U, int C, cudaStream_t stream);
// dll = dL·q, dkl = −dL·q, dlogits through the softmax (cpu::expectation_backward's contract)
template <class T>
void expectation_backward(T* dlogits, T* dll, T* dkl, const T* dL, const T* q, const T* ll,
                          const T* kl, const T* log_prior, int U, int C, cudaStream_t stream);

// ---- Adam over the flat parameter buffer, one fused pass (PyTorch semantics, t ≥ 1). The
// t_device overload reads t from device memory (graph replay: t changes every step).
// non_finite_t: device memory, cpu::adam_step's record of the first update that went
// non-finite (null: none kept).
template <class T>
void adam_step(T* params, T* m, T* v, const T* grads, size_t n, const cpu::AdamConfig& config,
               int64_t t, int64_t* non_finite_t, cudaStream_t stream);
template <class T>
void adam_step(T* params, T* m, T* v, const T* grads, size_t n, const cpu::AdamConfig& config,
               const int64_t* t_device, int64_t* non_finite_t, cudaStream_t stream);

// ---- batch gather from a device-resident data set: out[i, :] = data[index[i], :]
void gather_rows(float* out, const float* data, const int32_t* index, int B, int D,
                 cudaStream_t stream);
// uint8 pixels → float, out = data · scale (1/255 for [0,1] intensities)
void gather_rows(float* out, const uint8_t* data, const int32_t* index, int B, int D, float scale,
                 cudaStream_t stream);
// labels (D = 1) or any int32 rows
void gather_rows(int32_t* out, const int32_t* data, const int32_t* index, int B, int D,
                 cudaStream_t stream);

}  // namespace equivae::cuda
