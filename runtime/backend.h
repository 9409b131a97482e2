#pragma once
// The backend interface: memory plus the engine's ops, one virtual call per op.
// The model speaks only to this interface, so the CPU backend (kernels/cpu) and
// the CUDA backend run the same plan. Pointers are backend memory (host memory
// for the CPU backend); shapes and semantics are those of kernels/cpu/ops.h.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <string>

#include "kernels/cpu/ops.h"
#include "runtime/error.h"

namespace equivae {

using cpu::AdamConfig;
using cpu::Conv2dShape;

// A dense layer's input when it is the output of a dense ReLU layer below, whose backward the
// layer's dense_backward finishes (db null: not this case).
template <class T>
struct InputRelu {
  T* db = nullptr;             // [in]: the layer below's bias gradient
  const void* mask = nullptr;  // that layer's forward relu_mask, or null
};

// The dense_backward arguments the input_relu case needs (every backend checks them).
inline void check_input_relu(bool fused, const void* dx, bool accumulate_dx) {
  check(!fused || (dx && !accumulate_dx), "dense_backward",
        "finishing the input's ReLU needs the whole input gradient, written (not added)");
}

// A product's rows copied out to more rows (dense_forward_partial): output row i is row
// members[offsets[i]] of the product — pool_forward over sets of one. The semi-supervised plan
// computes the encoder's W_x·x once per unlabelled item and hands it to the item's C rows.
template <class T>
struct RowExpansion {
  T* product = nullptr;              // [B, out]: where the product itself is written
  const int32_t* offsets = nullptr;  // [rows + 1], offsets[i + 1] = offsets[i] + 1
  const int32_t* members = nullptr;  // [rows]
  int rows = 0;                      // the output's rows
};

template <class T>
class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // One line for logs and checkpoints: the device and how it computes (threads, GEMM and
  // convolution routes, precision), so that a result says what produced it.
  virtual std::string describe() const { return name(); }

