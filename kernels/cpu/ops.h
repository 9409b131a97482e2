#pragma once
// CPU reference ops, instantiated for float and double (double is the oracle of
// the gradient checks). Each op has its forward and hand-derived backward side
// by side: outputs first, gradients prefixed `d`, shapes in the comments.
// Matrices are row-major; a dense layer's weight is W[in, out] so y = x · W.
#include <cstddef>
#include <cstdint>
#include <string>

namespace equivae::cpu {

// ---- dense layer: y[B,out] = act(x[B,in] · W[in,out] + b[out]), act = ReLU or identity.
// accumulate: y = act(x · W + b + y), y holding a product already — a layer fed [a ; b] is
// y = a · W[:in_a] first (dense_forward_partial) and then this with b and W[in_a:].
template <class T>
void dense_forward(T* y, const T* x, const T* W, const T* b, int B, int in, int out, bool relu,
                   bool accumulate = false);
// y[B,out] = x[B,in] · W[in,out]: no bias, no activation (the first part of a layer fed two
// inputs).
template <class T>
void dense_forward_partial(T* y, const T* x, const T* W, int B, int in, int out);
// dy[B,out] is the gradient w.r.t. the layer's output y (post-activation); with
// ReLU it is masked in place by (y > 0), so dy holds d(pre-activation) after.
// dW[in,out] = xᵀ · dz and db[out] = Σ_rows dz are overwritten (each parameter is
// used once per step). dx[B, in] = dz · Wᵀ is written or, with accumulate_dx, added; a
// null dx skips it (a layer fed [a ; b] takes W's row blocks: dense_forward). A null db skips the
// bias gradient: with relu = false and db = null, dy arrives as dz with db done — the
// layer above finished it (input_relu_db below).
// input_relu_db (not null): x is the output of a dense ReLU layer below with bias gradient
// input_relu_db[in]; dx (whole, written) is finished as that layer's backward would begin —
// masked by (x > 0), and input_relu_db = Σ_rows dx — so its backward runs with relu = false
// and db = null. (A GPU does this in the dx GEMM's epilogue; here it saves nothing.)
template <class T>
void dense_backward(T* dx, T* dW, T* db, T* dy, const T* x, const T* W, const T* y, int B, int in,
                    int out, bool relu, bool accumulate_dx = false, T* input_relu_db = nullptr);
// The start of a dense ReLU layer's backward: dy[B,out] masked in place by (y > 0) when relu,
// and db[out] = Σ_rows dy after (skipped when db is null).
template <class T>
void relu_bias_backward(T* dy, T* db, const T* y, int B, int out, bool relu);

// How the float dense layers' GEMMs and the im2col convolutions' run (dense_gemm in blas.h; the
// emulated CUDA backend's GEMMs copy the CPU's): OpenBLAS, or oneDNN's matmul (when the build found
// libdnnl), or automatic — oneDNN wherever it runs the GEMM in its brgemm kernels (CPUs with
// AVX-512), else OpenBLAS. double always takes OpenBLAS, the reference. Process-wide; the default
// is automatic, or EQUIVAE_CPU_GEMM=openblas|onednn|auto at start-up.
enum class GemmRoute { automatic, openblas, onednn };
void set_gemm_route(GemmRoute route);
GemmRoute gemm_route();
// "auto" (or ""), "openblas" or "onednn"; anything else throws std::invalid_argument naming it.
GemmRoute gemm_route_named(const std::string& name);

// ---- 2-D convolution and its transpose (NCHW, row-major), im2col + GEMM (kernels/cpu/conv.cpp).
// One shape struct serves both; x is always the op's input, y its output.
//   conv2d:           x[N, C_in, H, W], W[C_out, C_in, KH, KW], b[C_out] → y[N, C_out, Ho, Wo],
//                     Ho = (H + 2·pad − KH) / stride + 1 (floor), likewise Wo;
//   conv_transpose2d: x[N, C_in, H, W], W[C_in, C_out, KH, KW] (PyTorch's layout), b[C_out]
//                     → y[N, C_out, Ho, Wo], Ho = (H − 1)·stride − 2·pad + KH + output_padding.
// conv_transpose2d is conv2d's adjoint: with the same W (conv2d's [C_out, C_in] is the
// transpose's [C_in, C_out]), ⟨conv2d(u), v⟩ = ⟨u, conv_transpose2d(v)⟩ without bias.
// Padding is symmetric (pad zeros on each side); output_padding (< stride) adds rows/columns
// at the bottom/right of the transpose's output so that e.g. 8 → 16 with k = 3, s = 2, p = 1.
struct Conv2dShape {
  int N = 1, C_in = 1, H = 1, W = 1;  // input x
  int C_out = 1, KH = 1, KW = 1;
  int stride = 1, pad = 0;
  int output_padding = 0;  // conv_transpose2d only (must be 0 for conv2d)
  // x and dx (x_blocked), y and dy (y_blocked) held in channel blocks [N, C / b, H, W, b]
  // instead of NCHW: the layout oneDNN's kernels compute in (b = conv_channel_block()), kept
  // between two convolutions so that neither reorders it. Only where conv_blocked_between
  // allows it (the CPU's float ops on oneDNN's route); every other backend refuses the flags.
  bool x_blocked = false, y_blocked = false;
};
inline int conv2d_out_size(int in, int k, int stride, int pad) {
  return (in + 2 * pad - k) / stride + 1;
}
inline int conv_transpose2d_out_size(int in, int k, int stride, int pad, int output_padding) {
  return (in - 1) * stride - 2 * pad + k + output_padding;
}
// Output height / width of conv2d on s, or of conv_transpose2d when transposed.
inline int conv_out_h(const Conv2dShape& s, bool transposed) {
  return transposed ? conv_transpose2d_out_size(s.H, s.KH, s.stride, s.pad, s.output_padding)
                    : conv2d_out_size(s.H, s.KH, s.stride, s.pad);
}
inline int conv_out_w(const Conv2dShape& s, bool transposed) {
  return transposed ? conv_transpose2d_out_size(s.W, s.KW, s.stride, s.pad, s.output_padding)
                    : conv2d_out_size(s.W, s.KW, s.stride, s.pad);
}
// What is wrong with the shape for the op (transposed: conv_transpose2d), or "" when it is
// valid: positive sizes, stride ≥ 1, pad ≥ 0, 0 ≤ output_padding < stride (0 for conv2d),
// an output of at least 1×1, every tensor under 2^31 elements. The ops assume a valid shape;
// the backends check it and throw.
std::string conv_shape_problem(const Conv2dShape& s, bool transposed);
// Scratch elements (of T) the ops of a shape need: the caller passes workspace[size], aliasing
// no operand, to forward and backward alike (the plan carves it once; one buffer of the largest
// size serves every layer). The batch is processed in chunks of images so that it stays bounded.
// The size covers both routes below, whichever is chosen.
size_t conv2d_workspace_size(const Conv2dShape& s);
size_t conv_transpose2d_workspace_size(const Conv2dShape& s);

// How the float convolutions run: im2col + GEMM (conv.cpp; the GEMM on the GemmRoute), oneDNN's
// JIT kernels (conv_onednn.h, when the build found libdnnl), or automatic: per op and direction,
// the route measured faster for its channel counts (conv.cpp, use_onednn). double always takes
// im2col, the reference the float routes are tested against. Process-wide; the default is
// automatic, or EQUIVAE_CPU_CONV=im2col|onednn|auto at start-up. A shape oneDNN cannot take (a
// negative right padding, or only its slow reference loops on offer) falls back to im2col.
enum class ConvRoute { automatic, im2col, onednn };
void set_conv_route(ConvRoute route);
ConvRoute conv_route();
// "auto" (or ""), "im2col" or "onednn"; anything else throws std::invalid_argument naming it.
ConvRoute conv_route_named(const std::string& name);
// Whether the build has the oneDNN routes (convolutions and GEMMs).
bool onednn_built();
// Whether the automatic GEMM route takes oneDNN on this CPU (built, with brgemm kernels).
bool onednn_gemm_automatic();
// The channel block b of the blocked layout (Conv2dShape::x_blocked): what oneDNN's
// convolutions compute in on this CPU (16 with AVX-512, 8 with AVX2), 0 without oneDNN.
int conv_channel_block();
// Whether the tensor between two convolutions — producer's y, consumer's x, and their
// gradients — may stay blocked (producer.y_blocked, consumer.x_blocked): T = float, the two
// meet (same images, channels, height, width), the channels are a multiple of the block, and
// every op and direction that reads or writes the tensor takes oneDNN on the current route
// (the producer's forward and weight gradient; the consumer's forward, weight and data
// gradients), with the flags already set on either shape. The producer's data gradient then
// takes oneDNN too. Nothing else may read such a tensor (a stack's last output stays NCHW).
template <class T>
bool conv_blocked_between(const Conv2dShape& producer, bool producer_transposed,
                          const Conv2dShape& consumer, bool consumer_transposed);

// y = act(conv2d(x, W) + b), act = ReLU or identity; a null b adds no bias.
template <class T>
void conv2d_forward(T* y, const T* x, const T* W, const T* b, const Conv2dShape& s, bool relu,
                    T* workspace);
// dense_backward's convention: with relu, dy[N, C_out, Ho, Wo] (the gradient w.r.t. the
// post-activation y) is masked in place by (y > 0), so it holds d(pre-activation) after.
// dW[C_out, C_in, KH, KW] and db[C_out] = Σ_{n,h,w} dz are overwritten; dx[N, C_in, H, W] is
// overwritten. Any of dx, dW, db may be null (skipped; the first layer needs no dx).
template <class T>
void conv2d_backward(T* dx, T* dW, T* db, T* dy, const T* x, const T* W, const T* y,
                     const Conv2dShape& s, bool relu, T* workspace);
// y = act(conv_transpose2d(x, W) + b).
template <class T>
void conv_transpose2d_forward(T* y, const T* x, const T* W, const T* b, const Conv2dShape& s,
                              bool relu, T* workspace);
// As conv2d_backward: dy masked in place with relu; dW[C_in, C_out, KH, KW], db[C_out] and
// dx[N, C_in, H, W] overwritten; each may be null.
template <class T>
void conv_transpose2d_backward(T* dx, T* dW, T* db, T* dy, const T* x, const T* W, const T* y,
                               const Conv2dShape& s, bool relu, T* workspace);

// ---- Gaussian log-likelihood with a learned log-variance shared per channel (C channels,
// logvar[C]) or globally (C = 1). mu, x [B, C·P] row-major, a row being C channels of P
// values each (an NCHW image: P = H·W):
//   ll[B] = Σ_c Σ_p log N(x | μ, e^{lv_c}) = −½ Σ_c Σ_p (log 2π + lv_c + (x − μ)² e^{−lv_c}),
// lv_c = logvar[c] clamped to [−30, 20] as sample_kl_forward clamps log σ² (e^{−lv} ≤ 1.1e13,
// so the terms stay finite in float for any |x − μ| ≲ 1e12); NaN propagates.
template <class T>
void gaussian_ll_forward(T* ll, const T* mu, const T* x, const T* logvar, int B, int C, int P);
// From dll[B]: dmu[B, C·P] = dll_i (x − μ) e^{−lv_c} (overwritten);
// dlogvar[C] = Σ_i dll_i Σ_p ½((x − μ)² e^{−lv_c} − 1) (overwritten; zero where logvar[c] is
// outside the clamp, the clamp's derivative). Either may be null (skipped).
template <class T>
void gaussian_ll_backward(T* dmu, T* dlogvar, const T* dll, const T* mu, const T* x,
                          const T* logvar, int B, int C, int P);

// ---- segmented leave-one-out mean pooling, the pooled sets given in CSR form:
// row i of r averages the rows members[offsets[i] .. offsets[i+1]) of e.
// r[R,d] = (1/m_i) Σ_{j ∈ S_i} e[j],  m_i = offsets[i+1] − offsets[i] ≥ 1; e[N,d].
template <class T>
void pool_forward(T* r, const T* e, const int32_t* offsets, const int32_t* members, int R, int d);
// de[N,d] = Σ_i Σ_{j ∈ S_i} dr[i] / m_i  (overwritten: rows no set uses get 0).
template <class T>
void pool_backward(T* de, const T* dr, const int32_t* offsets, const int32_t* members, int R, int N,
                   int d);
// pool_backward as a gather over the sets' transpose (pool_transpose): each item's rows in
// parallel, bit for bit pool_backward's result.
template <class T>
void pool_backward_gather(T* de, const T* dr, const int32_t* offsets, const int32_t* inv_offsets,
                          const int32_t* inv_rows, int N, int d);
// The sets' transpose, for gathers: the pooled rows that use item j are
// inv_rows[inv_offsets[j] .. inv_offsets[j+1]), in increasing order (a stable counting sort),
// so a gather over them adds in pool_backward's order. inv_offsets[N+1], inv_rows[offsets[R]];
// every member must lie in [0, N).
void pool_transpose(const int32_t* offsets, const int32_t* members, int R, int N,
                    int32_t* inv_offsets, int32_t* inv_rows);

// ---- reparameterised sampling + KL(q(v|·) || N(0, I)) in one pass.
// mulv[B,2d] = [μ | log σ²]; eps[B,d] = Philox normal at (seed, step, row0 + i, j);
// v[B,d] = μ + exp(½ log σ²) · eps; kl[B] = ½ Σ_j (μ² + σ² − 1 − log σ²).
// log σ² is first clamped to [−30, 20] (σ² from ~9e−14 to ~5e8), so v, kl and the gradients
// stay finite for any finite log σ² (and |μ| ≲ 1e18 in float, where μ² would overflow); the
// backward gives log σ² a zero gradient outside that range (the clamp's derivative), the exact
// gradient inside. NaN inputs propagate. The CUDA kernels (kernels/cuda/sample_kl.cu) clamp
// identically.
template <class T>
void sample_kl_forward(T* v, T* eps, T* kl, const T* mulv, int B, int d, uint64_t seed,
                       uint64_t step, uint32_t row0);
// dmulv[B,2d] from dv[B,d] and dkl[B] (the loss's weight on each row's KL).
template <class T>
void sample_kl_backward(T* dmulv, const T* dv, const T* dkl, const T* mulv, const T* eps, int B,
                        int d);

// ---- Bernoulli log-likelihood with soft targets x ∈ [0,1], from logits:
// ll[B] = Σ_j x_ij · l_ij − softplus(l_ij)   (stable softplus, never σ(l) twice)
template <class T>
void bernoulli_ll_forward(T* ll, const T* logits, const T* x, int B, int D);
// dlogits[B,D] = dll[i] · (x_ij − σ(l_ij))
template <class T>
void bernoulli_ll_backward(T* dlogits, const T* dll, const T* logits, const T* x, int B, int D);

// ---- softmax cross-entropy: probs[B,C] = softmax(logits), loss[B] = −log probs[i, y_i]
template <class T>
void softmax_xent_forward(T* loss, T* probs, const T* logits, const int32_t* labels, int B, int C);
// dlogits[B,C] = dloss[i] · (probs − onehot(y_i))
template <class T>
void softmax_xent_backward(T* dlogits, const T* dloss, const T* probs, const int32_t* labels, int B,
                           int C);

// ---- exact expectation over the C labels of an unlabelled item (eqs. 6–7):
// q[U,C] = softmax(logits); elbo_uy = ll[u·C+y] − kl[u·C+y] (row u·C+y ran with r_y);
// L[u] = Σ_y q_uy (elbo_uy + log_prior[y] − log q_uy)   (= E_q[ELBO] − KL(q ‖ p(y)))
template <class T>
void expectation_forward(T* L, T* q, const T* logits, const T* ll, const T* kl, const T* log_prior,
                         int U, int C);
// From dL[U]: dll[u·C+y] = dL_u·q_uy, dkl[u·C+y] = −dL_u·q_uy, and through the softmax
// dlogits_uk = dL_u·q_uk·(g_uk − Σ_y q_uy g_uy), g_uy = elbo_uy + log_prior[y] − log q_uy.
template <class T>
void expectation_backward(T* dlogits, T* dll, T* dkl, const T* dL, const T* q, const T* ll,
                          const T* kl, const T* log_prior, int U, int C);

// ---- Adam over one flat parameter buffer (PyTorch semantics, bias-corrected):
// m = β1 m + (1−β1) g; v = β2 v + (1−β2) g²; p −= lr · m̂ / (√v̂ + eps), t ≥ 1.
// non_finite_t (null: not kept) records the first update that left a parameter or moment
// NaN or ±inf, for the divergence report: 0 while none has; such an update stores its t
// there, and an update of a later t finds it set and changes nothing, so the state stays as
// that update left it (a GPU runs a window of steps before the host looks).
struct AdamConfig {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
};
template <class T>
void adam_step(T* params, T* m, T* v, const T* grads, size_t n, const AdamConfig& config, int64_t t,
               int64_t* non_finite_t = nullptr);

// ---- small reductions
template <class T>
double sum(const T* x, size_t n);

// ---- inverted dropout: mask[n] = keep_i / (1 − rate) or 0, keep_i ⇔ Philox uniform at
// (seed, step, row = stream, col = i) ≥ rate (so P(keep) = 1 − rate, E[y] = x); y[n] = x ⊙ mask.
// rate = 0 copies (mask = 1); rate ≥ 1 zeroes. n < 2^32 (the column counter is 32-bit).
template <class T>
void dropout_forward(T* y, T* mask, const T* x, size_t n, T rate, uint64_t seed, uint64_t step,
                     uint32_t stream);
// dx[n] = dy ⊙ mask (dx may alias dy).
template <class T>
void dropout_backward(T* dx, const T* dy, const T* mask, size_t n);

}  // namespace equivae::cpu
