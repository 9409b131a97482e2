// The CPU backend: host memory and the reference ops of kernels/cpu.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/conv_onednn.h"
#include "kernels/cpu/gemm_onednn.h"
#include "kernels/cpu/ops.h"
#include "runtime/backend.h"
#include "runtime/conv_check.h"
#include "runtime/error.h"
#include "runtime/openmp_threads.h"

namespace equivae {
namespace {

// memcpy, split over the threads from 1 MiB on: a semi-supervised batch's 3.6 MB of images
// copied in 33 µs on two cores of the Zen 5 machine against 56 on one (best of 200, warm).
void copy_bytes(void* dst, const void* src, size_t bytes) {
  constexpr size_t kSerialBytes = size_t(1) << 20, kLine = 64;
  if (bytes < kSerialBytes) {
    std::memcpy(dst, src, bytes);
    return;
  }
#pragma omp parallel
  {
    const size_t t = size_t(omp_get_thread_num()), nt = size_t(omp_get_num_threads());
    const size_t lo = bytes / kLine * t / nt * kLine;
    const size_t hi = t + 1 == nt ? bytes : bytes / kLine * (t + 1) / nt * kLine;
    std::memcpy(static_cast<char*>(dst) + lo, static_cast<const char*>(src) + lo, hi - lo);
  }
}

template <class T>
class CpuBackend final : public Backend<T> {
 public:
  explicit CpuBackend(int threads) {
    // A bad EQUIVAE_CPU_GEMM or EQUIVAE_CPU_CONV stops here, naming the variable, before any work.
    cpu::gemm_route();
    cpu::conv_route();
    // The team every parallel region gets: the GEMMs split their work for it (openmp_threads.h).
    const OpenmpTeam team = settle_openmp_team(threads);
    if (!team.note.empty()) std::fprintf(stderr, "note: %s\n", team.note.c_str());
    threads_ = team.threads;
  }
  std::string name() const override { return "cpu"; }
  std::string describe() const override {
    // The routes dense_gemm and the convolutions take (kernels/cpu/dense_gemm.cpp, conv.cpp):
    // oneDNN only in a build with it, forced or, automatically, where it has brgemm kernels.
    std::string gemms = "OpenBLAS", convolutions = "im2col + these GEMMs";
    if constexpr (std::is_same_v<T, float>) {  // double, the reference, always takes OpenBLAS
      const cpu::GemmRoute g = cpu::gemm_route();
      if (cpu::onednn::available() &&
          (g == cpu::GemmRoute::onednn ||
           (g == cpu::GemmRoute::automatic && cpu::onednn::brgemm_available())))
        gemms = "oneDNN";
      if (cpu::conv_route() != cpu::ConvRoute::im2col && cpu::onednn::available())
        convolutions = "oneDNN, or im2col + these GEMMs for the shapes it does not take";
    }
    return std::string("cpu, ") + (std::is_same_v<T, float> ? "float" : "double") + ", " +
           std::to_string(threads_) + (threads_ == 1 ? " thread" : " threads") +
           "; GEMMs: " + gemms + "; convolutions: " + convolutions;
  }