  // ---- memory: the plan takes one block up front, zero-filled.
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* block) = 0;
  virtual void upload(void* dst, const void* src, size_t bytes) = 0;
  virtual void download(void* dst, const void* src, size_t bytes) = 0;
  virtual void fill(T* dst, T value, size_t count) = 0;
  // Host memory that downloads and uploads reach at the link's full speed, for buffers a run
  // fills again and again (the per-epoch state a checkpoint is cut from): page-locked on a GPU,
  // where a download into pageable memory goes through the driver's staging buffers at a few
  // GB/s; plain memory elsewhere. Not while a graph is being captured. Released with
  // release_host, before the backend ends (HostFloats, runtime/host_floats.h, does both).
  virtual void* allocate_host(size_t bytes) {
    return ::operator new (bytes, std::align_val_t{kHostAlignment});
  }
  virtual void release_host(void* block) noexcept {
    ::operator delete (block, std::align_val_t{kHostAlignment});
  }
  static constexpr size_t kHostAlignment = 64;

  // ---- ops (see kernels/cpu/ops.h for the contracts)
  // relu_mask: where a backend may keep the ReLU's mask of y for a later dense_backward's
  // input_relu (relu_mask_bytes(B, out) bytes of backend memory, its own format), or null.
  // accumulate: y = act(x·W + b + y) onto what dense_forward_partial wrote (it waits for it).
  virtual void dense_forward(T* y, const T* x, const T* W, const T* b, int B, int in, int out,
                             bool relu, void* relu_mask, bool accumulate) = 0;
  // y = x·W, which a backend may compute beside the ops issued after it (a GPU: on its side
  // stream); only a dense_forward accumulating onto y may read y next. With expand (else
  // null): expand->product = x·W [B, out], then y [expand->rows, out] its rows copied out.
  virtual void dense_forward_partial(T* y, const T* x, const T* W, int B, int in, int out,
                                     const RowExpansion<T>* expand) = 0;
  // input_relu: x is a dense ReLU layer's output (cpu::dense_backward's input_relu_db); its
  // db is written and dx finished, reading the mask that layer's forward kept if any.
  virtual void dense_backward(T* dx, T* dW, T* db, T* dy, const T* x, const T* W, const T* y, int B,
                              int in, int out, bool relu, bool accumulate_dx,
                              const InputRelu<T>& input_relu) = 0;
  // Bytes of the ReLU mask dense_forward keeps for `rows` rows of `out` features; 0 when this
  // backend keeps none (the CPU reads y itself).
  virtual size_t relu_mask_bytes(int /*rows*/, int /*out*/) const { return 0; }
  virtual void pool_forward(T* r, const T* e, const int32_t* offsets, const int32_t* members, int R,
                            int d) = 0;
  // inv_offsets[N+1] / inv_rows: the sets' transpose (cpu::pool_transpose), for backends
  // that gather (CUDA, and the CPU where given; the CPU scatters over offsets/members without).
  virtual void pool_backward(T* de, const T* dr, const int32_t* offsets, const int32_t* members,
                             const int32_t* inv_offsets, const int32_t* inv_rows, int R, int N,
                             int d) = 0;
  virtual void sample_kl_forward(T* v, T* eps, T* kl, const T* mulv, int B, int d, uint64_t seed,
                                 uint64_t step, uint32_t row0) = 0;
  virtual void sample_kl_backward(T* dmulv, const T* dv, const T* dkl, const T* mulv, const T* eps,
                                  int B, int d) = 0;
  virtual void bernoulli_ll_forward(T* ll, const T* logits, const T* x, int B, int D) = 0;
  virtual void bernoulli_ll_backward(T* dlogits, const T* dll, const T* logits, const T* x, int B,
                                     int D) = 0;
  // Both at once, where dll is known before the forward (the supervised step's −1/B): the ll and
  // dlogits of the two calls above, which is what this default makes; the CUDA backend reads
  // logits and x once, in one kernel.
  virtual void bernoulli_ll_forward_backward(T* ll, T* dlogits, const T* dll, const T* logits,
                                             const T* x, int B, int D) {
    bernoulli_ll_forward(ll, logits, x, B, D);
    bernoulli_ll_backward(dlogits, dll, logits, x, B, D);
  }
  virtual void softmax_xent_forward(T* loss, T* probs, const T* logits, const int32_t* labels,
                                    int B, int C) = 0;
  virtual void softmax_xent_backward(T* dlogits, const T* dloss, const T* probs,
                                     const int32_t* labels, int B, int C) = 0;
  virtual void expectation_forward(T* L, T* q, const T* logits, const T* ll, const T* kl,
                                   const T* log_prior, int U, int C) = 0;
  virtual void expectation_backward(T* dlogits, T* dll, T* dkl, const T* dL, const T* q,
                                    const T* ll, const T* kl, const T* log_prior, int U, int C) = 0;
  // non_finite_t: backend memory holding cpu::adam_step's record of the first update that went
  // non-finite, or null.
  virtual void adam_step(T* params, T* m, T* v, const T* grads, size_t n, const AdamConfig& config,
                         int64_t t, int64_t* non_finite_t) = 0;
  virtual void dropout_forward(T* y, T* mask, const T* x, size_t n, T rate, uint64_t seed,
                               uint64_t step, uint32_t stream) = 0;
  virtual void dropout_backward(T* dx, const T* dy, const T* mask, size_t n) = 0;

  // ---- convolutions, NCHW (Conv2dShape and the contracts: kernels/cpu/ops.h)
  //   conv2d:           x[N, C_in, H, W], W[C_out, C_in, KH, KW], b[C_out] → y[N, C_out, Ho, Wo]
  //   conv_transpose2d: x[N, C_in, H, W], W[C_in, C_out, KH, KW], b[C_out] → y[N, C_out, Ho, Wo]
  // Scratch: the ops of shape s take `workspace`, backend memory of at least
  // *_workspace_bytes(s) bytes (the plan asks once per shape, before any step, and carves one
  // block of the largest size from its arena: no allocation per step). A null b adds no bias.
  // Backward: with relu, dy is masked in place by (y > 0); dx, dW, db are overwritten, each may
  // be null (skipped). A shape that conv_shape_problem refuses, or a workspace smaller than
  // the query's answer, throws Error naming the op.
  virtual size_t conv2d_workspace_bytes(const Conv2dShape& s) = 0;
  virtual size_t conv_transpose2d_workspace_bytes(const Conv2dShape& s) = 0;
  virtual void conv2d_forward(T* y, const T* x, const T* W, const T* b, const Conv2dShape& s,
                              bool relu, void* workspace, size_t workspace_bytes) = 0;
  virtual void conv2d_backward(T* dx, T* dW, T* db, T* dy, const T* x, const T* W, const T* y,
                               const Conv2dShape& s, bool relu, void* workspace,
                               size_t workspace_bytes) = 0;
  virtual void conv_transpose2d_forward(T* y, const T* x, const T* W, const T* b,
                                        const Conv2dShape& s, bool relu, void* workspace,
                                        size_t workspace_bytes) = 0;
  virtual void conv_transpose2d_backward(T* dx, T* dW, T* db, T* dy, const T* x, const T* W,
                                         const T* y, const Conv2dShape& s, bool relu,
                                         void* workspace, size_t workspace_bytes) = 0;
  // Whether the tensor between two convolutions (producer's y, consumer's x) may stay in the
  // backend's blocked layout, set as producer.y_blocked and consumer.x_blocked (Conv2dShape;
  // kernels/cpu/ops.h): the CPU's float ops where oneDNN takes both sides. A backend that
  // answers false (the default) refuses shapes with those flags.
  virtual bool conv_blocked_between(const Conv2dShape& producer, bool producer_transposed,
                                    const Conv2dShape& consumer, bool consumer_transposed) {
    (void)producer, (void)producer_transposed, (void)consumer, (void)consumer_transposed;
    return false;
  }

  // ---- Gaussian log-likelihood, log-variance logvar[C] per channel (C = 1: global):
  // ll[B] from mu, x [B, C·P]; backward: dmu[B, C·P], dlogvar[C] (overwritten, either null to
  // skip). log-variance clamped to [−30, 20] (kernels/cpu/ops.h).
  virtual void gaussian_ll_forward(T* ll, const T* mu, const T* x, const T* logvar, int B, int C,
                                   int P) = 0;
  virtual void gaussian_ll_backward(T* dmu, T* dlogvar, const T* dll, const T* mu, const T* x,
                                    const T* logvar, int B, int C, int P) = 0;
};

