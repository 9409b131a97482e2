// The oneDNN route of the float GEMMs (see gemm_onednn.h).
#include "kernels/cpu/gemm_onednn.h"

#if EQUIVAE_HAVE_ONEDNN
#include <omp.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/cpu/onednn_common.h"

namespace equivae::cpu::onednn {
namespace {

using dnnl::memory;

// A shape's matmul, or none where oneDNN does not take it.
struct MatmulPlan {
  std::unique_ptr<dnnl::matmul> primitive;
  memory::desc a, b, c, scratchpad;
  bool brgemm = false;  // oneDNN's brgemm kernels (not its older gemm:jit driver)
};

// (trans_a, trans_b, M, N, K, lda, ldb, ldc, accumulate, threads): oneDNN's kernels divide the
// work by the thread count at creation, so a primitive serves the count it was made for.
using Key = std::array<int, 10>;

MatmulPlan make_plan(const Key& key) {
  const auto [trans_a, trans_b, M, N, K, lda, ldb, ldc, accumulate, threads] = key;
  const auto f32 = memory::data_type::f32;
  // Row-major with leading dimensions; a transposed operand is the same memory read with its
  // strides swapped.
  const auto strides = [](bool trans, int ld) {
    return trans ? memory::dims{1, ld} : memory::dims{ld, 1};
  };
  MatmulPlan plan;
  plan.a = memory::desc({M, K}, f32, strides(trans_a, lda));
  plan.b = memory::desc({K, N}, f32, strides(trans_b, ldb));
  plan.c = memory::desc({M, N}, f32, memory::dims{ldc, 1});
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // per calling thread: thread-safe
  if (accumulate) {                                       // C = A·B + C
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(plan.a, plan.b, plan.c), attr, engine());
  plan.scratchpad = fast(pd).scratchpad_desc();
  plan.brgemm = std::string(pd.impl_info_str()).rfind("brg", 0) == 0;
  plan.primitive = std::make_unique<dnnl::matmul>(pd);
  return plan;
}

std::shared_ptr<const MatmulPlan> plan_for(const Key& key) {
  static std::mutex mutex;
  static std::map<Key, std::shared_ptr<const MatmulPlan>> plans;
  std::lock_guard lock(mutex);
  auto& plan = plans[key];
  if (!plan) try {
      plan = std::make_shared<const MatmulPlan>(make_plan(key));
    } catch (const dnnl::error&) {  // no implementation takes the shape: OpenBLAS's
      plan = std::make_shared<const MatmulPlan>();
    } catch (const ReferenceOnly&) {
      plan = std::make_shared<const MatmulPlan>();
    }
  return plan;
}

// Inside a parallel region, the calling thread's OpenMP thread count is 1 while it lives (an ICV
// of this thread's task alone), so that a primitive created or run there is a one-thread one.
class OneThreadInParallel {
 public:
  OneThreadInParallel() : before_(omp_in_parallel() ? omp_get_max_threads() : 0) {
    if (before_) omp_set_num_threads(1);
  }
  ~OneThreadInParallel() {
    if (before_) omp_set_num_threads(before_);
  }
  OneThreadInParallel(const OneThreadInParallel&) = delete;
  OneThreadInParallel& operator=(const OneThreadInParallel&) = delete;

 private:
  int before_;
};

// The calling thread's stream and scratchpad (grown to the largest a call asked for).
struct ThreadState {
  dnnl::stream stream{engine()};
  std::vector<std::uint8_t> scratch;
  void* scratchpad(size_t bytes) {
    constexpr size_t kAlign = 64;
    if (scratch.size() < bytes + kAlign) scratch.resize(bytes + kAlign);
    const auto at = reinterpret_cast<std::uintptr_t>(scratch.data());
    return reinterpret_cast<void*>((at + kAlign - 1) / kAlign * kAlign);
  }
};

}  // namespace

bool brgemm_available() {
  static const bool available =
      plan_for({false, false, 160, 512, 512, 512, 512, 512, false, omp_get_max_threads()})->brgemm;
  return available;
}

bool gemm(bool trans_a, bool trans_b, int M, int N, int K, const float* A, int lda, const float* B,
          int ldb, float beta, float* C, int ldc, bool brgemm_only) {
  if (M <= 0 || N <= 0 || K <= 0 || (beta != 0.0f && beta != 1.0f)) return false;
  // Inside a parallel region (the im2col convolutions' lanes) oneDNN runs sequentially: its
  // primitive is made for, keyed by and run with one thread.
  const OneThreadInParallel one_thread;
  const auto plan =
      plan_for({trans_a, trans_b, M, N, K, lda, ldb, ldc, beta != 0.0f, omp_get_max_threads()});
  if (!plan->primitive || (brgemm_only && !plan->brgemm)) return false;
  thread_local ThreadState state;
  const dnnl::engine& e = engine();
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, memory(plan->a, e, const_cast<float*>(A))},
      {DNNL_ARG_WEIGHTS, memory(plan->b, e, const_cast<float*>(B))},
      {DNNL_ARG_DST, memory(plan->c, e, C)}};
  if (const size_t bytes = plan->scratchpad.get_size())
    args.emplace(DNNL_ARG_SCRATCHPAD, memory(plan->scratchpad, e, state.scratchpad(bytes)));
  plan->primitive->execute(state.stream, args);
  state.stream.wait();
  return true;
}

}  // namespace equivae::cpu::onednn

#else  // no oneDNN at build time: OpenBLAS takes every GEMM

namespace equivae::cpu::onednn {
bool brgemm_available() {
  return false;
}
bool gemm(bool, bool, int, int, int, const float*, int, const float*, int, float, float*, int,
          bool) {
  return false;
}
}  // namespace equivae::cpu::onednn

#endif