  void* allocate(size_t bytes) override {
    // 64-byte alignment: cache lines and AVX-512 vectors.
    const size_t rounded = std::max<size_t>(64, (bytes + 63) / 64 * 64);
    void* block = std::aligned_alloc(64, rounded);
    check(block != nullptr, "cpu backend",
          "out of memory allocating " + std::to_string(bytes) + " bytes");
    std::memset(block, 0, rounded);
    return block;
  }
  void release(void* block) override { std::free(block); }
  void upload(void* dst, const void* src, size_t bytes) override { copy_bytes(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { copy_bytes(dst, src, bytes); }
  void fill(T* dst, T value, size_t count) override { std::fill_n(dst, count, value); }

  void dense_forward(T* y, const T* x, const T* W, const T* b, int B, int in, int out, bool relu,
                     void* /*relu_mask: none kept, relu_mask_bytes is 0*/,
                     bool accumulate) override {
    cpu::dense_forward(y, x, W, b, B, in, out, relu, accumulate);
  }
  void dense_forward_partial(T* y, const T* x, const T* W, int B, int in, int out,
                             const RowExpansion<T>* expand) override {
    cpu::dense_forward_partial(expand ? expand->product : y, x, W, B, in, out);
    if (expand)
      cpu::pool_forward(y, expand->product, expand->offsets, expand->members, expand->rows, out);
  }
  void dense_backward(T* dx, T* dW, T* db, T* dy, const T* x, const T* W, const T* y, int B, int in,
                      int out, bool relu, bool accumulate_dx,
                      const InputRelu<T>& input_relu) override {
    check_input_relu(input_relu.db != nullptr, dx, accumulate_dx);
    cpu::dense_backward(dx, dW, db, dy, x, W, y, B, in, out, relu, accumulate_dx, input_relu.db);
  }
  void pool_forward(T* r, const T* e, const int32_t* offsets, const int32_t* members, int R,
                    int d) override {
    cpu::pool_forward(r, e, offsets, members, R, d);
  }
  void pool_backward(T* de, const T* dr, const int32_t* offsets, const int32_t* members,
                     const int32_t* inv_offsets, const int32_t* inv_rows, int R, int N,
                     int d) override {
    if (inv_offsets && inv_rows)  // the same sums, gathered: items in parallel
      cpu::pool_backward_gather(de, dr, offsets, inv_offsets, inv_rows, N, d);
    else
      cpu::pool_backward(de, dr, offsets, members, R, N, d);
  }
  void sample_kl_forward(T* v, T* eps, T* kl, const T* mulv, int B, int d, uint64_t seed,
                         uint64_t step, uint32_t row0) override {
    cpu::sample_kl_forward(v, eps, kl, mulv, B, d, seed, step, row0);
  }
  void sample_kl_backward(T* dmulv, const T* dv, const T* dkl, const T* mulv, const T* eps, int B,
                          int d) override {
    cpu::sample_kl_backward(dmulv, dv, dkl, mulv, eps, B, d);
  }
  void bernoulli_ll_forward(T* ll, const T* logits, const T* x, int B, int D) override {
    cpu::bernoulli_ll_forward(ll, logits, x, B, D);
  }
  void bernoulli_ll_backward(T* dlogits, const T* dll, const T* logits, const T* x, int B,
                             int D) override {
    cpu::bernoulli_ll_backward(dlogits, dll, logits, x, B, D);
  }
  void softmax_xent_forward(T* loss, T* probs, const T* logits, const int32_t* labels, int B,
                            int C) override {
    cpu::softmax_xent_forward(loss, probs, logits, labels, B, C);
  }
  void softmax_xent_backward(T* dlogits, const T* dloss, const T* probs, const int32_t* labels,
                             int B, int C) override {
    cpu::softmax_xent_backward(dlogits, dloss, probs, labels, B, C);
  }
  void expectation_forward(T* L, T* q, const T* logits, const T* ll, const T* kl,
                           const T* log_prior, int U, int C) override {
    cpu::expectation_forward(L, q, logits, ll, kl, log_prior, U, C);
  }
  void expectation_backward(T* dlogits, T* dll, T* dkl, const T* dL, const T* q, const T* ll,
                            const T* kl, const T* log_prior, int U, int C) override {
    cpu::expectation_backward(dlogits, dll, dkl, dL, q, ll, kl, log_prior, U, C);
  }
  void adam_step(T* params, T* m, T* v, const T* grads, size_t n, const AdamConfig& config,
                 int64_t t, int64_t* non_finite_t) override {
    cpu::adam_step(params, m, v, grads, n, config, t, non_finite_t);
  }
  void dropout_forward(T* y, T* mask, const T* x, size_t n, T rate, uint64_t seed, uint64_t step,
                       uint32_t stream) override {
    cpu::dropout_forward(y, mask, x, n, rate, seed, step, stream);
  }
  void dropout_backward(T* dx, const T* dy, const T* mask, size_t n) override {
    cpu::dropout_backward(dx, dy, mask, n);
  }

  bool conv_blocked_between(const Conv2dShape& producer, bool producer_transposed,
                            const Conv2dShape& consumer, bool consumer_transposed) override {
    return cpu::conv_blocked_between<T>(producer, producer_transposed, consumer,
                                        consumer_transposed);
  }
  size_t conv2d_workspace_bytes(const Conv2dShape& s) override {
    check_conv_shape(s, false, "conv2d");
    return cpu::conv2d_workspace_size(s) * sizeof(T);
  }
  size_t conv_transpose2d_workspace_bytes(const Conv2dShape& s) override {
    check_conv_shape(s, true, "conv_transpose2d");
    return cpu::conv_transpose2d_workspace_size(s) * sizeof(T);
  }
  void conv2d_forward(T* y, const T* x, const T* W, const T* b, const Conv2dShape& s, bool relu,
                      void* workspace, size_t workspace_bytes) override {
    check_conv_workspace(workspace, workspace_bytes, conv2d_workspace_bytes(s), "conv2d_forward");
    cpu::conv2d_forward(y, x, W, b, s, relu, static_cast<T*>(workspace));
  }
  void conv2d_backward(T* dx, T* dW, T* db, T* dy, const T* x, const T* W, const T* y,
                       const Conv2dShape& s, bool relu, void* workspace,
                       size_t workspace_bytes) override {
    check_conv_workspace(workspace, workspace_bytes, conv2d_workspace_bytes(s), "conv2d_backward");
    cpu::conv2d_backward(dx, dW, db, dy, x, W, y, s, relu, static_cast<T*>(workspace));
  }
  void conv_transpose2d_forward(T* y, const T* x, const T* W, const T* b, const Conv2dShape& s,
                                bool relu, void* workspace, size_t workspace_bytes) override {
    check_conv_workspace(workspace, workspace_bytes, conv_transpose2d_workspace_bytes(s),
                         "conv_transpose2d_forward");
    cpu::conv_transpose2d_forward(y, x, W, b, s, relu, static_cast<T*>(workspace));
  }
  void conv_transpose2d_backward(T* dx, T* dW, T* db, T* dy, const T* x, const T* W, const T* y,
                                 const Conv2dShape& s, bool relu, void* workspace,
                                 size_t workspace_bytes) override {
    check_conv_workspace(workspace, workspace_bytes, conv_transpose2d_workspace_bytes(s),
                         "conv_transpose2d_backward");
    cpu::conv_transpose2d_backward(dx, dW, db, dy, x, W, y, s, relu, static_cast<T*>(workspace));
  }
  void gaussian_ll_forward(T* ll, const T* mu, const T* x, const T* logvar, int B, int C,
                           int P) override {
    cpu::gaussian_ll_forward(ll, mu, x, logvar, B, C, P);
  }
  void gaussian_ll_backward(T* dmu, T* dlogvar, const T* dll, const T* mu, const T* x,
                            const T* logvar, int B, int C, int P) override {
    cpu::gaussian_ll_backward(dmu, dlogvar, dll, mu, x, logvar, B, C, P);
  }

 private:
  int threads_ = 1;  // the OpenMP team every parallel region gets
};

}  // namespace

template <class T>
std::unique_ptr<Backend<T>> make_cpu_backend(int threads) {
  return std::make_unique<CpuBackend<T>>(threads);
}

template std::unique_ptr<Backend<float>> make_cpu_backend<float>(int);
template std::unique_ptr<Backend<double>> make_cpu_backend<double>(int);

}  // namespace equivae