// The native CPU backend (OpenBLAS or oneDNN GEMMs, OpenMP); threads ≤ 0 keeps the defaults.
template <class T>
std::unique_ptr<Backend<T>> make_cpu_backend(int threads = 0);

}  // namespace equivae

namespace equivae {

// ---- The CUDA backend (runtime/cuda): device memory, the kernels of kernels/cuda, cuBLAS
// GEMMs, everything on one stream, training steps replayed as one CUDA graph (it also offers
// runtime/cuda/device_step.h). Linked through the library equivae_cuda_backend: the real one
// where the CUDA toolkit was found at configure time, else a stub whose make_cuda_backend
// throws Error and whose cuda_available() is false.
struct CudaBackendOptions {
  int device = 0;            // CUDA device ordinal
  bool strict_fp32 = false;  // true: FP32 GEMMs only; false: TF32 tensor cores allowed (float)
  // GEMM routing on a GPU (float), for comparing the routes in benchmarks; every route gives
  // the same results up to the GEMMs' rounding.
  // The dense forward's GEMM, bias and ReLU in one cuBLASLt kernel (default), or a cuBLAS
  // GEMM and the engine's bias + ReLU kernel.
  bool cublaslt_epilogues = true;
  // With cublaslt_epilogues: each ReLU's forward keeps its mask, and the layer above's
  // input-gradient GEMM applies it and sums the bias gradient in its epilogue (DRELU_BGRAD),
  // one kernel fewer per pair of dense layers on the backward's critical path.
  bool fused_relu_backward = false;
  // With fused_relu_backward: the input-gradient GEMM's epilogue applies the mask alone (DRELU)
  // and the layer below's bias gradient is summed from its output as without the fusion (on the
  // side stream with side_bias_gradient), so the critical path's GEMM carries no column sums
  // (DRELU_BGRAD made those GEMMs slower on an H200: docs/cuda-levers.md).
  bool drelu_alone = false;
  bool lt_backward = false;  // the dense backward's GEMMs in cuBLASLt too (default: cuBLAS)
  bool split_k = true;       // cuBLASLt may split K over blocks (a reduction after the GEMM)
  // With split_k: cuBLASLt adds the partial products up in place, in the output (ordered by
  // counters), never with a reduction kernel after the GEMM.
  bool split_k_in_place = false;
  // The dense backward's bias gradient on the side stream beside the weight-gradient GEMM
  // (default), or fused with the ReLU mask on the critical path. Also each convolution's bias
  // gradient (its mask stays on the main stream) and the Gaussian likelihood's log-variance
  // gradient: beside the backward, or on the critical path.
  bool side_bias_gradient = true;
  // dense_forward_partial's GEMM (the encoder's W_x·x) on the side stream, beside f_inv and
  // the pooling (default), or in order on the main stream.
  bool partial_beside = true;
  // Each convolution's weight gradient (cuDNN's backward-filter) on the side stream beside its
  // input gradient and the layers below, as the dense layers' weight-gradient GEMMs go
  // (default; off: after the input gradient, on the critical path). Its workspace doubles: the
  // side stream's half is its own. With trunk_beside, the SVHN step's default since the H200
  // measured it 13% faster (1.054 against 1.213 ms; docs/cuda-levers.md).
  bool side_conv_filter = true;
  // The convolutional encoder trunk (the SVHN model's q(v|r,x) sees its own conv trunk of x)
  // on the side stream: its forward beside f_inv's, its backward beside f_inv's backward
  // (DeviceStepOps::begin_beside). Convolutions there use the side stream's half of their
  // workspace, as with side_conv_filter. Default (see side_conv_filter); off: in order on the
  // main stream.
  bool trunk_beside = true;
  // Every convolution's three calls (forward, input and weight gradients) as GEMMs over many
  // images at once (the whole batch where a 64 MiB workspace holds it, else chunks of images),
  // between the engine's im2col / col2im / layout kernels (runtime/cuda/gemm_conv.h), instead
  // of cuDNN: its deterministic FP32 NCHW algorithms ran the SVHN model's layers at 10–12
  // TFLOP/s on an H200. Needs no cuDNN. The workspace holds a chunk's patches and output:
  // (C_in·KH·KW + C_out)·n·Ho·Wo elements of the forward convolution for n images.
  bool conv_gemm = false;
  // In a captured step, each network's Adam update on the side stream as soon as its backward
  // is done (the decoder's beside the encoder's and f_inv's backward), instead of one update
  // of every parameter after the whole backward: only f_inv's stays on the critical path.
  bool early_adam = false;
  // Algorithms chosen by timing their candidates once rather than by the libraries'
  // heuristics alone: each cuBLASLt GEMM's after the first capture of a training step
  // (DeviceStepOps::tune_gemms), each cuDNN convolution's when its plan is made (cudnnFind*).
  bool autotune = false;
  // The main stream (the step's critical path) at the device's highest priority, the side
  // stream (weight and bias gradients) at the lowest, kept per node in captured graphs: when
  // both have blocks waiting, the critical path's are scheduled first.
  bool prioritise_critical_path = false;
  // The engine's own tensor-core GEMM (kernels/cuda/small_gemm.cu: 32 × 32 tiles, whole K in
  // the block, bias/ReLU/mask epilogue) for every GEMM of at most kSmallGemmRows rows whose A is
  // not transposed — the forward's and the input gradients', i.e. the critical path's — instead
  // of cuBLAS/cuBLASLt, which cover a 160-row output with few blocks or a split-K reduction.
  // TF32 only (strict_fp32 keeps the libraries); the weight-gradient GEMMs stay in cuBLAS.
  bool small_gemm = false;
  // Programmatic dependent launch (compute capability 9.0+; elsewhere ignored): each of the
  // engine's kernels may be scheduled while the kernel before it in its stream still runs and
  // waits for it on the device (kernels/cuda/launch.h), so a captured step's kernel-to-kernel
  // launch latency overlaps work. Library kernels (cuBLAS, cuBLASLt, cuDNN) launch as before.
  // Default: the fastest of the supervised step's 29 routes on an H200 (195 against 204 µs
  // without it; 183 against 204 in a second run; docs/cuda-levers.md).
  bool programmatic_launch = true;
  // With programmatic_launch: only kernels of at most this many blocks launch programmatically
  // (0: every kernel). An experiment, not a known fix: the B = 10,240 step took 1,643 µs with
  // programmatic launch and 1,547 without, in two runs on two H200s; a benchmark route
  // (BM_GraphStep levers:5: 264 blocks, two waves of 132 SMs) times it beside all and none.
  size_t programmatic_max_blocks = 0;
  // Consecutive training steps captured in one graph: a window of steps replays it once per
  // steps_per_graph steps (the window's remainder one step at a time), so the gap between two
  // graph launches falls between groups of steps rather than between every two. Each step
  // still reads its slot and counters from device memory: the same steps, in the same order.
  int steps_per_graph = 1;
  // Consecutive dense forwards (a network's layers, each reading the one before) as one
  // persistent launch of the engine's tensor-core GEMM (cuda::small_gemm_chain: the blocks stay
  // resident and a grid barrier replaces each kernel boundary), up to kMaxChainSteps layers a
  // launch; bit for bit what small_gemm gives them. TF32 only, not with autotune; the layers
  // that do not fit the small GEMM run as before.
  bool persistent_chains = false;
  static constexpr int kSmallGemmRows = 2048;
  static constexpr int kMaxStepsPerGraph = 64;
};
template <class T>
std::unique_ptr<Backend<T>> make_cuda_backend(const CudaBackendOptions& options = {});
// True when this build has the real CUDA backend and a CUDA device can be used.
bool cuda_available();

}  // namespace equivae
